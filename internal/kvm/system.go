package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ioctlErr wraps a failed ioctl's errno with the C name of the request, so
// logs say which call failed while errors.Is(err, unix.EINVAL) still works.
func ioctlErr(name string, e unix.Errno) error {
	return fmt.Errorf("%s: %w", name, e)
}

// ioctlInt issues an ioctl whose argument is an integer (or absent).
// No pointer crosses into the kernel, so this needs no unsafe.
func ioctlInt(fd int, req, arg uintptr) (uintptr, unix.Errno) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	return r, e
}

// System is an open handle on the KVM subsystem (/dev/kvm).
type System struct {
	fd int
}

// Open opens the KVM device at path (normally DevicePath) read-write and
// close-on-exec.
func Open(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &System{fd: fd}, nil
}

// FD is the /dev/kvm file descriptor.
func (s *System) FD() int { return s.fd }

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// APIVersion is KVM_GET_API_VERSION: the KVM API version, always
// APIVersion (12) on a usable kernel.
func (s *System) APIVersion() (int, error) {
	r, e := ioctlInt(s.fd, kvmGetAPIVersion, 0)
	if e != 0 {
		return 0, ioctlErr("KVM_GET_API_VERSION", e)
	}
	return int(r), nil
}

// CheckExtension is KVM_CHECK_EXTENSION on the system fd: 0 if capability
// cap (a Cap* constant) is unsupported, otherwise a positive,
// capability-specific value.
func (s *System) CheckExtension(cap int) (int, error) {
	return checkExtension(s.fd, cap)
}

func checkExtension(fd, cap int) (int, error) {
	r, e := ioctlInt(fd, kvmCheckExtension, uintptr(cap))
	if e != 0 {
		return 0, ioctlErr("KVM_CHECK_EXTENSION", e)
	}
	return int(r), nil
}

// VcpuMmapSize is KVM_GET_VCPU_MMAP_SIZE: the size of the shared kvm_run
// region to mmap from each vCPU fd (kvm_run plus the PIO data page and
// more).
func (s *System) VcpuMmapSize() (int, error) {
	r, e := ioctlInt(s.fd, kvmGetVCPUMmapSize, 0)
	if e != 0 {
		return 0, ioctlErr("KVM_GET_VCPU_MMAP_SIZE", e)
	}
	return int(r), nil
}

// cpuidInitialEntries is the first buffer size for CPUID queries; KVM's
// limit (KVM_MAX_CPUID_ENTRIES) is 256 and hosts typically report 40-70.
const cpuidInitialEntries = 80

// cpuidMaxEntries bounds the E2BIG retries so a misbehaving kernel cannot
// make us allocate without limit.
const cpuidMaxEntries = 1 << 14

// SupportedCPUID is KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can
// expose to guests on this host (the base for every vCPU's SetCPUID2).
func (s *System) SupportedCPUID() ([]CPUIDEntry2, error) {
	return getCPUID(s.fd, kvmGetSupportedCPUID, "KVM_GET_SUPPORTED_CPUID")
}

// getCPUID runs a kvm_cpuid2 query, growing the buffer on E2BIG.
func getCPUID(fd int, req uintptr, name string) ([]CPUIDEntry2, error) {
	for n := cpuidInitialEntries; ; n *= 2 {
		buf := newFAM[cpuid2Header, CPUIDEntry2](n)
		buf.header().Nent = uint32(n)
		_, e := buf.ioctl(fd, req)
		if e == unix.E2BIG && n < cpuidMaxEntries {
			continue
		}
		if e != 0 {
			return nil, ioctlErr(name, e)
		}
		got := min(int(buf.header().Nent), n)
		return append([]CPUIDEntry2(nil), buf.entries()[:got]...), nil
	}
}

// MSRIndexList is KVM_GET_MSR_INDEX_LIST: the MSRs KVM supports for
// GetMSRs/SetMSRs (the candidates for saving in a snapshot).
func (s *System) MSRIndexList() ([]uint32, error) {
	// The first call with room for nothing returns E2BIG and the needed
	// count; loop in case the list grows between calls.
	n := 0
	for tries := 0; tries < 8; tries++ {
		buf := newFAM[msrListHeader, uint32](n)
		buf.header().NMSRs = uint32(n)
		_, e := buf.ioctl(s.fd, kvmGetMSRIndexList)
		if e == unix.E2BIG {
			n = max(int(buf.header().NMSRs), n+1)
			continue
		}
		if e != 0 {
			return nil, ioctlErr("KVM_GET_MSR_INDEX_LIST", e)
		}
		got := min(int(buf.header().NMSRs), n)
		return append([]uint32(nil), buf.entries()[:got]...), nil
	}
	return nil, errors.New("KVM_GET_MSR_INDEX_LIST: list size keeps changing")
}

// createVMAttempts is how often CreateVM tries KVM_CREATE_VM while it fails
// with EINTR, as Firecracker does: creation can be interrupted by a signal.
const createVMAttempts = 5

// CreateVM is KVM_CREATE_VM (default machine type): a new VM with no
// memory and no vCPUs.
func (s *System) CreateVM() (*VM, error) {
	mmapSize, err := s.VcpuMmapSize()
	if err != nil {
		return nil, err
	}
	var r uintptr
	var e unix.Errno
	for i := 0; i < createVMAttempts; i++ {
		r, e = ioctlInt(s.fd, kvmCreateVM, 0)
		if e != unix.EINTR {
			break
		}
	}
	if e != 0 {
		return nil, ioctlErr("KVM_CREATE_VM", e)
	}
	return &VM{fd: int(r), vcpuMmapSize: mmapSize, slots: map[uint32]uint64{}}, nil
}
