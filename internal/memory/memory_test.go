package memory

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func newTest(t *testing.T) *Guest {
	t.Helper()
	g, err := New([]Layout{{0, 1 << 20}, {4 << 20, 1 << 20}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestAccessor(t *testing.T) {
	g := newTest(t)
	if g.Size() != 2<<20 {
		t.Fatalf("Size = %d", g.Size())
	}
	if err := g.WriteAt([]byte("hello"), 0x1000); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if err := g.ReadAt(p, 0x1000); err != nil || string(p) != "hello" {
		t.Fatalf("ReadAt = %q, %v", p, err)
	}
	if err := g.WriteU64((4<<20)+8, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if v, err := g.ReadU32((4 << 20) + 8); err != nil || v != 0x55667788 {
		t.Fatalf("ReadU32 = %#x, %v", v, err)
	}
	// The last byte of a region is reachable, one more is not.
	if err := g.WriteAt([]byte{1}, (1<<20)-1); err != nil {
		t.Fatal(err)
	}
}

func TestOutOfBounds(t *testing.T) {
	g := newTest(t)
	for _, c := range []struct{ gpa, n uint64 }{
		{1 << 20, 1},            // in the gap
		{(1 << 20) - 1, 2},      // straddles a region's end
		{3 << 20, 8},            // in the gap
		{(5 << 20) - 4, 8},      // past the last region
		{math.MaxUint64 - 1, 4}, // would wrap around
		{0, math.MaxUint64},     // absurd length
		{4 << 20, math.MaxUint64 - (4 << 20) + 1},
	} {
		if _, err := g.Slice(c.gpa, c.n); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("Slice(%#x, %#x) = %v, want ErrOutOfBounds", c.gpa, c.n, err)
		}
	}
}

func FuzzSlice(f *testing.F) {
	f.Add(uint64(0), uint64(1))
	f.Add(uint64(1<<20-1), uint64(2))
	f.Fuzz(func(t *testing.T, gpa, n uint64) {
		g, err := New([]Layout{{0, 1 << 16}, {1 << 20, 1 << 16}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		s, err := g.Slice(gpa, n)
		if err != nil {
			return
		}
		if uint64(len(s)) != n {
			t.Fatalf("len %d, want %d", len(s), n)
		}
		inside := false
		for _, r := range g.Regions() {
			if gpa >= r.Start && gpa-r.Start <= uint64(len(r.Mem)) && n <= uint64(len(r.Mem))-(gpa-r.Start) {
				inside = true
			}
		}
		if !inside {
			t.Fatalf("Slice(%#x, %#x) succeeded outside RAM", gpa, n)
		}
		clear(s)
		_ = bytes.Equal(s, s)
	})
}
