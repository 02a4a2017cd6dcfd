package virtiotest

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
)

// RingAt is NewRing for a test: it fails t rather than return an error.
func RingAt(t testing.TB, mem *memory.Guest, base uint64, size uint16) *Ring {
	t.Helper()
	r, err := NewRing(mem, base, size)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Add is AddChain for a test: it fails t rather than return an error.
func (r *Ring) Add(t testing.TB, bufs ...Buffer) (head uint16) {
	t.Helper()
	head, err := r.AddChain(bufs...)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

// InitQueue returns the device-side queue of r as a transport hands it to
// Activate at DRIVER_OK: programmed, EVENT_IDX as negotiated, and
// initialized.
func (r *Ring) InitQueue(t testing.TB, eventIdx bool) *virtio.Queue {
	t.Helper()
	q := r.Queue()
	q.EventIdx = eventIdx
	if err := q.Initialize(r.Mem); err != nil {
		t.Fatal(err)
	}
	return q
}

// Span is the guest memory the ring occupies (RingBytes from Desc).
func (r *Ring) Span() Span { return Span{r.Desc, r.Desc + RingBytes(r.Size)} }

// Descriptor reads descriptor i of the table as it is now in guest memory
// (zero where that is not RAM).
func (r *Ring) Descriptor(i uint16) virtio.Descriptor {
	var raw [16]byte
	r.Mem.ReadAt(raw[:], r.Desc+16*uint64(i))
	return virtio.Descriptor{
		Addr:  binary.LittleEndian.Uint64(raw[0:]),
		Len:   binary.LittleEndian.Uint32(raw[8:]),
		Flags: binary.LittleEndian.Uint16(raw[12:]),
		Next:  binary.LittleEndian.Uint16(raw[14:]),
	}
}

// Chain follows the chain at head through the table as it is now: its
// descriptors, and false if it leaves the table or loops (runs longer than
// the table).
func (r *Ring) Chain(head uint16) ([]virtio.Descriptor, bool) {
	var descs []virtio.Descriptor
	idx := head
	for range r.Size {
		if idx >= r.Size {
			return descs, false
		}
		d := r.Descriptor(idx)
		descs = append(descs, d)
		if d.Flags&virtio.DescFlagNext == 0 {
			return descs, true
		}
		idx = d.Next
	}
	return descs, false
}

// WritableSpans returns the buffers of every device-writable descriptor
// of the table: where a device may write, whichever chains it took.
func (r *Ring) WritableSpans() Spans {
	var out Spans
	for i := range r.Size {
		if d := r.Descriptor(i); d.IsWriteOnly() {
			out = append(out, Span{d.Addr, d.Addr + uint64(d.Len)})
		}
	}
	return out
}

// WritableRoom follows the chain at head through the table as it is now
// and returns the total length of its buffers, and whether it is a valid
// chain whose buffers are all device-writable (what a device that only
// writes may fill).
func (r *Ring) WritableRoom(head uint16) (uint64, bool) {
	descs, ok := r.Chain(head)
	var room uint64
	for _, d := range descs {
		if !d.IsWriteOnly() {
			return room, false
		}
		room += uint64(d.Len)
	}
	return room, ok
}

// PopAllUsed pops every used entry the device has published, failing t on
// a ring read error or a head outside the table.
func (r *Ring) PopAllUsed(t testing.TB) []Used {
	t.Helper()
	var out []Used
	for {
		u, ok, err := r.PopUsed()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		if u.ID >= uint32(r.Size) {
			t.Fatalf("used head %d out of range", u.ID)
		}
		out = append(out, u)
	}
}

// WaitUsed waits for the device to publish n more used entries and
// returns them.
func (r *Ring) WaitUsed(t testing.TB, n int) []Used {
	t.Helper()
	var out []Used
	deadline := time.Now().Add(WaitTimeout)
	for len(out) < n {
		u, ok, err := r.PopUsed()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, u)
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d used entries, want %d: %+v", len(out), n, out)
		}
		time.Sleep(100 * time.Microsecond)
	}
	return out
}
