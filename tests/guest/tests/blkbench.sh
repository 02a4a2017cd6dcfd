#!/bin/sh
# squib.test=blkbench (squib.modules=virtio_mmio,virtio_blk): sequential
# throughput of /dev/vda from inside the guest, 1 MiB requests, cold cache:
#   SQUIB-BLK-READ-MIBS=<MiB/s>    reading squib.blkmib MiB (default 64)
#   SQUIB-BLK-WRITE-MIBS=<MiB/s>   writing as much, fsync included
mib=64
for w in $(cat /proc/cmdline); do
	case $w in squib.blkmib=*) mib=${w#*=} ;; esac
done
echo 3 >/proc/sys/vm/drop_caches
echo "SQUIB-BLK-READ-MIBS=$(squib-guest-tool read-rate /dev/vda "$mib")"
echo "SQUIB-BLK-WRITE-MIBS=$(squib-guest-tool write-rate /dev/vda "$mib")"
