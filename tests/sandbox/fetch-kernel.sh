#!/usr/bin/env bash
# Fetches Debian's stock amd64 kernel package (never installed on the host,
# only unpacked) into the cache and extracts an ELF vmlinux from its bzImage.
# The same kernel serves as the L1 kernel of the sandbox and as the guest (L2)
# kernel the tests boot, in its bzImage and its ELF form.
#
# Usage: fetch-kernel.sh
# Prints, on stdout, lines for `eval` (progress goes to stderr):
#   SQUIB_KERNEL_PACKAGE='linux-image-6.1.0-NN-amd64=<Debian version>'
#   SQUIB_KERNEL_VERSION='6.1.0-NN-amd64'         (uname -r)
#   SQUIB_KERNEL_VMLINUZ='/.../boot/vmlinuz-...'  (bzImage)
#   SQUIB_KERNEL_VMLINUX='/.../vmlinux'           (ELF)
#   SQUIB_KERNEL_MODULES='/.../lib/modules/...'   (modules tree)
# Env:
#   SQUIB_KERNEL_PKG      package to use (default: what linux-image-amd64 depends on)
#   SQUIB_KERNEL_REFRESH  1: ask apt for the current package even when one is cached
# Also installs the host packages the harness needs (lib.sh: HOST_PACKAGES).
set -euo pipefail
# shellcheck source=tests/sandbox/lib.sh
. "$(dirname "$0")/lib.sh"

ensure_host_packages

KDIR=$CACHE/kernel
mkdir -p "$KDIR"

# current_package: the kernel package to use. A cached choice wins so that a
# cached run is offline and reproducible; Debian's archive moves on with
# point releases, and the cache should not change under the tests silently.
current_package() {
	local pkg
	if [ -n "${SQUIB_KERNEL_PKG:-}" ]; then
		echo "$SQUIB_KERNEL_PKG"
		return
	fi
	if [ "${SQUIB_KERNEL_REFRESH:-0}" != 1 ] && [ -s "$KDIR/current" ]; then
		cat "$KDIR/current"
		return
	fi
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$pkg" ]; then
		# fresh machine: the package lists may be empty
		[ "$(id -u)" -eq 0 ] || die "apt-cache knows no linux-image-amd64; run apt-get update as root"
		log "apt-get update (to find the current kernel package)"
		apt-get update -qq >&2
		pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[ -n "$pkg" ] || die "cannot find the kernel package linux-image-amd64 depends on"
	echo "$pkg"
}

# extract_vmlinux BZIMAGE OUT: the ELF kernel inside a bzImage. The x86 boot
# protocol (>= 2.08) puts the compressed payload at
#   (setup_sects + 1) * 512 + payload_offset   [setup_sects: u8 at 0x1f1,
#   payload_offset: u32 at 0x248, payload_length: u32 at 0x24c]
# Debian compresses it with xz; gzip and zstd are handled for other kernels.
extract_vmlinux() {
	local img=$1 out=$2 magic setup_sects poff plen start
	u8() { od -An -tu1 -j "$1" -N1 "$img" | tr -d ' \n'; }
	u32() { od -An -tu4 -j "$1" -N4 "$img" | tr -d ' \n'; }
	magic=$(dd if="$img" bs=1 skip=$((0x202)) count=4 status=none)
	[ "$magic" = HdrS ] || die "$img is not a bzImage (no HdrS boot header)"
	setup_sects=$(u8 $((0x1f1)))
	[ "$setup_sects" = 0 ] && setup_sects=4 # boot protocol: 0 means 4
	poff=$(u32 $((0x248)))
	plen=$(u32 $((0x24c)))
	start=$(((setup_sects + 1) * 512 + poff))
	log "bzImage: setup_sects=$setup_sects payload_offset=$poff payload_length=$plen -> payload at byte $start"
	payload() { dd if="$img" iflag=skip_bytes,count_bytes skip="$start" count="$plen" bs=1M status=none; }
	magic=$(dd if="$img" iflag=skip_bytes,count_bytes skip="$start" count=4 status=none | od -An -tx1 | tr -d ' \n')
	# decompress into a temporary file first: a half-written vmlinux must never
	# look like a cached one
	{
		case $magic in
		# the kernel build appends the uncompressed size (4 bytes) after the
		# stream: xz would read it as a broken second stream, gzip warns (rc 2)
		fd377a58) payload | xz -dc --single-stream ;;
		1f8b08*) payload | { gzip -dcq || [ $? = 2 ]; } ;;
		28b52ffd) payload | zstd -dc ;;
		*) die "unknown compression of the bzImage payload (magic $magic)" ;;
		esac
	} >"$out.tmp"
	# 7f 45 4c 46 = "\177ELF"
	[ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || die "payload of $img is not an ELF file"
	if command -v file >/dev/null; then
		local what
		what=$(file -b "$out.tmp")
		case $what in
		"ELF 64-bit LSB executable, x86-64"*) log "vmlinux: $what" ;;
		*) die "unexpected vmlinux: $what" ;;
		esac
	fi
	mv "$out.tmp" "$out"
}

PKG=$(current_package)
PDIR=$KDIR/$PKG
if [ ! -f "$PDIR/.unpacked" ]; then
	rm -rf "$PDIR"
	mkdir -p "$PDIR"
	log "downloading $PKG from Debian"
	# apt-get download writes into the current directory
	(cd "$PDIR" && apt-get download -q "$PKG" >&2) || die "apt-get download $PKG failed"
	log "unpacking $PKG"
	dpkg -x "$PDIR"/*.deb "$PDIR/root"
	dpkg-deb -f "$PDIR"/*.deb Version >"$PDIR/version"
	rm -f "$PDIR"/*.deb # 60+ MB we no longer need; root/ is what is used
	touch "$PDIR/.unpacked"
fi
echo "$PKG" >"$KDIR/current"

KVER=$(ls "$PDIR/root/lib/modules")
if [ -z "$KVER" ] || [ "$(echo "$KVER" | wc -l)" != 1 ]; then
	die "expected one kernel in $PKG, found: $KVER"
fi
VMLINUZ=$PDIR/root/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "no $VMLINUZ in $PKG"
if [ ! -f "$PDIR/vmlinux" ]; then
	log "extracting the ELF vmlinux from $(basename "$VMLINUZ")"
	extract_vmlinux "$VMLINUZ" "$PDIR/vmlinux"
	log "vmlinux: $(stat -c %s "$PDIR/vmlinux") bytes"
fi

for kv in PACKAGE="$PKG=$(cat "$PDIR/version")" VERSION="$KVER" VMLINUZ="$VMLINUZ" VMLINUX="$PDIR/vmlinux" \
	MODULES="$PDIR/root/lib/modules/$KVER"; do
	echo "SQUIB_KERNEL_${kv%%=*}=$(shell_quote "${kv#*=}")"
done
