#!/bin/sh
# squib.test=devices: lists the devices the guest kernel found, as
#   SQUIB-VIRTIO=<bus id> device=<virtio device id> driver=<driver or none>
#   SQUIB-BLOCK=<name> sectors=<512-byte sectors> ro=<0|1>
#   SQUIB-NETDEV=<name> mac=<address>
# Drivers are modules: boot with squib.modules=virtio_mmio,virtio_blk,... to
# have them bound. Virtio device ids: 1 net, 2 block, 4 rng, 5 balloon,
# 19 vsock, 24 mem, 27 pmem.
for d in /sys/bus/virtio/devices/*; do
	[ -e "$d" ] || continue
	drv=none
	[ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
	echo "SQUIB-VIRTIO=$(basename "$d") device=$(($(cat "$d/device"))) driver=$drv"
done
for b in /sys/block/*; do
	[ -e "$b" ] || continue
	case $(basename "$b") in loop* | ram*) continue ;; esac
	echo "SQUIB-BLOCK=$(basename "$b") sectors=$(cat "$b/size") ro=$(cat "$b/ro")"
done
for n in /sys/class/net/*; do
	[ -e "$n" ] || continue
	[ "$(basename "$n")" = lo ] && continue
	echo "SQUIB-NETDEV=$(basename "$n") mac=$(cat "$n/address")"
done
exit 0
