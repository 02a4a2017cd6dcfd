package memory

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DiscardPageSize is the granularity of Discard: the 4 KiB page the
// balloon's PFNs and free page reports are expressed in.
const DiscardPageSize = 4096

// ErrUnaligned is returned by Discard for a range that does not start and
// end on a 4 KiB boundary.
var ErrUnaligned = errors.New("guest memory range not page aligned")

// Discard gives the host pages backing [gpa, gpa+n) back to the host
// (madvise MADV_DONTNEED), so that the guest next reads them as zero pages
// and the host stops paying for them; the balloon uses it for inflated,
// hinted and reported pages. The range must be 4 KiB aligned and lie in
// guest RAM, possibly across adjacent regions; nothing is discarded unless
// all of it does. An empty range is a no-op. With hugetlbfs backing the
// kernel refuses ranges that are not aligned to the huge page, and Discard
// returns its error.
//
// Every region is anonymous private memory today, for which MADV_DONTNEED
// is enough. Firecracker also handles guest memory mapped MAP_PRIVATE from
// a snapshot file, where MADV_DONTNEED would bring the file's contents
// back: it maps fresh anonymous memory over the range (MAP_FIXED) instead.
// Do the same here once regions can be file-backed.
func (g *Guest) Discard(gpa, n uint64) error {
	if gpa%DiscardPageSize != 0 || n%DiscardPageSize != 0 {
		return fmt.Errorf("%w: [%#x, +%#x)", ErrUnaligned, gpa, n)
	}
	if n == 0 {
		return nil
	}
	// Collect every piece before touching any, so a range that runs off
	// the end of RAM or into a hole discards nothing.
	var pieces [][]byte
	cur, left := gpa, n
	for left > 0 {
		s := g.regionTail(cur)
		if s == nil {
			return fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfBounds, gpa, n)
		}
		k := min(uint64(len(s)), left)
		pieces = append(pieces, s[:k:k])
		cur += k // cannot wrap: cur+k ends inside a mapped region
		left -= k
	}
	for _, p := range pieces {
		if err := unix.Madvise(p, unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("discard [%#x, +%#x): madvise: %w", gpa, n, err)
		}
	}
	return nil
}

// regionTail returns the host bytes from gpa to the end of the region that
// holds it, or nil when no region does.
func (g *Guest) regionTail(gpa uint64) []byte {
	for _, r := range g.regions {
		if gpa >= r.Start && gpa-r.Start < uint64(len(r.Mem)) {
			return r.Mem[gpa-r.Start:]
		}
	}
	return nil
}
