// Package memory is guest RAM: host mappings placed at guest-physical
// addresses, and the one bounds-checked accessor through which squib reads
// and writes guest memory. A guest controls every address it hands to a
// device, so no code may index guest memory without going through here.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrOutOfBounds is returned for an access that is not entirely inside one
// RAM region.
var ErrOutOfBounds = errors.New("guest memory access out of bounds")

// HugePages selects the backing of guest RAM.
type HugePages int

// Backing kinds.
const (
	// HugePagesNone uses ordinary anonymous memory.
	HugePagesNone HugePages = iota
	// HugePagesTransparent asks the kernel for transparent huge pages.
	HugePagesTransparent
	// HugePages2M maps explicit 2 MiB pages from hugetlbfs.
	HugePages2M
)

// Layout is one RAM region to map: where it sits in the guest.
type Layout struct {
	Start, Size uint64
}

// Region is one mapped RAM region.
type Region struct {
	// Start is the region's guest-physical address.
	Start uint64
	// Mem is the host mapping. It lives outside the Go heap (mmap), so the
	// garbage collector neither scans nor moves it.
	Mem []byte
}

// End is the first guest-physical address after the region.
func (r Region) End() uint64 { return r.Start + uint64(len(r.Mem)) }

// Guest is the guest's RAM.
type Guest struct {
	regions []Region
	// track switches on dirty marking in Slice (TrackDirty).
	track atomic.Bool
	// dirty holds, per region, 1 bit per 4 KiB page written through Slice
	// while tracking was on.
	dirty [][]atomic.Uint64
	// fileBacked tells, per region, whether it is a private mapping of a
	// memory file, which Discard must replace rather than madvise.
	fileBacked []bool
	// thp records Options.HugePages == HugePagesTransparent, to advise
	// mappings Discard puts in place.
	thp bool
	// zeroHoles says every page not resident is zero: plain anonymous
	// memory (New), not a file's private mapping nor memory whose missing
	// pages a userfaultfd handler supplies. WriteFull then skips them.
	zeroHoles bool
	// release frees what the backend holds besides the mappings (the
	// userfaultfd and the handler connection), after they are unmapped.
	release []func() error
}

// Options tune how RAM is mapped.
type Options struct {
	HugePages HugePages
}

// New maps the regions, anonymous and private, as Firecracker does.
func New(layout []Layout, opts Options) (*Guest, error) {
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
	if opts.HugePages == HugePages2M {
		flags |= unix.MAP_HUGETLB | unix.MAP_HUGE_2MB
	}
	g, err := newGuest(layout, opts, false, func(l Layout, _ uint64) ([]byte, error) {
		return unix.Mmap(-1, 0, int(l.Size), unix.PROT_READ|unix.PROT_WRITE, flags)
	})
	if err != nil {
		return nil, err
	}
	g.zeroHoles = true
	return g, nil
}

// newGuest maps each non-empty region of layout with mapRegion, which is
// given the region and its offset in a memory file (the sum of the sizes
// before it).
func newGuest(layout []Layout, opts Options, fileBacked bool, mapRegion func(l Layout, off uint64) ([]byte, error)) (*Guest, error) {
	g := &Guest{thp: opts.HugePages == HugePagesTransparent}
	var off uint64
	for _, l := range layout {
		if l.Size == 0 {
			continue
		}
		if l.Size > uint64(^uint(0)>>1) {
			g.Close()
			return nil, fmt.Errorf("Cannot create mmap region: %w", unix.ENOMEM)
		}
		mem, err := mapRegion(l, off)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("Cannot create mmap region: %w", err)
		}
		if g.thp {
			// Advisory: without THP support the guest still runs.
			_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
		}
		g.regions = append(g.regions, Region{Start: l.Start, Mem: mem})
		g.dirty = append(g.dirty, make([]atomic.Uint64, BitmapLen(l.Size)))
		g.fileBacked = append(g.fileBacked, fileBacked)
		off += l.Size
	}
	return g, nil
}

// Close unmaps guest RAM and releases the backend (for NewUffd, the
// userfaultfd and the handler connection, whose hang-up tells the handler
// to stop). The Guest must not be used afterwards.
func (g *Guest) Close() error {
	var first error
	for _, r := range g.regions {
		if err := unix.Munmap(r.Mem); err != nil && first == nil {
			first = err
		}
	}
	for _, f := range g.release {
		if err := f(); err != nil && first == nil {
			first = err
		}
	}
	g.regions, g.dirty, g.fileBacked, g.release = nil, nil, nil, nil
	return first
}

// Regions returns the mapped regions in guest-address order.
func (g *Guest) Regions() []Region { return g.regions }

// Size is the total RAM in bytes.
func (g *Guest) Size() uint64 {
	var n uint64
	for _, r := range g.regions {
		n += uint64(len(r.Mem))
	}
	return n
}

// Slice returns the host bytes backing [gpa, gpa+n), which must lie inside
// one region. The slice aliases guest memory: the guest may change it at
// any time, so callers copy what they validate. The caller may write
// through the slice, so while dirty tracking is on (TrackDirty) the pages
// it covers are marked dirty.
func (g *Guest) Slice(gpa, n uint64) ([]byte, error) {
	return g.slice(gpa, n, true)
}

// view is Slice for the read accessors: it marks nothing dirty.
func (g *Guest) view(gpa, n uint64) ([]byte, error) { return g.slice(gpa, n, false) }

// slice returns the host bytes of [gpa, gpa+n), marking them dirty if
// write and tracking is on.
func (g *Guest) slice(gpa, n uint64, write bool) ([]byte, error) {
	i, off, ok := g.locate(gpa, n)
	if !ok {
		return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfBounds, gpa, n)
	}
	if write && g.track.Load() {
		g.markDirty(i, off, n)
	}
	m := g.regions[i].Mem
	return m[off : off+n : off+n], nil
}

// locate finds the region holding all of [gpa, gpa+n) and the offset of
// gpa in it.
func (g *Guest) locate(gpa, n uint64) (int, uint64, bool) {
	for i := range g.regions {
		r := &g.regions[i]
		if gpa < r.Start {
			continue
		}
		off := gpa - r.Start
		size := uint64(len(r.Mem))
		// Written so that no sum can overflow: off < size and n <= size-off;
		// an empty access may sit at the very end.
		if (off < size && n <= size-off) || (n == 0 && off == size) {
			return i, off, true
		}
	}
	return 0, 0, false
}

// ReadAt copies guest memory at gpa into p.
func (g *Guest) ReadAt(p []byte, gpa uint64) error {
	s, err := g.view(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest memory at gpa.
func (g *Guest) WriteAt(p []byte, gpa uint64) error {
	s, err := g.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Zero clears [gpa, gpa+n).
func (g *Guest) Zero(gpa, n uint64) error {
	s, err := g.Slice(gpa, n)
	if err != nil {
		return err
	}
	clear(s)
	return nil
}

// ReadU16, ReadU32, ReadU64 and the Write forms access little-endian
// values.
func (g *Guest) ReadU16(gpa uint64) (uint16, error) {
	s, err := g.view(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// ReadU32 reads a little-endian uint32.
func (g *Guest) ReadU32(gpa uint64) (uint32, error) {
	s, err := g.view(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// ReadU64 reads a little-endian uint64.
func (g *Guest) ReadU64(gpa uint64) (uint64, error) {
	s, err := g.view(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// WriteU16 writes a little-endian uint16.
func (g *Guest) WriteU16(gpa uint64, v uint16) error {
	s, err := g.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// WriteU32 writes a little-endian uint32.
func (g *Guest) WriteU32(gpa uint64, v uint32) error {
	s, err := g.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// WriteU64 writes a little-endian uint64.
func (g *Guest) WriteU64(gpa uint64, v uint64) error {
	s, err := g.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}
