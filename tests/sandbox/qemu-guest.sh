#!/bin/sh
# Boots the test guest (tests/guest) with QEMU's microvm machine instead of
# squib: the reference the boot benchmark compares squib with (same kernel,
# same initramfs), and a check of the guest image that needs no squib. The
# guest prints SQUIB-GUEST-UP and its facts and powers off; QEMU's exit
# status is the result (0 when the guest powered off).
# POSIX sh: it also runs inside the L1 sandbox guest when build-l1.sh was
# run with SQUIB_L1_QEMU=1 (see demo.sh --qemu).
#
# Usage: qemu-guest.sh [EXTRA BOOT ARGS...]   e.g. squib.test=devices
# Env:
#   SQUIB_GUEST_VMLINUX / SQUIB_GUEST_KERNEL / SQUIB_GUEST_INITRD: the guest;
#     when unset (on the host), fetch-kernel.sh and build-initramfs.sh make them
#   GUEST_KERNEL   elf (default) or bzimage    GUEST_VCPUS (1)  GUEST_MEM_MIB (128)
#   QEMU_ACCEL     kvm or tcg (default: kvm when /dev/kvm is usable, else tcg,
#                  which is slow but still checks the guest image)
#   QEMU_ARGS      extra QEMU arguments
#   GUEST_TIMEOUT  seconds before QEMU is killed (default 600)
set -eu
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${SQUIB_GUEST_INITRD:-}" ]; then
	eval "$("$here/fetch-kernel.sh")"
	SQUIB_GUEST_VMLINUX=$SQUIB_KERNEL_VMLINUX
	SQUIB_GUEST_KERNEL=$SQUIB_KERNEL_VMLINUZ
	SQUIB_GUEST_INITRD=$("$here/../guest/build-initramfs.sh")
fi
case ${GUEST_KERNEL:-elf} in
elf) kernel=$SQUIB_GUEST_VMLINUX ;;
bzimage) kernel=$SQUIB_GUEST_KERNEL ;;
*)
	echo "qemu-guest: GUEST_KERNEL must be elf or bzimage" >&2
	exit 2
	;;
esac

accel=${QEMU_ACCEL:-}
if [ -z "$accel" ]; then
	# kvm-pvm (a software "KVM" some cloud sandboxes offer) passes the open
	# test but cannot run a stock kernel: see README.md
	if [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then
		accel=kvm
	else
		accel=tcg
		echo "qemu-guest: no usable /dev/kvm: using TCG (slow; checks the guest image only)" >&2
	fi
fi
case $accel in
kvm) cpu="-enable-kvm -cpu host" ;;
tcg) cpu="-accel tcg -cpu max" ;;
*)
	echo "qemu-guest: QEMU_ACCEL must be kvm or tcg" >&2
	exit 2
	;;
esac

# reboot=t: microvm has no i8042 to reset through (squib does, so
# squib-guest.sh uses reboot=k); the triple fault ends QEMU under -no-reboot.
# rtc=on: without a CMOS RTC the kernel's rtc_cmos probe stalls the boot.
boot_args="console=ttyS0 reboot=t panic=1 quiet"
[ $# -gt 0 ] && boot_args="$boot_args $*"
echo "qemu-guest: qemu-system-x86_64 -M microvm,rtc=on $cpu -m ${GUEST_MEM_MIB:-128}M -smp ${GUEST_VCPUS:-1} -kernel $kernel -initrd $SQUIB_GUEST_INITRD -append '$boot_args'" >&2
rc=0
# shellcheck disable=SC2086 # $cpu and QEMU_ARGS are lists of arguments
timeout "${GUEST_TIMEOUT:-600}" qemu-system-x86_64 -M microvm,rtc=on $cpu \
	-m "${GUEST_MEM_MIB:-128}M" -smp "${GUEST_VCPUS:-1}" -nographic -no-reboot ${QEMU_ARGS:-} \
	-kernel "$kernel" -initrd "$SQUIB_GUEST_INITRD" -append "$boot_args" </dev/null || rc=$?
echo "qemu-guest: qemu exited with status $rc" >&2
exit $rc
