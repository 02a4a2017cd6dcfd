package balloon

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Fuzz memory: two RAM regions with a hole between them, so buffers and
// PFNs can straddle the hole, sit in it or lie past the end of RAM.
const (
	fzSize     = 16
	fzRingPage = 0x1000 // the rings, ring i at fzRingPage + i*fzRingStep
	fzRingStep = 0x200
	fzBufMin   = 0x2000 // buffers from here on
	fzRegion0  = 0x20000
	fzRegion1  = 0x30000
	fzEnd1     = 0x40000
	fzFill     = 0xee // what every page holds before the device runs
)

// fzPattern is a region's worth of fzFill.
var fzPattern = bytes.Repeat([]byte{fzFill}, fzRegion0)

// buildQueue lays out a ring for queue qi and fills its descriptor table
// from the input: in raw mode verbatim (any flags, any next index), else
// as a driver adds chains of one to four buffers. It returns the ring and
// the device-side queue, initialized.
func buildQueue(t *testing.T, mem *memory.Guest, qi int, raw bool, in *virtiotest.FuzzInput) (*virtiotest.Ring, *virtio.Queue) {
	ring := virtiotest.RingAt(t, mem, fzRingPage+uint64(qi)*fzRingStep, fzSize)
	if raw {
		for i := range uint16(fzSize) {
			ring.SetDesc(i, virtio.Descriptor{
				Addr:  fzBufMin + uint64(in.U24()&0x3ffff),
				Len:   uint32(in.U16()),
				Flags: uint16(in.U8()) & (virtio.DescFlagNext | virtio.DescFlagWrite | virtio.DescFlagIndirect),
				Next:  uint16(in.U8() % (2 * fzSize)),
			})
		}
		var heads []uint16
		for n := in.U8() % (2 * fzSize); n > 0; n-- {
			heads = append(heads, uint16(in.U8()%(fzSize+4)))
		}
		ring.Publish(heads...)
	} else {
		for n := in.U8() % (fzSize + 2); n > 0; n-- {
			bufs := make([]virtiotest.Buffer, in.U8()%4+1)
			for i := range bufs {
				bufs[i] = virtiotest.Buffer{
					Addr:     fzBufMin + uint64(in.U24()&0x3ffff),
					Len:      uint32(in.U16() % 0x2000),
					Writable: in.U8()&1 != 0,
				}
			}
			ring.AddChain(bufs...)
		}
	}
	q := ring.InitQueue(t, false)
	return ring, q
}

// resetMem fills RAM with fzFill, then the rest of the input from
// fzBufMin on: the PFN lists, statistics and commands the buffers hold.
func resetMem(mem *memory.Guest, content []byte) {
	for _, r := range mem.Regions() {
		copy(r.Mem, fzPattern) // copy, not a byte loop: fuzzing instruments loops
	}
	n := min(len(content), fzRegion0-fzBufMin)
	mem.WriteAt(content[:n], fzBufMin)
}

// inRAM reports whether [gpa, gpa+n) lies in one region.
func inRAM(mem *memory.Guest, gpa, n uint64) bool {
	_, err := mem.Slice(gpa, n)
	return err == nil
}

// checkUsed pops every used entry of ring and checks it names a
// descriptor and reports nothing written (the balloon never writes into
// buffers).
func checkUsed(t *testing.T, ring *virtiotest.Ring) {
	t.Helper()
	for {
		u, ok, err := ring.PopUsed()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return
		}
		if u.ID >= fzSize || u.Len != 0 {
			t.Fatalf("used entry %+v", u)
		}
	}
}

// FuzzInflate feeds the inflate queue random chains and PFN lists and
// checks that the device never panics, discards only whole pages of guest
// RAM that some buffer listed, and changes nothing else but the used
// ring.
func FuzzInflate(f *testing.F) {
	pfns := func(p ...uint32) []byte {
		var b []byte
		for _, v := range p {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
		return b
	}
	// A one-buffer chain as buildQueue reads it.
	chain := func(off uint32, n uint16, flags byte) []byte {
		a := off // buildQueue adds fzBufMin
		return []byte{0, byte(a), byte(a >> 8), byte(a >> 16), byte(n), byte(n >> 8), flags}
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// One chain of six PFNs (valid, in the hole, past the end, duplicate).
	f.Add(false, cat([]byte{1}, chain(0, 24, 0), pfns(0x10, 0x11, 0x25, 0x3f, 0x1000, 0x10)))
	// Three chains: two PFNs; one writable; a length not a multiple of 4.
	f.Add(false, cat([]byte{3}, chain(0, 8, 0), chain(0, 4, 1), chain(0, 6, 0), pfns(0x12, 0x13)))
	f.Add(true, cat(bytes.Repeat([]byte{0, 0, 0, 16, 0, 1, 1}, fzSize), []byte{3, 0, 5, 15}, pfns(0x18, 0x19, 0x1a, 0x31, 0xffffffff)))
	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot
	ringEnd := fzRingPage + virtiotest.RingBytes(fzSize)

	f.Fuzz(func(t *testing.T, raw bool, data []byte) {
		d, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		in := virtiotest.NewFuzzInput(data)
		resetMem(mem, nil)
		ring, q := buildQueue(t, mem, InflateIndex, raw, in)
		resetMemKeep(mem, in.Rest(), fzRingPage, ringEnd)
		dq := virtio.NewQueue(QueueSize) // deflate: never used here

		// Every PFN any readable buffer holds, and 0, which a buffer
		// zeroed by an earlier discard reads as.
		allowed := map[uint32]bool{0: true}
		for i := range uint16(fzSize) {
			desc := ring.Descriptor(i)
			if desc.IsWriteOnly() || desc.Len > 4*MaxPagesInDesc || !inRAM(mem, desc.Addr, uint64(desc.Len)) {
				continue
			}
			for off := uint64(0); off+4 <= uint64(desc.Len); off += 4 {
				v, _ := mem.ReadU32(desc.Addr + off)
				allowed[v] = true
			}
		}
		snap.Take(mem)

		irq := &virtiotest.IRQ{}
		w := d.newWorker(mem, []*virtio.Queue{q, dq}, irq)
		var discarded uint64
		w.discard = func(gpa, n uint64) error {
			if gpa%page != 0 || n%page != 0 || n == 0 || !inRAM(mem, gpa, n) {
				t.Fatalf("discard [%#x, +%#x) outside RAM or unaligned", gpa, n)
			}
			for p := gpa; p < gpa+n; p += page {
				if !allowed[uint32(p/page)] {
					t.Fatalf("discard of page %#x, which no buffer listed", p/page)
				}
			}
			discarded += n
			return mem.Discard(gpa, n)
		}
		w.processInflate(InflateIndex)
		if discarded > fzEnd1 {
			t.Fatalf("%#x bytes discarded", discarded)
		}
		if !allowed[fzRingPage/page] {
			checkUsed(t, ring) // the ring's page was not given away
		}
		snap.Changed(func(addr uint64, now byte) {
			if addr >= ring.Used && addr < ringEnd {
				return
			}
			if now != 0 || !allowed[uint32(addr/page)] {
				t.Fatalf("byte at %#x changed to %#x", addr, now)
			}
		})
	})
}

// resetMemKeep is resetMem that leaves [keepLo, keepHi) alone.
func resetMemKeep(mem *memory.Guest, content []byte, keepLo, keepHi uint64) {
	saved := make([]byte, keepHi-keepLo)
	mem.ReadAt(saved, keepLo)
	resetMem(mem, content)
	mem.WriteAt(saved, keepLo)
}

// FuzzStats feeds the statistics queue random chains and buffers and
// checks that the device never panics or writes guest memory outside the
// used ring, returns at most what it was given, and reports only values
// that some buffer held for that tag.
func FuzzStats(f *testing.F) {
	stat := func(tag uint16, v uint64) []byte {
		return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint16(nil, tag), v)
	}
	chain := func(off uint32, n uint16) []byte {
		a := off // buildQueue adds fzBufMin
		return []byte{0, byte(a), byte(a >> 8), byte(a >> 16), byte(n), byte(n >> 8), 0}
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(false, cat([]byte{1}, chain(0, 30), stat(TagFreeMemory, 5), stat(TagSwapIn, 1), stat(99, 3)))
	f.Add(false, cat([]byte{2}, chain(0, 25), chain(0, 20), stat(TagTotalMemory, 1<<30), stat(TagOOMKill, 2), []byte{1, 2, 3, 4, 5}))
	f.Add(false, cat([]byte{1}, chain(0, 0xffff), stat(TagAsyncScan, 9)))
	f.Add(true, cat(bytes.Repeat([]byte{0, 0, 0, 20, 0, 0, 0}, fzSize), []byte{2, 0, 1}, stat(TagDirectReclaim, 7), stat(TagMajorFaults, 8)))
	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot
	ringEnd := fzRingPage + 2*fzRingStep + virtiotest.RingBytes(fzSize)

	f.Fuzz(func(t *testing.T, raw bool, data []byte) {
		d, err := New(Config{StatsPollingIntervalS: 1})
		if err != nil {
			t.Fatal(err)
		}
		in := virtiotest.NewFuzzInput(data)
		resetMem(mem, nil)
		ring, q := buildQueue(t, mem, 2, raw, in)
		resetMemKeep(mem, in.Rest(), fzRingPage, ringEnd)

		// The values each tag takes in some buffer, read as the device
		// would: from a descriptor's start, whole entries.
		seen := map[uint16]map[uint64]bool{}
		for i := range uint16(fzSize) {
			desc := ring.Descriptor(i)
			if desc.Len > MaxStatsDescLen || !inRAM(mem, desc.Addr, uint64(desc.Len)) {
				continue
			}
			for off := uint64(0); off+StatSize <= uint64(desc.Len); off += StatSize {
				tag, _ := mem.ReadU16(desc.Addr + off)
				v, _ := mem.ReadU64(desc.Addr + off + 2)
				if seen[tag] == nil {
					seen[tag] = map[uint64]bool{}
				}
				seen[tag][v] = true
			}
		}
		snap.Take(mem)

		irq := &virtiotest.IRQ{}
		w := d.newWorker(mem, []*virtio.Queue{virtio.NewQueue(QueueSize), virtio.NewQueue(QueueSize), q}, irq)
		w.discard = func(gpa, n uint64) error {
			t.Fatalf("statistics discarded [%#x, +%#x)", gpa, n)
			return nil
		}
		w.processStats(2)
		w.statsTick()
		w.statsTick() // nothing held any more: only a log line
		w.processStats(2)
		checkUsed(t, ring)

		st, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for tag, p := range map[uint16]*uint64{
			TagSwapIn: st.SwapIn, TagSwapOut: st.SwapOut, TagMajorFaults: st.MajorFaults,
			TagMinorFaults: st.MinorFaults, TagFreeMemory: st.FreeMemory, TagTotalMemory: st.TotalMemory,
			TagAvailMemory: st.AvailableMemory, TagDiskCaches: st.DiskCaches, TagHugetlbAlloc: st.HugetlbAllocations,
			TagHugetlbFail: st.HugetlbFailures, TagOOMKill: st.OOMKill, TagAllocStall: st.AllocStall,
			TagAsyncScan: st.AsyncScan, TagDirectScan: st.DirectScan, TagAsyncReclaim: st.AsyncReclaim,
			TagDirectReclaim: st.DirectReclaim,
		} {
			if p != nil && !seen[tag][*p] {
				t.Fatalf("tag %d reports %d, which no buffer held", tag, *p)
			}
		}
		if st.TargetPages != 0 || st.ActualPages != 0 {
			t.Fatalf("sizes changed: %+v", st)
		}

		snap.Changed(func(addr uint64, _ byte) {
			if addr < ring.Used || addr >= ringEnd {
				t.Fatalf("byte at %#x written", addr)
			}
		})
	})
}

// FuzzFreePages feeds the free page hinting and reporting queues random
// chains and command IDs, with the host in any hinting state, and checks
// that the device never panics, discards only ranges that a descriptor
// gave, inside RAM, and changes nothing else but the used rings.
func FuzzFreePages(f *testing.F) {
	desc := func(off uint32, n uint16, flags byte) []byte {
		a := off // buildQueue adds fzBufMin
		return []byte{byte(a), byte(a >> 8), byte(a >> 16), byte(n), byte(n >> 8), flags}
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// Hinting: one chain of two buffers, the command (run 2, from the
	// content) and a page. Reporting: one chain of two blocks.
	f.Add(byte(2), false, cat([]byte{1, 1}, desc(0, 4, 1), desc(0x2000, 0x1000, 1),
		[]byte{1, 1}, desc(0x4000, 0x1000, 1), desc(0x6000, 0x1000, 1), []byte{2, 0, 0, 0}))
	// A STOP with run 3 on and acknowledgement; nothing to report.
	f.Add(byte(3), false, cat([]byte{1, 0}, desc(0, 4, 1), []byte{0}, []byte{0, 0, 0, 0}))
	// Hints and reports with nothing on: all dropped.
	f.Add(byte(0), false, cat([]byte{2, 0}, desc(0, 4, 0), []byte{0}, desc(0x3000, 0x1000, 1),
		[]byte{1, 0}, desc(0x5000, 0x1000, 1), []byte{3, 0, 0, 0}))
	f.Add(byte(3), true, bytes.Repeat([]byte{0, 0x10, 0, 0, 0x10, 1, 0}, 2*fzSize))
	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	var snap virtiotest.Snapshot
	ringEnd := uint64(fzRingPage + 4*fzRingStep)

	f.Fuzz(func(t *testing.T, host byte, raw bool, data []byte) {
		d, err := New(Config{FreePageHinting: true, FreePageReporting: true})
		if err != nil {
			t.Fatal(err)
		}
		irq := &virtiotest.IRQ{}
		d.irq = irq
		d.hint.hostCmd = uint32(host % 4)
		d.hint.ackOnFinish = host&4 == 0
		in := virtiotest.NewFuzzInput(data)
		resetMem(mem, nil)
		hring, hq := buildQueue(t, mem, 2, raw, in)
		rring, rq := buildQueue(t, mem, 3, raw, in)
		resetMemKeep(mem, in.Rest(), fzRingPage, ringEnd)

		// The buffers the tables give, as [addr, addr+len).
		given := map[[2]uint64]bool{}
		for _, ring := range []*virtiotest.Ring{hring, rring} {
			for i := range uint16(fzSize) {
				desc := ring.Descriptor(i)
				given[[2]uint64{desc.Addr, uint64(desc.Len)}] = true
			}
		}
		snap.Take(mem)

		type span struct{ lo, hi uint64 }
		var gone []span
		w := d.newWorker(mem, []*virtio.Queue{virtio.NewQueue(QueueSize), virtio.NewQueue(QueueSize), hq, rq}, irq)
		w.discard = func(gpa, n uint64) error {
			if !given[[2]uint64{gpa, n}] {
				t.Fatalf("discard [%#x, +%#x) that no descriptor gave", gpa, n)
			}
			err := mem.Discard(gpa, n)
			if err == nil {
				gone = append(gone, span{gpa, gpa + n})
			}
			return err
		}
		w.processHinting(2)
		w.processReporting(3)
		w.processHinting(2)
		if d.hint.hostCmd != uint32(host%4) && d.hint.hostCmd != HintCmdDone {
			t.Fatalf("host command %d", d.hint.hostCmd)
		}
		// A discarded ring page scrambles the ring: check it only if kept.
		ringGone := false
		for _, s := range gone {
			ringGone = ringGone || (s.lo < ringEnd && s.hi > fzRingPage)
		}
		if !ringGone {
			checkUsed(t, hring)
			checkUsed(t, rring)
		}
		snap.Changed(func(addr uint64, now byte) {
			if (addr >= hring.Used && addr < hring.Used+6+8*fzSize) || (addr >= rring.Used && addr < rring.Used+6+8*fzSize) {
				return
			}
			for _, s := range gone {
				if addr >= s.lo && addr < s.hi && now == 0 {
					return
				}
			}
			t.Fatalf("byte at %#x changed to %#x outside any discarded range", addr, now)
		})
	})
}
