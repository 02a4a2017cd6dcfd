#!/bin/sh
# squib.test=blkbench (squib.modules=virtio_mmio,virtio_blk): sequential
# throughput of /dev/vda from inside the guest, 1 MiB O_DIRECT requests:
#   SQUIB-BLK-READ-MIBS=<MiB/s>    reading squib.blkmib MiB (default 64)
#   SQUIB-BLK-WRITE-MIBS=<MiB/s>   writing as much, fsync included
#   SQUIB-BLK-REQ-KIB=<average KiB per request the device saw>
#   SQUIB-BLK-MAX-SEGMENTS=<segments per request the driver allows>
# squib.blkreqkb=N caps requests at N KiB (max_sectors_kb), so that VMMs
# offering different segment limits are compared request for request
mib=64
for w in $(cat /proc/cmdline); do
	case $w in
	squib.blkmib=*) mib=${w#*=} ;;
	squib.blkreqkb=*) echo "${w#*=}" >/sys/block/vda/queue/max_sectors_kb ;;
	esac
done
echo "SQUIB-BLK-READ-MIBS=$(squib-guest-tool read-rate /dev/vda "$mib")"
echo "SQUIB-BLK-WRITE-MIBS=$(squib-guest-tool write-rate /dev/vda "$mib")"
# /sys/block/vda/stat: reads, merged, sectors, ms, writes, merged, sectors, ...
set -- $(cat /sys/block/vda/stat)
echo "SQUIB-BLK-REQ-KIB=$((($3 + $7) / 2 / ($1 + $5)))"
echo "SQUIB-BLK-MAX-SEGMENTS=$(cat /sys/block/vda/queue/max_segments)"
