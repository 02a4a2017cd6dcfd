#!/usr/bin/env bash
# Snapshot benchmark (tests/e2e BenchmarkSnapshot): for 128 MiB and 1 GiB
# guests, the duration of PUT /snapshot/create (Full) and of
# PUT /snapshot/load (File backend, resumed) in a new squib, the time from
# the load to the guest's first answer (a vsock echo), and GET / latency
# while both run. In the nested sandbox on hosts without hardware KVM.
# Usage: bench/snapshot.sh [N]   (N rounds per size, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
SQUIB_TEST_PKG=./tests/e2e exec bash tests/sandbox/run.sh \
	-run '^$' -bench 'BenchmarkSnapshot$' -benchtime "${n}x"
