package virtiotest_test

import (
	"bytes"
	"testing"

	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

func TestFuzzInput(t *testing.T) {
	in := virtiotest.NewFuzzInput([]byte{1, 2, 3, 4, 5, 6, 7})
	if in.U8() != 1 || in.U16() != 0x0302 || in.U24() != 0x060504 || in.Len() != 1 {
		t.Fatal("wrong values")
	}
	if b := in.Bytes(3); !bytes.Equal(b, []byte{7, 0, 0}) || in.Len() != 0 || in.U16() != 0 {
		t.Fatalf("past the end: %v", b)
	}
}

// TestFuzzChainsSeed: SeedChain and SeedBuffer encode what FuzzChains
// reads, and Chain, WritableRoom and WritableSpans read it back.
func TestFuzzChainsSeed(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, 0x10000)
	ring := virtiotest.RingAt(t, mem, 0, 4)
	seed := virtiotest.SeedChain(virtiotest.SeedBuffer(0x10, 8, 1), virtiotest.SeedBuffer(0x20, 16, 1))
	virtiotest.FuzzChains(ring, virtiotest.NewFuzzInput(seed), 0x1000, 0xffff, func(f byte) bool { return f&1 != 0 })
	descs, ok := ring.Chain(0)
	if !ok || len(descs) != 2 || descs[0].Addr != 0x1010 || descs[1].Len != 16 {
		t.Fatalf("chain %+v (%v)", descs, ok)
	}
	if room, ok := ring.WritableRoom(0); !ok || room != 24 {
		t.Fatalf("room %d (%v)", room, ok)
	}
	spans := ring.WritableSpans()
	if !spans.Contains(0x1017) || spans.Contains(0x1018) || !spans.Contains(0x102f) {
		t.Fatalf("spans %v", spans)
	}
	// A loop is not a chain.
	ring.SetDesc(1, virtio.Descriptor{Addr: 0x1020, Len: 16, Flags: virtio.DescFlagNext, Next: 0})
	if _, ok := ring.Chain(0); ok {
		t.Fatal("a looping chain reads as valid")
	}
}

// TestSnapshot: Changed sees exactly the bytes written since Take, and
// ExpectWrites accepts writes inside the allowed spans.
func TestSnapshot(t *testing.T) {
	mem := virtiotest.NewMemoryWithHole(t, 0x2000, 0x3000, 0x5000)
	var snap virtiotest.Snapshot
	snap.Take(mem)
	virtiotest.WriteGuest(t, mem, 0x1fff, []byte{1})
	virtiotest.WriteGuest(t, mem, 0x4000, []byte{2, 3})
	var got []uint64
	snap.Changed(func(addr uint64, now byte) { got = append(got, addr) })
	if len(got) != 3 || got[0] != 0x1fff || got[1] != 0x4000 || got[2] != 0x4001 {
		t.Fatalf("changed %#x", got)
	}
	snap.ExpectWrites(t, virtiotest.Spans{{Start: 0x1f00, End: 0x2000}}, virtiotest.Spans{{Start: 0x4000, End: 0x4002}}, 2)
	snap.Take(mem) // again, reusing the buffers
	snap.Changed(func(addr uint64, _ byte) { t.Fatalf("%#x changed after a fresh Take", addr) })
}

// TestNegotiate drives the dummy device through the MMIO transport.
func TestNegotiate(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, 0x100000)
	dev := &virtiotest.Device{Type: virtio.TypeRNG, Features: 1<<virtio.FeatureVersion1 | 1<<3, MaxSizes: []uint16{16}}
	tr, line := virtiotest.NewTransport(t, mem, dev)
	offered := virtiotest.Negotiate(tr, func(o uint64) uint64 { return o &^ (1 << 3) })
	if offered != dev.Features {
		t.Fatalf("offered %#x", offered)
	}
	virtiotest.ExpectStatus(t, tr, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	if acked, _ := dev.Acked(); acked != 1<<virtio.FeatureVersion1 {
		t.Fatalf("acked %#x", acked)
	}
	virtiotest.SetupQueue(tr, 0, virtiotest.RingAt(t, mem, 0x1000, 16))
	virtiotest.Write32(tr, 0x70, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if !dev.Active() || line.Count() != 0 {
		t.Fatalf("active %v, %d interrupts", dev.Active(), line.Count())
	}
}
