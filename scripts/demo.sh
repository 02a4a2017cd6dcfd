#!/usr/bin/env bash
# Drives squib over its API socket with curl, the way a Firecracker user
# would, and shows every answer, errors included. The "kernel" here is a
# placeholder file, so InstanceStart answers with the loader's error; `make
# demo` boots a real guest.
set -euo pipefail
bin=${1:-bin/squib}
work=$(mktemp -d)
sock=$work/squib.sock
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" --api-sock "$sock" --id demo-vm --log-path "$work/squib.log" --level Info &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

api() { # METHOD PATH [BODY]
  echo "\$ curl -X $1 http://localhost$2 ${3:+-d '$3'}"
  if [ -n "${3:-}" ]; then
    curl -sS --unix-socket "$sock" -X "$1" "http://localhost$2" -H 'Content-Type: application/json' -d "$3" -w '  -> HTTP %{http_code}\n'
  else
    curl -sS --unix-socket "$sock" -X "$1" "http://localhost$2" -w '  -> HTTP %{http_code}\n'
  fi
  echo
}

truncate -s 64M "$work/rootfs.ext4"
printf 'not a real kernel' > "$work/vmlinux"

api GET /
api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 256}'
api PUT /boot-source "{\"kernel_image_path\": \"$work/vmlinux\", \"boot_args\": \"console=ttyS0 reboot=k panic=1\"}"
api PUT /drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$work/rootfs.ext4\", \"is_root_device\": true, \"is_read_only\": false}"
api PUT /drives/rootfs '{"drive_id": "rootfs", "path_on_host": "/nonexistent", "is_root_device": true}'
api PUT /mmds '{"latest": {"meta-data": {"instance-id": "demo-vm"}}}'
api GET /vm/config
api PUT /actions '{"action_type": "InstanceStart"}'
api GET /

echo "--- squib's log ---"
cat "$work/squib.log"
