#!/bin/sh
# squib.test=net (squib.modules=virtio_mmio,virtio_net): eth0 is a virtio-net
# device on a TAP whose host end is 169.254.100.1/30; MMDS (V2) answers at
# 169.254.169.254 on eth0. Reports
#   SQUIB-NET-PING=ok|failed          ping the host
#   SQUIB-NET-TCP=ok|failed           send a line to the host's TCP port 5000
#   SQUIB-MMDS-TOKEN=<length of the V2 token>
#   SQUIB-MMDS-GET=<the value of /latest/meta-data/squib/greeting>
#   SQUIB-MMDS-NOTOKEN=<status line of a GET without a token>
rc=0
ip link set lo up
ip link set eth0 up
ip addr add 169.254.100.2/30 dev eth0
if ping -c 3 -W 5 169.254.100.1 >/dev/null; then
	echo "SQUIB-NET-PING=ok"
else
	echo "SQUIB-NET-PING=failed"
	rc=1
fi
if echo "hello over tcp" | nc -w 10 169.254.100.1 5000; then
	echo "SQUIB-NET-TCP=ok"
else
	echo "SQUIB-NET-TCP=failed"
	rc=1
fi
ip route add 169.254.169.254 dev eth0
# busybox wget cannot PUT: speak HTTP through nc (MMDS closes nothing
# itself, so -w bounds each exchange)
http() {
	printf "$1" | nc -w 3 169.254.169.254 80 | tr -d '\r'
}
token=$(http 'PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n' | sed '1,/^$/d')
echo "SQUIB-MMDS-TOKEN=${#token}"
echo "SQUIB-MMDS-GET=$(http "GET /latest/meta-data/squib/greeting HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token: $token\r\n\r\n" | sed '1,/^$/d')"
echo "SQUIB-MMDS-NOTOKEN=$(http 'GET /latest/meta-data HTTP/1.1\r\n\r\n' | head -n 1 | tr ' ' '_')"
[ ${#token} -gt 0 ] || rc=1
exit $rc
