package seccomp

import (
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data.
type seccompData struct {
	nr   int32
	arch uint32
	ip   uint64
	args [6]uint64
}

// seccompNotif is struct seccomp_notif (linux/seccomp.h), 80 bytes.
type seccompNotif struct {
	id    uint64
	pid   uint32
	flags uint32
	data  seccompData
}

// The kernel's sizes; a mismatch fails the build.
var (
	_ [80 - unsafe.Sizeof(seccompNotif{})]byte
	_ [unsafe.Sizeof(seccompNotif{}) - 80]byte
	_ [64 - unsafe.Sizeof(sigevent{})]byte
	_ [unsafe.Sizeof(sigevent{}) - 64]byte
)

// setFilter calls seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) and
// returns the syscall's result: 0, a thread id (TSYNC without ESRCH) or a
// listener fd (NEW_LISTENER).
//
// Soundness: the kernel reads fprog and the len(prog) instructions it
// points to during the call and keeps its own copy; runtime.KeepAlive keeps
// both reachable until the call has returned.
func setFilter(prog []unix.SockFilter, flags uintptr) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(&fprog)
	runtime.KeepAlive(prog)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// recvNotif waits for one notification on the listener fd.
//
// Soundness: n is a Go pointer to a struct of exactly the kernel's size
// (asserted above); the kernel writes only within it, and only
// during the call.
func recvNotif(fd int, n *seccompNotif) error {
	*n = seccompNotif{} // the kernel refuses a struct that is not zeroed
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(n)))
	if errno != 0 {
		return errno
	}
	return nil
}

// sigevent is struct sigevent for SIGEV_SIGNAL: value, signo, notify, and
// the union the kernel sizes to 64 bytes in all.
type sigevent struct {
	value  uint64
	signo  int32
	notify int32
	_      [12]int32
}

// guard is a POSIX timer that sends SIGKILL to the process when it fires:
// the last resort if reporting a trapped syscall blocks.
type guard struct{ id int32 }

// newGuard creates the timer, disarmed. It is made before the filter is
// installed so that only timer_settime has to pass the filter later.
//
// Soundness: ev and g.id are Go pointers the kernel reads and writes only
// during the call.
func newGuard() (guard, error) {
	var g guard
	ev := sigevent{signo: int32(unix.SIGKILL), notify: 0} // SIGEV_SIGNAL
	_, _, errno := unix.Syscall(unix.SYS_TIMER_CREATE, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(&ev)), uintptr(unsafe.Pointer(&g.id)))
	if errno != 0 {
		return g, errno
	}
	return g, nil
}

// arm starts the timer; it goes off once, after d.
//
// Soundness: spec is read by the kernel during the call only.
func (g guard) arm(d time.Duration) {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	unix.Syscall6(unix.SYS_TIMER_SETTIME, uintptr(g.id), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
}

func (g guard) close() { unix.Syscall(unix.SYS_TIMER_DELETE, uintptr(g.id), 0, 0) }
