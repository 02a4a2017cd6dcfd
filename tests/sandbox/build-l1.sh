#!/usr/bin/env bash
# Builds the initramfs of the L1 sandbox guest: busybox, the kvm modules of
# the Debian kernel, l1/init, squib, a test binary, and the guest (L2) kernel
# and initramfs the tests boot. No QEMU inside: squib is L1's only VMM.
#
# Usage: build-l1.sh [PKG]
#   PKG   Go package whose `go test -c` binary goes in (default: ./tests/e2e
#         when it has Go files, else the harness self-test
#         ./tests/sandbox/selftest; SQUIB_TEST_PKG overrides), or "none"
# Env: SQUIB_L1_QEMU=1 adds QEMU (about 30 MB) for qemu-guest.sh in L1.
#      SQUIB_L1_STRACE=1 adds strace and its libraries (tools/seccomp/trace.sh).
# Prints the initramfs path on stdout.
#
# Layout inside L1 (also in /etc/squib.env, which l1/init sources):
#   /usr/bin/squib                 SQUIB_BIN
#   /usr/bin/squib-jailer          SQUIB_JAILER
#   /usr/bin/squib-uffd-handler    SQUIB_UFFD_HANDLER
#   /usr/bin/squib-tests.test      the test binary; /run-tests.sh runs it in /pkg
#   /guest/vmlinuz                 SQUIB_GUEST_KERNEL   (bzImage)
#   /guest/vmlinux                 SQUIB_GUEST_VMLINUX  (ELF)
#   /guest/initramfs.cpio.gz       SQUIB_GUEST_INITRD
#   /guest/disk.ext4               SQUIB_GUEST_DISK     (8 MiB ext4 holding hello.txt)
#   /usr/bin/squib-guest           squib-guest.sh (what demo.sh runs)
#   /usr/bin/qemu-guest            qemu-guest.sh and QEMU, with SQUIB_L1_QEMU=1
#
# The image is two concatenated cpio archives (the kernel unpacks each in
# turn): a cached base with everything that changes rarely (about 90 MB,
# rebuilt when an input is newer) and the Go binaries, rebuilt every time.
# Uncompressed: under TCG, decompressing 100 MB in L1 costs more than QEMU
# loading the bigger file.
set -euo pipefail
# shellcheck source=tests/sandbox/lib.sh
. "$(dirname "$0")/lib.sh"

PKG=${1:-$(test_package)}
load_kernel
GUEST_INITRD=$("$GUEST_DIR/build-initramfs.sh")

D=$CACHE/l1
mkdir -p "$D"

# --- base: cached ------------------------------------------------------------
BASE=$D/base.cpio
inputs=("$SANDBOX_DIR/l1/init" "$SANDBOX_DIR/l1/run-tests.sh" "$SANDBOX_DIR/squib-guest.sh"
	"$SANDBOX_DIR/lib.sh" "$0" "$SQUIB_KERNEL_VMLINUX" "$SQUIB_KERNEL_VMLINUZ" "$GUEST_INITRD")
stale=0
[ -f "$BASE" ] && [ "$(cat "$BASE.kernel" 2>/dev/null)" = "$SQUIB_KERNEL_PACKAGE" ] || stale=1
for f in "${inputs[@]}"; do
	[ "$f" -nt "$BASE" ] && stale=1
done
if [ $stale = 1 ]; then
	log "building the L1 base image (kernel $SQUIB_KERNEL_VERSION)"
	R=$D/base-root
	rm -rf "$R"
	make_busybox_root "$R"
	# loop and ext4: tests mount the guest's drive images to check its writes
	stage_modules "$R" irqbypass ccp kvm kvm_amd tun loop ext4 crc32c_generic
	install -m 755 "$SANDBOX_DIR/l1/init" "$R/init"
	install -m 755 "$SANDBOX_DIR/l1/run-tests.sh" "$R/run-tests.sh"
	install -m 755 "$SANDBOX_DIR/squib-guest.sh" "$R/usr/bin/squib-guest"
	mkdir -p "$R/guest" "$R/pkg"
	cp "$SQUIB_KERNEL_VMLINUZ" "$R/guest/vmlinuz"
	cp "$SQUIB_KERNEL_VMLINUX" "$R/guest/vmlinux"
	cp "$GUEST_INITRD" "$R/guest/initramfs.cpio.gz"
	# an ext4 drive image for the block tests: small, it is copied per test
	mkdir -p "$D/disk"
	echo "squib test disk" >"$D/disk/hello.txt"
	rm -f "$R/guest/disk.ext4"
	mkfs.ext4 -q -F -b 4096 -d "$D/disk" -L squibtest "$R/guest/disk.ext4" 8M >/dev/null ||
		die "mkfs.ext4 of the guest drive image failed"
	cat >"$R/etc/squib.env" <<-EOF
		export SQUIB_TEST_MODE=sandbox
		export SQUIB_BIN=/usr/bin/squib
		export SQUIB_JAILER=/usr/bin/squib-jailer
		export SQUIB_UFFD_HANDLER=/usr/bin/squib-uffd-handler
		export SQUIB_GUEST_KERNEL=/guest/vmlinuz
		export SQUIB_GUEST_VMLINUX=/guest/vmlinux
		export SQUIB_GUEST_INITRD=/guest/initramfs.cpio.gz
		export SQUIB_GUEST_DISK=/guest/disk.ext4
		export SQUIB_GUEST_KERNEL_VERSION=$SQUIB_KERNEL_VERSION
	EOF
	pack_cpio "$R" >"$BASE.tmp"
	mv "$BASE.tmp" "$BASE"
	echo "$SQUIB_KERNEL_PACKAGE" >"$BASE.kernel"
	rm -rf "$R"
fi

# --- Go binaries: every time (go's build cache makes it quick) ---------------
R=$D/go-root
rm -rf "$R"
mkdir -p "$R/usr/bin" "$R/pkg"
if [ "$PKG" = none ]; then
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$R/usr/bin/squib" ./cmd/squib) || die "go build failed"
else
	build_go "$D/bin" "$PKG"
	cp "$D/bin/squib" "$R/usr/bin/squib"
	cp "$D/bin/test.bin" "$R/usr/bin/squib-tests.test"
	# go test runs a package's tests in its directory: bring testdata along
	pkgdir=$(package_dir "$PKG")
	[ -d "$pkgdir/testdata" ] && cp -r "$pkgdir/testdata" "$R/pkg/"
fi
(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$R/usr/bin/squib-jailer" ./cmd/squib-jailer) || die "go build failed"
(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$R/usr/bin/squib-uffd-handler" ./cmd/squib-uffd-handler) || die "go build failed"
pack_cpio "$R" >"$D/go.cpio"
rm -rf "$R"

# --- optional: QEMU, to boot the guest with QEMU inside L1 (qemu-guest.sh) --
parts=("$BASE" "$D/go.cpio")
if [ "${SQUIB_L1_QEMU:-0}" = 1 ]; then
	Q=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is missing"
	QC=$D/qemu.cpio
	if [ ! -f "$QC" ] || [ "$Q" -nt "$QC" ] || [ "$SANDBOX_DIR/qemu-guest.sh" -nt "$QC" ] || [ "$0" -nt "$QC" ]; then
		log "building the L1 QEMU image part"
		R=$D/qemu-root
		rm -rf "$R"
		mkdir -p "$R/usr/bin" "$R/usr/share/qemu"
		cp "$Q" "$R/usr/bin/"
		install -m 755 "$SANDBOX_DIR/qemu-guest.sh" "$R/usr/bin/qemu-guest"
		# its shared libraries, the dynamic loader included (L1 has no libc)
		for lib in $(ldd "$Q" | grep -oE '/[^ ]+'); do
			mkdir -p "$R$(dirname "$lib")"
			cp -L "$lib" "$R$lib"
		done
		# firmware microvm needs to load a kernel (qboot, option ROMs)
		for f in bios-microvm.bin linuxboot_dma.bin pvh.bin kvmvapic.bin; do
			cp -L "/usr/share/qemu/$f" "$R/usr/share/qemu/"
		done
		pack_cpio "$R" >"$QC"
		rm -rf "$R"
	fi
	parts+=("$QC")
fi

# --- optional: strace, to trace squib in L1 (tools/seccomp/trace.sh) -------
if [ "${SQUIB_L1_STRACE:-0}" = 1 ]; then
	S=$(command -v strace) || die "strace is missing (apt-get install strace)"
	SC=$D/strace.cpio
	if [ ! -f "$SC" ] || [ "$S" -nt "$SC" ] || [ "$0" -nt "$SC" ]; then
		log "building the L1 strace image part"
		R=$D/strace-root
		rm -rf "$R"
		mkdir -p "$R/usr/bin"
		cp "$S" "$R/usr/bin/"
		# its shared libraries, the dynamic loader included (L1 has no libc)
		for lib in $(ldd "$S" | grep -oE '/[^ ]+'); do
			mkdir -p "$R$(dirname "$lib")"
			cp -L "$lib" "$R$lib"
		done
		pack_cpio "$R" >"$SC"
		rm -rf "$R"
	fi
	parts+=("$SC")
fi

OUT=$D/initramfs.cpio
cat "${parts[@]}" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "L1 initramfs: $OUT ($(du -m "$OUT" | cut -f1) MiB; test package: $PKG)"
echo "$OUT"
