#!/bin/sh
# squib.test=netbench (squib.modules=virtio_mmio,virtio_net): guest -> host
# TCP throughput over eth0 to 169.254.100.1:5001 (the host counts and
# closes), 128 MiB:
#   SQUIB-NET-TX-MIBS=<MiB/s>
ip link set eth0 up
ip addr add 169.254.100.2/30 dev eth0
# the first ARP exchange is not part of the figure
ping -c 1 -W 10 169.254.100.1 >/dev/null
echo "SQUIB-NET-TX-MIBS=$(squib-guest-tool tcp-send 169.254.100.1:5001 128)"
