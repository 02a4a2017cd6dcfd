#!/bin/sh
# squib.test=snapecho: the snapshot benchmark's guest. It serves vsock echo
# on port 5000 (many connections; with squib.modules=virtio_mmio,
# vmw_vsock_virtio_transport) and echoes each console input line as
#   SQUIB-ECHO=<line>
# (any VMM with a serial console: QEMU too), after reporting
#   SQUIB-SNAP-READY
# The host snapshots it, restores it and times the first echo, then ends it
# (Ctrl+Alt+Del, or killing QEMU).
squib-guest-tool vsock-echo 5000 1000 2>/dev/null &
sleep 1
echo "SQUIB-SNAP-READY"
while read -r line; do
	echo "SQUIB-ECHO=$line"
done
wait
