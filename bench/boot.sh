#!/usr/bin/env bash
# Boot benchmark: squib against QEMU microvm (rtc=on) booting the same
# Debian kernel (ELF vmlinux) and test initramfs, 1 vCPU and 128 MiB, in the
# same run of the KVM test harness (inside the nested sandbox on hosts
# without hardware KVM). Measures process start to the guest's init, and
# squib's resident memory beyond guest RAM.
# Usage: bench/boot.sh [N]   (N boots of each, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
SQUIB_L1_QEMU=1 SQUIB_TEST_PKG=./tests/e2e exec bash tests/sandbox/run.sh \
	-run '^$' -bench 'BenchmarkBoot(Squib|QEMU)$' -benchtime "${n}x"
