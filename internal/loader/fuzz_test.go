package loader

import (
	"bytes"
	"testing"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/memory"
)

// The fuzz guest is tiny, so that each run costs microseconds (the
// fuzzer's minimizer runs an input thousands of times): 64 KiB below 1 MiB
// that must never change, 64 KiB from 1 MiB, a hole, and a 4 KiB region.
const (
	fuzzLowStart  = x86.HimemStart - 64<<10
	fuzzHighEnd   = x86.HimemStart + 64<<10
	fuzzHoleStart = x86.HimemStart + 128<<10
	fuzzHoleSize  = 4 << 10
)

type fuzzGuest struct {
	mem          *memory.Guest
	low, lowWant []byte
	high, hole   []byte
	zeros        []byte
}

func newFuzzGuest(f *testing.F) *fuzzGuest {
	mem := newGuestLayout(f,
		memory.Layout{Start: fuzzLowStart, Size: fuzzHighEnd - fuzzLowStart},
		memory.Layout{Start: fuzzHoleStart, Size: fuzzHoleSize})
	g := &fuzzGuest{mem: mem, lowWant: pattern(x86.HimemStart-fuzzLowStart, 0x5a), zeros: make([]byte, fuzzHighEnd-x86.HimemStart)}
	g.low, _ = mem.Slice(fuzzLowStart, x86.HimemStart-fuzzLowStart)
	g.high, _ = mem.Slice(x86.HimemStart, fuzzHighEnd-x86.HimemStart)
	g.hole, _ = mem.Slice(fuzzHoleStart, fuzzHoleSize)
	copy(g.low, g.lowWant)
	return g
}

// run loads data and checks the invariants: no panic (implicit), nothing
// below 1 MiB written, nothing written at all on error, and a result that
// describes memory the guest has.
func (g *fuzzGuest) run(t *testing.T, data []byte) {
	clear(g.high)
	clear(g.hole)
	k, err := Load(g.mem, bytes.NewReader(data), int64(len(data)))
	// bytes.Equal rather than loops: the fuzzer instruments every loop
	// iteration, which would make each run take milliseconds.
	if !bytes.Equal(g.low, g.lowWant) {
		t.Fatal("memory below 1 MiB changed")
	}
	if err != nil {
		if k != nil {
			t.Fatal("error with a result")
		}
		if !bytes.Equal(g.high, g.zeros) || !bytes.Equal(g.hole, g.zeros[:len(g.hole)]) {
			t.Fatalf("a rejected image (%v) wrote guest memory", err)
		}
		return
	}
	if k.Entry < x86.HimemStart || k.End <= x86.HimemStart || k.RuntimeEnd < k.End {
		t.Fatalf("bad result %+v", *k)
	}
	if k.End > fuzzHoleStart+fuzzHoleSize || k.End > fuzzHighEnd && k.End <= fuzzHoleStart {
		t.Fatalf("End %#x beyond RAM", k.End)
	}
	switch k.Format {
	case FormatELF:
		if k.PVHEntry != 0 && k.PVHEntry < x86.HimemStart || k.SetupHeader != nil {
			t.Fatalf("bad ELF result %+v", *k)
		}
	case FormatBzImage:
		if k.PVHEntry != 0 || len(k.SetupHeader) < bzMinHeaderEnd-SetupHeaderOffset || len(k.SetupHeader) > bzMaxHeaderEnd-SetupHeaderOffset {
			t.Fatalf("bad bzImage result %+v", *k)
		}
	default:
		t.Fatalf("format %q", k.Format)
	}
}

func FuzzLoadELF(f *testing.F) {
	f.Add(sampleELFAt(false, x86.HimemStart+0x8000))
	f.Add(sampleELFAt(true, fuzzHoleStart))
	f.Add(buildELF(testEntry,
		elfSeg{typ: 1, paddr: testText, memsz: 0x20, data: pattern(0x10, 1)},
		elfSeg{typ: 1, paddr: fuzzHoleStart + 0x100, memsz: 0x100, data: pattern(0x80, 2)},
	))
	f.Add(buildELF(testEntry, elfSeg{typ: 4, data: elfNote("Xen", xenElfnotePhys32Entry, []byte{1, 2, 3})}))
	g := newFuzzGuest(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Keep the magic so that mutations explore the ELF parser rather
		// than the format detection.
		data = bytes.Clone(data) // the engine's bytes are read-only
		if len(data) >= 4 {
			copy(data, "\x7fELF")
		}
		g.run(t, data)
	})
}

func FuzzLoadBzImage(f *testing.F) {
	f.Add(buildBzImage(defaultBz()))
	o := defaultBz()
	o.setupSects, o.payload = 0, pattern(0x100, 7)
	f.Add(buildBzImage(o))
	o = defaultBz()
	o.version = 0x0204
	f.Add(buildBzImage(o))
	o = defaultBz()
	o.xloadflags = 0
	f.Add(buildBzImage(o))
	g := newFuzzGuest(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Keep the signature so that mutations reach the header checks.
		data = bytes.Clone(data) // the engine's bytes are read-only
		if len(data) >= bzHeaderMagicOff+4 {
			copy(data[bzHeaderMagicOff:], "HdrS")
		}
		g.run(t, data)
	})
}
