#!/bin/sh
# squib.test=blockresize (squib.modules=virtio_mmio,virtio_blk): reports the
# size of vda once a second as
#   SQUIB-BLOCK-SIZE=<512-byte sectors>
# and ends once it has changed (the host swapped the backing file through
# PATCH /drives), or after 120 s.
first=$(cat /sys/block/vda/size)
echo "SQUIB-BLOCK-SIZE=$first"
i=0
while [ $i -lt 120 ]; do
	sleep 1
	now=$(cat /sys/block/vda/size)
	if [ "$now" != "$first" ]; then
		echo "SQUIB-BLOCK-SIZE=$now"
		exit 0
	fi
	i=$((i + 1))
done
exit 1
