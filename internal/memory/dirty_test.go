package memory

import (
	"slices"
	"testing"
)

// bitmap returns a TakeDirty-layout bitmap of size bytes with pages set.
func bitmap(size uint64, pages ...uint64) []uint64 {
	bm := make([]uint64, BitmapLen(size))
	for _, p := range pages {
		bm[p/64] |= 1 << (p % 64)
	}
	return bm
}

func take(g *Guest, region int) []uint64 {
	bm := make([]uint64, BitmapLen(uint64(len(g.Regions()[region].Mem))))
	g.TakeDirty(region, bm)
	return bm
}

func pagesRange(lo, hi uint64) []uint64 {
	var p []uint64
	for i := lo; i < hi; i++ {
		p = append(p, i)
	}
	return p
}

func TestBitmapLen(t *testing.T) {
	for _, c := range []struct {
		size uint64
		want int
	}{{0, 0}, {1, 1}, {page, 1}, {64 * page, 1}, {64*page + 1, 2}, {65 * page, 2}, {1 << 30, 4096}} {
		if got := BitmapLen(c.size); got != c.want {
			t.Errorf("BitmapLen(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}

func TestTrackDirty(t *testing.T) {
	g := newTest(t) // [0, 1 MiB) = 256 pages, [4 MiB, 5 MiB)
	const r1 = 4 << 20
	size := uint64(1 << 20)
	// Off: nothing is marked.
	if err := g.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if bm := take(g, 0); !slices.Equal(bm, bitmap(size)) {
		t.Fatalf("marked while off: %x", bm)
	}
	g.TrackDirty(true)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(g.WriteAt([]byte("x"), 5*page+7))            // page 5
	must(g.WriteU32(8*page-2, 1))                     // pages 7 and 8
	must(g.Zero(60*page, 10*page))                    // pages 60-69, across a word
	must(g.WriteAt(make([]byte, 130*page), 100*page)) // pages 100-229, three words
	must(g.WriteU64(r1+255*page+8, 1))                // region 1, last page
	if _, err := g.Slice(r1, 0); err != nil {         // empty: nothing
		t.Fatal(err)
	}
	// Reads mark nothing.
	var b [16]byte
	must(g.ReadAt(b[:], 40*page))
	if _, err := g.ReadU64(41 * page); err != nil {
		t.Fatal(err)
	}
	want0 := bitmap(size, append(append([]uint64{5, 7, 8}, pagesRange(60, 70)...), pagesRange(100, 230)...)...)
	if bm := take(g, 0); !slices.Equal(bm, want0) {
		t.Fatalf("region 0 dirty %x, want %x", bm, want0)
	}
	if bm := take(g, 1); !slices.Equal(bm, bitmap(size, 255)) {
		t.Fatalf("region 1 dirty %x", bm)
	}
	// TakeDirty cleared the bitmaps.
	if bm := take(g, 0); !slices.Equal(bm, bitmap(size)) {
		t.Fatalf("not cleared: %x", bm)
	}
	// TakeDirty ORs, and leaves what does not fit for later.
	must(g.WriteAt([]byte{1}, 3*page))
	must(g.WriteAt([]byte{1}, 200*page))
	into := []uint64{1 << 9}
	g.TakeDirty(0, into)
	if into[0] != 1<<9|1<<3 {
		t.Fatalf("into = %x", into)
	}
	if bm := take(g, 0); !slices.Equal(bm, bitmap(size, 200)) {
		t.Fatalf("words past into lost: %x", bm)
	}
	// Off again: marks stop, what was marked stays.
	must(g.WriteAt([]byte{1}, 9*page))
	g.TrackDirty(false)
	must(g.WriteAt([]byte{1}, 10*page))
	if bm := take(g, 0); !slices.Equal(bm, bitmap(size, 9)) {
		t.Fatalf("after off: %x", bm)
	}
}

func TestResident(t *testing.T) {
	g := newTest(t)
	size := uint64(1 << 20)
	if bm := make([]uint64, BitmapLen(size)); g.Resident(0, bm) != nil || !slices.Equal(bm, bitmap(size)) {
		t.Fatalf("untouched memory resident: %x", bm)
	}
	for _, p := range []uint64{0, 63, 64, 200, 255} {
		if err := g.WriteU32(p*page, 1); err != nil {
			t.Fatal(err)
		}
	}
	bm := make([]uint64, BitmapLen(size))
	if err := g.Resident(0, bm); err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint64{0, 63, 64, 200, 255} {
		if bm[p/64]&(1<<(p%64)) == 0 {
			t.Errorf("written page %d not resident", p)
		}
	}
	if err := g.Resident(2, bm); err == nil {
		t.Error("Resident of a missing region succeeded")
	}
	if err := g.Resident(0, bm[:1]); err == nil {
		t.Error("Resident into a short bitmap succeeded")
	}
}

// BenchmarkSlice measures the device data path's accessor with tracking
// off and on.
func BenchmarkSlice(b *testing.B) {
	g, err := New([]Layout{{0, 1 << 20}, {4 << 20, 1 << 20}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	for _, on := range []bool{false, true} {
		g.TrackDirty(on)
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			for i := range b.N {
				if _, err := g.Slice((4<<20)+uint64(i%200)*page, 1500); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
