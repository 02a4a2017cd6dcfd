#!/usr/bin/env bash
# Snapshot benchmark (tests/e2e BenchmarkSnapshot): for 128 MiB and 1 GiB
# guests, the duration of PUT /snapshot/create (Full) and of
# PUT /snapshot/load (File backend, resumed) in a new squib, the time from
# the load to the guest's first answer (a vsock echo), and GET / latency
# while both run; side by side in the same sandbox boot, QEMU's microvm
# machine saving (QMP migrate to a file) and restoring (-incoming defer,
# migrate-incoming) the same guest (tests/e2e BenchmarkSnapshotQEMU). In the
# nested sandbox on hosts without hardware KVM.
#
# Each round runs in its own sandbox boot (one create and one load per
# size): the nested emulator has panicked L1's kernel in longer runs (a
# kernel stack overflow in a squib thread, see docs/benchmarks.md), which
# then costs only that round.
# Usage: bench/snapshot.sh [N]   (N rounds, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
for i in $(seq "$n"); do
	echo "== round $i of $n"
	SQUIB_L1_QEMU=1 SQUIB_TEST_PKG=./tests/e2e bash tests/sandbox/run.sh \
		-run '^$' -bench 'BenchmarkSnapshot(QEMU)?$' -benchtime 1x || echo "== round $i failed: $?"
done
