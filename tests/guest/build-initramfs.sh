#!/usr/bin/env bash
# Builds the test guest's initramfs: static busybox, tests/guest/init as /init,
# tests/guest/tests/*.sh as /tests/, tests/guest/tool as /bin/squib-guest-tool, and the virtio and ext4 modules of the
# Debian kernel that tests/sandbox/fetch-kernel.sh fetches (the guest kernel is
# that same kernel: its virtio drivers and ext4 are modules, not built in).
#
# Usage: build-initramfs.sh [OUT.cpio.gz]
#   default OUT: tests/sandbox/.cache/guest/initramfs.cpio.gz
# Prints OUT's absolute path on stdout. Rebuilt on every call (a second or two);
# the result is byte-for-byte reproducible.
set -euo pipefail
# shellcheck source=tests/sandbox/lib.sh
. "$(dirname "$0")/../sandbox/lib.sh"

OUT=${1:-$CACHE/guest/initramfs.cpio.gz}
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

load_kernel

# Everything a device test may insmod later. crc32c_generic: jbd2 and ext4
# ask for "crypto-crc32c" (a softdep, which busybox modprobe ignores) and
# cannot mount a metadata_csum file system without it.
GUEST_MODULES=(virtio virtio_ring virtio_mmio virtio_blk virtio_net vmw_vsock_virtio_transport
	virtio-rng virtio_balloon virtio_pmem virtio_mem ext4 crc32c_generic)

ROOT=$CACHE/guest/root
rm -rf "$ROOT"
make_busybox_root "$ROOT"
stage_modules "$ROOT" "${GUEST_MODULES[@]}"
install -m 755 "$GUEST_DIR/init" "$ROOT/init"
mkdir -p "$ROOT/tests"
for t in "$GUEST_DIR"/tests/*.sh; do
	[ -e "$t" ] && install -m 755 "$t" "$ROOT/tests/"
done
# AF_VSOCK and bulk I/O helpers (busybox has neither); -buildid= keeps the
# image reproducible
(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -buildid=' \
	-o "$ROOT/bin/squib-guest-tool" ./tests/guest/tool) || die "go build of the guest tool failed"

pack_cpio "$ROOT" | gzip -9n >"$OUT.tmp"
# same bytes: keep the old file and its mtime, so builds that depend on it
# (build-l1.sh) see nothing new
if cmp -s "$OUT.tmp" "$OUT"; then rm "$OUT.tmp"; else mv "$OUT.tmp" "$OUT"; fi
log "guest initramfs: $OUT ($(du -k "$OUT" | cut -f1) KiB, kernel $SQUIB_KERNEL_VERSION)"
echo "$OUT"
