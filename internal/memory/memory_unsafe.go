package memory

import "unsafe"

// HostAddress is the host virtual address of a region's mapping, for
// KVM_SET_USER_MEMORY_REGION. Sound because the mapping comes from mmap:
// it never moves and stays valid until Close unmaps it, which happens only
// after the VM (and KVM's use of the address) is gone.
func (r Region) HostAddress() uintptr {
	if len(r.Mem) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&r.Mem[0]))
}
