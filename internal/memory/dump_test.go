package memory

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func tempFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readFile(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dumpLayout: 4 MiB and 1 MiB + 3 pages, so bitmaps end mid-word.
var dumpLayout = []Layout{{0, 4 << 20}, {8 << 20, 1<<20 + 3*page}}

func randomGuest(t *testing.T) *Guest {
	t.Helper()
	g, err := New(dumpLayout, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	rng := rand.New(rand.NewPCG(1, 2))
	for _, r := range g.Regions() {
		for i := range r.Mem {
			r.Mem[i] = byte(rng.Uint32())
		}
	}
	return g
}

func TestWriteFullRoundTrip(t *testing.T) {
	g := randomGuest(t)
	f := tempFile(t, "full")
	// Stale, longer contents must not survive.
	if _, err := f.Write(bytes.Repeat([]byte{0xff}, 6<<20)); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteFull(f); err != nil {
		t.Fatal(err)
	}
	want := contents(t, g)
	if got := readFile(t, f); !bytes.Equal(got, want) {
		t.Fatalf("dump differs (%d bytes, want %d)", len(got), len(want))
	}
	r, err := NewFromFile(dumpLayout, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !bytes.Equal(contents(t, r), want) {
		t.Fatal("memory restored from the dump differs")
	}
}

func TestWriteDirty(t *testing.T) {
	g := randomGuest(t)
	base := tempFile(t, "base")
	if err := g.WriteFull(base); err != nil {
		t.Fatal(err)
	}
	baseBytes := readFile(t, base)

	// Change some pages through the accessors while tracking.
	g.TrackDirty(true)
	writes := []struct{ gpa, n uint64 }{
		{0, 1},                       // first page
		{10*page + 100, 3 * page},    // pages 10-13
		{62 * page, 4 * page},        // 62-65, across a word
		{700 * page, 200 * page},     // 700-899, several words
		{(4 << 20) - 8, 8},           // last page of region 0
		{8 << 20, page},              // region 1, first page
		{(8 << 20) + 258*page, page}, // region 1, last page
	}
	rng := rand.New(rand.NewPCG(3, 4))
	npages := 0
	for _, w := range writes {
		b := make([]byte, w.n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := g.WriteAt(b, w.gpa); err != nil {
			t.Fatal(err)
		}
	}
	dirty := make([][]uint64, len(g.Regions()))
	for i, r := range g.Regions() {
		dirty[i] = make([]uint64, BitmapLen(uint64(len(r.Mem))))
		g.TakeDirty(i, dirty[i])
		for _, w := range dirty[i] {
			for ; w != 0; w &= w - 1 {
				npages++
			}
		}
	}
	if npages != 1+4+4+200+1+1+1 {
		t.Fatalf("%d dirty pages", npages)
	}
	final := contents(t, g)

	// On a fresh file: the dirty pages at their offsets, holes elsewhere.
	diff := tempFile(t, "diff")
	if err := g.WriteDirty(diff, dirty); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, diff)
	if len(got) != len(final) {
		t.Fatalf("diff file is %d bytes, want %d", len(got), len(final))
	}
	off := 0
	for i, r := range g.Regions() {
		for p := 0; p*page < len(r.Mem); p++ {
			lo, hi := off+p*page, min(off+(p+1)*page, off+len(r.Mem))
			isDirty := dirty[i][p/64]&(1<<(p%64)) != 0
			if isDirty && !bytes.Equal(got[lo:hi], final[lo:hi]) {
				t.Fatalf("region %d dirty page %d not written", i, p)
			}
			if !isDirty && !bytes.Equal(got[lo:hi], make([]byte, hi-lo)) {
				t.Fatalf("region %d clean page %d written", i, p)
			}
		}
		off += len(r.Mem)
	}
	st, err := diff.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks * 512; blocks >= int64(len(final))/2 {
		t.Fatalf("diff file not sparse: %d bytes allocated for %d dirty pages", blocks, npages)
	}

	// Onto a copy of the base: the full image of the final memory.
	merged := tempFile(t, "merged")
	if _, err := merged.Write(baseBytes); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteDirty(merged, dirty); err != nil {
		t.Fatal(err)
	}
	full := tempFile(t, "full")
	if err := g.WriteFull(full); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, merged), readFile(t, full)) {
		t.Fatal("base + diff differs from a full dump of the final memory")
	}

	// A file of another size starts over from zeroes.
	other := tempFile(t, "other")
	if _, err := other.Write(bytes.Repeat([]byte{0xee}, len(final)+page)); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteDirty(other, dirty); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, other), got) {
		t.Fatal("WriteDirty on a file of another size kept stale data")
	}

	// Nil bitmaps mean clean regions.
	none := tempFile(t, "none")
	if err := g.WriteDirty(none, make([][]uint64, 2)); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, none); len(b) != len(final) || !bytes.Equal(b, make([]byte, len(final))) {
		t.Fatal("WriteDirty with nothing dirty wrote data")
	}
}

func TestWriteDirtyRejects(t *testing.T) {
	g := randomGuest(t)
	f := tempFile(t, "bad")
	n0, n1 := BitmapLen(4<<20), BitmapLen(1<<20+3*page)
	past := make([]uint64, n1)
	past[n1-1] = 1 << 3 // region 1 has 259 pages: bit 3 of word 4 is page 259
	for _, dirty := range [][][]uint64{
		nil,
		{make([]uint64, n0)},
		{make([]uint64, n0), make([]uint64, n1), nil},
		{make([]uint64, n0-1), nil},
		{make([]uint64, n0), make([]uint64, n1+1)},
		{nil, past},
	} {
		if err := g.WriteDirty(f, dirty); err == nil {
			t.Errorf("WriteDirty accepted %d bitmaps", len(dirty))
		}
	}
	if st, _ := f.Stat(); st.Size() != 0 {
		t.Fatal("a refused WriteDirty touched the file")
	}
}

// TestWriteFullSkipsUntouched: a full dump of anonymous memory writes the
// pages the guest touched and leaves the rest of a new file as holes that
// read as zero.
func TestWriteFullSkipsUntouched(t *testing.T) {
	g, err := New([]Layout{{Start: 0, Size: 64 << 20}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.WriteAt([]byte("first page"), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteAt([]byte("far page"), 40<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "mem"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := g.WriteFull(f); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<20)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, g.Regions()[0].Mem) {
		t.Fatal("the dump differs from memory")
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("the dump of 2 touched pages uses %d bytes on disk", used)
	}
}
