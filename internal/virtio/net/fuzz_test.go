package net

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Fuzz memory: two RAM regions with a hole between them, so buffers can
// straddle the hole, sit in it or lie past the end of RAM. Each region is
// big enough for RX chains that add up to a 64 KiB frame.
const (
	fzRxRing  = 0x0000 // ring of fzSize entries
	fzTxRing  = 0x1000
	fzSize    = 16
	fzBufMin  = 0x2000 // buffers start past the rings
	fzRegion0 = 0x40000
	fzRegion1 = 0x48000
	fzEnd1    = 0x88000
)

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

// buildRaw writes the whole descriptor table verbatim from the input (any
// flags, any next index, lengths up to 4 GiB) and then publishes arbitrary
// heads, possibly more than the queue holds.
func buildRaw(ring *virtiotest.Ring, in *fzReader) {
	for i := range uint16(fzSize) {
		d := virtio.Descriptor{
			Addr:  fzBufMin + uint64(in.u24()&0x9ffff),
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
// four buffers each, readable or writable as the input says (flipped by
// wantWritable, so that most chains suit the queue), anywhere in or out of
// RAM. The descriptor table wraps, so later chains may overwrite earlier
// ones.
func buildChains(ring *virtiotest.Ring, in *fzReader, wantWritable bool) {
	for n := 0; len(in.b) > 0 && n < fzSize+2; n++ {
		bufs := make([]virtiotest.Buffer, in.u8()%4+1)
		for i := range bufs {
			bufs[i] = virtiotest.Buffer{
				Addr:     fzBufMin + uint64(in.u24()&0x9ffff),
				Len:      uint32(in.u16()),
				Writable: (in.u8()&7 == 0) != wantWritable,
			}
		}
		ring.AddChain(bufs...)
	}
}

func newFuzzMemory(f *testing.F) *memory.Guest {
	mem, err := memory.New([]memory.Layout{
		{Start: 0, Size: fzRegion0},
		{Start: fzRegion1, Size: fzEnd1 - fzRegion1},
	}, memory.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mem.Close() })
	return mem
}

// fzRings lays out both rings and returns their initialised queues.
func fzRings(t *testing.T, mem *memory.Guest, eventIdx bool) (rx, tx *virtiotest.Ring, rxq, txq *virtio.Queue) {
	for _, r := range mem.Regions() {
		clear(r.Mem)
	}
	var err error
	if rx, err = virtiotest.NewRing(mem, fzRxRing, fzSize); err != nil {
		t.Fatal(err)
	}
	if tx, err = virtiotest.NewRing(mem, fzTxRing, fzSize); err != nil {
		t.Fatal(err)
	}
	rxq, txq = rx.Queue(), tx.Queue()
	for _, q := range []*virtio.Queue{rxq, txq} {
		q.EventIdx = eventIdx
		if err := q.Initialize(mem); err != nil {
			t.Fatal(err)
		}
	}
	return rx, tx, rxq, txq
}

// fzLimiter is a limiter from a fuzz byte: none, or a small ops or bytes
// bucket that never refills within the run.
func fzLimiter(b byte) *ratelimit.RateLimiter {
	switch b % 3 {
	case 1:
		return ratelimit.New(nil, ratelimit.NewTokenBucket(uint64(b/3%8+1), 0, 1_000_000))
	case 2:
		return ratelimit.New(ratelimit.NewTokenBucket(uint64(b)*1024+1, 0, 1_000_000), nil)
	}
	return nil
}

// recBackend records the frames written to it; reads never happen in the
// fuzzers, which hand frames to the worker themselves.
type recBackend struct{ log *[]sent }

type sent struct {
	toMMDS bool
	frame  []byte // as the device passed it: vnet header included for the TAP, not for MMDS
}

func (b recBackend) Read([]byte) (int, error) { return 0, errors.New("no reads in fuzzing") }
func (b recBackend) Write(p []byte) (int, error) {
	*b.log = append(*b.log, sent{frame: bytes.Clone(p)})
	return len(p), nil
}
func (recBackend) SetReadDeadline(time.Time) error { return nil }
func (recBackend) SetOffload(uint) error           { return nil }
func (recBackend) Close() error                    { return nil }

// recMMDS takes the frames whose first byte is 1 mod 4, and serves the
// given replies; a reply's declared length may exceed the buffer, as a
// broken stack's might.
type recMMDS struct {
	log     *[]sent
	replies []int
}

func (m *recMMDS) DetourFrame(f []byte) bool {
	if len(f) == 0 || f[0]%4 != 1 {
		return false
	}
	*m.log = append(*m.log, sent{toMMDS: true, frame: bytes.Clone(f)})
	return true
}

func (m *recMMDS) WriteNextFrame(buf []byte) (int, bool) {
	if len(m.replies) == 0 {
		return 0, false
	}
	n := m.replies[0]
	m.replies = m.replies[1:]
	copy(buf, pattern(min(n, len(buf)), byte(n)))
	return n, true
}

// walkChain follows the chain at head as the driver left it and applies
// the queue's validation: it returns the descriptors and false for a chain
// the queue rejects.
func walkChain(mem *memory.Guest, ring *virtiotest.Ring, head uint16) ([]virtio.Descriptor, bool) {
	var descs []virtio.Descriptor
	var total uint64
	writable := false
	idx := head
	for n := 0; ; n++ {
		if idx >= fzSize || n == fzSize {
			return nil, false
		}
		d := readDesc(ring, idx)
		if d.Flags&virtio.DescFlagIndirect != 0 {
			return nil, false
		}
		if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
			return nil, false
		}
		if d.IsWriteOnly() {
			writable = true
		} else if writable {
			return nil, false
		}
		total += uint64(d.Len)
		if total > math.MaxUint32 {
			return nil, false
		}
		descs = append(descs, d)
		if d.Flags&virtio.DescFlagNext == 0 {
			break
		}
		idx = d.Next
	}
	return descs, total > 0
}

func readDesc(ring *virtiotest.Ring, i uint16) virtio.Descriptor {
	a := ring.Desc + 16*uint64(i)
	addr, _ := ring.Mem.ReadU64(a)
	n, _ := ring.Mem.ReadU32(a + 8)
	fl, _ := ring.Mem.ReadU16(a + 12)
	next, _ := ring.Mem.ReadU16(a + 14)
	return virtio.Descriptor{Addr: addr, Len: n, Flags: fl, Next: next}
}

func snapshot(mem *memory.Guest) [][]byte {
	var out [][]byte
	for _, r := range mem.Regions() {
		out = append(out, bytes.Clone(r.Mem))
	}
	return out
}

// changedOutsideRings calls bad for each byte that differs between the
// snapshots outside both rings, and returns how many differ.
func changedOutsideRings(mem *memory.Guest, before, after [][]byte, bad func(addr uint64)) uint64 {
	ringEnd := virtiotest.RingBytes(fzSize)
	var n uint64
	const block = 512
	for i, r := range mem.Regions() {
		b, a := before[i], after[i]
		for off := 0; off < len(b); off++ {
			// Skip unchanged blocks whole: most of memory is.
			if end := min(off+block, len(b)); off%block == 0 && bytes.Equal(b[off:end], a[off:end]) {
				off = end - 1
				continue
			}
			if b[off] == a[off] {
				continue
			}
			addr := r.Start + uint64(off)
			if addr < fzRxRing+ringEnd || addr >= fzTxRing && addr < fzTxRing+ringEnd {
				continue
			}
			n++
			bad(addr)
		}
	}
	return n
}

func popAll(t *testing.T, ring *virtiotest.Ring) []virtiotest.Used {
	var out []virtiotest.Used
	for {
		u, ok, err := ring.PopUsed()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		if u.ID >= fzSize {
			t.Fatalf("used head %d out of range", u.ID)
		}
		out = append(out, u)
	}
}

// FuzzTx sends arbitrary TX chains (any layout, any header) and checks
// that the device never panics, never writes guest memory outside the
// rings, returns every chain it takes with length 0, and passes on exactly
// the frames of the well-formed chains it returned, in order, each either
// to the MMDS stack (without its vnet header) or to the backend (with it).
func FuzzTx(f *testing.F) {
	b := func(addr uint32, n uint16, flag byte) []byte {
		return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), flag}
	}
	chain := func(bufs ...[]byte) []byte {
		out := []byte{byte(len(bufs) - 1)}
		for _, x := range bufs {
			out = append(out, x...)
		}
		return out
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(byte(0), byte(0), chain(b(0, 64, 1)))
	f.Add(byte(0), byte(0), cat(chain(b(0, 12, 1), b(0x100, 200, 1)), chain(b(0x400, 5, 1)), chain(b(0x800, 100, 0))))
	f.Add(byte(0), byte(1), cat(chain(b(0, 0x8000, 1), b(0x8000, 0x8000, 1), b(0x10000, 0x1a, 1)), chain(b(0, 0x100, 1))))
	f.Add(byte(2), byte(5), cat(chain(b(0x3e000, 0x4000, 1)), chain(b(0x40000, 0x100, 1)), chain(b(0x9fff0, 0x100, 1))))
	raw := func(addr uint32, n uint16, flags, next byte) []byte {
		return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), flags, next}
	}
	var table []byte
	for i := range fzSize {
		flags := byte(virtio.DescFlagNext)
		if i%4 == 3 {
			flags = 0
		}
		table = append(table, raw(uint32(i)*0x100, 0x80, flags, byte(i+1))...)
	}
	f.Add(byte(1), byte(0), cat(table, []byte{0, 4, 15, 19}))

	mem := newFuzzMemory(f)
	f.Fuzz(func(t *testing.T, mode, limit byte, data []byte) {
		rx, tx, rxq, txq := fzRings(t, mem, mode&4 != 0)
		in := &fzReader{b: data}
		if mode&1 != 0 {
			buildRaw(tx, in)
		} else {
			buildChains(tx, in, false)
		}
		// Fill the memory the chains may point at with the input, so that
		// frames carry arbitrary headers.
		seed := bytes.Repeat(append([]byte{1, 0x11, 0x21}, data...), 64)
		for _, r := range mem.Regions() {
			for a := max(r.Start, fzBufMin); a < r.End(); a += uint64(len(seed)) {
				mem.WriteAt(seed[:min(uint64(len(seed)), r.End()-a)], a)
			}
		}
		if mode&2 != 0 {
			tx.SetAvailIdx(tx.AvailIdx() + fzSize + 1) // corrupt
		}
		before := snapshot(mem)

		var log []sent
		mm := &recMMDS{log: &log}
		cfg := Config{ID: "fuzz", Backend: recBackend{&log}, TxLimiter: fzLimiter(limit)}
		if mode&8 != 0 {
			cfg.MMDS = mm
		}
		if mode&16 != 0 {
			mac := [6]byte{1, 0x11, 0x21}
			cfg.GuestMAC = &mac
		}
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.AckFeatures(featAll)
		w := d.newWorker(mem, rxq, txq, &irqs{}, &hostBuffers{
			tapRx: make([]byte, MaxBufferSize), mmdsRx: make([]byte, MaxBufferSize), tx: make([]byte, MaxBufferSize),
		})
		w.processTx()

		changedOutsideRings(mem, before, snapshot(mem), func(addr uint64) {
			t.Fatalf("TX wrote guest memory at %#x", addr)
		})
		if u := popAll(t, rx); len(u) != 0 {
			t.Fatalf("RX used entries %+v without RX buffers", u)
		}
		// The frames each returned chain should have produced, in order.
		var want []sent
		for _, u := range popAll(t, tx) {
			if u.Len != 0 {
				t.Fatalf("TX used %+v with a length", u)
			}
			descs, ok := walkChain(mem, tx, uint16(u.ID))
			if !ok {
				continue
			}
			var frame []byte
			for _, dsc := range descs {
				if dsc.IsWriteOnly() {
					ok = false
					break
				}
				p, _ := mem.Slice(dsc.Addr, uint64(dsc.Len))
				frame = append(frame, p...)
			}
			if !ok || len(frame) > MaxBufferSize || len(frame) < VnetHdrLen {
				continue
			}
			if cfg.MMDS != nil && len(frame) > VnetHdrLen && frame[VnetHdrLen]%4 == 1 {
				want = append(want, sent{toMMDS: true, frame: frame[VnetHdrLen:]})
			} else {
				want = append(want, sent{frame: frame})
			}
		}
		if len(log) != len(want) {
			t.Fatalf("%d frames passed on, want %d", len(log), len(want))
		}
		for i := range want {
			if log[i].toMMDS != want[i].toMMDS || !bytes.Equal(log[i].frame, want[i].frame) {
				t.Fatalf("frame %d: got (mmds %v) %x, want (mmds %v) %x", i,
					log[i].toMMDS, log[i].frame[:min(len(log[i].frame), 32)], want[i].toMMDS, want[i].frame[:min(len(want[i].frame), 32)])
			}
		}
	})
}

// FuzzRx delivers arbitrary frames (from the backend, and from an MMDS
// stack that may misbehave) into arbitrary RX buffer layouts and checks
// that the device never panics, writes only into writable buffers of the
// chains it returns, no more bytes than the used lengths it reports, and
// never more than a chain holds.
func FuzzRx(f *testing.F) {
	b := func(addr uint32, n uint16, flag byte) []byte {
		return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), flag}
	}
	chain := func(bufs ...[]byte) []byte {
		out := []byte{byte(len(bufs) - 1)}
		for _, x := range bufs {
			out = append(out, x...)
		}
		return out
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	frame := func(n uint32) []byte { return []byte{byte(n), byte(n >> 8), byte(n >> 16)} }
	big := cat(chain(b(0, 0xffff, 1)), chain(b(0x10000, 0xffff, 1)), chain(b(0x20000, 0x2000, 1), b(0x30000, 0x8000, 1)))
	f.Add(byte(0), byte(0), big, cat(frame(100), frame(3000), frame(MaxBufferSize)))
	f.Add(byte(1), byte(0), big, cat(frame(1526), frame(MaxBufferSize+1), frame(3)))
	three := cat(chain(b(0, 0x8000, 1)), chain(b(0x8000, 0x8000, 1)), chain(b(0x10000, 0x4000, 1), b(0x46000, 0x8000, 1)))
	f.Add(byte(0), byte(0), three, cat(frame(MaxBufferSize), frame(10)))
	f.Add(byte(2), byte(0), big, cat(frame(40000), frame(12)))
	f.Add(byte(8), byte(2), big, cat(frame(200), frame(200), frame(200)))
	f.Add(byte(0), byte(0), cat(chain(b(0, 0x5000, 1), b(0x6000, 0x5000, 1)), chain(b(0x3ff00, 0x8000, 1)), chain(b(0, 10, 1)), chain(b(0, 20, 0), b(0, 0xffff, 1))), cat(frame(20000), frame(60000)))

	mem := newFuzzMemory(f)
	f.Fuzz(func(t *testing.T, mode, limit byte, chains, frames []byte) {
		rx, tx, rxq, txq := fzRings(t, mem, mode&4 != 0)
		in := &fzReader{b: chains}
		if mode&16 != 0 {
			buildRaw(rx, in)
		} else {
			buildChains(rx, in, true)
		}
		if mode&32 != 0 {
			rx.SetAvailIdx(rx.AvailIdx() + fzSize + 1) // corrupt
		}
		// Frames: a 3-byte length each, up to a little over the maximum;
		// with MMDS on, the odd ones come from the stack.
		var tapFrames [][]byte
		var mmdsReplies []int
		fr := &fzReader{b: frames}
		for k := 0; len(fr.b) > 0 && k < 8; k++ {
			n := int(fr.u24() % (MaxBufferSize + 64))
			if mode&8 != 0 && k%2 == 1 {
				mmdsReplies = append(mmdsReplies, n)
				continue
			}
			tapFrames = append(tapFrames, pattern(n, byte(k)))
		}
		before := snapshot(mem)

		var log []sent
		cfg := Config{ID: "fuzz", Backend: recBackend{&log}, RxLimiter: fzLimiter(limit)}
		if mode&8 != 0 {
			cfg.MMDS = &recMMDS{log: &log, replies: mmdsReplies}
		}
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		features := []uint64{featAll, featNoMrg, featSmall, featAll}[mode&3]
		d.AckFeatures(features)
		w := d.newWorker(mem, rxq, txq, &irqs{}, &hostBuffers{
			tapRx: make([]byte, MaxBufferSize), mmdsRx: make([]byte, MaxBufferSize), tx: make([]byte, MaxBufferSize),
		})
		// Drive the worker as its reader would: hand it a frame whenever
		// it asks for one, until the frames run out or it stops asking.
		w.processRx()
		for len(tapFrames) > 0 {
			var buf []byte
			select {
			case buf = <-w.want:
			default:
			}
			if buf == nil {
				break
			}
			fr := tapFrames[0]
			tapFrames = tapFrames[1:]
			if len(fr) > len(buf) {
				w.onRead(readResult{buf: buf, err: ErrFrameTruncated})
			} else {
				w.onRead(readResult{buf: buf[:copy(buf, fr)]})
			}
		}
		if len(log) != 0 {
			t.Fatalf("RX wrote %d frames to the backend", len(log))
		}
		if u := popAll(t, tx); len(u) != 0 {
			t.Fatalf("TX used entries %+v", u)
		}

		// Every used entry: a chain the guest offered, a length that fits
		// its writable buffers.
		var total uint64
		for _, u := range popAll(t, rx) {
			if u.Len == 0 {
				continue
			}
			descs, ok := walkChain(mem, rx, uint16(u.ID))
			var room uint64
			for _, dsc := range descs {
				if !dsc.IsWriteOnly() {
					ok = false
				}
				room += uint64(dsc.Len)
			}
			if !ok || uint64(u.Len) > room || u.Len > MaxBufferSize {
				t.Fatalf("used %+v for a chain of %d writable bytes (valid %v)", u, room, ok)
			}
			total += uint64(u.Len)
		}
		// Every changed byte lies in a writable buffer of the table, and
		// no more changed than the used lengths say.
		var allowed []virtio.Descriptor
		for i := range uint16(fzSize) {
			if dsc := readDesc(rx, i); dsc.IsWriteOnly() {
				allowed = append(allowed, dsc)
			}
		}
		changed := changedOutsideRings(mem, before, snapshot(mem), func(addr uint64) {
			for _, dsc := range allowed {
				if addr >= dsc.Addr && addr-dsc.Addr < uint64(dsc.Len) {
					return
				}
			}
			t.Fatalf("byte at %#x written outside every writable buffer", addr)
		})
		if changed > total {
			t.Fatalf("%d bytes changed, but used lengths add up to %d", changed, total)
		}
	})
}
