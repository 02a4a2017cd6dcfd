package uffd

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// argStruct is the set of ioctl argument types: plain structs of 64-bit
// integers, with no Go pointers in them.
type argStruct interface {
	uffdioAPI | uffdioRange | uffdioRegister | uffdioCopy | uffdioZeropage
}

// ioctl issues req on fd with arg as the in/out struct. Sound because arg
// points to a value of one of the argStruct types, whose Go layout equals
// the kernel's (all fields are 8-byte integers; abi_test.go checks the
// sizes the numbers encode), which holds no Go pointers, and which the
// compiler keeps alive and in place for the duration of the call since the
// unsafe.Pointer is converted to uintptr in the Syscall argument list.
func ioctl[T argStruct](fd int, req uintptr, arg *T) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(arg)))
	if e != 0 {
		return e
	}
	return nil
}

// AddressOf is the address of b's first byte, for UFFDIO_COPY's source
// or for registering a mapping; 0 for an empty slice. Sound only for
// memory that does not move and that stays mapped while the kernel uses
// the address: callers pass mmap'd memory (never the Go heap, which the
// kernel must not be told about) and keep it mapped until the ioctl
// returns or the registration ends.
func AddressOf(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}
