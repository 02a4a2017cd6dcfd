#!/bin/sh
# Boots the test guest (tests/guest) with squib from a Firecracker config
# file and shows its serial console; squib's exit status is the result.
# POSIX sh, not bash: it also runs inside the L1 sandbox guest (busybox), where
# build-l1.sh installs it as /usr/bin/squib-guest. demo.sh is the friendly
# front end; use this one directly once the paths are known.
#
# Usage: squib-guest.sh [EXTRA BOOT ARGS...]   e.g. squib.test=hold
# Env (required): SQUIB_BIN, SQUIB_GUEST_VMLINUX or SQUIB_GUEST_KERNEL,
#   SQUIB_GUEST_INITRD
# Env (optional):
#   GUEST_KERNEL  elf (default: SQUIB_GUEST_VMLINUX, what Firecracker users
#                 boot) or bzimage (SQUIB_GUEST_KERNEL)
#   GUEST_VCPUS   vCPUs (1)       GUEST_MEM_MIB  memory in MiB (128)
#   SQUIB_ARGS    extra squib flags, e.g. "--level Debug"
set -eu

: "${SQUIB_BIN:?SQUIB_BIN must name the squib binary}"
: "${SQUIB_GUEST_INITRD:?SQUIB_GUEST_INITRD must name the guest initramfs}"
case ${GUEST_KERNEL:-elf} in
elf) kernel=${SQUIB_GUEST_VMLINUX:?SQUIB_GUEST_VMLINUX must name the ELF guest kernel} ;;
bzimage) kernel=${SQUIB_GUEST_KERNEL:?SQUIB_GUEST_KERNEL must name the bzImage guest kernel} ;;
*)
	echo "squib-guest: GUEST_KERNEL must be elf or bzimage" >&2
	exit 2
	;;
esac

# Firecracker's usual arguments: the console on the first serial port, reboot
# through the i8042 controller (which the VMM turns into its exit), reboot at
# once on a panic; quiet because every console byte is a VM exit.
boot_args="console=ttyS0 reboot=k panic=1 quiet"
[ $# -gt 0 ] && boot_args="$boot_args $*"

work=$(mktemp -d "${TMPDIR:-/tmp}/squib-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
# JSON strings: the paths and arguments here have no quotes or backslashes
cat >"$work/config.json" <<EOF
{
  "boot-source": {
    "kernel_image_path": "$kernel",
    "initrd_path": "$SQUIB_GUEST_INITRD",
    "boot_args": "$boot_args"
  },
  "drives": [],
  "machine-config": {"vcpu_count": ${GUEST_VCPUS:-1}, "mem_size_mib": ${GUEST_MEM_MIB:-128}}
}
EOF
echo "squib-guest: $SQUIB_BIN --no-api --config-file $work/config.json" >&2
sed 's/^/squib-guest:   /' "$work/config.json" >&2
rc=0
# shellcheck disable=SC2086 # SQUIB_ARGS is a list of flags
"$SQUIB_BIN" --no-api --config-file "$work/config.json" ${SQUIB_ARGS:-} || rc=$?
echo "squib-guest: squib exited with status $rc" >&2
exit $rc
