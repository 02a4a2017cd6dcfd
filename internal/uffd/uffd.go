// Package uffd is userfaultfd for squib's snapshot memory: the ioctls
// (golang.org/x/sys/unix has none of them), Firecracker's handshake that
// hands a guest's userfaultfd to a page-fault handler process, and a
// handler that serves a guest's memory from a snapshot memory file.
//
// The flow, as in Firecracker: the handler listens on a Unix socket. On
// snapshot load with the Uffd backend the VMM maps guest memory
// anonymously, creates a userfaultfd, registers every region in MISSING
// mode, connects to the socket and sends one message: a JSON array of
// Region and, as SCM_RIGHTS, the userfaultfd. From then on every first
// touch of a guest page, by the guest (through KVM) or by the VMM, blocks
// until the handler fills the page with UFFDIO_COPY. The VMM keeps the
// connection open for the life of guest memory, so the handler sees the
// VMM go away as a hang-up.
package uffd

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// New creates a userfaultfd for the calling process, close-on-exec and
// non-blocking, and runs the UFFDIO_API handshake requiring features. The
// caller closes the descriptor (unix.Close). It is a plain descriptor, not
// an *os.File, on purpose: os.File.Fd would clear O_NONBLOCK on the open
// file description, which the handler shares.
//
// The descriptor catches kernel-mode faults too (no UFFD_USER_MODE_ONLY):
// KVM reads and writes guest memory from the kernel. Since Linux 6.1 an
// unprivileged process may only create such a descriptor through
// /dev/userfaultfd (access governed by the device node's permissions, and
// the jailer can expose it), so that is tried first; the userfaultfd(2)
// system call, which needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd
// = 1 for kernel-mode faults, is the fallback for older kernels.
func New(features uint64) (int, error) {
	flags := unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := newFromDevice(flags)
	if err != nil {
		var e2 error
		fd, e2 = newFromSyscall(flags)
		if e2 != nil {
			// The system call's error is the informative one when the
			// device is simply absent.
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
				return -1, e2
			}
			return -1, fmt.Errorf("%w (/dev/userfaultfd: %v)", e2, err)
		}
	}
	api := uffdioAPI{API: API, Features: features}
	if err := ioctl(fd, ioctlAPI, &api); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("UFFDIO_API: %w", err)
	}
	if api.Features&features != features {
		unix.Close(fd)
		return -1, fmt.Errorf("UFFDIO_API: features %#x not supported (kernel offers %#x): %w",
			features, api.Features, unix.EINVAL)
	}
	return fd, nil
}

func newFromDevice(flags int) (int, error) {
	dev, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dev)
	// USERFAULTFD_IOC_NEW takes the userfaultfd(2) flags as its argument
	// value and returns the new descriptor.
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(dev), ioctlDevNew, uintptr(flags))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func newFromSyscall(flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// Register registers [addr, addr+length) of the process that created fd
// in the given mode (RegisterModeMissing) and returns the ioctls the
// kernel allows on the range.
func Register(fd int, addr, length, mode uint64) (uint64, error) {
	r := uffdioRegister{Range: uffdioRange{Start: addr, Len: length}, Mode: mode}
	if err := ioctl(fd, ioctlRegister, &r); err != nil {
		return 0, err
	}
	return r.Ioctls, nil
}

// Unregister stops monitoring [addr, addr+length).
func Unregister(fd int, addr, length uint64) error {
	r := uffdioRange{Start: addr, Len: length}
	return ioctl(fd, ioctlUnregister, &r)
}

// Copy fills [dst, dst+length) in the monitored process with the bytes
// at src in the calling process (UFFDIO_COPY) and, unless mode has
// ModeDontWake, wakes the threads waiting on the range. It returns the
// bytes copied; on error that count may be partial. EEXIST means a page
// is already present; EAGAIN means the address space is changing (a
// remove event is queued): read the pending events and retry.
func Copy(fd int, dst, src, length, mode uint64) (int64, error) {
	c := uffdioCopy{Dst: dst, Src: src, Len: length, Mode: mode}
	err := ioctl(fd, ioctlCopy, &c)
	return max(c.Copy, 0), err
}

// ZeroPage maps zero pages over [start, start+length) (UFFDIO_ZEROPAGE),
// waking the waiting threads unless mode has ModeDontWake. Errors are as
// for Copy. Hugetlbfs ranges do not support it; copy zeroes instead.
func ZeroPage(fd int, start, length, mode uint64) (int64, error) {
	z := uffdioZeropage{Range: uffdioRange{Start: start, Len: length}, Mode: mode}
	err := ioctl(fd, ioctlZeropage, &z)
	return max(z.Zeropage, 0), err
}

// Wake wakes the threads waiting on faults in [start, start+length).
func Wake(fd int, start, length uint64) error {
	r := uffdioRange{Start: start, Len: length}
	return ioctl(fd, ioctlWake, &r)
}
