#!/usr/bin/env bash
# Device benchmarks: virtio-blk sequential read/write and guest -> host TCP
# throughput measured inside the same guest under squib and under QEMU
# microvm, side by side in one run of the KVM test harness (inside the
# nested sandbox on hosts without hardware KVM), plus the block rate
# limiter's achieved vs configured bandwidth.
# Usage: bench/devices.sh [N]   (N runs of each, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
SQUIB_SANDBOX_TIMEOUT=${SQUIB_SANDBOX_TIMEOUT:-2400} SQUIB_L1_QEMU=1 SQUIB_TEST_PKG=./tests/e2e exec bash tests/sandbox/run.sh \
	-run '^$' -bench 'Benchmark(Block|Net)(Squib|QEMU|RateLimit)(4K)?$' -benchtime "${n}x"
