// Package memory is guest RAM: host mappings placed at guest-physical
// addresses, and the one bounds-checked accessor through which squib reads
// and writes guest memory. A guest controls every address it hands to a
// device, so no code may index guest memory without going through here.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"

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
}

// Options tune how RAM is mapped.
type Options struct {
	HugePages HugePages
}

// New maps the regions, anonymous and private, as Firecracker does.
func New(layout []Layout, opts Options) (*Guest, error) {
	g := &Guest{}
	for _, l := range layout {
		if l.Size == 0 {
			continue
		}
		flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
		if opts.HugePages == HugePages2M {
			flags |= unix.MAP_HUGETLB | unix.MAP_HUGE_2MB
		}
		if l.Size > uint64(^uint(0)>>1) {
			g.Close()
			return nil, fmt.Errorf("Cannot create mmap region: %w", unix.ENOMEM)
		}
		mem, err := unix.Mmap(-1, 0, int(l.Size), unix.PROT_READ|unix.PROT_WRITE, flags)
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("Cannot create mmap region: %w", err)
		}
		if opts.HugePages == HugePagesTransparent {
			// Advisory: without THP support the guest still runs.
			_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
		}
		g.regions = append(g.regions, Region{Start: l.Start, Mem: mem})
	}
	return g, nil
}

// Close unmaps guest RAM. The Guest must not be used afterwards.
func (g *Guest) Close() error {
	var first error
	for _, r := range g.regions {
		if err := unix.Munmap(r.Mem); err != nil && first == nil {
			first = err
		}
	}
	g.regions = nil
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
// any time, so callers copy what they validate.
func (g *Guest) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range g.regions {
		if gpa < r.Start {
			continue
		}
		off := gpa - r.Start
		// Written so that no sum can overflow: off < len and n <= len-off.
		if off < uint64(len(r.Mem)) && n <= uint64(len(r.Mem))-off {
			return r.Mem[off : off+n : off+n], nil
		}
		if n == 0 && off == uint64(len(r.Mem)) {
			return r.Mem[off:off:off], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfBounds, gpa, n)
}

// ReadAt copies guest memory at gpa into p.
func (g *Guest) ReadAt(p []byte, gpa uint64) error {
	s, err := g.Slice(gpa, uint64(len(p)))
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
	s, err := g.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// ReadU32 reads a little-endian uint32.
func (g *Guest) ReadU32(gpa uint64) (uint32, error) {
	s, err := g.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// ReadU64 reads a little-endian uint64.
func (g *Guest) ReadU64(gpa uint64) (uint64, error) {
	s, err := g.Slice(gpa, 8)
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
