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

// mostly makes seven of eight buffers from virtiotest.FuzzChains writable
// (or readable: !writable), so that most chains suit the queue.
func mostly(writable bool) func(flags byte) bool {
	return func(flags byte) bool { return (flags&7 == 0) != writable }
}

// fzRings lays out both rings in cleared memory and returns their
// initialised queues.
func fzRings(t *testing.T, mem *memory.Guest, eventIdx bool) (rx, tx *virtiotest.Ring, rxq, txq *virtio.Queue) {
	virtiotest.ClearMemory(mem)
	rx = virtiotest.RingAt(t, mem, fzRxRing, fzSize)
	tx = virtiotest.RingAt(t, mem, fzTxRing, fzSize)
	return rx, tx, rx.InitQueue(t, eventIdx), tx.InitQueue(t, eventIdx)
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
	descs, ok := ring.Chain(head)
	if !ok {
		return nil, false
	}
	var total uint64
	writable := false
	for _, d := range descs {
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
	}
	return descs, total > 0
}

// FuzzTx sends arbitrary TX chains (any layout, any header) and checks
// that the device never panics, never writes guest memory outside the
// rings, returns every chain it takes with length 0, and passes on exactly
// the frames of the well-formed chains it returned, in order, each either
// to the MMDS stack (without its vnet header) or to the backend (with it).
func FuzzTx(f *testing.F) {
	b, chain := virtiotest.SeedBuffer, virtiotest.SeedChain
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(byte(0), byte(0), chain(b(0, 64, 1)))
	f.Add(byte(0), byte(0), cat(chain(b(0, 12, 1), b(0x100, 200, 1)), chain(b(0x400, 5, 1)), chain(b(0x800, 100, 0))))
	f.Add(byte(0), byte(1), cat(chain(b(0, 0x8000, 1), b(0x8000, 0x8000, 1), b(0x10000, 0x1a, 1)), chain(b(0, 0x100, 1))))
	f.Add(byte(2), byte(5), cat(chain(b(0x3e000, 0x4000, 1)), chain(b(0x40000, 0x100, 1)), chain(b(0x9fff0, 0x100, 1))))
	raw := virtiotest.SeedDescriptor
	var table []byte
	for i := range fzSize {
		flags := byte(virtio.DescFlagNext)
		if i%4 == 3 {
			flags = 0
		}
		table = append(table, raw(uint32(i)*0x100, 0x80, flags, byte(i+1))...)
	}
	f.Add(byte(1), byte(0), cat(table, []byte{0, 4, 15, 19}))

	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot
	f.Fuzz(func(t *testing.T, mode, limit byte, data []byte) {
		rx, tx, rxq, txq := fzRings(t, mem, mode&4 != 0)
		in := virtiotest.NewFuzzInput(data)
		if mode&1 != 0 {
			virtiotest.FuzzTable(tx, in, fzBufMin, 0x9ffff)
		} else {
			virtiotest.FuzzChains(tx, in, fzBufMin, 0x9ffff, mostly(false))
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
		snap.Take(mem)

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
		w := d.newWorker(mem, rxq, txq, &virtiotest.IRQ{}, &hostBuffers{
			tapRx: make([]byte, MaxBufferSize), mmdsRx: make([]byte, MaxBufferSize), tx: make([]byte, MaxBufferSize),
		})
		w.processTx()

		// TX writes nothing but the rings.
		snap.ExpectWrites(t, virtiotest.Spans{rx.Span(), tx.Span()}, nil, 0)
		if u := rx.PopAllUsed(t); len(u) != 0 {
			t.Fatalf("RX used entries %+v without RX buffers", u)
		}
		// The frames each returned chain should have produced, in order.
		var want []sent
		for _, u := range tx.PopAllUsed(t) {
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
	b, chain := virtiotest.SeedBuffer, virtiotest.SeedChain
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

	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot
	f.Fuzz(func(t *testing.T, mode, limit byte, chains, frames []byte) {
		rx, tx, rxq, txq := fzRings(t, mem, mode&4 != 0)
		in := virtiotest.NewFuzzInput(chains)
		if mode&16 != 0 {
			virtiotest.FuzzTable(rx, in, fzBufMin, 0x9ffff)
		} else {
			virtiotest.FuzzChains(rx, in, fzBufMin, 0x9ffff, mostly(true))
		}
		if mode&32 != 0 {
			rx.SetAvailIdx(rx.AvailIdx() + fzSize + 1) // corrupt
		}
		// Frames: a 3-byte length each, up to a little over the maximum;
		// with MMDS on, the odd ones come from the stack.
		var tapFrames [][]byte
		var mmdsReplies []int
		fr := virtiotest.NewFuzzInput(frames)
		for k := 0; fr.Len() > 0 && k < 8; k++ {
			n := int(fr.U24() % (MaxBufferSize + 64))
			if mode&8 != 0 && k%2 == 1 {
				mmdsReplies = append(mmdsReplies, n)
				continue
			}
			tapFrames = append(tapFrames, pattern(n, byte(k)))
		}
		snap.Take(mem)

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
		w := d.newWorker(mem, rxq, txq, &virtiotest.IRQ{}, &hostBuffers{
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
		if u := tx.PopAllUsed(t); len(u) != 0 {
			t.Fatalf("TX used entries %+v", u)
		}

		// Every used entry: a chain the guest offered, a length that fits
		// its writable buffers.
		var total uint64
		for _, u := range rx.PopAllUsed(t) {
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
		snap.ExpectWrites(t, virtiotest.Spans{rx.Span(), tx.Span()}, rx.WritableSpans(), total)
	})
}

// noCloseBackend shares one backend between fuzz iterations.
type noCloseBackend struct{ Backend }

func (noCloseBackend) Close() error { return nil }

// FuzzRestoreState restores arbitrary bytes as the device's own state: an
// error, or a device that saves a state that restores again, and that
// activates (or refuses to, for held chains that do not fit the queue or
// memory), delivers its pending frames into its held chains, suspends,
// resumes and resets, never a panic.
func FuzzRestoreState(f *testing.F) {
	lim := `"rx_rate_limiter":{"Bandwidth":null,"Ops":null},"tx_rate_limiter":{"Bandwidth":{"Size":1000,"RefillTime":100,"Budget":5}}`
	f.Add([]byte(`{"guest_mac":null,"mtu":0,` + lim + `,"rx_chains":[],"tap_frame":null,"mmds_frame":null}`))
	f.Add([]byte(`{"guest_mac":"06:00:ac:10:00:02","mtu":1500,` + lim + `,"rx_chains":[{"head":3,"buffers":[{"addr":8192,"len":1526}]},` +
		`{"head":1,"buffers":[{"addr":16384,"len":12},{"addr":262140,"len":40000}]}],"tap_frame":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==","mmds_frame":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Add([]byte(`{"guest_mac":null,"mtu":65535,` + lim + `,"rx_chains":[{"head":15,"buffers":[{"addr":294912,"len":65562}]}],"tap_frame":"","mmds_frame":null}`))
	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	be, _ := newBackendPair(f)
	newDev := func(t *testing.T) *Device {
		d, err := New(Config{ID: "fuzz", Backend: noCloseBackend{be}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDev(t)
		if err := d.RestoreState(data); err != nil {
			return
		}
		virtiotest.CheckResave(t, d, newDev(t))
		features := uint64(featAll)
		if len(data)%2 == 1 {
			features = featSmall
		}
		_, _, rxq, txq := fzRings(t, mem, true)
		d.AckFeatures(features)
		if err := d.Activate(mem, []*virtio.Queue{rxq, txq}, &virtiotest.IRQ{}); err != nil {
			return
		}
		d.Suspend()
		if _, err := d.SaveState(); err != nil {
			t.Fatal(err)
		}
		if err := d.Resume(); err != nil {
			t.Fatal(err)
		}
		d.Reset()
	})
}
