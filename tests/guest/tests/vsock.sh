#!/bin/sh
# squib.test=vsock (squib.modules=virtio_mmio,vmw_vsock_virtio_transport):
# the host listens on <uds_path>_6000 and echoes; the host connects to guest
# port 5000 (CONNECT 5000) once and expects an echo. Reports
#   SQUIB-VSOCK-LISTENING=5000
#   SQUIB-VSOCK-GUEST-DIAL=<what the host's echo server sent back>
#   SQUIB-VSOCK-HOST-DIAL=served|failed   the host's connection was echoed
squib-guest-tool vsock-echo 5000 1 &
echo_pid=$!
sleep 1
echo "SQUIB-VSOCK-LISTENING=5000"
echo "SQUIB-VSOCK-GUEST-DIAL=$(squib-guest-tool vsock-dial 2 6000 hello-from-guest)"
rc=0
# the host connects once it has seen LISTENING; give it 60 s
( sleep 60; kill $echo_pid 2>/dev/null ) &
if wait $echo_pid; then
	echo "SQUIB-VSOCK-HOST-DIAL=served"
else
	echo "SQUIB-VSOCK-HOST-DIAL=failed"
	rc=1
fi
exit $rc
