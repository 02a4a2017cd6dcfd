package loader

import (
	"cmp"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/memory"
)

// ELF64 structure sizes and the PVH note constants (Xen's public
// elfnote.h and the Linux PVH entry's note).
const (
	elfHeaderSize = 64
	elfPhdrSize   = 56
	// pnXNum in e_phnum means the real count lives in a section header;
	// vmlinux never uses it, so it is rejected rather than supported.
	pnXNum = 0xffff

	xenElfnotePhys32Entry = 18
	// ELF notes are 4-byte aligned whatever p_align says (Linux's
	// elfnote.h; a vmlinux's PT_NOTE may claim another alignment).
	noteAlign     = 4
	noteHdrSize   = 12
	pvhNoteName   = "Xen\x00"
	pvhEntryBytes = 4
	// maxNoteBytes bounds the note bytes scanned for the PVH entry. A
	// vmlinux has well under a KiB of notes; without a bound, many
	// PT_NOTE headers over one large file range would cost quadratic time.
	maxNoteBytes = 1 << 20
)

// segment is a validated PT_LOAD program header.
type segment struct {
	off, paddr, filesz, memsz uint64
}

func loadELF(mem *memory.Guest, r io.ReaderAt, size int64) (*Kernel, error) {
	if size < elfHeaderSize {
		return nil, invalid("ELF header truncated (%d bytes)", size)
	}
	var eh [elfHeaderSize]byte
	if err := readFull(r, eh[:], 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if elf.Class(eh[elf.EI_CLASS]) != elf.ELFCLASS64 {
		return nil, invalid("not a 64-bit ELF (class %d)", eh[elf.EI_CLASS])
	}
	if elf.Data(eh[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil, invalid("not a little-endian ELF")
	}
	if m := elf.Machine(le.Uint16(eh[18:])); m != elf.EM_X86_64 {
		return nil, invalid("ELF machine is %v, not x86_64", m)
	}
	entry := le.Uint64(eh[24:])
	phoff := le.Uint64(eh[32:])
	phentsize := le.Uint16(eh[54:])
	phnum := le.Uint16(eh[56:])
	if phentsize != elfPhdrSize {
		return nil, invalid("ELF program header size %d, want %d", phentsize, elfPhdrSize)
	}
	if phnum == 0 || phnum == pnXNum {
		return nil, invalid("ELF program header count %d unsupported", phnum)
	}
	if phoff < elfHeaderSize || !inFile(phoff, uint64(phnum)*elfPhdrSize, size) {
		return nil, invalid("ELF program headers [%#x, +%d entries) outside the file", phoff, phnum)
	}
	// Firecracker's check: a kernel entered below 1 MiB would run over the
	// boot structures it places there.
	if entry < x86.HimemStart {
		return nil, invalid("ELF entry %#x below %#x", entry, uint64(x86.HimemStart))
	}

	ph := make([]byte, int(phnum)*elfPhdrSize)
	if err := readFull(r, ph, int64(phoff)); err != nil {
		return nil, err
	}

	var segs []segment
	var pvh uint64
	noteBudget := uint64(maxNoteBytes)
	for i := range int(phnum) {
		p := ph[i*elfPhdrSize : (i+1)*elfPhdrSize]
		typ := elf.ProgType(le.Uint32(p[0:]))
		s := segment{
			off:    le.Uint64(p[8:]),
			paddr:  le.Uint64(p[24:]),
			filesz: le.Uint64(p[32:]),
			memsz:  le.Uint64(p[40:]),
		}
		switch typ {
		case elf.PT_LOAD:
			if err := checkSegment(mem, i, s, size); err != nil {
				return nil, err
			}
			if s.memsz > 0 {
				segs = append(segs, s)
			}
		case elf.PT_NOTE:
			if pvh != 0 {
				continue
			}
			if s.filesz > 0 && !inFile(s.off, s.filesz, size) {
				return nil, invalid("ELF note segment %d: [%#x, +%#x) outside the file", i, s.off, s.filesz)
			}
			if s.filesz > noteBudget {
				return nil, invalid("ELF notes exceed %d bytes", maxNoteBytes)
			}
			noteBudget -= s.filesz
			e, err := findPVHEntry(r, i, s.off, s.filesz)
			if err != nil {
				return nil, err
			}
			pvh = e
		}
	}
	if len(segs) == 0 {
		return nil, invalid("ELF has no loadable segment")
	}

	// Overlapping segments would silently overwrite each other; no linker
	// produces them for a kernel, so they mean a corrupt image.
	slices.SortFunc(segs, func(a, b segment) int { return cmp.Compare(a.paddr, b.paddr) })
	for i := 1; i < len(segs); i++ {
		prev := segs[i-1]
		if segs[i].paddr < prev.paddr+prev.memsz {
			return nil, invalid("ELF segments at %#x and %#x overlap", prev.paddr, segs[i].paddr)
		}
	}

	// Everything is validated: now touch guest memory.
	var end uint64
	for _, s := range segs {
		dst, err := mem.Slice(s.paddr, s.memsz)
		if err != nil {
			return nil, err // cannot happen: checkSegment tried the same range
		}
		if err := readFull(r, dst[:s.filesz], int64(s.off)); err != nil {
			return nil, fmt.Errorf("loading ELF segment at %#x: %w", s.paddr, err)
		}
		// The bss part: RAM is fresh and zero on a first boot, but not
		// necessarily when memory is reused.
		clear(dst[s.filesz:])
		end = max(end, s.paddr+s.memsz)
	}
	return &Kernel{
		Entry:      entry,
		PVHEntry:   pvh,
		End:        end,
		RuntimeEnd: end,
		Format:     FormatELF,
	}, nil
}

// checkSegment validates one PT_LOAD header against the file and guest RAM.
func checkSegment(mem *memory.Guest, i int, s segment, size int64) error {
	if s.filesz > s.memsz {
		return invalid("ELF segment %d: file size %#x above memory size %#x", i, s.filesz, s.memsz)
	}
	if s.memsz == 0 {
		return nil
	}
	if !inFile(s.off, s.filesz, size) {
		return invalid("ELF segment %d: file range [%#x, +%#x) outside the %d-byte file", i, s.off, s.filesz, size)
	}
	if s.paddr < x86.HimemStart {
		return invalid("ELF segment %d: physical address %#x below %#x", i, s.paddr, uint64(x86.HimemStart))
	}
	if s.paddr+s.memsz < s.paddr {
		return invalid("ELF segment %d: [%#x, +%#x) overflows", i, s.paddr, s.memsz)
	}
	if _, err := mem.Slice(s.paddr, s.memsz); err != nil {
		return fmt.Errorf("%w: ELF segment %d does not fit in guest memory: %w", ErrInvalidKernel, i, err)
	}
	return nil
}

// findPVHEntry walks the notes of one PT_NOTE segment and returns the
// XEN_ELFNOTE_PHYS32_ENTRY address, or 0 when the segment has none. Notes
// are read one header at a time rather than buffering the segment; the
// caller has checked that the segment lies inside the file.
func findPVHEntry(r io.ReaderAt, i int, off, filesz uint64) (uint64, error) {
	le := binary.LittleEndian
	end := off + filesz
	for pos := off; pos < end; {
		if end-pos < noteHdrSize {
			return 0, invalid("ELF note segment %d: truncated note at %#x", i, pos)
		}
		var h [noteHdrSize]byte
		if err := readFull(r, h[:], int64(pos)); err != nil {
			return 0, err
		}
		namesz, descsz, typ := uint64(le.Uint32(h[0:])), uint64(le.Uint32(h[4:])), le.Uint32(h[8:])
		nameOff := pos + noteHdrSize
		descOff := nameOff + alignUp(namesz, noteAlign)
		// Values are at most 2^32+3 each, so none of these sums overflow.
		if descOff > end || descsz > end-descOff {
			return 0, invalid("ELF note segment %d: note at %#x runs past the segment", i, pos)
		}
		if typ == xenElfnotePhys32Entry && namesz == uint64(len(pvhNoteName)) {
			var name [len(pvhNoteName)]byte
			if err := readFull(r, name[:], int64(nameOff)); err != nil {
				return 0, err
			}
			if string(name[:]) == pvhNoteName {
				// Linux emits the entry as a pointer-sized value; the
				// protocol only defines the low 32 bits.
				if descsz < pvhEntryBytes {
					return 0, invalid("PVH note descriptor is %d bytes, want at least %d", descsz, pvhEntryBytes)
				}
				var d [pvhEntryBytes]byte
				if err := readFull(r, d[:], int64(descOff)); err != nil {
					return 0, err
				}
				e := uint64(le.Uint32(d[:]))
				if e < x86.HimemStart {
					return 0, invalid("PVH entry %#x below %#x", e, uint64(x86.HimemStart))
				}
				return e, nil
			}
		}
		pos = descOff + alignUp(descsz, noteAlign)
	}
	return 0, nil
}

// alignUp rounds v up to a multiple of a (a power of two); callers keep v
// far below overflow.
func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
