package rng

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Fuzz memory: two RAM regions with a hole between them, so buffers can
// straddle the hole, sit in it or lie past the end of RAM.
const (
	fzRing   = 0 // ring of fzSize entries at the start of region 0
	fzSize   = 16
	fzBufMin = 0x1000 // buffers start past the ring, so the device's
	// writes can never change the descriptors or avail ring it reads
	fzRegion0 = 0x10000
	fzRegion1 = 0x18000
	fzEnd1    = 0x28000
)

// patternLimiter refuses the i-th Consume call when bit i%8 of mask is
// set, until allowAll.
type patternLimiter struct {
	mask     byte
	calls    int
	allowAll bool
	ops      uint64
	bytes    uint64
}

func (l *patternLimiter) take() bool {
	i := l.calls
	l.calls++
	return l.allowAll || l.mask&(1<<(i%8)) == 0
}

func (l *patternLimiter) ConsumeOps(n uint64) bool {
	ok := l.take()
	if ok {
		l.ops += n
	}
	return ok
}

func (l *patternLimiter) ConsumeBytes(n uint64) bool {
	ok := l.take()
	if ok {
		l.bytes += n
	}
	return ok
}

func (l *patternLimiter) Retry() <-chan struct{} { return nil }
func (l *patternLimiter) RefundOps(n uint64)     { l.ops -= n }
func (l *patternLimiter) RefundBytes(n uint64)   { l.bytes -= n }

type countIRQ struct{ n int }

func (c *countIRQ) TriggerQueue(int) error { c.n++; return nil }
func (c *countIRQ) TriggerConfig() error   { return nil }

// fzReader consumes fuzz input, yielding zeros once it runs out.
type fzReader struct{ b []byte }

func (r *fzReader) u8() byte {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fzReader) u16() uint16 { return uint16(r.u8()) | uint16(r.u8())<<8 }
func (r *fzReader) u24() uint32 { return uint32(r.u16()) | uint32(r.u8())<<16 }

// buildRaw writes the whole descriptor table verbatim from the input
// (any flags, any next index, lengths up to 4 GiB) and then publishes
// arbitrary heads, possibly more than the queue holds.
func buildRaw(ring *virtiotest.Ring, in *fzReader) {
	for i := range uint16(fzSize) {
		d := virtio.Descriptor{
			Addr:  fzBufMin + uint64(in.u24()&0x3ffff),
			Len:   uint32(in.u16()),
			Flags: uint16(in.u8()),
			Next:  uint16(in.u8() % (2 * fzSize)),
		}
		if d.Flags&0x80 != 0 {
			d.Len <<= 16 // huge: past any region, or towards 32-bit overflow
		}
		d.Flags &^= 0x80
		ring.SetDesc(i, d)
	}
	var heads []uint16
	for len(in.b) > 0 && len(heads) < 2*fzSize {
		heads = append(heads, uint16(in.u8()%(fzSize+4)))
	}
	ring.Publish(heads...)
}

// buildChains adds chains the way a driver would, from the input: one to
// four buffers each, readable or writable, anywhere in or out of RAM. The
// descriptor table wraps, so later chains may overwrite earlier ones.
func buildChains(ring *virtiotest.Ring, in *fzReader) {
	for n := 0; len(in.b) > 0 && n < fzSize+2; n++ {
		bufs := make([]virtiotest.Buffer, in.u8()%4+1)
		for i := range bufs {
			bufs[i] = virtiotest.Buffer{
				Addr:     fzBufMin + uint64(in.u24()&0x3ffff),
				Len:      uint32(in.u16()),
				Writable: in.u8()&1 != 0,
			}
		}
		ring.AddChain(bufs...)
	}
}

// FuzzRequests feeds the worker random descriptor chains and checks that
// it never panics, writes only into writable buffers of the descriptor
// table and the used ring, writes no more than the used lengths it
// reports, and reports lengths that fit the chains.
func FuzzRequests(f *testing.F) {
	w := func(addr uint32, n uint16, writable byte) []byte {
		return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), writable}
	}
	chain := func(bufs ...[]byte) []byte {
		b := []byte{byte(len(bufs) - 1)}
		for _, x := range bufs {
			b = append(b, x...)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(byte(0), byte(0), chain(w(0, 64, 1)))
	f.Add(byte(0), byte(0), cat(chain(w(0, 10, 1)), chain(w(0x100, 128, 1), w(0x200, 256, 1)), chain(w(0x400, 20, 0))))
	f.Add(byte(0), byte(0x02), cat(chain(w(0, 0x8000, 1), w(0x8000, 0xffff, 1)), chain(w(0xf000, 0x2000, 1))))
	f.Add(byte(0), byte(0x55), cat(chain(w(0xe000, 0x4000, 1)), chain(w(0x20000, 0x100, 1)), chain(w(0x3fff0, 0x100, 1))))
	// Raw tables: 7 bytes a descriptor (addr u24, len u16, flags, next),
	// then the heads to publish.
	raw := func(addr uint32, n uint16, flags, next byte) []byte {
		return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), flags, next}
	}
	var table []byte
	for i := range fzSize {
		flags := byte(virtio.DescFlagWrite | virtio.DescFlagNext)
		if i%4 == 3 {
			flags = virtio.DescFlagWrite // chains of four
		}
		table = append(table, raw(uint32(i)*0x100, 0x80, flags, byte(i+1))...)
	}
	f.Add(byte(1), byte(0), cat(table, []byte{0, 5, 15, 19}))
	table = nil
	for range fzSize {
		table = append(table, raw(0, 0x100, virtio.DescFlagWrite|virtio.DescFlagNext|0x80, 0)...)
	}
	f.Add(byte(1), byte(0), cat(table, []byte{0, 3}))
	f.Add(byte(2), byte(0), cat(chain(w(0, 8, 1)), chain(w(0x10, 8, 1))))

	mem, err := memory.New([]memory.Layout{
		{Start: 0, Size: fzRegion0},
		{Start: fzRegion1, Size: fzEnd1 - fzRegion1},
	}, memory.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mem.Close() })
	ringEnd := uint64(fzRing + virtiotest.RingBytes(fzSize))

	f.Fuzz(func(t *testing.T, mode, mask byte, data []byte) {
		for _, r := range mem.Regions() {
			clear(r.Mem)
		}
		ring, err := virtiotest.NewRing(mem, fzRing, fzSize)
		if err != nil {
			t.Fatal(err)
		}
		in := &fzReader{b: data}
		if mode&1 != 0 {
			buildRaw(ring, in)
		} else {
			buildChains(ring, in)
		}
		if mode&2 != 0 {
			ring.SetAvailIdx(ring.AvailIdx() + fzSize + 1) // corrupt
		}
		before := snapshot(mem)

		q := ring.Queue()
		if err := q.Initialize(mem); err != nil {
			t.Fatal(err)
		}
		lim := &patternLimiter{mask: mask}
		dev := New(lim)
		irq := &countIRQ{}
		wk := dev.newWorker(mem, q, irq)
		// Drive the worker synchronously: run's select only decides when
		// process runs, and here process runs as a retry would, first
		// under the fuzzed limiter and then with it letting all through.
		wk.process()
		lim.allowAll = true
		wk.throttled = false
		wk.process()

		// Every used entry: a head in range, and a length the chain can
		// hold, 0 for a chain with a readable descriptor.
		var total uint64
		for {
			u, ok, err := ring.PopUsed()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if u.ID >= fzSize {
				t.Fatalf("used head %d out of range", u.ID)
			}
			if u.Len > MaxRequestBytes {
				t.Fatalf("used length %d over the cap", u.Len)
			}
			if u.Len > 0 {
				if room, ok := writableRoom(ring, uint16(u.ID)); !ok || uint64(u.Len) > room {
					t.Fatalf("used {%d %d} for a chain with %d writable bytes (all writable: %v)", u.ID, u.Len, room, ok)
				}
			}
			total += uint64(u.Len)
		}
		if lim.bytes < total {
			t.Fatalf("served %d bytes but charged %d", total, lim.bytes)
		}

		// Every changed byte is in the rings or a writable buffer, and
		// no more bytes changed than the used lengths account for.
		allowed := writableRanges(ring)
		var changed uint64
		after := snapshot(mem)
		for i, r := range mem.Regions() {
			for off := range before[i] {
				if before[i][off] == after[i][off] {
					continue
				}
				addr := r.Start + uint64(off)
				if addr >= fzRing && addr < ringEnd {
					continue
				}
				changed++
				if !inRanges(allowed, addr) {
					t.Fatalf("byte at %#x written outside every writable buffer", addr)
				}
			}
		}
		if changed > total {
			t.Fatalf("%d bytes changed, but used lengths add up to %d", changed, total)
		}
	})
}

func snapshot(mem *memory.Guest) [][]byte {
	var out [][]byte
	for _, r := range mem.Regions() {
		out = append(out, bytes.Clone(r.Mem))
	}
	return out
}

// readDesc reads descriptor i of the ring's table as the driver left it.
func readDesc(ring *virtiotest.Ring, i uint16) virtio.Descriptor {
	var raw [16]byte
	ring.Mem.ReadAt(raw[:], ring.Desc+16*uint64(i))
	return virtio.Descriptor{
		Addr:  binary.LittleEndian.Uint64(raw[0:]),
		Len:   binary.LittleEndian.Uint32(raw[8:]),
		Flags: binary.LittleEndian.Uint16(raw[12:]),
		Next:  binary.LittleEndian.Uint16(raw[14:]),
	}
}

// writableRoom follows the chain at head and returns its total buffer
// length, and whether every descriptor on it is writable.
func writableRoom(ring *virtiotest.Ring, head uint16) (uint64, bool) {
	var room uint64
	idx := head
	for range fzSize {
		if idx >= fzSize {
			return room, false
		}
		d := readDesc(ring, idx)
		if !d.IsWriteOnly() {
			return room, false
		}
		room += uint64(d.Len)
		if d.Flags&virtio.DescFlagNext == 0 {
			return room, true
		}
		idx = d.Next
	}
	return room, false // a loop is not a valid chain
}

type span struct{ lo, hi uint64 }

func writableRanges(ring *virtiotest.Ring) []span {
	var out []span
	for i := range uint16(fzSize) {
		if d := readDesc(ring, i); d.IsWriteOnly() {
			out = append(out, span{d.Addr, d.Addr + uint64(d.Len)})
		}
	}
	return out
}

func inRanges(s []span, addr uint64) bool {
	for _, r := range s {
		if addr >= r.lo && addr < r.hi {
			return true
		}
	}
	return false
}
