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

// Discard gives the host pages backing [gpa, gpa+n) back to the host, so
// that the guest next reads them as zero pages and the host stops paying
// for them; the balloon uses it for inflated, hinted and reported pages.
// The range must be 4 KiB aligned and lie in guest RAM, possibly across
// adjacent regions; nothing is discarded unless all of it does. An empty
// range is a no-op. With hugetlbfs backing the kernel refuses ranges that
// are not aligned to the huge page, and Discard returns its error.
//
// Anonymous memory (New, NewUffd) gets madvise(MADV_DONTNEED); under a
// userfaultfd that is what sends the handler its remove event, after
// which it serves the range as zeroes. On a private mapping of a memory
// file (NewFromFile) MADV_DONTNEED would only drop the private copies and
// bring the file's contents back, so fresh anonymous memory is mapped over
// the range instead (MAP_FIXED), as Firecracker does.
func (g *Guest) Discard(gpa, n uint64) error {
	if gpa%DiscardPageSize != 0 || n%DiscardPageSize != 0 {
		return fmt.Errorf("%w: [%#x, +%#x)", ErrUnaligned, gpa, n)
	}
	if n == 0 {
		return nil
	}
	// Collect every piece before touching any, so a range that runs off
	// the end of RAM or into a hole discards nothing.
	type piece struct {
		mem  []byte
		file bool
	}
	var pieces []piece
	cur, left := gpa, n
	for left > 0 {
		i, s := g.regionTail(cur)
		if s == nil {
			return fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfBounds, gpa, n)
		}
		k := min(uint64(len(s)), left)
		pieces = append(pieces, piece{s[:k:k], g.fileBacked[i]})
		cur += k // cannot wrap: cur+k ends inside a mapped region
		left -= k
	}
	for _, p := range pieces {
		if !p.file {
			if err := unix.Madvise(p.mem, unix.MADV_DONTNEED); err != nil {
				return fmt.Errorf("discard [%#x, +%#x): madvise: %w", gpa, n, err)
			}
			continue
		}
		if err := remapAnonymous(p.mem); err != nil {
			return fmt.Errorf("discard [%#x, +%#x): mmap: %w", gpa, n, err)
		}
		if g.thp {
			// The new mapping does not inherit the old one's advice.
			_ = unix.Madvise(p.mem, unix.MADV_HUGEPAGE)
		}
	}
	return nil
}

// regionTail returns the index of the region that holds gpa and its host
// bytes from gpa to the region's end, or nil when no region does.
func (g *Guest) regionTail(gpa uint64) (int, []byte) {
	for i, r := range g.regions {
		if gpa >= r.Start && gpa-r.Start < uint64(len(r.Mem)) {
			return i, r.Mem[gpa-r.Start:]
		}
	}
	return -1, nil
}
