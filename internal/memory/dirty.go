package memory

import (
	"errors"
	"fmt"
	"os"
)

// DirtyPageSize is the page of dirty bitmaps: 4 KiB, as in
// KVM_GET_DIRTY_LOG.
const DirtyPageSize = 4096

// BitmapLen is the number of uint64 words of a dirty bitmap for a region
// of size bytes: one bit per 4 KiB page (a partial last page counts),
// rounded up to whole words, the size KVM_GET_DIRTY_LOG fills for a slot.
func BitmapLen(size uint64) int {
	return int((size/DirtyPageSize + 63 + min(size%DirtyPageSize, 1)) / 64)
}

// TrackDirty switches dirty tracking of VMM-side writes on or off. While
// it is on, every Slice (and so every write accessor) marks the 4 KiB
// pages it covers in the region's bitmap. KVM's dirty log does not see
// these writes (virtio rings, data devices place in guest memory), so a
// diff snapshot needs both. Switching it off keeps what was marked;
// TakeDirty collects it. Read accessors (ReadAt, ReadU*) mark nothing;
// Discard marks nothing either, as Firecracker: a discarded page's
// contents are the guest's to ignore.
func (g *Guest) TrackDirty(on bool) { g.track.Store(on) }

// markDirty sets the bits of the pages under [off, off+n) of region i.
// It is on the device data path: one atomic OR per 64 pages, skipped
// when the bits are already set so that repeated writes to hot pages
// (rings) do not bounce the cache line between threads.
func (g *Guest) markDirty(i int, off, n uint64) {
	if n == 0 {
		return
	}
	bm := g.dirty[i]
	first, last := off/DirtyPageSize, (off+n-1)/DirtyPageSize
	for w := first / 64; w <= last/64; w++ {
		lo, hi := uint64(0), uint64(63)
		if w == first/64 {
			lo = first % 64
		}
		if w == last/64 {
			hi = last % 64
		}
		mask := (^uint64(0) >> (63 - hi)) &^ (1<<lo - 1)
		if bm[w].Load()&mask != mask {
			bm[w].Or(mask)
		}
	}
}

// TakeDirty ORs the dirty bitmap of region (an index into Regions) into
// into and clears it, atomically word by word, so that writes racing with
// it are either taken now or left for the next call. The layout is
// KVM_GET_DIRTY_LOG's: bit j of word i is page i*64+j of the region.
// into should hold BitmapLen(region size) words; words that do not fit
// stay in the bitmap for a later call.
func (g *Guest) TakeDirty(region int, into []uint64) {
	bm := g.dirty[region]
	for i := range min(len(bm), len(into)) {
		if bm[i].Load() != 0 {
			into[i] |= bm[i].Swap(0)
		}
	}
}

// errBitmapLen reports a bitmap of the wrong length for a region.
var errBitmapLen = errors.New("dirty bitmap does not fit the region")

// Resident ORs into into a bitmap (TakeDirty's layout) of the region's
// pages that are resident in host memory (mincore). It stands in for
// dirty tracking when that is off, as Firecracker does: every page the
// guest wrote is resident, so this over-approximates the dirty set (pages
// only read, or cached from a memory file, count too). Swapped-out pages
// are missed, as with Firecracker.
func (g *Guest) Resident(region int, into []uint64) error {
	if region < 0 || region >= len(g.regions) {
		return fmt.Errorf("resident pages: no region %d", region)
	}
	mem := g.regions[region].Mem
	if need := BitmapLen(uint64(len(mem))); len(into) < need {
		return fmt.Errorf("resident pages: %w: %d words, want %d", errBitmapLen, len(into), need)
	}
	host := uint64(os.Getpagesize())
	per := max(host/DirtyPageSize, 1) // 4 KiB pages per host page
	// Bound the residency vector: 256 Ki host pages per call.
	const chunk = 1 << 18
	total := (uint64(len(mem)) + host - 1) / host
	vec := make([]byte, min(total, chunk))
	for p := uint64(0); p < total; p += chunk {
		n := min(chunk, total-p)
		start := p * host
		end := min((p+n)*host, uint64(len(mem)))
		if err := mincore(mem[start:end], vec[:n]); err != nil {
			return fmt.Errorf("resident pages: mincore: %w", err)
		}
		for j, v := range vec[:n] {
			if v&1 == 0 {
				continue
			}
			for k := uint64(0); k < per; k++ {
				pg := (p+uint64(j))*per + k
				if pg*DirtyPageSize >= uint64(len(mem)) {
					break
				}
				into[pg/64] |= 1 << (pg % 64)
			}
		}
	}
	return nil
}
