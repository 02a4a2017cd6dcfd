package kvm

// Every use of package unsafe in internal/kvm is in this file, each with the
// reason it is sound. The rest of the package reaches the kernel only
// through ioctlPtr, ioctlBuf and fam, and reads kvm_run through bounds-checked
// byte slices.

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sizes of the ioctl argument structs, which the ioctl numbers in consts.go
// encode. unsafe.Sizeof is a compile-time constant with no runtime effect;
// it lives here only so that unsafe is imported in one file.
const (
	sizeofRegs             = unsafe.Sizeof(Regs{})
	sizeofSregs            = unsafe.Sizeof(Sregs{})
	sizeofFPU              = unsafe.Sizeof(FPU{})
	sizeofLAPICState       = unsafe.Sizeof(LAPICState{})
	sizeofXCRs             = unsafe.Sizeof(XCRs{})
	sizeofDebugRegs        = unsafe.Sizeof(DebugRegs{})
	sizeofVcpuEvents       = unsafe.Sizeof(VcpuEvents{})
	sizeofClockData        = unsafe.Sizeof(ClockData{})
	sizeofIRQChip          = unsafe.Sizeof(IRQChip{})
	sizeofPITState2        = unsafe.Sizeof(PITState2{})
	sizeofUserMemRegion    = unsafe.Sizeof(userspaceMemoryRegion{})
	sizeofIRQLevel         = unsafe.Sizeof(irqLevel{})
	sizeofPITConfig        = unsafe.Sizeof(pitConfig{})
	sizeofDirtyLog         = unsafe.Sizeof(dirtyLog{})
	sizeofIRQFD            = unsafe.Sizeof(irqfd{})
	sizeofIOEventFD        = unsafe.Sizeof(ioeventfd{})
	sizeofMPState          = unsafe.Sizeof(mpState{})
	sizeofMSRsHeader       = unsafe.Sizeof(msrsHeader{})
	sizeofMSRListHeader    = unsafe.Sizeof(msrListHeader{})
	sizeofCPUID2Header     = unsafe.Sizeof(cpuid2Header{})
	sizeofSignalMaskHeader = unsafe.Sizeof(signalMaskHeader{})
	sizeofU64              = unsafe.Sizeof(uint64(0))
)

// iocSize is _IOC_SIZE(req): how many bytes the request says the kernel
// copies through its pointer argument.
func iocSize(req uintptr) uintptr {
	return req >> iocSizeShift & (1<<iocSizeBits - 1)
}

// ioctlPtr issues ioctl(fd, req, p) for a request whose argument is one
// fixed-size struct.
//
// Sound because:
//   - the pointer is converted to uintptr inside the argument list of
//     unix.Syscall, an assembly function, so the compiler keeps *p alive
//     and unmoved until the call returns (unsafe.Pointer rule 4);
//   - the size check below guarantees the kernel copies no more than
//     sizeof(T) bytes (every fixed-size KVM ioctl copies _IOC_SIZE bytes);
//   - T is plain data: no Go pointer the kernel could overwrite with
//     garbage (layout_test.go checks every type written by the kernel; the
//     one struct with a pointer, dirtyLog, is only read by the kernel).
func ioctlPtr[T any](fd int, req uintptr, p *T) (uintptr, unix.Errno) {
	if iocSize(req) > unsafe.Sizeof(*p) {
		panic("kvm: ioctl argument smaller than its request encodes")
	}
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(p)))
	return r, e
}

// ioctlBuf issues ioctl(fd, req, &buf[0]) for a request that copies need
// bytes (possibly more than _IOC_SIZE, as KVM_GET_XSAVE2 does).
//
// Sound for the reasons of ioctlPtr, with the bound check done on the
// whole slice: the kernel touches need bytes and the slice holds at least
// that many (and at least _IOC_SIZE). E is a numeric type at every call.
func ioctlBuf[E uint8 | uint32 | uint64](fd int, req uintptr, buf []E, need uintptr) (uintptr, unix.Errno) {
	var e E
	have := uintptr(len(buf)) * unsafe.Sizeof(e)
	if len(buf) == 0 || have < need || have < iocSize(req) {
		panic("kvm: ioctl buffer smaller than the kernel copies")
	}
	r, _, en := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&buf[0])))
	return r, en
}

// fam is a C struct that ends in a flexible array member (kvm_cpuid2,
// kvm_msrs, kvm_msr_list, kvm_signal_mask): a header H immediately followed
// by n entries E, in one allocation.
//
// The memory is a []uint64, so it is 8-byte aligned (enough for every KVM
// header and entry, checked in newFAM) and holds no Go pointers, which makes
// it safe for the kernel to write arbitrary bytes into it.
type fam[H, E any] struct {
	words []uint64
	n     int
}

// newFAM allocates a zeroed header plus n entries.
func newFAM[H, E any](n int) *fam[H, E] {
	var h H
	var e E
	if unsafe.Alignof(h) > 8 || unsafe.Alignof(e) > 8 || unsafe.Sizeof(h)%unsafe.Alignof(e) != 0 {
		// The C layout puts entries right after the header only when the
		// header size is a multiple of the entry alignment.
		panic("kvm: flexible array layout not representable")
	}
	size := unsafe.Sizeof(h) + uintptr(n)*unsafe.Sizeof(e)
	return &fam[H, E]{words: make([]uint64, (size+7)/8), n: n}
}

// header is the struct at the start of the buffer.
//
// Sound: words has at least sizeof(H) bytes (newFAM), is 8-aligned, and
// H's alignment is at most 8.
func (f *fam[H, E]) header() *H {
	return (*H)(unsafe.Pointer(&f.words[0]))
}

// entries is the flexible array: n entries starting sizeof(H) bytes in.
//
// Sound: newFAM sized words for exactly sizeof(H)+n*sizeof(E) bytes (rounded
// up), and sizeof(H) is a multiple of alignof(E), so every entry is in
// bounds and aligned. For n == 0 no pointer past the allocation is formed.
func (f *fam[H, E]) entries() []E {
	if f.n == 0 {
		return nil
	}
	var h H
	first := (*E)(unsafe.Add(unsafe.Pointer(&f.words[0]), unsafe.Sizeof(h)))
	return unsafe.Slice(first, f.n)
}

// ioctl issues ioctl(fd, req, buffer). The caller has set the header's
// count to at most n, and KVM never copies more entries than that count,
// so the kernel stays inside words (see ioctlBuf for the pointer rules).
func (f *fam[H, E]) ioctl(fd int, req uintptr) (uintptr, unix.Errno) {
	return ioctlBuf(fd, req, f.words, uintptr(len(f.words))*8)
}

// immediateExitWord is the aligned 32-bit word of kvm_run that contains the
// immediate_exit byte, for atomic access from a kicking goroutine.
//
// Sound: mem is the page-aligned kvm_run mapping, at least runSize bytes
// long (checked by CreateVCPU), so the word is in bounds and 4-aligned;
// the mapping is outside the Go heap and lives until VCPU.Close.
func (r *RunData) immediateExitWord() *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[runImmediateExit&^3]))
}

// immediateExitShift is the bit position of immediate_exit in its word
// (x86 is little-endian).
const immediateExitShift = (runImmediateExit & 3) * 8

// setImmediateExit stores immediate_exit atomically: a sequentially
// consistent read-modify-write of the containing word, so the store is
// visible before a following tgkill and never tears the neighbouring
// request_interrupt_window byte.
func (r *RunData) setImmediateExit(on bool) {
	if on {
		atomic.OrUint32(r.immediateExitWord(), 1<<immediateExitShift)
	} else {
		atomic.AndUint32(r.immediateExitWord(), ^uint32(0xff<<immediateExitShift))
	}
}

// immediateExit loads immediate_exit atomically.
func (r *RunData) immediateExit() bool {
	return atomic.LoadUint32(r.immediateExitWord())>>immediateExitShift&0xff != 0
}
