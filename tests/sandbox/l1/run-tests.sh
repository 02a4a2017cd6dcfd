#!/bin/sh
# /run-tests.sh in L1: runs the test binary build-l1.sh put in the image,
# from a copy of its package directory (testdata/ included) because `go test`
# runs tests there. Arguments go to the test binary (-test.* flags).
cd /pkg || exit 1
if [ $# -eq 0 ]; then
	set -- -test.v # what a bare boot (no squib.cmd) runs
fi
exec /usr/bin/squib-tests.test "$@"
