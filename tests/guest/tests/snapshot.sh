#!/bin/sh
# squib.test=snapshot (squib.modules=virtio_mmio,virtio_blk,ext4,
# crc32c_generic,virtio_net,vmw_vsock_virtio_transport): the guest of the
# snapshot tests. It sets up its devices, starts a counter on the console
#   SQUIB-COUNT=<n>                 every 0.5 s of guest time
# and a vsock echo server on port 5000, then reports
#   SQUIB-SNAP-READY
# and waits: the host pauses, snapshots, restores into a new squib and
# connects to port 5000 (CONNECT 5000); once that echo is served the guest
# checks its devices and reports
#   SQUIB-SNAP-VSOCK-HOST=served
#   SQUIB-SNAP-DATE=<the guest's wall clock, seconds since the epoch>
#   SQUIB-SNAP-DISK-OLD=<the file written before the snapshot>
#   SQUIB-SNAP-DISK=ok|failed       write, sync and read back a new file
#   SQUIB-SNAP-PING=ok|failed       ping the host
#   SQUIB-SNAP-TCP=ok|failed        a line to the host's TCP port 5000
#   SQUIB-SNAP-MMDS=<the value of /latest/meta-data/squib/greeting>
#   SQUIB-SNAP-VSOCK-GUEST=<the host's echo on port 6000>
# and powers off.
rc=0
ip link set lo up
ip link set eth0 up
ip addr add 169.254.100.2/30 dev eth0
ip route add 169.254.169.254 dev eth0
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || rc=1
echo "written before the snapshot" >/mnt/before.txt
sync
(
	n=0
	while :; do
		n=$((n + 1))
		echo "SQUIB-COUNT=$n"
		sleep 0.5
	done
) &
squib-guest-tool vsock-echo 5000 1 &
echo_pid=$!
sleep 1
echo "SQUIB-SNAP-READY"
if wait $echo_pid; then
	echo "SQUIB-SNAP-VSOCK-HOST=served"
else
	echo "SQUIB-SNAP-VSOCK-HOST=failed"
	rc=1
fi
echo "SQUIB-SNAP-DATE=$(date +%s)"
echo "SQUIB-SNAP-DISK-OLD=$(tr ' ' '_' </mnt/before.txt)"
if echo "written after the restore" >/mnt/after.txt && sync && [ "$(cat /mnt/after.txt)" = "written after the restore" ]; then
	echo "SQUIB-SNAP-DISK=ok"
else
	echo "SQUIB-SNAP-DISK=failed"
	rc=1
fi
if ping -c 3 -W 5 169.254.100.1 >/dev/null; then
	echo "SQUIB-SNAP-PING=ok"
else
	echo "SQUIB-SNAP-PING=failed"
	rc=1
fi
if echo "hello after restore" | nc -w 10 169.254.100.1 5000; then
	echo "SQUIB-SNAP-TCP=ok"
else
	echo "SQUIB-SNAP-TCP=failed"
	rc=1
fi
http() {
	printf "$1" | nc -w 3 169.254.169.254 80 | tr -d '\r'
}
token=$(http 'PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n' | sed '1,/^$/d')
echo "SQUIB-SNAP-MMDS=$(http "GET /latest/meta-data/squib/greeting HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token: $token\r\n\r\n" | sed '1,/^$/d')"
echo "SQUIB-SNAP-VSOCK-GUEST=$(squib-guest-tool vsock-dial 2 6000 hello-after-restore)"
umount /mnt
exit $rc
