package memory

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

const page = DiscardPageSize

func fillAll(t *testing.T, g *Guest, v byte) {
	t.Helper()
	for _, r := range g.Regions() {
		for i := range r.Mem {
			r.Mem[i] = v
		}
	}
}

func isFilled(t *testing.T, g *Guest, gpa, n uint64, v byte) bool {
	t.Helper()
	b := make([]byte, n)
	if err := g.ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte{v}) == len(b)
}

func TestDiscardZeroesPages(t *testing.T) {
	g := newTest(t)
	fillAll(t, g, 0xa5)
	if err := g.Discard(2*page, 3*page); err != nil {
		t.Fatal(err)
	}
	if !isFilled(t, g, 2*page, 3*page, 0) {
		t.Fatal("discarded pages do not read back as zero")
	}
	// The neighbours are untouched.
	if !isFilled(t, g, 0, 2*page, 0xa5) || !isFilled(t, g, 5*page, page, 0xa5) {
		t.Fatal("discard reached beyond its range")
	}
	// The pages stay usable.
	if err := g.WriteU32(2*page, 7); err != nil {
		t.Fatal(err)
	}
	if v, _ := g.ReadU32(2 * page); v != 7 {
		t.Fatalf("read %d after writing a discarded page", v)
	}
	// Empty ranges do nothing, wherever they are.
	if err := g.Discard(0, 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Discard(3<<20, 0); err != nil {
		t.Fatal(err)
	}
}

func TestDiscardAcrossRegions(t *testing.T) {
	// Two adjacent regions: one range may span both.
	g, err := New([]Layout{{0, 16 * page}, {16 * page, 16 * page}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	fillAll(t, g, 0x5a)
	if err := g.Discard(14*page, 4*page); err != nil {
		t.Fatal(err)
	}
	if !isFilled(t, g, 14*page, 2*page, 0) || !isFilled(t, g, 16*page, 2*page, 0) {
		t.Fatal("range across the region boundary not discarded")
	}
	if !isFilled(t, g, 13*page, page, 0x5a) || !isFilled(t, g, 18*page, page, 0x5a) {
		t.Fatal("discard reached beyond its range")
	}
	if err := g.Discard(0, 32*page); err != nil {
		t.Fatal(err)
	}
	if !isFilled(t, g, 0, 16*page, 0) || !isFilled(t, g, 16*page, 16*page, 0) {
		t.Fatal("all of RAM not discarded")
	}
}

func TestDiscardRejects(t *testing.T) {
	g := newTest(t) // [0, 1 MiB) and [4 MiB, 5 MiB)
	for _, c := range []struct {
		gpa, n uint64
		want   error
	}{
		{1, page, ErrUnaligned},
		{page, 1, ErrUnaligned},
		{page + 8, page - 8, ErrUnaligned},
		{1 << 20, page, ErrOutOfBounds},                      // in the hole
		{(1 << 20) - page, 2 * page, ErrOutOfBounds},         // runs into the hole
		{(5 << 20) - page, 2 * page, ErrOutOfBounds},         // runs off the end
		{5 << 20, page, ErrOutOfBounds},                      // past the end
		{0, 8 << 20, ErrOutOfBounds},                         // spans the hole
		{math.MaxUint64 &^ (page - 1), page, ErrOutOfBounds}, // top of the address space
		{4 << 20, math.MaxUint64 &^ (page - 1), ErrOutOfBounds},
	} {
		fillAll(t, g, 0xcc)
		if err := g.Discard(c.gpa, c.n); !errors.Is(err, c.want) {
			t.Errorf("Discard(%#x, %#x) = %v, want %v", c.gpa, c.n, err, c.want)
		}
		// A refused range discards nothing, not even its valid part.
		if !isFilled(t, g, 0, 1<<20, 0xcc) || !isFilled(t, g, 4<<20, 1<<20, 0xcc) {
			t.Fatalf("Discard(%#x, %#x) failed but changed memory", c.gpa, c.n)
		}
	}
}
