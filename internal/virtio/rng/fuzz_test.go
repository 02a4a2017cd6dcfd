package rng

import (
	"bytes"
	"testing"

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

// FuzzRequests feeds the worker random descriptor chains and checks that
// it never panics, writes only into writable buffers of the descriptor
// table and the used ring, writes no more than the used lengths it
// reports, and reports lengths that fit the chains.
func FuzzRequests(f *testing.F) {
	// Chains as virtiotest.FuzzChains reads them: bit 0 of flags makes
	// a buffer writable.
	w, chain := virtiotest.SeedBuffer, virtiotest.SeedChain
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(byte(0), byte(0), chain(w(0, 64, 1)))
	f.Add(byte(0), byte(0), cat(chain(w(0, 10, 1)), chain(w(0x100, 128, 1), w(0x200, 256, 1)), chain(w(0x400, 20, 0))))
	f.Add(byte(0), byte(0x02), cat(chain(w(0, 0x8000, 1), w(0x8000, 0xffff, 1)), chain(w(0xf000, 0x2000, 1))))
	f.Add(byte(0), byte(0x55), cat(chain(w(0xe000, 0x4000, 1)), chain(w(0x20000, 0x100, 1)), chain(w(0x3fff0, 0x100, 1))))
	// Raw tables: 7 bytes a descriptor (addr u24, len u16, flags, next),
	// then the heads to publish.
	raw := virtiotest.SeedDescriptor
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

	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot

	f.Fuzz(func(t *testing.T, mode, mask byte, data []byte) {
		virtiotest.ClearMemory(mem)
		ring := virtiotest.RingAt(t, mem, fzRing, fzSize)
		in := virtiotest.NewFuzzInput(data)
		if mode&1 != 0 {
			virtiotest.FuzzTable(ring, in, fzBufMin, 0x3ffff)
		} else {
			virtiotest.FuzzChains(ring, in, fzBufMin, 0x3ffff, func(flags byte) bool { return flags&1 != 0 })
		}
		if mode&2 != 0 {
			ring.SetAvailIdx(ring.AvailIdx() + fzSize + 1) // corrupt
		}
		snap.Take(mem)

		q := ring.InitQueue(t, false)
		lim := &patternLimiter{mask: mask}
		dev := New(lim)
		wk := dev.newWorker(mem, q, &virtiotest.IRQ{})
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
		for _, u := range ring.PopAllUsed(t) {
			if u.Len > MaxRequestBytes {
				t.Fatalf("used length %d over the cap", u.Len)
			}
			if u.Len > 0 {
				if room, ok := ring.WritableRoom(uint16(u.ID)); !ok || uint64(u.Len) > room {
					t.Fatalf("used {%d %d} for a chain with %d writable bytes (all writable: %v)", u.ID, u.Len, room, ok)
				}
			}
			total += uint64(u.Len)
		}
		if lim.bytes < total {
			t.Fatalf("served %d bytes but charged %d", total, lim.bytes)
		}

		// Every changed byte is in the ring or a writable buffer, and no
		// more bytes changed than the used lengths account for.
		snap.ExpectWrites(t, virtiotest.Spans{ring.Span()}, ring.WritableSpans(), total)
	})
}

// FuzzRestoreState restores arbitrary bytes as the device's own state: an
// error or a device that saves an equivalent state and activates, never a
// panic.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{"rate_limiter":null}`))
	f.Add([]byte(`{"rate_limiter":{"Bandwidth":{"Size":1000,"OneTimeBurst":5,"RefillTime":100,"Budget":300,"ElapsedNs":12345},"Ops":null}}`))
	f.Add([]byte(`{"rate_limiter":{"Bandwidth":null,"Ops":{"Size":1,"RefillTime":18446744073709,"Budget":18446744073709551615,"ElapsedNs":18446744073709551615}}}`))
	f.Add([]byte(`{"rate_limiter":{}}`))
	mem := virtiotest.MemoryAt(f, 0, 0x10000)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := New(nil)
		if err := d.RestoreState(data); err != nil {
			return
		}
		virtiotest.CheckResave(t, d, New(nil))
		ring := virtiotest.RingAt(t, mem, 0, 16)
		virtiotest.ActivateSuspendResume(t, d, mem, []*virtio.Queue{ring.InitQueue(t, false)})
		d.Reset()
	})
}
