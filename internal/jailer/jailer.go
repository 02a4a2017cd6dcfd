package jailer

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/vmm"
)

// ExitFailure is the jailer's exit status for every error, as Firecracker's
// jailer (a Rust main returning Err) exits with 1.
const ExitFailure = 1

// closeRangeCloexec is CLOSE_RANGE_CLOEXEC (Linux 5.11), which x/sys/unix
// does not name.
const closeRangeCloexec = 1 << 2

// Host files the jailer reads.
const procMisc = "/proc/misc"

// Main runs the jailer with argv (without the program name) and returns the
// exit status. When it succeeds without --new-pid-ns or --daemonize it does
// not return: the process has become the VMM.
func Main(argv []string, stdout, stderr io.Writer) int {
	// Never unlocked: this thread's mount namespace, root and network
	// namespace change, and the runtime must neither run other goroutines
	// on it nor create threads from it (see doc.go).
	runtime.LockOSThread()
	sanitize()
	return run(argv, stdout, stderr)
}

// sanitize keeps the descriptors and the environment the jailer inherited
// from reaching the VMM. Firecracker closes descriptors 3 and up; a Go
// process may already own some of those (the runtime's poller), so they are
// marked close-on-exec instead, which has the same effect on the VMM.
func sanitize() {
	if err := unix.CloseRange(3, math.MaxUint32, closeRangeCloexec); err != nil {
		// Before Linux 5.11: one descriptor at a time.
		if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
			for _, e := range ents {
				if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
					unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
				}
			}
		}
	}
	os.Clearenv()
}

// run is Main after the process-wide preparation; tests call it for the
// paths that end before any jail is built (help, version, bad arguments).
func run(argv []string, stdout, stderr io.Writer) int {
	j := &jailer{stdout: stdout, stderr: stderr,
		startUS: clockUS(unix.CLOCK_MONOTONIC), startCPUUS: clockUS(unix.CLOCK_PROCESS_CPUTIME_ID)}
	req, err := parseArgs(argv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return ExitFailure
	}
	switch {
	case req.help:
		fmt.Fprintf(stdout, "Jailer v%s\n\n%s\n\nAny arguments after the -- separator will be supplied to the jailed binary.\n\n",
			vmm.FirecrackerVersion, parser().FormattedHelp())
		return 0
	case req.version:
		fmt.Fprintf(stdout, "Jailer v%s\n\n", vmm.FirecrackerVersion)
		return 0
	}
	j.cfg = req.cfg
	if err := j.run(); err != nil {
		fmt.Fprintln(stderr, err)
		j.undo.run(stderr)
		return ExitFailure
	}
	return 0
}

// jailer holds one run's state.
type jailer struct {
	cfg                 *Config
	stdout, stderr      io.Writer
	startUS, startCPUUS uint64
	// undo reverts what the run made, should a later step fail.
	undo undo
}

// run performs the steps in Firecracker's order; see doc.go.
func (j *jailer) run() error {
	cfg, u := j.cfg, &j.undo
	chroot := cfg.ChrootDir()

	mounts, mountsErr := readCgroupMounts(procMounts)
	version := cfg.CgroupVersion
	if version == 0 {
		version = detectCgroupVersion(mounts)
	}
	orig := readSelfCgroups(procSelfCgroup)
	var plan *cgroupPlan
	if len(cfg.Cgroups) > 0 || version == 2 {
		if mountsErr != nil {
			return mountsErr
		}
	}
	if len(cfg.Cgroups) == 0 && version == 2 {
		if err := moveToParent(cfg, mounts, u, orig); err != nil {
			return err
		}
	}
	if len(cfg.Cgroups) > 0 {
		var err error
		if plan, err = planCgroups(cfg, version, mounts); err != nil {
			return err
		}
	}
	devs := hostDevices(procMisc)

	if err := mkdirAllTracked(chroot, 0o755, u); err != nil {
		return err
	}
	if err := copyExecFile(cfg.ExecFile, filepath.Join(chroot, cfg.ExecName), cfg.UID, cfg.GID, u); err != nil {
		return err
	}
	if cfg.NetNS != "" {
		if err := joinNetNS(cfg.NetNS); err != nil {
			return err
		}
	}
	if err := cfg.Limits.install(); err != nil {
		return err
	}
	// Before the jail: the cgroup file system is not inside it.
	if plan != nil {
		if err := plan.setup(u, orig); err != nil {
			return err
		}
	}
	var devNull *os.File
	if cfg.Daemonize {
		var err error
		if devNull, err = os.OpenFile("/dev/null", os.O_RDWR, 0); err != nil {
			return fmt.Errorf("Failed to open /dev/null: %s", logger.OSErrorText(err))
		}
		defer devNull.Close()
	}
	if err := pivotInto(chroot, u); err != nil {
		return err
	}
	if err := makeJailFolders(chroot, cfg.UID, cfg.GID, u); err != nil {
		return err
	}
	if err := makeDevices(devs, chroot, cfg.UID, cfg.GID, u, j.stdout); err != nil {
		return err
	}
	parentCPU := clockUS(unix.CLOCK_PROCESS_CPUTIME_ID) - j.startCPUUS
	return j.exec(devNull, parentCPU)
}

// joinNetNS moves this thread (and so the VMM it becomes or starts) into
// the network namespace at path.
func joinNetNS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("Failed to open file %s: %s", path, logger.OSErrorText(err))
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("Failed to join network namespace: netns: %s (%s)", logger.OSErrorText(err), path)
	}
	return nil
}

// argv is the VMM's command line: what Firecracker's jailer passes, then
// the arguments after "--".
func (j *jailer) argv(bin string, startCPU, parentCPU uint64) []string {
	a := []string{bin,
		"--id", j.cfg.ID,
		"--start-time-us", strconv.FormatUint(j.startUS, 10),
		"--start-time-cpu-us", strconv.FormatUint(startCPU, 10),
		"--parent-cpu-time-us", strconv.FormatUint(parentCPU, 10),
	}
	return append(a, j.cfg.Extra...)
}

// exec runs the VMM: in place, or, with --new-pid-ns or --daemonize, as a
// child the jailer leaves behind. The PID file /<exec name>.pid in the jail
// names the VMM's process either way.
func (j *jailer) exec(devNull *os.File, parentCPU uint64) error {
	bin := "/" + j.cfg.ExecName
	pidFile := bin + ".pid"
	if j.cfg.NewPIDNS || j.cfg.Daemonize {
		return j.spawn(bin, pidFile, devNull, parentCPU)
	}
	if err := j.writePIDFile(pidFile, os.Getpid()); err != nil {
		return err
	}
	return j.execInPlace(bin, j.argv(bin, clockUS(unix.CLOCK_PROCESS_CPUTIME_ID), parentCPU))
}

// execInPlace drops privileges and execs the VMM from this (the locked)
// thread. The saved user ID stays 0 until execve, which copies the
// effective ID into it, so that a failed exec can take root back and
// undo the jail; the ambient capabilities, which would survive both, are
// cleared first.
func (j *jailer) execInPlace(bin string, argv []string) error {
	uid, gid := int(j.cfg.UID), int(j.cfg.GID)
	_ = unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	// The syscall package changes the IDs of every thread (Go 1.16+).
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("Failed to drop privileges: setgroups: %s", logger.OSErrorText(err))
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("Failed to drop privileges: setresgid(%d): %s", gid, logger.OSErrorText(err))
	}
	if err := syscall.Setresuid(uid, uid, 0); err != nil {
		return fmt.Errorf("Failed to drop privileges: setresuid(%d): %s", uid, logger.OSErrorText(err))
	}
	err := syscall.Exec(bin, argv, []string{})
	if rerr := syscall.Setresuid(0, 0, 0); rerr != nil {
		fmt.Fprintf(j.stderr, "Warning: could not regain root to clean up: %s\n", logger.OSErrorText(rerr))
	}
	return fmt.Errorf("Failed to exec into Firecracker: %s (%s)", logger.OSErrorText(err), bin)
}

// spawn starts the VMM as a child and returns once its PID is recorded;
// the jailer then exits 0 and the child lives on. Go cannot fork without
// exec, so where Firecracker forks (twice to daemonize, clone for a PID
// namespace) and then execs, squib starts the VMM in one step from the
// locked thread, whose mount namespace, root and network namespace the
// child inherits:
//   - --new-pid-ns: CLONE_NEWPID, so the VMM is PID 1 of a new namespace;
//     it gets a new session if the jailer led its own, as in Firecracker,
//     so that the jailer's exit does not send it SIGHUP;
//   - --daemonize: a new session and stdin, stdout and stderr on /dev/null.
//     The VMM leads that session (Firecracker's second fork makes it a
//     member) but there is no terminal in the jail it could acquire.
//
// The child drops to the jailed user (no supplementary groups) before exec.
func (j *jailer) spawn(bin, pidFile string, devNull *os.File, parentCPU uint64) error {
	setsid := j.cfg.Daemonize
	if j.cfg.NewPIDNS && !j.cfg.Daemonize {
		sid, err := unix.Getsid(0)
		if err != nil {
			return fmt.Errorf("Failed to get SID (getsid): %s", logger.OSErrorText(err))
		}
		setsid = sid == os.Getpid()
	}
	// The new process's CPU clock starts at zero, so its start is 0.
	cmd := &exec.Cmd{Path: bin, Args: j.argv(bin, 0, parentCPU), Env: []string{},
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if devNull != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     setsid,
		Credential: &syscall.Credential{Uid: j.cfg.UID, Gid: j.cfg.GID, Groups: []uint32{}},
	}
	if j.cfg.NewPIDNS {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWPID
	}
	if err := cmd.Start(); err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			err = errno
		}
		return fmt.Errorf("Failed to exec into Firecracker: %s (%s)", logger.OSErrorText(err), bin)
	}
	if err := j.writePIDFile(pidFile, cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	cmd.Process.Release()
	return nil
}

// writePIDFile creates the jail's PID file; it must not exist yet.
func (j *jailer) writePIDFile(path string, pid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("Failed to open file %s: %s (jail root %s)", path, logger.OSErrorText(err), j.cfg.ChrootDir())
	}
	j.undo.remove(filepath.Join(j.cfg.ChrootDir(), path))
	_, err = f.WriteString(strconv.Itoa(pid))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("Failed to write to %s: %s (jail root %s)", path, logger.OSErrorText(err), j.cfg.ChrootDir())
	}
	return nil
}

// clockUS reads a clock in microseconds.
func clockUS(clock int32) uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(clock, &ts) != nil {
		return 0
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// undo is the list of things a run made, reverted in reverse order when a
// later step fails, so that a failed jailer leaves no directory, file,
// device node or cgroup of its own behind.
type undo struct {
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

func (u *undo) push(what string, fn func() error) {
	u.steps = append(u.steps, undoStep{what, fn})
}

// remove records a path the run created.
func (u *undo) remove(path string) {
	u.push("remove "+path, func() error {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
}

// run reverts every step, reporting failures as warnings. It works on
// another goroutine, which the runtime never runs on the jailer's locked
// thread: other threads still have the host's root and mount namespace,
// so the recorded host paths are right even after pivot_root.
func (u *undo) run(w io.Writer) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := len(u.steps) - 1; i >= 0; i-- {
			if err := u.steps[i].fn(); err != nil {
				fmt.Fprintf(w, "Warning: cleanup failed: %s: %s\n", u.steps[i].what, logger.OSErrorText(err))
			}
		}
	}()
	<-done
	u.steps = nil
}
