package loader

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

var le = binary.LittleEndian

// newGuest maps size bytes of RAM at guest address 0.
func newGuest(tb testing.TB, size uint64) *memory.Guest {
	tb.Helper()
	return newGuestLayout(tb, memory.Layout{Start: 0, Size: size})
}

func newGuestLayout(tb testing.TB, layout ...memory.Layout) *memory.Guest {
	tb.Helper()
	g, err := memory.New(layout, memory.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { g.Close() })
	return g
}

// elfSeg describes one program header of a synthetic ELF; filesz is
// len(data).
type elfSeg struct {
	typ          elf.ProgType
	paddr, memsz uint64
	data         []byte
}

// Field offsets inside an Elf64_Phdr, for tests that corrupt one.
const (
	phOffset = 8
	phPaddr  = 24
	phFilesz = 32
	phMemsz  = 40
	phAlign  = 48
)

// buildELF makes a minimal x86_64 ELF executable: header, program headers,
// then each segment's bytes, 16-byte aligned.
func buildELF(entry uint64, segs ...elfSeg) []byte {
	img := make([]byte, elfHeaderSize+elfPhdrSize*len(segs))
	copy(img, "\x7fELF")
	img[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	img[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	img[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(img[16:], uint16(elf.ET_EXEC))
	le.PutUint16(img[18:], uint16(elf.EM_X86_64))
	le.PutUint32(img[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(img[24:], entry)
	le.PutUint64(img[32:], elfHeaderSize)
	le.PutUint16(img[52:], elfHeaderSize)
	le.PutUint16(img[54:], elfPhdrSize)
	le.PutUint16(img[56:], uint16(len(segs)))
	offs := make([]int, len(segs))
	for i, s := range segs {
		for len(img)%16 != 0 {
			img = append(img, 0)
		}
		offs[i] = len(img)
		img = append(img, s.data...)
	}
	for i, s := range segs {
		p := img[elfHeaderSize+elfPhdrSize*i:]
		le.PutUint32(p[0:], uint32(s.typ))
		le.PutUint64(p[phOffset:], uint64(offs[i]))
		le.PutUint64(p[16:], s.paddr)
		le.PutUint64(p[phPaddr:], s.paddr)
		le.PutUint64(p[phFilesz:], uint64(len(s.data)))
		le.PutUint64(p[phMemsz:], s.memsz)
		align := uint64(0x1000)
		if s.typ == elf.PT_NOTE {
			align = 4
		}
		le.PutUint64(p[phAlign:], align)
	}
	return img
}

// putPhdr overwrites one 64-bit field of program header i.
func putPhdr(img []byte, i, field int, v uint64) {
	le.PutUint64(img[elfHeaderSize+elfPhdrSize*i+field:], v)
}

// elfNote encodes one ELF note; name gets its NUL, name and desc are
// padded to 4 bytes.
func elfNote(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	var h [12]byte
	le.PutUint32(h[0:], uint32(len(name)+1))
	le.PutUint32(h[4:], uint32(len(desc)))
	le.PutUint32(h[8:], typ)
	b.Write(h[:])
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(desc)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

func u64le(v uint64) []byte { return le.AppendUint64(nil, v) }

// pattern returns n recognisable bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// Synthetic images shared by the tests and the fuzz seeds.

const (
	testText  = 0x100000
	testData  = 0x180000
	testEntry = 0x100040
	testPVH   = 0x100080
)

// sampleELF has a text segment, a data segment with bss and, if pvh, a
// note segment in the layout Linux uses (several Xen notes, the PVH entry
// as a 64-bit value).
func sampleELF(pvh bool) []byte { return sampleELFAt(pvh, testData) }

// sampleELFAt is sampleELF with the data segment at data.
func sampleELFAt(pvh bool, data uint64) []byte {
	segs := []elfSeg{
		{typ: elf.PT_LOAD, paddr: testText, memsz: 0x300, data: pattern(0x300, 1)},
		{typ: elf.PT_LOAD, paddr: data, memsz: 0x800, data: pattern(0x180, 2)},
	}
	var notes []byte
	notes = append(notes, elfNote("Xen", 6, []byte("linux\x00"))...)
	notes = append(notes, elfNote("GNU", xenElfnotePhys32Entry, u64le(0xdead))...)
	if pvh {
		notes = append(notes, elfNote("Xen", xenElfnotePhys32Entry, u64le(testPVH))...)
	}
	notes = append(notes, elfNote("Xen", 17, []byte{1, 0x88, 0, 0})...)
	segs = append(segs, elfSeg{typ: elf.PT_NOTE, paddr: 0x300000, data: notes})
	return buildELF(testEntry, segs...)
}

// bzOpts shapes a synthetic bzImage.
type bzOpts struct {
	version    uint16
	xloadflags uint16
	loadflags  byte
	code32     uint32
	setupSects byte
	jump       byte
	payload    []byte
	align      uint32
	reloc      byte
	pref       uint64
	initSize   uint32
}

func defaultBz() bzOpts {
	return bzOpts{
		version:    0x020f,
		xloadflags: 0x7f,
		loadflags:  loadedHigh,
		code32:     0x100000,
		setupSects: 4,
		jump:       0x6a, // header end 0x26c, as in Linux 6.1
		payload:    pattern(0x1000, 3),
		align:      0x200000,
		reloc:      1,
		pref:       0x100000,
		initSize:   0x3000,
	}
}

// buildBzImage lays out a bzImage: setup sectors holding the header, then
// the protected-mode payload.
func buildBzImage(o bzOpts) []byte {
	sects := int(o.setupSects)
	if sects == 0 {
		sects = bzDefaultSetupSect
	}
	img := make([]byte, (sects+1)*bzSectorSize)
	img[bzSetupSectsOff] = o.setupSects
	le.PutUint16(img[0x1fe:], 0xaa55)
	img[0x200] = 0xeb
	img[bzJumpOff] = o.jump
	copy(img[bzHeaderMagicOff:], "HdrS")
	le.PutUint16(img[bzVersionOff:], o.version)
	img[bzLoadflagsOff] = o.loadflags
	le.PutUint32(img[bzCode32StartOff:], o.code32)
	le.PutUint32(img[bzKernelAlignOff:], o.align)
	img[bzRelocatableOff] = o.reloc
	le.PutUint16(img[bzXloadflagsOff:], o.xloadflags)
	le.PutUint64(img[bzPrefAddressOff:], o.pref)
	le.PutUint32(img[bzInitSizeOff:], o.initSize)
	// Something recognisable past the header, which must not be copied.
	for i := bzMaxHeaderEnd; i < 0x290; i++ {
		img[i] = 0xcc
	}
	return append(img, o.payload...)
}
