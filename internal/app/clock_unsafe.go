package app

import (
	"syscall"
	"unsafe"
)

// clockGettime reads a POSIX clock. The kernel writes one Timespec through
// the pointer during the call; ts is the caller's live variable.
func clockGettime(clock int, ts *syscall.Timespec) {
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, uintptr(clock), uintptr(unsafe.Pointer(ts)), 0)
}
