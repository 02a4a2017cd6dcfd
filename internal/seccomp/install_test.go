package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv names the scenario a re-executed test binary runs instead of
// the tests: a filter is for life, so each install happens in a child.
const childEnv = "SQUIB_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	if s := os.Getenv(childEnv); s != "" {
		os.Exit(child(s))
	}
	os.Exit(m.Run())
}

// child runs one scenario and returns the exit code.
func child(scenario string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		return 3
	}
	// no core file when the test kills the child on purpose
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})

	var js string
	switch scenario {
	case "errno":
		js = file(`"allow"`, `{"errno": 1}`, `{"syscall": "getppid"}`)
	case "kill":
		js = file(`"allow"`, `"kill_process"`, `{"syscall": "getppid"}`)
	case "trap":
		js = file(`"allow"`, `"trap"`, `{"syscall": "getppid"}`)
	case "trap-blocked-report":
		// the listener's own log write is trapped too: the guard must end it
		js = file(`"allow"`, `"trap"`, `{"syscall": "getppid"}`, `{"syscall": "write"}`)
	case "default", "default-bad":
	default:
		return fail("unknown scenario %q", scenario)
	}
	f := Default()
	if js != "" {
		var err error
		if f, err = Parse([]byte(js)); err != nil {
			return fail("%v", err)
		}
	}
	prog, err := f.Compile()
	if err != nil {
		return fail("%v", err)
	}

	// A thread that exists before Install and must get the filter too.
	calls := make(chan func(), 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		for fn := range calls {
			fn()
			done <- struct{}{}
		}
	}()
	onOldThread := func(fn func()) {
		calls <- fn
		<-done
	}

	if err := Install(prog); err != nil {
		return fail("Install: %v", err)
	}
	getppid := func() error {
		_, _, e := unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	}
	switch scenario {
	case "errno":
		var errOld error
		onOldThread(func() { errOld = getppid() })
		errNew := getppid()
		fmt.Printf("getppid: old thread %v, installing thread %v\n", errOld, errNew)
		if errOld != unix.EPERM || errNew != unix.EPERM {
			return fail("getppid not refused with EPERM")
		}
	case "kill", "trap", "trap-blocked-report", "default-bad":
		onOldThread(func() { getppid() })
		return fail("still alive after getppid")
	case "default":
		if err := workload(); err != nil {
			return fail("workload: %v", err)
		}
	}
	fmt.Println("child: ok")
	return 0
}

// workload exercises what the Go runtime does under squib: goroutines on
// many threads, channels, timers, GC and returning memory to the OS, locked
// threads that exit, and file I/O on a file the parent made.
func workload() error {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%4 == 0 {
				runtime.LockOSThread() // never unlocked: the thread exits
			}
			var keep [][]byte
			for j := range 200 {
				keep = append(keep, make([]byte, 1<<(10+j%8)))
				if j%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			_ = keep
		}()
	}
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	for i := range 1000 {
		ping <- i
		if <-pong != i+1 {
			errs <- errors.New("ping-pong")
		}
	}
	close(ping)
	timers := make(chan struct{}, 100)
	for i := range 100 {
		time.AfterFunc(time.Duration(i%10)*time.Millisecond, func() { timers <- struct{}{} })
	}
	tk := time.NewTicker(time.Millisecond)
	for range 5 {
		<-tk.C
	}
	tk.Stop()
	for range 100 {
		<-timers
	}
	wg.Wait()
	runtime.GC()
	debug.FreeOSMemory()

	path := os.Getenv("SQUIB_SECCOMP_TEST_FILE")
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	msg := []byte("squib seccomp workload\n")
	if _, err := fh.WriteAt(msg, 0); err != nil {
		return err
	}
	if err := unix.Fdatasync(int(fh.Fd())); err != nil { // squib's block flush; it never fsyncs
		return err
	}
	got := make([]byte, len(msg))
	if _, err := fh.ReadAt(got, 0); err != nil || !bytes.Equal(got, msg) {
		return fmt.Errorf("read back %q, %v", got, err)
	}
	if _, err := fh.Stat(); err != nil {
		return err
	}
	close(errs)
	return <-errs
}

// runChild runs a scenario and returns its output and wait status.
func runChild(t *testing.T, scenario string) (string, syscall.WaitStatus) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+scenario, "SQUIB_SECCOMP_TEST_FILE="+tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second): // a hang guard, not a timing check
		cmd.Process.Kill()
		<-waited
		t.Fatalf("%s: the child hung; output:\n%s", scenario, out.String())
	}
	return out.String(), cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func TestInstallErrno(t *testing.T) {
	out, ws := runChild(t, "errno")
	if ws.ExitStatus() != 0 || !strings.Contains(out, "child: ok") {
		t.Fatalf("status %v, output:\n%s", ws, out)
	}
}

func TestInstallKillProcess(t *testing.T) {
	out, ws := runChild(t, "kill")
	if !ws.Signaled() || ws.Signal() != unix.SIGSYS {
		t.Fatalf("want death by SIGSYS, got status %v, output:\n%s", ws, out)
	}
}

// TestInstallTrap: a trapped syscall ends the process as in Firecracker:
// the log line and exit code 148.
func TestInstallTrap(t *testing.T) {
	out, ws := runChild(t, "trap")
	if ws.ExitStatus() != exitBadSyscall {
		t.Fatalf("want exit code %d, got status %v, output:\n%s", exitBadSyscall, ws, out)
	}
	want := fmt.Sprintf("Shutting down VM after intercepting a bad syscall (%d).", unix.SYS_GETPPID)
	if !strings.Contains(out, want) || !strings.Contains(out, "Shutting down VM after intercepting signal 31, code 1.") {
		t.Fatalf("the log lines are missing; output:\n%s", out)
	}
}

// TestInstallTrapGuard: when the report itself is refused, the guard
// kills the process instead of letting it hang.
func TestInstallTrapGuard(t *testing.T) {
	out, ws := runChild(t, "trap-blocked-report")
	if !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("want death by SIGKILL from the guard, got status %v, output:\n%s", ws, out)
	}
}

// TestInstallDefault: the default filter lets a Go program do its usual
// work.
func TestInstallDefault(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's runtime makes syscalls squib's binary never does")
	}
	out, ws := runChild(t, "default")
	if ws.ExitStatus() != 0 || !strings.Contains(out, "child: ok") {
		t.Fatalf("status %v, output:\n%s", ws, out)
	}
}

// TestInstallDefaultRefuses: a syscall squib does not make ends the
// process with code 148 under the default filter.
func TestInstallDefaultRefuses(t *testing.T) {
	for _, r := range Default().merge().nrs {
		if r == unix.SYS_GETPPID {
			t.Fatal("the default filter allows getppid; pick another syscall for this test")
		}
	}
	if raceEnabled {
		t.Skip("the race detector's runtime makes syscalls squib's binary never does")
	}
	out, ws := runChild(t, "default-bad")
	if ws.ExitStatus() != exitBadSyscall || !strings.Contains(out, fmt.Sprintf("bad syscall (%d)", unix.SYS_GETPPID)) {
		t.Fatalf("want exit code %d and the log line, got status %v, output:\n%s", exitBadSyscall, ws, out)
	}
}

// TestNotifyProgram: the rewritten program lets the listener's two
// syscalls through, turns traps into notifications and otherwise decides
// as the original.
func TestNotifyProgram(t *testing.T) {
	f := mustParse(t, file(`"trap"`, `"allow"`, `{"syscall": "read"}`,
		`{"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 44672}]}`))
	prog := mustCompile(t, f)
	if !usesTrap(prog) {
		t.Fatal("usesTrap missed the trap")
	}
	np, ok := notifyProgram(prog)
	if !ok {
		t.Fatal("notifyProgram refused")
	}
	if usesTrap(np) {
		t.Error("a trap survived the rewrite")
	}
	for _, tc := range []struct {
		in   input
		want uint32
	}{
		{call(unix.SYS_IOCTL, 5, unix.SECCOMP_IOCTL_NOTIF_RECV), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_TIMER_SETTIME, 1), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_IOCTL, 5, 0xae80), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_IOCTL, 5, 0xae81), unix.SECCOMP_RET_USER_NOTIF},
		{call(unix.SYS_READ), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_WRITE), unix.SECCOMP_RET_USER_NOTIF},
		{input{nr: unix.SYS_TIMER_SETTIME, arch: unix.AUDIT_ARCH_I386}, unix.SECCOMP_RET_KILL_PROCESS},
		{input{nr: unix.SYS_IOCTL, arch: unix.AUDIT_ARCH_I386, args: [6]uint64{0, unix.SECCOMP_IOCTL_NOTIF_RECV}}, unix.SECCOMP_RET_KILL_PROCESS},
	} {
		if got := run(t, np, tc.in); got != tc.want {
			t.Errorf("%+v: got %#x, want %#x", tc.in, got, tc.want)
		}
	}
	plain := mustCompile(t, mustParse(t, file(`"allow"`, `"kill_process"`, `{"syscall": "read"}`)))
	if usesTrap(plain) {
		t.Error("usesTrap found a trap in a program without one")
	}
}

func TestInstallRejectsBadLength(t *testing.T) {
	if err := Install(nil); err == nil {
		t.Error("an empty program was accepted")
	}
	if err := Install(make([]unix.SockFilter, maxInsns+1)); err == nil {
		t.Error("a program over 4096 instructions was accepted")
	}
}
