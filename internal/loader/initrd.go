package loader

import (
	"errors"
	"fmt"
	"io"

	"github.com/squib-vmm/squib/internal/memory"
)

// initrdAlign is the guest page size: Firecracker aligns the initrd's
// start down to it.
const initrdAlign = 4096

// ErrInitrdPlacement is returned when the initrd cannot be placed in guest
// memory.
var ErrInitrdPlacement = errors.New("Cannot load initrd")

// LowRAMEnd returns the end of the RAM region that starts at guest address
// 0 (min(memory size, 3 GiB) on x86_64), or 0 when there is none. It is
// the lowRAMEnd that LoadInitrd expects.
func LowRAMEnd(mem *memory.Guest) uint64 {
	for _, r := range mem.Regions() {
		if r.Start == 0 {
			return r.End()
		}
	}
	return 0
}

// LoadInitrd copies size bytes of initrd to the top of low RAM, its start
// aligned down to a page, as Firecracker does, and returns that address.
// lowRAMEnd is the end of the region starting at 0 (see LowRAMEnd);
// kernelEnd is the first byte the initrd may use (Kernel.RuntimeEnd), so
// that the kernel and the initrd cannot overlap.
func LoadInitrd(mem *memory.Guest, initrd io.ReaderAt, size int64, lowRAMEnd uint64, kernelEnd uint64) (uint64, error) {
	if mem == nil || initrd == nil {
		return 0, errors.New("loader: nil guest memory or initrd reader")
	}
	if size < 0 {
		return 0, fmt.Errorf("%w: negative size %d", ErrInitrdPlacement, size)
	}
	n := uint64(size)
	if n > lowRAMEnd {
		return 0, fmt.Errorf("%w: %d bytes do not fit in %d bytes of low RAM", ErrInitrdPlacement, n, lowRAMEnd)
	}
	addr := (lowRAMEnd - n) &^ (initrdAlign - 1)
	if addr < kernelEnd {
		return 0, fmt.Errorf("%w: %d bytes do not fit between the kernel end %#x and %#x", ErrInitrdPlacement, n, kernelEnd, lowRAMEnd)
	}
	// The zero page's ramdisk_image and ramdisk_size are 32-bit.
	if addr+n > 1<<32 {
		return 0, fmt.Errorf("%w: [%#x, +%#x) is not below 4 GiB", ErrInitrdPlacement, addr, n)
	}
	dst, err := mem.Slice(addr, n)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInitrdPlacement, err)
	}
	if err := readFull(initrd, dst, 0); err != nil {
		return 0, fmt.Errorf("reading initrd: %w", err)
	}
	return addr, nil
}
