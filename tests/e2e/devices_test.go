//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// copyFile copies src to a new file in dir and returns its path.
func copyFile(t *testing.T, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// readFromExt4 mounts image read-only through a loop device and returns the
// content of file in it: the host's view of what the guest wrote.
func readFromExt4(t *testing.T, image, file string) string {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,ro", image, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", image, err, out)
	}
	defer exec.Command("umount", mnt).Run()
	b, err := os.ReadFile(filepath.Join(mnt, file))
	if err != nil {
		t.Fatalf("the guest's file: %v", err)
	}
	return string(b)
}

// TestBlockDevices: a guest mounts an ext4 drive and reads a known file,
// writes a file that the host then finds in the image after shutdown, and
// cannot write to a read-only drive; the root drive is on the command line.
func TestBlockDevices(t *testing.T) {
	dir := t.TempDir()
	rw := copyFile(t, env(t, "SQUIB_GUEST_DISK"), dir, "rw.ext4")
	ro := copyFile(t, env(t, "SQUIB_GUEST_DISK"), dir, "ro.ext4")
	g := guest{kernel: env(t, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 128,
		args: "squib.modules=virtio_mmio,virtio_blk,ext4,crc32c_generic squib.test=block",
		extra: map[string]any{"drives": []any{
			map[string]any{"drive_id": "data", "path_on_host": ro, "is_root_device": false, "is_read_only": true},
			map[string]any{"drive_id": "root", "path_on_host": rw, "is_root_device": true, "is_read_only": false, "cache_type": "Writeback"},
		}}}
	r := boot(t, g)
	c := r.s.console
	if cl := c.waitLine(t, "SQUIB-CMDLINE=", bootTimeout); !strings.Contains(cl, "root=/dev/vda rw") {
		t.Errorf("command line %q lacks root=/dev/vda rw", cl)
	}
	if got := strings.TrimPrefix(c.waitLine(t, "SQUIB-BLOCK-READ=", bootTimeout), "SQUIB-BLOCK-READ="); got != "squib test disk" {
		t.Errorf("guest read %q from the drive", got)
	}
	if got := fact(t, c, "BLOCK-WROTE"); got != "ok" {
		t.Errorf("guest write: %s", got)
	}
	if got := fact(t, c, "BLOCK-RO-FLAG"); got != "1" {
		t.Errorf("read-only drive: /sys/block/vdb/ro = %s", got)
	}
	if got := fact(t, c, "BLOCK-RO-WRITE"); got != "refused" {
		t.Errorf("write to the read-only drive: %s", got)
	}
	if got := strings.TrimPrefix(c.waitLine(t, "SQUIB-BLOCK-RO-READ=", bootTimeout), "SQUIB-BLOCK-RO-READ="); got != "squib test disk" {
		t.Errorf("guest read %q from the read-only drive", got)
	}
	c.waitLine(t, "SQUIB-TEST-RESULT=block rc=0", bootTimeout)
	if r.code != 0 {
		t.Fatalf("squib exit code %d", r.code)
	}
	if got := readFromExt4(t, rw, "written.txt"); got != "written by the guest\n" {
		t.Errorf("host reads %q from the guest's file", got)
	}
}

// netnsScript runs squib in a new network namespace holding tap0, the host
// end of the guest's link (169.254.100.1/30). busybox has no `ip tuntap`;
// a full iproute2 has no tunctl.
const netnsScript = `set -e
ip tuntap add dev tap0 mode tap 2>/dev/null || tunctl -t tap0 >/dev/null
ip addr add 169.254.100.1/30 dev tap0
ip link set tap0 up
ip link set lo up
exec "$@"`

// inNetns runs f on an OS thread that has joined pid's network namespace,
// so the sockets f creates live there.
func inNetns(t testing.TB, pid int, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked: it exits with the goroutine instead
		// of going back to the pool in the wrong namespace.
		runtime.LockOSThread()
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// acceptLine listens on TCP port 5000 in pid's network namespace and
// delivers the first line one connection sends (or the accept error).
func acceptLine(t testing.TB, pid int) <-chan string {
	t.Helper()
	got := make(chan string, 1)
	inNetns(t, pid, func() error {
		ln, err := net.Listen("tcp4", ":5000")
		if err != nil {
			return err
		}
		go func() {
			defer ln.Close()
			c, err := ln.Accept()
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			line, _ := bufio.NewReader(c).ReadString('\n')
			got <- line
		}()
		return nil
	})
	return got
}

// echoServer echoes every connection to the Unix socket at path (where a
// guest's vsock connection to the host arrives) until the test ends.
func echoServer(t testing.TB, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

// waitExec waits until pid runs binary (the wrapper has set up and
// exec'd).
func waitExec(t testing.TB, pid int, binary string) {
	t.Helper()
	want, _ := filepath.EvalSymlinks(binary)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == want {
			return
		}
	}
	t.Fatalf("the network namespace wrapper did not exec %s", binary)
}

// TestNetAndMMDS: a guest on a TAP pings the host and sends it a line over
// TCP, then fetches a V2 token and metadata from MMDS through squib's own
// network stack, all inside a network namespace of the sandbox.
func TestNetAndMMDS(t *testing.T) {
	dir := t.TempDir()
	meta := filepath.Join(dir, "metadata.json")
	os.WriteFile(meta, []byte(`{"latest":{"meta-data":{"squib":{"greeting":"hello-mmds"}}}}`), 0o644)
	g := guest{kernel: env(t, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 128,
		args: "squib.modules=virtio_mmio,virtio_net squib.test=net",
		extra: map[string]any{
			"network-interfaces": []any{map[string]any{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:a9:fe:64:02"}},
			"mmds-config":        map[string]any{"version": "V2", "network_interfaces": []string{"eth0"}},
		}}
	s := startGuest(t, []string{"unshare", "-n", "sh", "-c", netnsScript, "sh"}, nil,
		"--no-api", "--config-file", g.config(t), "--metadata", meta)
	waitExec(t, s.cmd.Process.Pid, env(t, "SQUIB_BIN"))
	got := acceptLine(t, s.cmd.Process.Pid)
	c := s.console
	if v := fact(t, c, "NET-PING"); v != "ok" {
		t.Errorf("guest ping of the host: %s", v)
	}
	if v := fact(t, c, "NET-TCP"); v != "ok" {
		t.Errorf("guest TCP to the host: %s", v)
	}
	select {
	case line := <-got:
		if line != "hello over tcp\n" {
			t.Errorf("host received %q over TCP", line)
		}
	case <-time.After(time.Minute):
		t.Error("the host received no TCP connection")
	}
	if v := fact(t, c, "MMDS-TOKEN"); v != "48" {
		t.Errorf("MMDS V2 token length %s, want 48", v)
	}
	if v := fact(t, c, "MMDS-GET"); v != "hello-mmds" {
		t.Errorf("MMDS GET with a token returned %q", v)
	}
	if v := fact(t, c, "MMDS-NOTOKEN"); !strings.HasPrefix(v, "HTTP/1.1_401") {
		t.Errorf("MMDS GET without a token: %q, want a 401", v)
	}
	c.waitLine(t, "SQUIB-TEST-RESULT=net rc=0", bootTimeout)
	if code := s.wait(bootTimeout); code != 0 {
		t.Errorf("squib exit code %d", code)
	}
}

// TestVsock: echo over virtio-vsock in both directions, a guest connection
// to <uds_path>_6000 and a host connection through uds_path with
// CONNECT 5000.
func TestVsock(t *testing.T) {
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	echoServer(t, uds+"_6000")
	g := guest{kernel: env(t, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 128,
		args:  "squib.modules=virtio_mmio,vmw_vsock_virtio_transport squib.test=vsock",
		extra: map[string]any{"vsock": map[string]any{"guest_cid": 3, "uds_path": uds}}}
	// a retry binds uds_path again: the crashed squib left its socket file
	s := startGuest(t, nil, func() { os.Remove(uds) }, "--no-api", "--config-file", g.config(t))
	c := s.console
	c.waitLine(t, "SQUIB-VSOCK-LISTENING=5000", bootTimeout)
	if v := fact(t, c, "VSOCK-GUEST-DIAL"); v != "hello-from-guest" {
		t.Errorf("guest-initiated echo returned %q", v)
	}
	conn, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(conn, "CONNECT 5000\n")
	br := bufio.NewReader(conn)
	ok, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(ok, "OK ") {
		t.Fatalf("CONNECT answer %q, %v", ok, err)
	}
	if port, err := strconv.Atoi(strings.TrimSpace(ok[3:])); err != nil || port < 1<<30 {
		t.Errorf("host port in %q", ok)
	}
	// The echo, then a full close: a half-close does not reach the guest
	// (as in Firecracker), the close does, and ends the guest's server.
	io.WriteString(conn, "hello-from-host")
	echo := make([]byte, len("hello-from-host"))
	io.ReadFull(br, echo)
	conn.Close()
	if string(echo) != "hello-from-host" {
		t.Errorf("host-initiated echo returned %q", echo)
	}
	if v := fact(t, c, "VSOCK-HOST-DIAL"); v != "served" {
		t.Errorf("guest echo server: %s", v)
	}
	c.waitLine(t, "SQUIB-TEST-RESULT=vsock rc=0", bootTimeout)
	if code := s.wait(bootTimeout); code != 0 {
		t.Errorf("squib exit code %d", code)
	}
}

// memLine parses "SQUIB-BALLOON-MEM=<total>_<free>" (kB).
func memLine(l string) (total, free int, ok bool) {
	a, b, found := strings.Cut(strings.TrimPrefix(l, "SQUIB-BALLOON-MEM="), "_")
	t, err1 := strconv.Atoi(a)
	f, err2 := strconv.Atoi(b)
	return t, f, found && err1 == nil && err2 == nil
}

// TestBalloon: inflating the balloon through PATCH /balloon takes memory
// from the guest, and GET /balloon/statistics reports the guest's figures.
func TestBalloon(t *testing.T) {
	g := guest{kernel: env(t, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 256,
		args:  "squib.modules=virtio_mmio,virtio_balloon squib.test=balloon",
		extra: map[string]any{"balloon": map[string]any{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}}}
	s := startGuest(t, nil, nil, "--config-file", g.config(t))
	c := s.console
	_, free0, _ := memLine(c.waitMatch(t, "SQUIB-BALLOON-MEM=", func(l string) bool { _, _, ok := memLine(l); return ok }, bootTimeout))
	if code, body := s.api("PATCH", "/balloon", `{"amount_mib":64}`); code != 204 {
		t.Fatalf("PATCH /balloon: %d %s", code, body)
	}
	// 64 MiB = 65536 kB; allow for the guest's own allocations meanwhile
	c.waitMatch(t, "SQUIB-BALLOON-MEM=", func(l string) bool {
		_, free, ok := memLine(l)
		return ok && free < free0-48*1024
	}, 2*time.Minute)
	var st map[string]any
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := s.api("GET", "/balloon/statistics", "")
		if code != 200 {
			t.Fatalf("GET /balloon/statistics: %d %s", code, body)
		}
		json.Unmarshal([]byte(body), &st)
		if st["actual_mib"] == float64(64) && st["free_memory"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("balloon statistics never showed the inflated balloon: %s", body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if st["target_mib"] != float64(64) || st["total_memory"] == nil {
		t.Errorf("statistics: %v", st)
	}
	// Ctrl-Alt-Del reboots the guest (its init does not trap it), which
	// ends squib; killing squib under a running guest has upset L1 before.
	s.api("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	if code := s.wait(bootTimeout); code != 0 {
		t.Errorf("squib exit code %d", code)
	}
}

// TestDrivePatch: PATCH /drives/{id} after boot swaps the backing file and
// the guest sees the new capacity (config-change interrupt); a rate-limiter
// PATCH is accepted on the running drive.
func TestDrivePatch(t *testing.T) {
	dir := t.TempDir()
	small, big := filepath.Join(dir, "small.img"), filepath.Join(dir, "big.img")
	if err := os.WriteFile(small, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	g := guest{kernel: env(t, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: 128,
		args:  "squib.modules=virtio_mmio,virtio_blk squib.test=blockresize",
		extra: map[string]any{"drives": []any{map[string]any{"drive_id": "data", "path_on_host": small, "is_root_device": false}}}}
	s := startGuest(t, nil, nil, "--config-file", g.config(t))
	c := s.console
	c.waitLine(t, "SQUIB-BLOCK-SIZE=2048", bootTimeout)
	if code, body := s.api("PATCH", "/drives/data", `{"drive_id":"data","rate_limiter":{"bandwidth":{"size":1048576,"refill_time":100}}}`); code != 204 {
		t.Fatalf("PATCH rate_limiter: %d %s", code, body)
	}
	if code, body := s.api("PATCH", "/drives/data", `{"drive_id":"data","path_on_host":"`+big+`"}`); code != 204 {
		t.Fatalf("PATCH path_on_host: %d %s", code, body)
	}
	// the configuration reports the new file and limiter
	if code, body := s.api("GET", "/vm/config", ""); code != 200 || !strings.Contains(body, big) || !strings.Contains(body, `"refill_time":100`) {
		t.Errorf("GET /vm/config after the PATCHes: %d %s", code, body)
	}
	c.waitLine(t, "SQUIB-BLOCK-SIZE=6144", 2*time.Minute)
	c.waitLine(t, "SQUIB-TEST-RESULT=blockresize rc=0", bootTimeout)
	if code := s.wait(bootTimeout); code != 0 {
		t.Errorf("squib exit code %d", code)
	}
}
