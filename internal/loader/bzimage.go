package loader

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/memory"
)

// Offsets into a bzImage (Documentation/arch/x86/boot.rst), which are also
// the offsets of the same fields in struct boot_params.
const (
	bzSetupSectsOff  = 0x1f1
	bzJumpOff        = 0x201 // second byte of the short jump at 0x200
	bzHeaderMagicOff = 0x202
	bzVersionOff     = 0x206
	bzLoadflagsOff   = 0x211
	bzCode32StartOff = 0x214
	bzKernelAlignOff = 0x230
	bzRelocatableOff = 0x234
	bzXloadflagsOff  = 0x236
	bzPrefAddressOff = 0x258
	bzInitSizeOff    = 0x260

	// bzMinHeaderEnd is the end of the last field boot protocol 2.12
	// defines (handover_offset), so a 2.12+ header covers at least this.
	bzMinHeaderEnd = 0x268
	// bzMaxHeaderEnd is the end of struct setup_header as Linux defines
	// it today (kernel_info_offset, 2.15). Fields a newer kernel may add
	// are unknown to squib and the zero page builder takes no more.
	bzMaxHeaderEnd = 0x26c

	bzMinVersion = 0x020c // 2.12: the first with xloadflags
	loadedHigh   = 0x01   // loadflags: protected-mode code at 0x100000
	xlfKernel64  = 0x01   // xloadflags: 64-bit entry at load address + 0x200

	bzSectorSize       = 512
	bzDefaultSetupSect = 4 // setup_sects == 0 means 4, for ancient images

	// BzImage64EntryOffset is the 64-bit entry point's offset from the
	// bzImage load address.
	BzImage64EntryOffset = 0x200
)

func loadBzImage(mem *memory.Guest, r io.ReaderAt, size int64) (*Kernel, error) {
	var hdr [bzMaxHeaderEnd]byte
	if size < int64(len(hdr)) {
		return nil, invalid("bzImage truncated (%d bytes)", size)
	}
	if err := readFull(r, hdr[:], 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	version := le.Uint16(hdr[bzVersionOff:])
	xlf := le.Uint16(hdr[bzXloadflagsOff:])
	// Squib, like Firecracker, jumps straight to the 64-bit entry; only
	// images that promise one can boot.
	if version < bzMinVersion {
		return nil, invalid("bzImage boot protocol %d.%02d is older than 2.12", version>>8, version&0xff)
	}
	if xlf&xlfKernel64 == 0 {
		return nil, invalid("bzImage has no 64-bit entry point (XLF_KERNEL_64 not set)")
	}
	if hdr[bzLoadflagsOff]&loadedHigh == 0 {
		return nil, invalid("bzImage is not loaded high (LOADED_HIGH not set)")
	}
	setupSects := uint64(hdr[bzSetupSectsOff])
	if setupSects == 0 {
		setupSects = bzDefaultSetupSect
	}
	setupSize := (setupSects + 1) * bzSectorSize
	if uint64(size) <= setupSize {
		return nil, invalid("bzImage has no protected-mode kernel after its %d setup bytes", setupSize)
	}
	kernelSize := uint64(size) - setupSize
	load := uint64(le.Uint32(hdr[bzCode32StartOff:]))
	if load < x86.HimemStart {
		return nil, invalid("bzImage code32_start %#x below %#x", load, uint64(x86.HimemStart))
	}
	dst, err := mem.Slice(load, kernelSize)
	if err != nil {
		return nil, fmt.Errorf("%w: bzImage kernel [%#x, +%#x) does not fit in guest memory: %w", ErrInvalidKernel, load, kernelSize, err)
	}
	end := load + kernelSize

	// Where the decompressor works (arch/x86/boot/compressed/head_64.S):
	// a relocatable kernel uses its load address rounded up to
	// kernel_alignment, but never below pref_address (LOAD_PHYSICAL_ADDR);
	// a fixed one always uses pref_address.
	work := le.Uint64(hdr[bzPrefAddressOff:])
	if hdr[bzRelocatableOff] != 0 {
		a := uint64(le.Uint32(hdr[bzKernelAlignOff:]))
		reloc := load
		if a != 0 && a&(a-1) == 0 {
			reloc = alignUp(load, a) // load < 2^32, a <= 2^31: no overflow
		}
		work = max(work, reloc)
	}
	runtimeEnd, carry := bits.Add64(work, uint64(le.Uint32(hdr[bzInitSizeOff:])), 0)
	if carry != 0 {
		return nil, invalid("bzImage pref_address %#x overflows", work)
	}

	// The header ends where the jump at 0x200 lands. Clamp it: the 2.12
	// fields exist whatever the jump says, and nothing past the known
	// struct may spill into the rest of the zero page.
	hdrEnd := min(max(bzMinHeaderEnd, bzHeaderMagicOff+int(hdr[bzJumpOff])), bzMaxHeaderEnd)
	setup := append([]byte(nil), hdr[bzSetupSectsOff:hdrEnd]...)

	if err := readFull(r, dst, int64(setupSize)); err != nil {
		return nil, err
	}
	return &Kernel{
		Entry:       load + BzImage64EntryOffset,
		End:         end,
		RuntimeEnd:  max(end, runtimeEnd),
		SetupHeader: setup,
		Format:      FormatBzImage,
	}, nil
}
