#!/bin/sh
# squib.test=netbench (squib.modules=virtio_mmio,virtio_net): guest -> host
# TCP throughput over eth0 to 169.254.100.1:5001 (the host counts and
# closes), 128 MiB:
#   SQUIB-NET-TX-MIBS=<MiB/s>
#   SQUIB-NET-TX-FRAME-B=<average bytes per frame the device carried>
ip link set eth0 up
ip addr add 169.254.100.2/30 dev eth0
# the first ARP exchange is not part of the figure
ping -c 1 -W 10 169.254.100.1 >/dev/null
s=/sys/class/net/eth0/statistics
p0=$(cat $s/tx_packets) b0=$(cat $s/tx_bytes)
echo "SQUIB-NET-TX-MIBS=$(squib-guest-tool tcp-send 169.254.100.1:5001 128)"
p1=$(cat $s/tx_packets) b1=$(cat $s/tx_bytes)
echo "SQUIB-NET-TX-FRAME-B=$(((b1 - b0) / (p1 - p0)))"
