package virtiotest

import (
	"bytes"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

// MemoryAt is NewMemory for a test: it fails t rather than return an
// error, and unmaps the memory when t's test ends. Cleanups run last
// registered first, so a device stopped by a cleanup registered after
// this call stops before its memory goes.
func MemoryAt(t testing.TB, start, size uint64) *memory.Guest {
	t.Helper()
	mem, err := NewMemory(start, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// NewMemoryWithHole maps guest RAM at [0, hole) and [resume, end), for
// fuzzing: buffers can then straddle the hole, sit in it or lie past the
// end of RAM. The memory is unmapped when tb's test ends.
func NewMemoryWithHole(tb testing.TB, hole, resume, end uint64) *memory.Guest {
	tb.Helper()
	mem, err := memory.New([]memory.Layout{
		{Start: 0, Size: hole},
		{Start: resume, Size: end - resume},
	}, memory.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	return mem
}

// ClearMemory zeroes all of mem's RAM, for a fuzz iteration to start from
// the same memory whatever the last one did.
func ClearMemory(mem *memory.Guest) {
	for _, r := range mem.Regions() {
		clear(r.Mem)
	}
}

// ReadGuest reads n bytes of guest memory at addr, failing t if they are
// not all RAM.
func ReadGuest(t testing.TB, mem *memory.Guest, addr uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := mem.ReadAt(b, addr); err != nil {
		t.Fatal(err)
	}
	return b
}

// WriteGuest writes b to guest memory at addr, failing t if it is not all
// RAM.
func WriteGuest(t testing.TB, mem *memory.Guest, addr uint64, b []byte) {
	t.Helper()
	if err := mem.WriteAt(b, addr); err != nil {
		t.Fatal(err)
	}
}

// Span is the guest memory [Start, End).
type Span struct{ Start, End uint64 }

// Spans is a set of guest memory ranges.
type Spans []Span

// Contains reports whether addr lies in one of the spans.
func (s Spans) Contains(addr uint64) bool {
	for _, r := range s {
		if addr >= r.Start && addr < r.End {
			return true
		}
	}
	return false
}

// Snapshot is a copy of guest RAM, to see afterwards what a device
// changed. The zero value is ready for Take.
type Snapshot struct {
	mem  *memory.Guest
	copy [][]byte
}

// Take copies mem's RAM, reusing the buffers of an earlier Take of the
// same memory (the copies dominate the cost of a fuzz iteration).
func (s *Snapshot) Take(mem *memory.Guest) {
	regions := mem.Regions()
	if s.mem != mem || len(s.copy) != len(regions) {
		s.mem, s.copy = mem, make([][]byte, len(regions))
	}
	for i, r := range regions {
		s.copy[i] = append(s.copy[i][:0], r.Mem...)
	}
}

// snapPage is the block Changed compares whole before looking at bytes:
// most of memory is unchanged.
const snapPage = 4096

// Changed calls fn for each byte of RAM that differs now from the copy,
// in address order, with its new value.
func (s *Snapshot) Changed(fn func(addr uint64, now byte)) {
	for i, r := range s.mem.Regions() {
		before, after := s.copy[i], r.Mem
		for lo := 0; lo < len(before); lo += snapPage {
			hi := min(lo+snapPage, len(before))
			if bytes.Equal(before[lo:hi], after[lo:hi]) {
				continue
			}
			for off := lo; off < hi; off++ {
				if before[off] != after[off] {
					fn(r.Start+uint64(off), after[off])
				}
			}
		}
	}
}

// ExpectWrites fails t unless every byte of RAM changed since Take,
// outside ignore (the rings, say), lies in allowed (the device-writable
// buffers), and no more of them changed than used, the used lengths the
// device reported added up: a device writes nothing it does not report.
func (s *Snapshot) ExpectWrites(t testing.TB, ignore, allowed Spans, used uint64) {
	t.Helper()
	var changed uint64
	s.Changed(func(addr uint64, _ byte) {
		if ignore.Contains(addr) {
			return
		}
		changed++
		if !allowed.Contains(addr) {
			t.Fatalf("byte at %#x written outside every writable buffer", addr)
		}
	})
	if changed > used {
		t.Fatalf("%d bytes changed, but used lengths add up to %d", changed, used)
	}
}
