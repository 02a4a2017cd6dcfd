package memory

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
)

// WriteFull writes all of guest memory to f: the regions concatenated in
// guest-address order, no header, Firecracker's memory file format. Each
// region goes out in large positional writes from offset 0. A file of
// another size is first truncated to the full size; one of the right size
// is overwritten in place (it may even be the file this memory was
// restored from). The caller chooses the file (a temporary name renamed
// into place) and syncs it if it wants durability. The vCPUs must be
// paused.
func (g *Guest) WriteFull(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("memory file: %w", err)
	}
	fresh := st.Size() != int64(g.Size())
	if err := g.sizeFile(f); err != nil {
		return err
	}
	if fresh && g.zeroHoles {
		// A fresh file reads as zeros, and so does every page of anonymous
		// memory the guest never touched: write only the pages that exist
		// (in RAM or swapped out), leaving the rest as holes. A 1 GiB guest
		// that uses 50 MiB then costs 50 MiB of writes, not 1 GiB.
		used, err := g.populated()
		if err == nil {
			return g.writeRuns(f, used)
		}
		// Without pagemap, fall back to writing everything.
	}
	var off int64
	for _, r := range g.regions {
		if _, err := f.WriteAt(r.Mem, off); err != nil {
			return fmt.Errorf("write guest memory to %s: %w", f.Name(), err)
		}
		off += int64(len(r.Mem))
	}
	return nil
}

// WriteDirty writes to f only the 4 KiB pages set in dirty, each at its
// offset in the full memory file (WriteFull's layout). dirty has one
// bitmap per region in TakeDirty's layout, BitmapLen words long, or nil
// for a region with nothing dirty; a bit beyond a region's end is an
// error. Runs of dirty pages go out as single writes, and clean pages are
// skipped, so on a fresh file they stay holes (the file is sparse). A file
// that already has the full size is written in place, so writing a diff
// onto a copy of the base memory file yields the full image; a file of
// any other size is truncated to zero and then to the full size first.
func (g *Guest) WriteDirty(f *os.File, dirty [][]uint64) error {
	if len(dirty) != len(g.regions) {
		return fmt.Errorf("write dirty pages: %d bitmaps for %d regions", len(dirty), len(g.regions))
	}
	for i, r := range g.regions {
		if err := checkBitmap(dirty[i], uint64(len(r.Mem))); err != nil {
			return fmt.Errorf("write dirty pages: region %d: %w", i, err)
		}
	}
	if err := g.sizeFile(f); err != nil {
		return err
	}
	return g.writeRuns(f, dirty)
}

// writeRuns writes the pages set in bitmaps (validated, one per region or
// nil) at their offsets in the memory file, a run of pages per write.
func (g *Guest) writeRuns(f *os.File, dirty [][]uint64) error {
	var base int64
	for i, r := range g.regions {
		bm := dirty[i]
		size := uint64(len(r.Mem))
		if bm == nil {
			base += int64(size)
			continue
		}
		pages := (size + DirtyPageSize - 1) / DirtyPageSize
		for p := uint64(0); p < pages; {
			// Skip clean pages a word at a time.
			w := bm[p/64] >> (p % 64)
			if w == 0 {
				p = (p/64 + 1) * 64
				continue
			}
			p += uint64(bits.TrailingZeros64(w))
			start := p
			// Extend the run over set bits, across words.
			for p < pages {
				// The shift brings in zeroes, so this stops at the word's end.
				ones := uint64(bits.TrailingZeros64(^(bm[p/64] >> (p % 64))))
				p += ones
				if p%64 != 0 || ones == 0 {
					break
				}
			}
			p = min(p, pages)
			lo, hi := start*DirtyPageSize, min(p*DirtyPageSize, size)
			if _, err := f.WriteAt(r.Mem[lo:hi], base+int64(lo)); err != nil {
				return fmt.Errorf("write guest memory to %s: %w", f.Name(), err)
			}
		}
		base += int64(size)
	}
	return nil
}

// checkBitmap validates a dirty bitmap for a region of size bytes.
func checkBitmap(bm []uint64, size uint64) error {
	if bm == nil {
		return nil
	}
	if need := BitmapLen(size); len(bm) != need {
		return fmt.Errorf("%w: %d words, want %d", errBitmapLen, len(bm), need)
	}
	pages := (size + DirtyPageSize - 1) / DirtyPageSize
	if pages%64 != 0 && bm[len(bm)-1]>>(pages%64) != 0 {
		return fmt.Errorf("%w: bits set past the region's %d pages", errBitmapLen, pages)
	}
	return nil
}

// sizeFile gives f the full size of guest memory, keeping its contents
// when it already has it.
func (g *Guest) sizeFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("memory file: %w", err)
	}
	total := int64(g.Size())
	if st.Size() == total {
		return nil
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("truncate %s: %w", f.Name(), err)
	}
	if err := f.Truncate(total); err != nil {
		return fmt.Errorf("truncate %s: %w", f.Name(), err)
	}
	return nil
}

// Flags of a /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pagemapPresent = 1 << 63
	pagemapSwapped = 1 << 62
)

// populated returns, per region, the 4 KiB pages that exist: present in
// RAM or swapped out. Unlike mincore, which misses swapped pages, this is
// exact for anonymous memory, whose other pages read as zero.
func (g *Guest) populated() ([][]uint64, error) {
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	if os.Getpagesize() != DirtyPageSize {
		return nil, fmt.Errorf("pagemap: host pages of %d bytes", os.Getpagesize())
	}
	out := make([][]uint64, len(g.regions))
	buf := make([]byte, 8*4096)
	for i, r := range g.regions {
		size := uint64(len(r.Mem))
		bm := make([]uint64, BitmapLen(size))
		first := uint64(r.HostAddress()) / DirtyPageSize
		pages := (size + DirtyPageSize - 1) / DirtyPageSize
		for p := uint64(0); p < pages; {
			n := min(pages-p, uint64(len(buf)/8))
			if _, err := pm.ReadAt(buf[:8*n], int64(8*(first+p))); err != nil {
				return nil, fmt.Errorf("pagemap: %w", err)
			}
			for k := uint64(0); k < n; k++ {
				e := binary.LittleEndian.Uint64(buf[8*k:])
				if e&(pagemapPresent|pagemapSwapped) != 0 {
					pg := p + k
					bm[pg/64] |= 1 << (pg % 64)
				}
			}
			p += n
		}
		out[i] = bm
	}
	return out, nil
}
