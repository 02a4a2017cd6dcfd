package memory

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

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

// remapAnonymous maps fresh anonymous memory over p in place (MAP_FIXED),
// so that a range of a private file mapping reads as zeroes again.
// Sound because p is a subslice of a region mapping this Guest owns: the
// new mapping covers exactly the same addresses with the same protection,
// so every slice into the region, p included, stays valid; only the
// contents change, as with MADV_DONTNEED on anonymous memory.
func remapAnonymous(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	_, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&p[0]), uintptr(len(p)),
		unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED|unix.MAP_NORESERVE)
	return err
}

// mincore fills vec with the residency of b's host pages (mincore(2)).
// Sound because b is page aligned (it starts a region or a page-multiple
// offset into one), lies in a live mapping, and vec has a byte for each
// host page of b, which is all the kernel writes.
func mincore(b []byte, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
