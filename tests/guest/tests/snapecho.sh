#!/bin/sh
# squib.test=snapecho (squib.modules=virtio_mmio,vmw_vsock_virtio_transport):
# the snapshot benchmark's guest. It serves vsock echo on port 5000 (many
# connections) and reports SQUIB-SNAP-READY; the host snapshots it, restores
# it and times the first echo, then ends it with Ctrl+Alt+Del.
squib-guest-tool vsock-echo 5000 1000 &
sleep 1
echo "SQUIB-SNAP-READY"
wait
