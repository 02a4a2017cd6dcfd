#!/usr/bin/env bash
# Runs the KVM end-to-end tests: builds squib and the test binary, then runs
# the tests where /dev/kvm works, with the SQUIB_* environment pointing at a
# guest kernel and initramfs.
#
# Usage: run.sh [go test flags...]       e.g. run.sh -run TestBoot -v
#   Flags are `go test`'s (-run, -v, -count, -timeout, ... become -test.*);
#   anything after -args goes to the tests unchanged.
#
# Modes (the script says which one it uses and why):
#   direct   /dev/kvm is usable here: the test binary runs on this machine.
#   sandbox  no usable /dev/kvm, or SQUIB_SANDBOX=1: the test binary runs in
#            an "L1" Linux guest under QEMU's software CPU (TCG) with emulated
#            AMD SVM, where kvm_amd provides /dev/kvm (see README.md).
#
# Env:
#   SQUIB_SANDBOX           1 forces sandbox mode, 0 forces direct mode
#   SQUIB_TEST_PKG          test package (default ./tests/e2e if it has Go
#                           files, else ./tests/sandbox/selftest)
#   SQUIB_SANDBOX_TIMEOUT   seconds one L1 run may take (default 600; a run that
#                           crashes or stalls L1 itself is tried again, three times at most)
#   SQUIB_SANDBOX_CPU/_MEM/_SMP/_APPEND/_TIMESTAMPS   see boot_l1 in lib.sh
# The tests see: SQUIB_TEST_MODE (direct|sandbox), SQUIB_BIN, SQUIB_JAILER, SQUIB_UFFD_HANDLER,
#   SQUIB_GUEST_KERNEL (bzImage), SQUIB_GUEST_VMLINUX (ELF),
#   SQUIB_GUEST_INITRD (gzip cpio), SQUIB_GUEST_KERNEL_VERSION.
# Exit status: the test binary's; 124 on a sandbox timeout.
set -euo pipefail
# shellcheck source=tests/sandbox/lib.sh
. "$(dirname "$0")/lib.sh"

T0=$EPOCHREALTIME
select_mode
PKG=$(test_package)
log "mode: $MODE: $MODE_WHY"
log "test package: $PKG"
go_test_flags "$@"

rc=0
case $MODE in
direct)
	load_kernel
	GUEST_INITRD=$("$GUEST_DIR/build-initramfs.sh")
	build_go "$CACHE/direct" "$PKG"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$CACHE/direct/squib-jailer" ./cmd/squib-jailer) || die "go build failed"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$CACHE/direct/squib-uffd-handler" ./cmd/squib-uffd-handler) || die "go build failed"
	pkgdir=$(package_dir "$PKG")
	log "running $PKG tests (${GO_TEST_FLAGS[*]:-no flags}) in $pkgdir"
	# like `go test`: the tests run in their package directory
	(
		cd "$pkgdir"
		SQUIB_TEST_MODE=direct \
			SQUIB_BIN=$CACHE/direct/squib \
			SQUIB_JAILER=$CACHE/direct/squib-jailer \
			SQUIB_UFFD_HANDLER=$CACHE/direct/squib-uffd-handler \
			SQUIB_GUEST_KERNEL=$SQUIB_KERNEL_VMLINUZ \
			SQUIB_GUEST_VMLINUX=$SQUIB_KERNEL_VMLINUX \
			SQUIB_GUEST_INITRD=$GUEST_INITRD \
			SQUIB_GUEST_KERNEL_VERSION=$SQUIB_KERNEL_VERSION \
			exec "$CACHE/direct/test.bin" "${GO_TEST_FLAGS[@]}"
	) || rc=$?
	;;
sandbox)
	L1=$("$SANDBOX_DIR/build-l1.sh" "$PKG")
	load_kernel # the L1 kernel is the same Debian kernel
	log "built in $(_elapsed "$T0") s"
	# L1 runs on QEMU's emulated SVM, which now and then crashes or hangs L1
	# itself (a kernel panic or a stall, with no result line): that is the
	# emulator, not the tests, so such a run is tried again, at most three
	# times. A run that reports a result is never repeated.
	for attempt in 1 2 3 4; do
		rc=0
		boot_l1 "$L1" "${SQUIB_SANDBOX_TIMEOUT:-600}" "/run-tests.sh $(shell_quote "${GO_TEST_FLAGS[@]}")" || rc=$?
		[ "$rc" = 0 ] && break
		if grep -a -q -E '^SQUIB-L1-RESULT rc=[0-9]+$' "$L1_LOG"; then
			break
		fi
		[ "$attempt" = 4 ] && break
		log "L1 itself failed (no result line; see $L1_LOG): trying again (retry $attempt of 3)"
	done
	;;
esac
if [ $rc = 0 ]; then
	log "PASS ($MODE mode, $(_elapsed "$T0") s in all)"
else
	log "FAIL: exit status $rc ($MODE mode, $(_elapsed "$T0") s in all)"
fi
exit $rc
