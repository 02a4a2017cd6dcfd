#!/bin/sh
# squib.test=block (squib.modules=virtio_mmio,virtio_blk,ext4,crc32c_generic):
# vda is a read-write ext4 drive holding hello.txt, vdb the same image
# attached read-only. Reports
#   SQUIB-BLOCK-READ=<first line of hello.txt on vda>
#   SQUIB-BLOCK-WROTE=ok|failed        wrote written.txt on vda, synced, unmounted
#   SQUIB-BLOCK-RO-FLAG=<ro of vdb>    the kernel saw VIRTIO_BLK_F_RO
#   SQUIB-BLOCK-RO-WRITE=refused|accepted   a raw write to vdb
#   SQUIB-BLOCK-RO-READ=<first line of hello.txt on vdb>
rc=0
mkdir -p /mnt/rw /mnt/ro
mount -t ext4 /dev/vda /mnt/rw || rc=1
echo "SQUIB-BLOCK-READ=$(head -n 1 /mnt/rw/hello.txt)"
if echo "written by the guest" >/mnt/rw/written.txt && sync && umount /mnt/rw; then
	echo "SQUIB-BLOCK-WROTE=ok"
else
	echo "SQUIB-BLOCK-WROTE=failed"
	rc=1
fi
echo "SQUIB-BLOCK-RO-FLAG=$(cat /sys/block/vdb/ro)"
# blockdev --setrw asks the kernel to allow writes; a VIRTIO_BLK_F_RO disk
# must still fail them (the kernel refuses, or squib answers IOERR)
blockdev --setrw /dev/vdb 2>/dev/null
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 seek=2 conv=fsync 2>/dev/null; then
	echo "SQUIB-BLOCK-RO-WRITE=accepted"
	rc=1
else
	echo "SQUIB-BLOCK-RO-WRITE=refused"
fi
mount -t ext4 -o ro,noload /dev/vdb /mnt/ro || rc=1
echo "SQUIB-BLOCK-RO-READ=$(head -n 1 /mnt/ro/hello.txt)"
umount /mnt/ro
exit $rc
