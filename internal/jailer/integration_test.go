package jailer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The integration tests run the real jailer binary as root, with a small
// static helper (testdata/helper) as the exec file that reports what it
// sees inside the jail. They need root for namespaces, mknod and chown,
// and a writable cgroup hierarchy for the cgroup tests (which skip, saying
// why, without one).

const jailUID, jailGID = 1234, 1234

// failGuard bounds waits for the jailed helper; it is a hang guard.
const failGuard = 10 * time.Second

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	// The helper that --new-pid-ns and --daemonize leave behind is
	// reparented to the test, which can then reap it.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type binaries struct {
	jailer, helper string
}

// needRoot skips without root and builds the jailer and the helper once.
// Both are static (CGO_ENABLED=0): the jail has no libc.
func needRoot(t *testing.T) binaries {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the jailer integration tests need root (mount namespaces, mknod, chown, cgroups)")
	}
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "squib-jailer-test-"); buildErr != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("no go command to build the binaries: %v", err)
			return
		}
		for out, pkg := range map[string]string{"squib-jailer": "github.com/squib-vmm/squib/cmd/squib-jailer", "helper": "./testdata/helper"} {
			cmd := exec.Command(goBin, "build", "-o", filepath.Join(binDir, out), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binaries{jailer: filepath.Join(binDir, "squib-jailer"), helper: filepath.Join(binDir, "helper")}
}

// facts mirrors testdata/helper's report.
type facts struct {
	Args    []string         `json:"args"`
	Env     []string         `json:"env"`
	PID     int              `json:"pid"`
	PPID    int              `json:"ppid"`
	SID     int              `json:"sid"`
	UID     [3]int           `json:"uid"`
	GID     [3]int           `json:"gid"`
	Groups  []int            `json:"groups"`
	Cwd     string           `json:"cwd"`
	Root    []string         `json:"root"`
	Nodes   map[string]*node `json:"nodes"`
	NoFile  [2]uint64        `json:"nofile"`
	FSize   [2]uint64        `json:"fsize"`
	OpenFDs []int            `json:"open_fds"`
	Stdio   []*node          `json:"stdio"`
	CapEff  uint64           `json:"cap_eff"`
}

type node struct {
	Mode  uint32 `json:"mode"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

// jailRun is one jailer process.
type jailRun struct {
	t                  *testing.T
	base, id, root     string
	cmd                *exec.Cmd
	stdoutF, stderrF   *os.File
	exited             chan struct{}
	err                error
	helperPID          int // host PID of the helper once known
	helperIsJailerProc bool
}

// start runs the jailer on the helper with a fresh chroot base; more are
// extra jailer arguments (put "--" and helper arguments last).
func (b binaries) start(t *testing.T, id string, more ...string) *jailRun {
	t.Helper()
	return b.startIn(t, t.TempDir(), id, more...)
}

func (b binaries) startIn(t *testing.T, base, id string, more ...string) *jailRun {
	t.Helper()
	return b.startExec(t, base, id, b.helper, more...)
}

func (b binaries) startExec(t *testing.T, base, id, execFile string, more ...string) *jailRun {
	t.Helper()
	dir := t.TempDir()
	r := &jailRun{t: t, base: base, id: id, root: filepath.Join(base, filepath.Base(execFile), id, "root"), exited: make(chan struct{})}
	args := append([]string{"--id", id, "--exec-file", execFile, "--uid", strconv.Itoa(jailUID), "--gid", strconv.Itoa(jailGID),
		"--chroot-base-dir", base}, more...)
	var err error
	// Files, not pipes: a helper left running keeps its stdout open, and a
	// pipe would keep Wait from returning.
	if r.stdoutF, err = os.Create(filepath.Join(dir, "stdout")); err != nil {
		t.Fatal(err)
	}
	if r.stderrF, err = os.Create(filepath.Join(dir, "stderr")); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(b.jailer, args...)
	r.cmd.Stdout, r.cmd.Stderr = r.stdoutF, r.stderrF
	r.cmd.Env = []string{"SQUIB_JAILER_TEST_SECRET=leak"}
	// A descriptor the jailer inherits must not reach the VMM.
	leak, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	r.cmd.ExtraFiles = []*os.File{leak}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(r.kill)
	return r
}

// wait waits for the jailer process (or the helper it became) to exit and
// returns its exit code, -1 for a signal.
func (r *jailRun) wait() int {
	r.t.Helper()
	select {
	case <-r.exited:
	case <-time.After(failGuard):
		r.t.Fatalf("jailer still running after %v; stderr: %s", failGuard, r.stderr())
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	if r.err != nil {
		r.t.Fatal(r.err)
	}
	return 0
}

func (r *jailRun) stderr() string {
	b, _ := os.ReadFile(r.stderrF.Name())
	return string(b)
}

func (r *jailRun) stdout() string {
	b, _ := os.ReadFile(r.stdoutF.Name())
	return string(b)
}

// facts waits for the helper's report in the jail.
func (r *jailRun) facts() *facts {
	r.t.Helper()
	p := filepath.Join(r.root, "run", "facts.json")
	deadline := time.Now().Add(failGuard)
	for {
		if b, err := os.ReadFile(p); err == nil {
			var f facts
			if err := json.Unmarshal(b, &f); err != nil {
				r.t.Fatalf("facts: %v\n%s", err, b)
			}
			return &f
		}
		select {
		case <-r.exited:
			if code := r.wait(); code != 0 {
				r.t.Fatalf("jailer exit %d before the helper reported; stderr: %s", code, r.stderr())
			}
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no %s after %v; stderr: %s", p, failGuard, r.stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pidFile reads the jail's PID file, which names the helper's host PID.
func (r *jailRun) pidFile() int {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.root, "helper.pid"))
	if err != nil {
		r.t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		r.t.Fatalf("PID file %q: %v", b, err)
	}
	return pid
}

// kill ends a helper left holding and reaps it (a direct child when the
// jailer exec'd in place, else an orphan reparented to the test).
func (r *jailRun) kill() {
	if r.cmd.Process != nil {
		r.cmd.Process.Kill()
	}
	<-r.exited
	if r.helperPID != 0 && !r.helperIsJailerProc {
		syscall.Kill(r.helperPID, syscall.SIGKILL)
		if p, err := os.FindProcess(r.helperPID); err == nil {
			p.Wait()
		}
		r.helperPID = 0
	}
}

// spawned records the host PID of a helper the jailer started as a child.
func (r *jailRun) spawned(pid int) {
	r.helperPID = pid
}

func readlink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// procStatus returns a /proc/<pid>/status field.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// checkJail checks what every successful run gives the helper.
func checkJail(t *testing.T, r *jailRun, f *facts) {
	t.Helper()
	if want := [3]int{jailUID, jailUID, jailUID}; f.UID != want {
		t.Errorf("uids %v, want %v", f.UID, want)
	}
	if want := [3]int{jailGID, jailGID, jailGID}; f.GID != want {
		t.Errorf("gids %v, want %v", f.GID, want)
	}
	if len(f.Groups) != 0 {
		t.Errorf("supplementary groups %v", f.Groups)
	}
	if f.CapEff != 0 {
		t.Errorf("effective capabilities %#x", f.CapEff)
	}
	if len(f.Env) != 0 {
		t.Errorf("environment %v", f.Env)
	}
	if f.Cwd != "/" {
		t.Errorf("cwd %q", f.Cwd)
	}
	if !slices.Equal(f.OpenFDs, []int{0, 1, 2}) {
		t.Errorf("open descriptors %v, want 0 1 2 only", f.OpenFDs)
	}
	slices.Sort(f.Root)
	if want := []string{"dev", "helper", "helper.pid", "run"}; !slices.Equal(f.Root, want) {
		t.Errorf("jail root holds %v, want %v", f.Root, want)
	}
	// argv: Firecracker's added arguments as separate words.
	a := f.Args
	if len(a) < 9 || a[0] != "/helper" || a[1] != "--id" || a[2] != r.id || a[3] != "--start-time-us" ||
		a[5] != "--start-time-cpu-us" || a[7] != "--parent-cpu-time-us" {
		t.Fatalf("argv %q", a)
	}
	for _, i := range []int{4, 6, 8} {
		if _, err := strconv.ParseUint(a[i], 10, 64); err != nil {
			t.Errorf("argv[%d] %q is not a number", i, a[i])
		}
	}
	for _, p := range []string{"/", "/dev", "/dev/net", "/run"} {
		n := f.Nodes[p]
		if n == nil || n.Mode != unix.S_IFDIR|0o700 || n.UID != jailUID || n.GID != jailGID {
			t.Errorf("%s: %+v, want a 0700 directory owned by %d:%d", p, n, jailUID, jailGID)
		}
	}
	if n := f.Nodes["/helper"]; n == nil || n.Mode != unix.S_IFREG|0o755 || n.UID != jailUID || n.GID != jailGID {
		t.Errorf("/helper: %+v", n)
	}
	devs := map[string][2]uint32{"/dev/kvm": {10, 232}, "/dev/net/tun": {10, 200}, "/dev/urandom": {1, 9}}
	if minor, ok := miscMinor("/proc/misc", "userfaultfd"); ok {
		devs["/dev/userfaultfd"] = [2]uint32{10, minor}
	}
	for p, num := range devs {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
			num = [2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}
		}
		n := f.Nodes[p]
		if n == nil || n.Mode != unix.S_IFCHR|0o600 || n.UID != jailUID || n.GID != jailGID || n.Major != num[0] || n.Minor != num[1] {
			t.Errorf("%s: %+v, want a 0600 char device %d:%d owned by the jailed user", p, n, num[0], num[1])
		}
	}
	// The jail as the host sees it.
	if fi, err := os.Stat(filepath.Join(r.root, "helper")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("no copy of the exec file at %s", filepath.Join(r.root, "helper"))
	}
	if _, err := os.Stat(filepath.Join(r.root, "old_root")); err == nil {
		t.Error("old_root was left in the jail")
	}
}

// TestJailInPlace: without --new-pid-ns or --daemonize the jailer becomes
// the VMM (same PID), with the layout, owner, devices, limits, argv and
// sanitised environment and descriptors of Firecracker's jailer, in its
// own mount namespace.
func TestJailInPlace(t *testing.T) {
	b := needRoot(t)
	r := b.start(t, "in-place-1", "--", "--no-api", "hold")
	f := r.facts()
	r.helperIsJailerProc = true
	checkJail(t, r, f)
	if f.PID != r.cmd.Process.Pid {
		t.Errorf("helper PID %d, jailer PID %d: not exec'd in place", f.PID, r.cmd.Process.Pid)
	}
	if got := r.pidFile(); got != f.PID {
		t.Errorf("PID file %d, helper PID %d", got, f.PID)
	}
	if got := f.Args[9:]; !slices.Equal(got, []string{"--no-api", "hold"}) {
		t.Errorf("arguments after -- arrived as %q", got)
	}
	if f.NoFile != [2]uint64{2048, 2048} {
		t.Errorf("RLIMIT_NOFILE %v, want 2048 2048", f.NoFile)
	}
	if f.FSize != [2]uint64{unix.RLIM_INFINITY, unix.RLIM_INFINITY} {
		t.Errorf("RLIMIT_FSIZE %v, want unlimited", f.FSize)
	}
	if got := procStatus(t, f.PID, "Uid"); got != "1234 1234 1234 1234" {
		t.Errorf("Uid: %s", got)
	}
	if readlink(t, fmt.Sprintf("/proc/%d/ns/mnt", f.PID)) == readlink(t, "/proc/self/ns/mnt") {
		t.Error("the helper shares the test's mount namespace")
	}
	if readlink(t, fmt.Sprintf("/proc/%d/ns/pid", f.PID)) != readlink(t, "/proc/self/ns/pid") {
		t.Error("the helper is in another PID namespace without --new-pid-ns")
	}
	// The jail is not visible from the host's mount table (MS_SLAVE).
	if mounts, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(mounts), r.root) {
		t.Errorf("the jail's bind mount leaked into the host's namespace")
	}
	r.kill()
}

// TestJailExitStatus: the exec'd VMM's exit status is the jailer process's.
func TestJailExitStatus(t *testing.T) {
	b := needRoot(t)
	r := b.start(t, "exit-0")
	if code := r.wait(); code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, r.stderr())
	}
	f := r.facts()
	checkJail(t, r, f)
	if !strings.Contains(r.stdout(), `"args":["/helper","--id","exit-0"`) {
		t.Errorf("the helper's stdout is not the jailer's: %q", r.stdout())
	}
}

// TestNewPIDNamespace: --new-pid-ns makes the VMM PID 1 of a new PID
// namespace; the jailer exits 0 and the PID file holds the host PID.
func TestNewPIDNamespace(t *testing.T) {
	b := needRoot(t)
	r := b.start(t, "pidns", "--new-pid-ns", "--", "hold")
	if code := r.wait(); code != 0 {
		t.Fatalf("jailer exit %d; stderr: %s", code, r.stderr())
	}
	host := r.pidFile()
	r.spawned(host)
	f := r.facts()
	checkJail(t, r, f)
	if f.PID != 1 || f.PPID != 0 {
		t.Errorf("PID %d PPID %d in the new namespace, want 1 and 0", f.PID, f.PPID)
	}
	if got, want := procStatus(t, host, "NSpid"), fmt.Sprintf("%d 1", host); got != want {
		t.Errorf("NSpid %q, want %q", got, want)
	}
	if readlink(t, fmt.Sprintf("/proc/%d/ns/pid", host)) == readlink(t, "/proc/self/ns/pid") {
		t.Error("same PID namespace as the test")
	}
	if readlink(t, fmt.Sprintf("/proc/%d/ns/mnt", host)) == readlink(t, "/proc/self/ns/mnt") {
		t.Error("same mount namespace as the test")
	}
	if got := procStatus(t, host, "Uid"); got != "1234 1234 1234 1234" {
		t.Errorf("Uid: %s", got)
	}
	// --start-time-cpu-us is 0: the new process's CPU clock starts there.
	if f.Args[6] != "0" {
		t.Errorf("--start-time-cpu-us %s", f.Args[6])
	}
}

// TestDaemonize: --daemonize leaves the VMM in a new session with stdio on
// /dev/null; the jailer itself exits 0 at once.
func TestDaemonize(t *testing.T) {
	b := needRoot(t)
	for _, tc := range []struct {
		name  string
		extra []string
	}{{"plain", nil}, {"new-pid-ns", []string{"--new-pid-ns"}}} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.start(t, "daemon-"+tc.name, append(tc.extra, "--daemonize", "--", "hold")...)
			if code := r.wait(); code != 0 {
				t.Fatalf("jailer exit %d; stderr: %s", code, r.stderr())
			}
			host := r.pidFile()
			r.spawned(host)
			f := r.facts()
			checkJail(t, r, f)
			for i, n := range f.Stdio {
				if n == nil || n.Mode&unix.S_IFMT != unix.S_IFCHR || n.Major != 1 || n.Minor != 3 {
					t.Errorf("fd %d: %+v, want /dev/null (1:3)", i, n)
				}
			}
			mySID, _ := unix.Getsid(0)
			if sid, _ := unix.Getsid(host); sid != host || sid == mySID {
				t.Errorf("session %d (helper %d, test %d): want a new session the VMM leads", sid, host, mySID)
			}
			if r.stdout() != "" {
				t.Errorf("the daemon wrote to the jailer's stdout: %q", r.stdout())
			}
			if tc.extra != nil && f.PID != 1 {
				t.Errorf("PID %d, want 1", f.PID)
			}
			if tc.extra == nil && f.PID != host {
				t.Errorf("PID %d, PID file %d", f.PID, host)
			}
		})
	}
}

// TestResourceLimits: --resource-limit sets soft and hard limits.
func TestResourceLimits(t *testing.T) {
	b := needRoot(t)
	r := b.start(t, "rlimits", "--resource-limit", "fsize=1048576", "--resource-limit", "no-file=1024")
	if code := r.wait(); code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, r.stderr())
	}
	f := r.facts()
	if f.FSize != [2]uint64{1048576, 1048576} || f.NoFile != [2]uint64{1024, 1024} {
		t.Errorf("fsize %v nofile %v", f.FSize, f.NoFile)
	}
}

// TestNetNS: --netns joins the given network namespace.
func TestNetNS(t *testing.T) {
	b := needRoot(t)
	holder := exec.Command("sleep", "60")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := holder.Start(); err != nil {
		t.Skipf("cannot start a process in a new network namespace: %v", err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	ns := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	r := b.start(t, "netns", "--netns", ns, "--", "hold")
	f := r.facts()
	r.helperIsJailerProc = true
	if got, want := readlink(t, fmt.Sprintf("/proc/%d/ns/net", f.PID)), readlink(t, ns); got != want {
		t.Errorf("helper in %s, want %s", got, want)
	}
	r.kill()
}

// --- cgroups -----------------------------------------------------------------

var cgSeq int

// testCgroupName is a parent cgroup name no one else uses.
func testCgroupName() string {
	cgSeq++
	return fmt.Sprintf("squib-jailer-test-%d-%d", os.Getpid(), cgSeq)
}

// cgroup2Root returns the cgroup2 mount, or skips saying why there is none
// the test can use.
func cgroup2Root(t *testing.T) string {
	t.Helper()
	m, err := readCgroupMounts(procMounts)
	if err != nil {
		t.Skip(err)
	}
	root, err := unifiedMount(m)
	if err != nil {
		t.Skip("no cgroup2 hierarchy is mounted on this machine")
	}
	probe := filepath.Join(root, testCgroupName())
	if err := os.Mkdir(probe, 0o755); err != nil {
		t.Skipf("the cgroup2 hierarchy at %s is not writable: %v", root, err)
	}
	os.Remove(probe)
	return root
}

// v2Props picks properties the unified hierarchy offers, with the value
// each reads back as.
func v2Props(root string) (props []CgroupProperty, readBack []string) {
	b, _ := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	avail := strings.Fields(string(b))
	for _, c := range []struct {
		ctrl, file, value, back string
	}{
		{"memory", "memory.max", "67108864", "67108864"},
		{"cpu", "cpu.max", "50000 100000", "50000 100000"},
		{"pids", "pids.max", "64", "64"},
		{"hugetlb", "hugetlb.2MB.max", "0", "0"},
	} {
		if !slices.Contains(avail, c.ctrl) {
			continue
		}
		if c.ctrl == "hugetlb" {
			if _, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-2048kB"); err != nil {
				continue
			}
		}
		props = append(props, CgroupProperty{c.file, c.value})
		readBack = append(readBack, c.back)
	}
	return props, readBack
}

// keepSubtreeControl restores the root's cgroup.subtree_control after the
// test: the jailer enables controllers all the way down from the root.
func keepSubtreeControl(t *testing.T, root string) {
	p := filepath.Join(root, "cgroup.subtree_control")
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

// removeCgroups removes the given cgroup directories, deepest first, after
// the test.
func removeCgroups(t *testing.T, dirs ...string) {
	t.Cleanup(func() {
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	})
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestCgroupV2: --cgroup on the unified hierarchy creates
// <parent>/<id>, enables the controllers, writes the values and places
// the VMM there.
func TestCgroupV2(t *testing.T) {
	b := needRoot(t)
	root := cgroup2Root(t)
	props, back := v2Props(root)
	if len(props) == 0 {
		t.Skipf("the cgroup2 hierarchy at %s offers none of memory, cpu, pids, hugetlb", root)
	}
	keepSubtreeControl(t, root)
	parent := testCgroupName()
	id := "cgv2"
	removeCgroups(t, filepath.Join(root, parent), filepath.Join(root, parent, id))
	args := []string{"--parent-cgroup", parent}
	// Where cgroup2 is at /sys/fs/cgroup the version is left to detection.
	if root != defaultCgroupMount {
		args = append(args, "--cgroup-version", "2")
	}
	for _, p := range props {
		args = append(args, "--cgroup", p.File+"="+p.Value)
	}
	r := b.start(t, id, append(args, "--", "hold")...)
	f := r.facts()
	r.helperIsJailerProc = true
	checkJail(t, r, f)
	leaf := filepath.Join(root, parent, id)
	for i, p := range props {
		if got, _ := readLine(filepath.Join(leaf, p.File)); got != back[i] {
			t.Errorf("%s = %q, want %q", p.File, got, back[i])
		}
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", f.PID))
	if !strings.Contains(string(cg), "0::/"+parent+"/"+id+"\n") {
		t.Errorf("helper's cgroups:\n%s\nwant 0::/%s/%s", cg, parent, id)
	}
	procs, _ := os.ReadFile(filepath.Join(leaf, "cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(f.PID)) {
		t.Errorf("cgroup.procs %q lacks %d", procs, f.PID)
	}
	r.kill()
}

// TestCgroupV2MoveToParent: with cgroup v2 and no --cgroup, an existing
// parent cgroup receives the VMM; a missing one is not created.
func TestCgroupV2MoveToParent(t *testing.T) {
	b := needRoot(t)
	root := cgroup2Root(t)
	parent := testCgroupName()
	if err := os.Mkdir(filepath.Join(root, parent), 0o755); err != nil {
		t.Fatal(err)
	}
	removeCgroups(t, filepath.Join(root, parent))
	r := b.start(t, "move", "--cgroup-version", "2", "--parent-cgroup", parent, "--", "hold")
	f := r.facts()
	r.helperIsJailerProc = true
	if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", f.PID)); !strings.Contains(string(cg), "0::/"+parent+"\n") {
		t.Errorf("helper's cgroups:\n%s\nwant 0::/%s", cg, parent)
	}
	r.kill()

	missing := testCgroupName()
	r = b.start(t, "nomove", "--cgroup-version", "2", "--parent-cgroup", missing)
	if code := r.wait(); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr())
	}
	if exists(filepath.Join(root, missing)) {
		t.Errorf("the jailer created %s", missing)
		os.Remove(filepath.Join(root, missing))
	}
}

// v1Root returns the mount of a cgroup v1 controller or skips.
func v1Root(t *testing.T, ctrl string) string {
	t.Helper()
	m, err := readCgroupMounts(procMounts)
	if err != nil {
		t.Skip(err)
	}
	for _, e := range m {
		if !e.v2 && slices.Contains(e.options, ctrl) {
			probe := filepath.Join(e.dir, testCgroupName())
			if err := os.Mkdir(probe, 0o755); err != nil {
				t.Skipf("the cgroup v1 %s hierarchy at %s is not writable: %v", ctrl, e.dir, err)
			}
			os.Remove(probe)
			return e.dir
		}
	}
	t.Skipf("no cgroup v1 %s hierarchy is mounted on this machine", ctrl)
	return ""
}

// TestCgroupV1: --cgroup on v1 hierarchies, a nested parent, cpuset
// values inherited down the new parents so that the VMM may join.
func TestCgroupV1(t *testing.T) {
	b := needRoot(t)
	mem, cpuset := v1Root(t, "memory"), v1Root(t, "cpuset")
	parent := testCgroupName()
	id := "cgv1"
	for _, r := range []string{mem, cpuset} {
		removeCgroups(t, filepath.Join(r, parent), filepath.Join(r, parent, "inner"), filepath.Join(r, parent, "inner", id))
	}
	r := b.start(t, id, "--cgroup-version", "1", "--parent-cgroup", parent+"/inner",
		"--cgroup", "memory.limit_in_bytes=67108864", "--cgroup", "cpuset.cpus=0", "--cgroup", "cpuset.mems=0", "--", "hold")
	f := r.facts()
	r.helperIsJailerProc = true
	checkJail(t, r, f)
	for file, want := range map[string]string{
		filepath.Join(mem, parent, "inner", id, "memory.limit_in_bytes"): "67108864",
		filepath.Join(cpuset, parent, "inner", id, "cpuset.cpus"):        "0",
		filepath.Join(cpuset, parent, "inner", id, "cpuset.mems"):        "0",
	} {
		if got, _ := readLine(file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// The new parents got the root's cpuset values.
	rootCPUs, _ := readLine(filepath.Join(cpuset, "cpuset.cpus"))
	if got, _ := readLine(filepath.Join(cpuset, parent, "inner", "cpuset.cpus")); got != rootCPUs {
		t.Errorf("parent cpuset.cpus %q, want the root's %q", got, rootCPUs)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", f.PID))
	for _, want := range []string{":memory:/" + parent + "/inner/" + id + "\n", ":cpuset:/" + parent + "/inner/" + id + "\n"} {
		if !strings.Contains(string(cg), want) {
			t.Errorf("helper's cgroups:\n%s\nlack %q", cg, want)
		}
	}
	r.kill()
}

// someCgroup returns --cgroup arguments for a property of whatever
// hierarchy is usable (v2 preferred), and the cgroup directories a run
// with parent and id creates, or skips.
func someCgroup(t *testing.T, parent, id, value string) (args []string, dirs []string) {
	t.Helper()
	if m, err := readCgroupMounts(procMounts); err == nil {
		if root, err := unifiedMount(m); err == nil && os.Mkdir(filepath.Join(root, parent), 0o755) == nil {
			os.Remove(filepath.Join(root, parent))
			if props, _ := v2Props(root); len(props) > 0 {
				keepSubtreeControl(t, root)
				v := props[0].Value
				if value != "" {
					v = value
				}
				return []string{"--cgroup-version", "2", "--cgroup", props[0].File + "=" + v},
					[]string{filepath.Join(root, parent), filepath.Join(root, parent, id)}
			}
		}
		for _, e := range m {
			if !e.v2 && slices.Contains(e.options, "memory") && os.Mkdir(filepath.Join(e.dir, parent), 0o755) == nil {
				os.Remove(filepath.Join(e.dir, parent))
				v := "67108864"
				if value != "" {
					v = value
				}
				return []string{"--cgroup-version", "1", "--cgroup", "memory.limit_in_bytes=" + v},
					[]string{filepath.Join(e.dir, parent), filepath.Join(e.dir, parent, id)}
			}
		}
	}
	t.Skip("no writable cgroup hierarchy with a usable controller on this machine")
	return nil, nil
}

// emptyDir fails unless dir holds exactly the names given.
func dirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	var got []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if p != dir && err == nil {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
		}
		return nil
	})
	slices.Sort(got)
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// TestFailureLeavesNothing: a failing step prints a message naming the
// step and path, exits 1, and removes every directory, file, device node
// and cgroup the run made, also after the process joined its cgroups,
// pivoted into the jail, or dropped its privileges.
func TestFailureLeavesNothing(t *testing.T) {
	b := needRoot(t)

	t.Run("bad cgroup value", func(t *testing.T) {
		parent, id := testCgroupName(), "badcg"
		args, dirs := someCgroup(t, parent, id, "not-a-number")
		removeCgroups(t, dirs...)
		r := b.start(t, id, append(args, "--parent-cgroup", parent)...)
		if code := r.wait(); code != ExitFailure {
			t.Fatalf("exit %d", code)
		}
		if msg := r.stderr(); !strings.HasPrefix(msg, "Failed to write to "+dirs[1]+"/") || !strings.Contains(msg, "Invalid argument (os error 22)") {
			t.Errorf("stderr %q", msg)
		}
		dirHolds(t, r.base)
		for _, d := range dirs {
			if exists(d) {
				t.Errorf("cgroup %s left behind", d)
			}
		}
	})

	t.Run("after cgroups and pivot_root", func(t *testing.T) {
		parent, id := testCgroupName(), "latefail"
		args, dirs := someCgroup(t, parent, id, "")
		removeCgroups(t, dirs...)
		base := t.TempDir()
		root := filepath.Join(base, "helper", id, "root")
		// A file where the jailer wants to mknod /dev/kvm: the run fails at
		// its last step before exec.
		os.MkdirAll(filepath.Join(root, "dev"), 0o755)
		os.WriteFile(filepath.Join(root, "dev", "kvm"), nil, 0o644)
		r := b.startIn(t, base, id, append(args, "--parent-cgroup", parent)...)
		if code := r.wait(); code != ExitFailure {
			t.Fatalf("exit %d", code)
		}
		want := "Failed to create /dev/kvm via mknod inside the jail: File exists (os error 17) (jail root " + root + ")\n"
		if msg := r.stderr(); msg != want {
			t.Errorf("stderr %q, want %q", msg, want)
		}
		// What existed stays; what the run made is gone.
		dirHolds(t, base, "helper", "helper/"+id, "helper/"+id+"/root", "helper/"+id+"/root/dev", "helper/"+id+"/root/dev/kvm")
		for _, d := range dirs {
			if exists(d) {
				t.Errorf("cgroup %s left behind (was the process moved back?)", d)
			}
		}
	})

	script := filepath.Join(t.TempDir(), "vmm.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	for _, extra := range [][]string{nil, {"--new-pid-ns"}, {"--daemonize"}} {
		t.Run("exec fails "+strings.Join(extra, ""), func(t *testing.T) {
			// The jail has no /bin/sh: execve fails after the privilege drop
			// (in place) or in the child.
			r := b.startExec(t, t.TempDir(), "execfail", script, extra...)
			if code := r.wait(); code != ExitFailure {
				t.Fatalf("exit %d", code)
			}
			if msg := r.stderr(); msg != "Failed to exec into Firecracker: No such file or directory (os error 2) (/vmm.sh)\n" {
				t.Errorf("stderr %q", msg)
			}
			dirHolds(t, r.base)
		})
	}

	t.Run("hard link", func(t *testing.T) {
		base := t.TempDir()
		root := filepath.Join(base, "helper", "hl", "root")
		os.MkdirAll(root, 0o755)
		victim := filepath.Join(base, "victim")
		os.WriteFile(victim, []byte("precious"), 0o644)
		if err := os.Link(victim, filepath.Join(root, "helper")); err != nil {
			t.Fatal(err)
		}
		r := b.startIn(t, base, "hl")
		if code := r.wait(); code != ExitFailure {
			t.Fatalf("exit %d", code)
		}
		if msg := r.stderr(); msg != "Detected hard link at: "+filepath.Join(root, "helper")+"\n" {
			t.Errorf("stderr %q", msg)
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Errorf("the linked file became %q", b)
		}
		dirHolds(t, base, "victim", "helper", "helper/hl", "helper/hl/root", "helper/hl/root/helper")
	})

	t.Run("bad netns", func(t *testing.T) {
		r := b.start(t, "nons", "--netns", "/nonexistent/netns")
		if code := r.wait(); code != ExitFailure {
			t.Fatalf("exit %d", code)
		}
		if msg := r.stderr(); msg != "Failed to open file /nonexistent/netns: No such file or directory (os error 2)\n" {
			t.Errorf("stderr %q", msg)
		}
		dirHolds(t, r.base)
	})

	t.Run("bad resource limit", func(t *testing.T) {
		// Above the kernel's nr_open: setrlimit refuses even root.
		r := b.start(t, "norlimit", "--resource-limit", "no-file=18446744073709551615")
		if code := r.wait(); code != ExitFailure {
			t.Fatalf("exit %d", code)
		}
		if msg := r.stderr(); msg != "Failed to set limit for resource: number of file descriptors: Operation not permitted (os error 1)\n" {
			t.Errorf("stderr %q", msg)
		}
		dirHolds(t, r.base)
	})

	t.Run("unavailable controller", func(t *testing.T) {
		r := b.start(t, "noctl", "--cgroup", "nosuchcontroller.max=1")
		if code := r.wait(); code != ExitFailure {
			t.Fatalf("exit %d", code)
		}
		msg := r.stderr()
		if msg != "Controller nosuchcontroller is unavailable\n" && !strings.HasPrefix(msg, "Hierarchy not found") {
			t.Errorf("stderr %q", msg)
		}
		dirHolds(t, r.base)
	})
}
