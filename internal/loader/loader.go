package loader

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/squib-vmm/squib/internal/memory"
)

// Kernel formats reported in Kernel.Format.
const (
	FormatELF     = "elf"
	FormatBzImage = "bzImage"
)

// ErrInvalidKernel wraps every complaint about the content of a kernel
// image (as opposed to I/O errors), so callers can tell a bad file from a
// failing disk.
var ErrInvalidKernel = errors.New("Invalid kernel image")

// Kernel describes a kernel loaded into guest memory.
type Kernel struct {
	// Entry is where the vCPU starts for the 64-bit Linux boot protocol:
	// e_entry for ELF, the load address + 0x200 for a bzImage.
	Entry uint64
	// PVHEntry is the 32-bit PVH entry from the ELF Xen note, or 0 when the
	// image has none (always 0 for a bzImage). Firecracker boots through
	// PVH whenever it is non-zero.
	PVHEntry uint64
	// End is the first guest-physical byte after the loaded image (for ELF
	// the highest p_paddr+p_memsz, for a bzImage the end of the copied
	// protected-mode part).
	End uint64
	// RuntimeEnd is the first byte after the memory the kernel needs while
	// it starts. For ELF it equals End. A bzImage decompresses itself into
	// init_size bytes at max(load address rounded up to kernel_alignment,
	// pref_address), which usually lies well above End; an initrd placed
	// there would be overwritten, so LoadInitrd should be given RuntimeEnd.
	RuntimeEnd uint64
	// SetupHeader is the bzImage's raw setup header: the bytes from offset
	// 0x1f1 up to the header end (0x202 plus the byte at 0x201, kept
	// within [0x268, 0x26c], i.e. at most 0x7b bytes), to be copied to the
	// same offset of the zero page before the loader fields are filled in.
	// Nil for ELF.
	SetupHeader []byte
	// Format is FormatELF or FormatBzImage.
	Format string
}

// SetupHeaderOffset is where Kernel.SetupHeader starts, both in a bzImage
// and in struct boot_params (the zero page).
const SetupHeaderOffset = 0x1f1

// Load detects the kernel format and copies the image into guest memory.
// size is the image length in bytes (for a file, its size from Stat); the
// reader must hold at least that many bytes.
func Load(mem *memory.Guest, kernel io.ReaderAt, size int64) (*Kernel, error) {
	if mem == nil || kernel == nil {
		return nil, errors.New("loader: nil guest memory or kernel reader")
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrInvalidKernel, size)
	}
	// Enough for the ELF magic and the bzImage "HdrS" signature.
	head := make([]byte, min(size, bzHeaderMagicOff+4))
	if err := readFull(kernel, head, 0); err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("\x7fELF")):
		return loadELF(mem, kernel, size)
	case len(head) == bzHeaderMagicOff+4 && string(head[bzHeaderMagicOff:]) == "HdrS":
		return loadBzImage(mem, kernel, size)
	}
	return nil, fmt.Errorf("%w: not an ELF vmlinux or bzImage", ErrInvalidKernel)
}

// readFull fills p from r at off. io.ReaderAt may return io.EOF together
// with a full buffer; only a short read is an error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at offset %#x: %w", len(p), off, err)
}

// invalid builds an ErrInvalidKernel error.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidKernel}, args...)...)
}

// inFile reports whether [off, off+n) lies inside a file of size bytes,
// without overflowing.
func inFile(off, n uint64, size int64) bool {
	s := uint64(size)
	return off <= s && n <= s-off
}
