package seccomp

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/metrics"
)

// exitBadSyscall is Firecracker's exit code for a syscall its filter
// refused with "trap" (FcExitCode::BadSyscall).
const exitBadSyscall = 148

// guardDelay bounds the report of a refused syscall: if logging and writing
// the metrics have not finished by then (see listen), the process is
// killed instead of hanging.
const guardDelay = 5 * time.Second

// Install makes prog the seccomp filter of every thread of the process:
// PR_SET_NO_NEW_PRIVS, then seccomp(SECCOMP_SET_MODE_FILTER) with
// SECCOMP_FILTER_FLAG_TSYNC, so that the threads the Go runtime already
// has, and every thread it creates later, run under it. Filters cannot be
// removed; call Install once.
//
// A program that returns SECCOMP_RET_TRAP ("trap") gets Firecracker's
// outcome for it (doc.go): the trap is delivered as a user notification to
// a goroutine that logs "Shutting down VM after intercepting a bad syscall
// (<nr>).", sets seccomp.num_faults, writes the metrics and exits with
// code 148. On kernels without SECCOMP_FILTER_FLAG_TSYNC_ESRCH (before
// 5.7) the program is installed as it is, and the Go runtime turns the
// SIGSYS into a crash with exit code 2.
func Install(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("seccomp: program of %d instructions: the kernel takes 1 to %d", len(prog), maxInsns)
	}
	// no_new_privs is a per-thread flag and seccomp() needs it on the
	// calling thread; TSYNC then sets it on the others.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if usesTrap(prog) {
		if np, ok := notifyProgram(prog); ok {
			// The listener installs the filter itself, from its own
			// thread, so that it is waiting for notifications before any
			// other syscall passes the filter; a wake-up of this goroutine
			// would be one (futex). So the outcome is polled.
			var st listenState
			go listen(np, &st)
			for !st.done.Load() {
				time.Sleep(50 * time.Microsecond)
			}
			if st.err == nil {
				return nil
			}
			if !errors.Is(st.err, unix.EINVAL) {
				return st.err
			}
			// EINVAL: a kernel without TSYNC_ESRCH; plain trap it is.
		}
	}
	r, err := setFilter(prog, unix.SECCOMP_FILTER_FLAG_TSYNC)
	if err != nil {
		return installError(err)
	}
	if r > 0 {
		return fmt.Errorf("seccomp: thread %d could not take the filter (it has a filter of its own)", r)
	}
	return nil
}

func installError(err error) error {
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("seccomp: a thread could not take the filter (it has a filter of its own): %w", err)
	}
	return fmt.Errorf("seccomp: seccomp(SECCOMP_SET_MODE_FILTER): %w", err)
}

// usesTrap says whether prog can return SECCOMP_RET_TRAP.
func usesTrap(prog []unix.SockFilter) bool {
	for _, ins := range prog {
		if ins.Code == opRetK && ins.K&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_TRAP {
			return true
		}
	}
	return false
}

// notifyProgram rewrites prog for the notification listener: every trap
// becomes SECCOMP_RET_USER_NOTIF, and a prologue lets through the two
// syscalls the listener itself must make whatever the filter says (it
// could not be notified of its own): ioctl(SECCOMP_IOCTL_NOTIF_RECV) and
// timer_settime (the guard). The prologue only ever allows; all else falls
// through to prog, which starts with its own architecture check. It
// reports false when the result would be too long.
func notifyProgram(prog []unix.SockFilter) ([]unix.SockFilter, bool) {
	const recv = unix.SECCOMP_IOCTL_NOTIF_RECV
	pro := []unix.SockFilter{
		{Code: opLdAbsW, K: offArch},
		{Code: opJeqK, K: auditArch, Jt: 0, Jf: 6}, // to prog's own check
		{Code: opLdAbsW, K: offNr},
		{Code: opJeqK, K: unix.SYS_TIMER_SETTIME, Jt: 3, Jf: 0}, // to the allow
		{Code: opJeqK, K: unix.SYS_IOCTL, Jt: 0, Jf: 3},         // to prog
		{Code: opLdAbsW, K: argLo(1)},
		{Code: opJeqK, K: recv, Jt: 0, Jf: 1}, // to prog
		{Code: opRetK, K: unix.SECCOMP_RET_ALLOW},
	}
	if len(pro)+len(prog) > maxInsns {
		return nil, false
	}
	out := append(pro, prog...)
	for i := len(pro); i < len(out); i++ {
		if out[i].Code == opRetK && out[i].K&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_TRAP {
			out[i].K = unix.SECCOMP_RET_USER_NOTIF
		}
	}
	return out, true
}

// listenState is how listen reports the installation: err is set before
// done.
type listenState struct {
	err  error
	done atomic.Bool
}

// listen installs prog (from notifyProgram) on all threads with a
// notification listener, then waits for the kernel's notifications: each
// is a syscall the filter trapped, whose thread now waits in the kernel.
// The first one ends the process the way Firecracker's SIGSYS handler
// does. It keeps its thread to itself.
func listen(prog []unix.SockFilter, st *listenState) {
	runtime.LockOSThread()    // never unlocked: the thread is the listener's
	guard, gerr := newGuard() // made before any filter is in place
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		st.err = fmt.Errorf("seccomp: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		st.done.Store(true)
		return
	}
	fd, err := setFilter(prog, unix.SECCOMP_FILTER_FLAG_TSYNC|unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH|unix.SECCOMP_FILTER_FLAG_NEW_LISTENER)
	if err != nil {
		if gerr == nil {
			guard.close()
		}
		st.err = installError(err)
		st.done.Store(true)
		return
	}
	st.done.Store(true)
	var n seccompNotif
	for {
		err := recvNotif(fd, &n)
		switch {
		case err == nil:
			if gerr == nil {
				// Should the report below block (a thread stuck in a
				// trapped runtime syscall may hold a lock it needs, or the
				// filter refuses the report's own syscalls), the process
				// is killed rather than left hanging.
				guard.arm(guardDelay)
			}
			badSyscall(int(n.data.nr))
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT):
			// a signal, or the trapped thread died before we read it
		default:
			// Closing the fd turns later traps into ENOSYS failures, which
			// beats threads that wait for an answer forever.
			logger.For("main", "seccomp").Errorf("seccomp: reading notifications failed: %v", err)
			unix.Close(fd)
			return
		}
	}
}

// badSyscall reports a trapped syscall as Firecracker's SIGSYS handler
// does and exits with code 148.
func badSyscall(nr int) {
	metrics.Default.Seccomp.NumFaults.Store(1)
	log := logger.For("main", "seccomp")
	log.Errorf("Shutting down VM after intercepting signal %d, code %d.", int(syscall.SIGSYS), 1) // 1: SYS_SECCOMP
	log.Errorf("Shutting down VM after intercepting a bad syscall (%d).", nr)
	if err := metrics.Default.Write(); err != nil {
		log.Errorf("Failed to write metrics while stopping: %v", err)
	}
	os.Exit(exitBadSyscall)
}
