package loader

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

func loadBytes(mem *memory.Guest, img []byte) (*Kernel, error) {
	return Load(mem, bytes.NewReader(img), int64(len(img)))
}

func mustRead(t *testing.T, mem *memory.Guest, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := mem.ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadELF(t *testing.T) {
	for _, pvh := range []bool{false, true} {
		mem := newGuest(t, 4<<20)
		// Dirty the bss so that the test sees it cleared.
		if err := mem.WriteAt(bytes.Repeat([]byte{0xff}, 0x800), testData); err != nil {
			t.Fatal(err)
		}
		k, err := loadBytes(mem, sampleELF(pvh))
		if err != nil {
			t.Fatalf("pvh=%v: %v", pvh, err)
		}
		wantPVH := uint64(0)
		if pvh {
			wantPVH = testPVH
		}
		want := Kernel{Entry: testEntry, PVHEntry: wantPVH, End: testData + 0x800, RuntimeEnd: testData + 0x800, Format: FormatELF}
		if k.Entry != want.Entry || k.PVHEntry != want.PVHEntry || k.End != want.End ||
			k.RuntimeEnd != want.RuntimeEnd || k.Format != want.Format || k.SetupHeader != nil {
			t.Fatalf("pvh=%v: got %+v, want %+v", pvh, *k, want)
		}
		if got := mustRead(t, mem, testText, 0x300); !bytes.Equal(got, pattern(0x300, 1)) {
			t.Error("text segment not copied")
		}
		if got := mustRead(t, mem, testData, 0x180); !bytes.Equal(got, pattern(0x180, 2)) {
			t.Error("data segment not copied")
		}
		if got := mustRead(t, mem, testData+0x180, 0x800-0x180); !bytes.Equal(got, make([]byte, 0x800-0x180)) {
			t.Error("bss not zeroed")
		}
		// The note segment is not loaded.
		if got := mustRead(t, mem, 0x300000, 16); !bytes.Equal(got, make([]byte, 16)) {
			t.Error("PT_NOTE segment was copied to memory")
		}
	}
}

// Notes are 4-byte aligned whatever the segment's p_align claims.
func TestLoadELFNoteAlignIgnored(t *testing.T) {
	img := sampleELF(true)
	putPhdr(img, 2, phAlign, 8)
	k, err := loadBytes(newGuest(t, 4<<20), img)
	if err != nil || k.PVHEntry != testPVH {
		t.Fatalf("got %+v, %v", k, err)
	}
}

// A PVH note with a 4-byte descriptor (the protocol's minimum) works too,
// and the first PVH note wins across several PT_NOTE segments.
func TestLoadELFPVHVariants(t *testing.T) {
	pvh4 := elfNote("Xen", xenElfnotePhys32Entry, le.AppendUint32(nil, 0x200000))
	other := elfNote("Xen", xenElfnotePhys32Entry, le.AppendUint32(nil, 0x300000))
	img := buildELF(testEntry,
		elfSeg{typ: elf.PT_NOTE, data: elfNote("Xen", 6, []byte("linux\x00"))},
		elfSeg{typ: elf.PT_LOAD, paddr: testText, memsz: 0x10, data: pattern(0x10, 0)},
		elfSeg{typ: elf.PT_NOTE, data: pvh4},
		elfSeg{typ: elf.PT_NOTE, data: other},
	)
	k, err := loadBytes(newGuest(t, 4<<20), img)
	if err != nil || k.PVHEntry != 0x200000 {
		t.Fatalf("got %+v, %v", k, err)
	}
}

func TestLoadELFErrors(t *testing.T) {
	const ram = 4 << 20
	load := func(paddr, memsz uint64, n int) elfSeg {
		return elfSeg{typ: elf.PT_LOAD, paddr: paddr, memsz: memsz, data: pattern(n, 9)}
	}
	noteSeg := func(b []byte) elfSeg { return elfSeg{typ: elf.PT_NOTE, data: b} }
	pvhShort := elfNote("Xen", xenElfnotePhys32Entry, []byte{1, 2})
	pvhLow := elfNote("Xen", xenElfnotePhys32Entry, le.AppendUint32(nil, 0x8000))

	cases := []struct {
		name string
		img  func() []byte
		want string
	}{
		{"segment below 1MiB", func() []byte { return buildELF(testEntry, load(0xf0000, 0x100, 0x100)) }, "below 0x100000"},
		{"segment straddles 1MiB", func() []byte { return buildELF(testEntry, load(0xfff00, 0x200, 0x200)) }, "below 0x100000"},
		{"entry below 1MiB", func() []byte { return buildELF(0x8000, load(testText, 0x100, 0x100)) }, "entry 0x8000"},
		{"overlapping segments", func() []byte {
			return buildELF(testEntry, load(testText, 0x1000, 0x10), load(testText+0xfff, 0x10, 0x10))
		}, "overlap"},
		{"identical segments", func() []byte {
			return buildELF(testEntry, load(testText, 0x10, 0x10), load(testText, 0x10, 0x10))
		}, "overlap"},
		{"segment past RAM", func() []byte { return buildELF(testEntry, load(ram-0x10, 0x20, 0x20)) }, "does not fit"},
		{"bss past RAM", func() []byte { return buildELF(testEntry, load(ram-0x100, 0x1000, 0x10)) }, "does not fit"},
		{"segment wraps", func() []byte { return buildELF(testEntry, load(1<<63, 1<<63, 0x10)) }, "overflows"},
		{"filesz above memsz", func() []byte { return buildELF(testEntry, load(testText, 0x10, 0x20)) }, "above memory size"},
		{"file range outside file", func() []byte {
			img := buildELF(testEntry, load(testText, 0x100, 0x10))
			putPhdr(img, 0, phFilesz, 0x100)
			return img
		}, "outside the"},
		{"file offset huge", func() []byte {
			img := buildELF(testEntry, load(testText, 0x100, 0x10))
			putPhdr(img, 0, phOffset, ^uint64(0)-4)
			return img
		}, "outside the"},
		{"no PT_LOAD", func() []byte { return buildELF(testEntry, noteSeg(elfNote("Xen", 6, nil))) }, "no loadable"},
		{"empty PT_LOAD only", func() []byte { return buildELF(testEntry, load(testText, 0, 0)) }, "no loadable"},
		{"32-bit class", func() []byte {
			img := sampleELF(false)
			img[elf.EI_CLASS] = byte(elf.ELFCLASS32)
			return img
		}, "64-bit"},
		{"big endian", func() []byte {
			img := sampleELF(false)
			img[elf.EI_DATA] = byte(elf.ELFDATA2MSB)
			return img
		}, "little-endian"},
		{"aarch64", func() []byte {
			img := sampleELF(false)
			le.PutUint16(img[18:], uint16(elf.EM_AARCH64))
			return img
		}, "not x86_64"},
		{"phentsize", func() []byte {
			img := sampleELF(false)
			le.PutUint16(img[54:], 32)
			return img
		}, "program header size"},
		{"phnum zero", func() []byte {
			img := sampleELF(false)
			le.PutUint16(img[56:], 0)
			return img
		}, "count 0"},
		{"phnum PN_XNUM", func() []byte {
			img := sampleELF(false)
			le.PutUint16(img[56:], 0xffff)
			return img
		}, "count 65535"},
		{"phoff inside header", func() []byte {
			img := sampleELF(false)
			le.PutUint64(img[32:], 0x10)
			return img
		}, "program headers"},
		{"phdrs past end", func() []byte {
			img := sampleELF(false)
			le.PutUint16(img[56:], 200)
			return img
		}, "program headers"},
		{"PVH descriptor short", func() []byte {
			return buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(pvhShort))
		}, "PVH note descriptor"},
		{"PVH entry below 1MiB", func() []byte {
			return buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(pvhLow))
		}, "PVH entry 0x8000"},
		{"note header truncated", func() []byte {
			return buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(elfNote("Xen", 6, nil)[:8]))
		}, "truncated note"},
		{"note runs past segment", func() []byte {
			n := elfNote("Xen", 6, make([]byte, 8))
			return buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(n[:len(n)-4]))
		}, "past the segment"},
		{"note name size huge", func() []byte {
			n := elfNote("Xen", 6, nil)
			le.PutUint32(n[0:], 0xffffffff)
			return buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(n))
		}, "past the segment"},
		{"notes too large", func() []byte {
			img := buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(elfNote("Xen", 6, nil)),
				noteSeg(make([]byte, maxNoteBytes/2+4)), noteSeg(make([]byte, maxNoteBytes/2)))
			return img
		}, "notes exceed"},
		{"note segment outside file", func() []byte {
			img := buildELF(testEntry, load(testText, 0x10, 0x10), noteSeg(elfNote("Xen", 6, nil)))
			putPhdr(img, 1, phFilesz, 1<<40)
			return img
		}, "outside the file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := newGuest(t, ram)
			_, err := loadBytes(mem, c.img())
			if err == nil {
				t.Fatal("loaded")
			}
			if !errors.Is(err, ErrInvalidKernel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want ErrInvalidKernel mentioning %q", err, c.want)
			}
			// Validation comes first: nothing was written.
			if got := mustRead(t, mem, 0, ram); !bytes.Equal(got, make([]byte, ram)) {
				t.Fatal("a rejected image wrote guest memory")
			}
		})
	}
}

// Every strict prefix of a valid image is rejected cleanly.
func TestLoadELFTruncated(t *testing.T) {
	mem := newGuest(t, 4<<20)
	img := sampleELF(true)
	for n := range len(img) {
		if _, err := loadBytes(mem, img[:n]); !errors.Is(err, ErrInvalidKernel) {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
}

// A reader shorter than the size it was announced with gives an I/O error,
// not a panic or a silent partial load.
func TestLoadELFShortReader(t *testing.T) {
	img := buildELF(testEntry, elfSeg{typ: elf.PT_LOAD, paddr: testText, memsz: 0x100, data: pattern(0x100, 1)})
	_, err := Load(newGuest(t, 4<<20), bytes.NewReader(img[:len(img)-8]), int64(len(img)))
	if err == nil || errors.Is(err, ErrInvalidKernel) {
		t.Fatalf("got %v, want an I/O error", err)
	}
}

// Segments may sit in a region other than the first.
func TestLoadELFSecondRegion(t *testing.T) {
	mem := newGuestLayout(t, memory.Layout{Start: 0, Size: 2 << 20}, memory.Layout{Start: 1 << 32, Size: 1 << 20})
	img := buildELF(testEntry,
		elfSeg{typ: elf.PT_LOAD, paddr: testText, memsz: 0x10, data: pattern(0x10, 1)},
		elfSeg{typ: elf.PT_LOAD, paddr: 1<<32 + 0x1000, memsz: 0x20, data: pattern(0x20, 2)},
	)
	k, err := loadBytes(mem, img)
	if err != nil || k.End != 1<<32+0x1020 {
		t.Fatalf("got %+v, %v", k, err)
	}
	// Across the gap between regions: rejected.
	img = buildELF(testEntry, elfSeg{typ: elf.PT_LOAD, paddr: 2<<20 - 0x10, memsz: 0x20, data: pattern(0x20, 2)})
	if _, err := loadBytes(mem, img); !errors.Is(err, ErrInvalidKernel) || !errors.Is(err, memory.ErrOutOfBounds) {
		t.Fatalf("segment across a hole: %v", err)
	}
}

func TestLoadUnknownFormat(t *testing.T) {
	mem := newGuest(t, 4<<20)
	for _, img := range [][]byte{nil, {0x7f, 'E'}, make([]byte, 8192), []byte("MZ this is a PE file")} {
		_, err := loadBytes(mem, img)
		if !errors.Is(err, ErrInvalidKernel) || !strings.Contains(err.Error(), "not an ELF vmlinux or bzImage") {
			t.Fatalf("%d bytes: %v", len(img), err)
		}
	}
	if _, err := Load(mem, bytes.NewReader(nil), -1); !errors.Is(err, ErrInvalidKernel) {
		t.Fatalf("negative size: %v", err)
	}
}

// The caller hands Load an *os.File: reads land straight in guest memory.
func TestLoadFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(path, sampleELF(true), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	mem := newGuest(t, 4<<20)
	k, err := Load(mem, f, fi.Size())
	if err != nil || k.PVHEntry != testPVH {
		t.Fatalf("got %+v, %v", k, err)
	}
	if got := mustRead(t, mem, testText, 0x300); !bytes.Equal(got, pattern(0x300, 1)) {
		t.Fatal("text segment not copied")
	}
}
