#!/bin/sh
# squib.test=hwrng: reads the virtio entropy device through /dev/hwrng
# (boot with squib.modules=virtio_mmio,virtio_rng) and reports
#   SQUIB-HWRNG-DEVICE=<current hwrng driver>
#   SQUIB-HWRNG=<hex of 32 bytes read>
echo "SQUIB-HWRNG-DEVICE=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
bytes=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
echo "SQUIB-HWRNG=$bytes"
[ ${#bytes} -eq 64 ]
