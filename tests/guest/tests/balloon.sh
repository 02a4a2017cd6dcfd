#!/bin/sh
# squib.test=balloon (squib.modules=virtio_mmio,virtio_balloon): reports
# MemTotal/MemFree (the balloon driver takes inflated pages out of both) every
# second as
#   SQUIB-BALLOON-MEM=<MemTotal kB> <MemFree kB>
# for 90 s (the host stops squib once it has seen what it needs).
echo "SQUIB-BALLOON-DRIVER=$(ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | grep -c virtio)"
i=0
while [ $i -lt 90 ]; do
	echo "SQUIB-BALLOON-MEM=$(awk '/^MemTotal:/ { t = $2 } /^MemFree:/ { f = $2 } END { print t "_" f }' /proc/meminfo)"
	sleep 1
	i=$((i + 1))
done
exit 0
