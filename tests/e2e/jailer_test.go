//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The jailed user and the limits TestJailer sets.
const (
	jailUID       = 1234
	jailMemoryMax = "536870912"     // 512 MiB: the 128 MiB guest and squib fit
	jailCPUMax    = "150000 100000" // 1.5 CPUs
)

// jailedSquib is one squib started by squib-jailer.
type jailedSquib struct {
	t        *testing.T
	id, root string // the jail's host path
	leaf     string // its cgroup
	console  *console
	pid      int // squib's host PID
	exited   chan struct{}
	code     int
}

// TestJailer runs squib as production Firecracker users run firecracker:
// under the jailer, in a chroot with a new PID namespace, as uid/gid 1234,
// in a cgroup v2 with memory.max and cpu.max, the kernel, initramfs and
// config file inside the jail. The guest holds while the test checks the
// process and its cgroup from outside, then Ctrl+Alt+Del over the API
// socket in the jail ends it and squib exits 0.
func TestJailer(t *testing.T) {
	jailer, bin := env(t, "SQUIB_JAILER"), env(t, "SQUIB_BIN")
	if os.Geteuid() != 0 {
		t.Skip("the jailer needs root")
	}
	ctrls, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil || !slices.Contains(strings.Fields(string(ctrls)), "memory") || !slices.Contains(strings.Fields(string(ctrls)), "cpu") {
		t.Skipf("needs cgroup v2 at /sys/fs/cgroup with the memory and cpu controllers (cgroup.controllers: %q, %v)", ctrls, err)
	}
	// With --new-pid-ns the jailer exits once squib runs; squib, orphaned,
	// comes to the test, which can then reap it and read its exit status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	keepRootSubtreeControl(t)

	for attempt := 1; ; attempt++ {
		j := startJailed(t, jailer, bin, fmt.Sprintf("jailer-e2e-%d", attempt))
		held := j.waitHold()
		if held {
			j.checkWhileRunning()
			j.ctrlAltDel()
		}
		code := j.wait(bootTimeout)
		log, _ := os.ReadFile(filepath.Join(j.root, "squib.log"))
		flake := !held && (code == -1 || nestedCrash(string(log)))
		if flake && attempt < 3 && os.Getenv("SQUIB_TEST_MODE") == "sandbox" {
			t.Logf("attempt %d: the guest failed under nested virtualization (exit %d); retrying. Log:\n%s\nConsole:\n%s", attempt, code, log, j.console.text())
			continue
		}
		if !held {
			t.Fatalf("the guest never held (squib exit %d). Log:\n%s\nConsole:\n%s", code, log, j.console.text())
		}
		if code != 0 {
			t.Errorf("squib exit %d after Ctrl+Alt+Del, want 0", code)
		}
		if !strings.Contains(string(log), "Firecracker exiting successfully") {
			t.Errorf("the log in the jail lacks the clean-exit line:\n%s", log)
		}
		return
	}
}

// startJailed builds the jail's content, runs the jailer and returns once
// the jailer has started squib and exited.
func startJailed(t *testing.T, jailer, bin, id string) *jailedSquib {
	t.Helper()
	base := t.TempDir()
	j := &jailedSquib{t: t, id: id, root: filepath.Join(base, filepath.Base(bin), id, "root"), console: newConsole(), exited: make(chan struct{})}
	if err := os.MkdirAll(j.root, 0o755); err != nil {
		t.Fatal(err)
	}
	// What the VM needs goes into the jail beforehand, readable by the
	// jailed user: hard links where the file system allows, else copies.
	linkOrCopy(t, env(t, "SQUIB_GUEST_KERNEL"), filepath.Join(j.root, "vmlinuz"))
	linkOrCopy(t, env(t, "SQUIB_GUEST_INITRD"), filepath.Join(j.root, "initrd.cpio.gz"))
	cfg, _ := json.Marshal(map[string]any{
		"boot-source": map[string]any{
			"kernel_image_path": "/vmlinuz",
			"initrd_path":       "/initrd.cpio.gz",
			"boot_args":         "console=ttyS0 reboot=k panic=1 quiet squib.test=hold",
		},
		"drives":         []any{},
		"machine-config": map[string]any{"vcpu_count": 1, "mem_size_mib": 128},
	})
	if err := os.WriteFile(filepath.Join(j.root, "vm.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}

	parent := fmt.Sprintf("squib-e2e-%d", os.Getpid())
	j.leaf = filepath.Join("/sys/fs/cgroup", parent, id)
	t.Cleanup(func() { // after squib is gone (cleanups run last first)
		os.Remove(j.leaf)
		os.Remove(filepath.Dir(j.leaf))
	})

	argv := []string{jailer, "--id", id, "--exec-file", bin,
		"--uid", strconv.Itoa(jailUID), "--gid", strconv.Itoa(jailUID),
		"--chroot-base-dir", base, "--new-pid-ns",
		"--parent-cgroup", parent,
		"--cgroup", "memory.max=" + jailMemoryMax, "--cgroup", "cpu.max=" + jailCPUMax,
		"--", "--config-file", "/vm.json", "--log-path", "/squib.log", "--level", "Debug"}
	if rootIsInitramfs() {
		// pivot_root cannot move the initramfs (L1's /): give the jailer a
		// root that is a bind mount, in a mount namespace of its own.
		newRoot := t.TempDir()
		argv = append([]string{"unshare", "-m", "sh", "-c",
			`r=$1; shift; mount --make-rprivate / && mount --rbind / "$r" && exec chroot "$r" "$@"`, "sh", newRoot}, argv...)
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { io.Copy(j.console, rd); j.console.close() }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = wr, wr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(j.root, "squib.log"))
			t.Logf("jail %s: squib log:\n%s\nconsole:\n%s", j.root, log, j.console.text())
		}
	})
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, j.console.text())
	}
	b, err := os.ReadFile(filepath.Join(j.root, filepath.Base(bin)+".pid"))
	if err != nil {
		t.Fatalf("the jailer wrote no PID file: %v\n%s", err, j.console.text())
	}
	if j.pid, err = strconv.Atoi(string(b)); err != nil {
		t.Fatalf("PID file %q", b)
	}
	// squib is the test's child now (subreaper): wait for it.
	p, err := os.FindProcess(j.pid)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(j.exited)
		st, err := p.Wait()
		switch {
		case err != nil:
			j.code = -2
		case st.Exited():
			j.code = st.ExitCode()
		default:
			j.code = -1
		}
	}()
	t.Cleanup(func() {
		select {
		case <-j.exited:
		default:
			p.Kill()
			<-j.exited
		}
	})
	return j
}

// waitHold waits for the guest's SQUIB-GUEST-HOLD line; false if squib
// exited or the guest made no progress first.
func (j *jailedSquib) waitHold() bool {
	limit := bootTimeout
	if os.Getenv("SQUIB_TEST_MODE") == "sandbox" {
		limit = sandboxHang
	}
	got := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			if strings.Contains(j.console.text(), "SQUIB-GUEST-HOLD") {
				got <- true
				return
			}
			select {
			case <-j.exited:
				got <- strings.Contains(j.console.text(), "SQUIB-GUEST-HOLD")
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		got <- false
	}()
	if <-got {
		return true
	}
	select {
	case <-j.exited:
	default:
		// No progress: end it (the retry, if any, starts afresh).
		unix.Kill(j.pid, unix.SIGKILL)
	}
	return false
}

// checkWhileRunning looks at the running squib from outside the jail.
func (j *jailedSquib) checkWhileRunning() {
	t := j.t
	t.Helper()
	for file, want := range map[string]string{"memory.max": jailMemoryMax, "cpu.max": jailCPUMax} {
		b, err := os.ReadFile(filepath.Join(j.leaf, file))
		if got := strings.TrimSpace(string(b)); err != nil || got != want {
			t.Errorf("%s/%s = %q (%v), want %q", j.leaf, file, got, err, want)
		}
	}
	procs, _ := os.ReadFile(filepath.Join(j.leaf, "cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(j.pid)) {
		t.Errorf("squib (PID %d) is not in %s: cgroup.procs %q", j.pid, j.leaf, procs)
	}
	if mem, err := os.ReadFile(filepath.Join(j.leaf, "memory.current")); err == nil {
		t.Logf("memory.current of the jailed VM: %s bytes", strings.TrimSpace(string(mem)))
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", j.pid))
	if err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{
		"Uid":   "1234 1234 1234 1234",
		"Gid":   "1234 1234 1234 1234",
		"NSpid": fmt.Sprintf("%d 1", j.pid), // PID 1 of its namespace
	} {
		if got := statusField(string(status), field); got != want {
			t.Errorf("/proc/%d/status %s: %q, want %q", j.pid, field, got, want)
		}
	}
	mine, _ := os.Readlink("/proc/self/ns/mnt")
	if theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", j.pid)); theirs == mine {
		t.Error("squib shares the test's mount namespace")
	}
	// What the jailer made, from the host's side.
	for _, p := range []string{"dev/kvm", "dev/net/tun", "run/firecracker.socket", filepath.Base(env(t, "SQUIB_BIN"))} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(j.root, p), &st); err != nil || st.Uid != jailUID {
			t.Errorf("%s in the jail: %v, owner %d", p, err, st.Uid)
		}
	}
	if code, body := j.api("GET", "/", ""); code != 200 || !strings.Contains(body, `"state":"Running"`) || !strings.Contains(body, `"id":"`+j.id+`"`) {
		t.Errorf("GET / over the jail's socket: %d %s", code, body)
	}
}

func (j *jailedSquib) ctrlAltDel() {
	if code, body := j.api("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`); code != 204 {
		j.t.Fatalf("SendCtrlAltDel: %d %s", code, body)
	}
}

// api talks to squib over <jail>/run/firecracker.socket, the default API
// socket as the jailed squib sees it.
func (j *jailedSquib) api(method, path, body string) (int, string) {
	j.t.Helper()
	sock := filepath.Join(j.root, "run", "firecracker.socket")
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		j.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// wait waits for squib's exit status (-1: killed by a signal).
func (j *jailedSquib) wait(timeout time.Duration) int {
	select {
	case <-j.exited:
	case <-time.After(timeout):
		j.t.Fatalf("squib still running after %v; console:\n%s", timeout, j.console.text())
	}
	return j.code
}

func statusField(status, field string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// linkOrCopy puts src at dst, world-readable: a hard link when both are on
// one file system (the usual production set-up), else a copy.
func linkOrCopy(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.Link(src, dst); err == nil {
		return
	} else if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EPERM) {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// rootIsInitramfs reports whether / is the initial ramfs (as in the
// sandbox's L1), which pivot_root cannot move.
func rootIsInitramfs() bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[1] == "/" && f[2] == "rootfs" {
			return true
		}
	}
	return false
}

// keepRootSubtreeControl undoes, after the test, the controllers the
// jailer enabled in the root cgroup's subtree_control.
func keepRootSubtreeControl(t *testing.T) {
	p := "/sys/fs/cgroup/cgroup.subtree_control"
	before, _ := os.ReadFile(p)
	t.Cleanup(func() {
		after, _ := os.ReadFile(p)
		for _, c := range strings.Fields(string(after)) {
			if !slices.Contains(strings.Fields(string(before)), c) {
				os.WriteFile(p, []byte("-"+c), 0)
			}
		}
	})
}
