#!/usr/bin/env bash
# Boots the test guest with squib and shows its serial console: squib runs
# `--no-api --config-file` with the Debian kernel (ELF vmlinux) and the
# tests/guest initramfs, 1 vCPU and 128 MiB, no drives (squib-guest.sh).
# Directly when /dev/kvm is usable, else inside the L1 sandbox guest.
#
# Usage: demo.sh [--qemu] [EXTRA GUEST BOOT ARGS...]
#   --qemu   boot the same guest with QEMU microvm instead (qemu-guest.sh)
#   e.g.     demo.sh squib.test=devices squib.modules=virtio_mmio,virtio_blk
# Env: SQUIB_SANDBOX (1: force the sandbox, 0: force direct), GUEST_KERNEL
#   (elf|bzimage), GUEST_VCPUS, GUEST_MEM_MIB, SQUIB_ARGS (see squib-guest.sh),
#   SQUIB_SANDBOX_TIMEOUT (seconds L1 may run, default 600)
# Exit status: squib's (or QEMU's); the guest powering off gives 0.
set -euo pipefail
# shellcheck source=tests/sandbox/lib.sh
. "$(dirname "$0")/lib.sh"

vmm=squib
if [ "${1:-}" = --qemu ]; then
	vmm=qemu
	shift
fi
select_mode
log "mode: $MODE: $MODE_WHY"

rc=0
case $MODE in
direct)
	load_kernel
	export SQUIB_GUEST_INITRD SQUIB_GUEST_VMLINUX=$SQUIB_KERNEL_VMLINUX SQUIB_GUEST_KERNEL=$SQUIB_KERNEL_VMLINUZ
	SQUIB_GUEST_INITRD=$("$GUEST_DIR/build-initramfs.sh")
	if [ $vmm = qemu ]; then
		"$SANDBOX_DIR/qemu-guest.sh" "$@" || rc=$?
	else
		mkdir -p "$CACHE/direct"
		(cd "$REPO_ROOT" && go build -o "$CACHE/direct/squib" ./cmd/squib) || die "go build failed"
		SQUIB_BIN=$CACHE/direct/squib "$SANDBOX_DIR/squib-guest.sh" "$@" || rc=$?
	fi
	;;
sandbox)
	# no test binary in this image; QEMU only when it is asked for
	[ $vmm = qemu ] && export SQUIB_L1_QEMU=1
	L1=$("$SANDBOX_DIR/build-l1.sh" none)
	load_kernel
	boot_l1 "$L1" "${SQUIB_SANDBOX_TIMEOUT:-600}" "$vmm-guest $(shell_quote "$@")" || rc=$?
	;;
esac
log "$vmm exited with status $rc"
exit $rc
