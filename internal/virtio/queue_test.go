package virtio_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

const (
	ramStart = 0x10000
	ramSize  = 0x40000
	ringBase = ramStart
	dataBase = ramStart + 0x10000
)

func newMem(t testing.TB, layout ...memory.Layout) *memory.Guest {
	t.Helper()
	if len(layout) == 0 {
		layout = []memory.Layout{{Start: ramStart, Size: ramSize}}
	}
	mem, err := memory.New(layout, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// setup returns an initialized queue of size n over a fresh ring.
func setup(t testing.TB, n uint16) (*memory.Guest, *virtiotest.Ring, *virtio.Queue) {
	t.Helper()
	mem := newMem(t)
	r, err := virtiotest.NewRing(mem, ringBase, n)
	if err != nil {
		t.Fatal(err)
	}
	q := r.Queue()
	if err := q.Initialize(mem); err != nil {
		t.Fatal(err)
	}
	return mem, r, q
}

func TestInitialize(t *testing.T) {
	end := uint64(ramStart + ramSize)
	good := func(q *virtio.Queue) {}
	tests := []struct {
		name string
		mod  func(q *virtio.Queue)
		want error
	}{
		{"valid", good, nil},
		{"not ready", func(q *virtio.Queue) { q.Ready = false }, virtio.ErrQueueNotReady},
		{"size zero", func(q *virtio.Queue) { q.Size = 0 }, virtio.ErrQueueSize},
		{"size not power of two", func(q *virtio.Queue) { q.Size = 24 }, virtio.ErrQueueSize},
		{"size above max", func(q *virtio.Queue) { q.Size = 512 }, virtio.ErrQueueSize},
		{"size above device max", func(q *virtio.Queue) { q.MaxSize, q.Size = 64, 128 }, virtio.ErrQueueSize},
		{"size above 256 even if device allows", func(q *virtio.Queue) { q.MaxSize, q.Size = 1024, 512 }, virtio.ErrQueueSize},
		{"smallest size", func(q *virtio.Queue) { q.Size = 1 }, nil},
		{"desc 8-aligned", func(q *virtio.Queue) { q.DescTable += 8 }, virtio.ErrQueueAlignment},
		{"avail odd", func(q *virtio.Queue) { q.AvailRing++ }, virtio.ErrQueueAlignment},
		{"avail 2-aligned ok", func(q *virtio.Queue) { q.AvailRing += 2 }, nil},
		{"used 2-aligned", func(q *virtio.Queue) { q.UsedRing += 2 }, virtio.ErrQueueAlignment},
		{"desc below RAM", func(q *virtio.Queue) { q.DescTable = 0x1000 }, virtio.ErrQueueMemory},
		{"desc past RAM end", func(q *virtio.Queue) { q.DescTable = end - 16*128 }, virtio.ErrQueueMemory},
		{"desc ends at RAM end", func(q *virtio.Queue) { q.Size = 128; q.DescTable = end - 16*128 }, nil},
		{"avail straddles end", func(q *virtio.Queue) { q.AvailRing = end - 4 }, virtio.ErrQueueMemory},
		{"used one byte short", func(q *virtio.Queue) { q.UsedRing = end - (6 + 8*256) + 2 }, virtio.ErrQueueMemory},
		{"used ends just inside RAM", func(q *virtio.Queue) { q.UsedRing = end - (6 + 8*256) - 2 }, nil},
		{"address overflow", func(q *virtio.Queue) { q.DescTable = ^uint64(0) &^ 15 }, virtio.ErrQueueMemory},
		{"high half set", func(q *virtio.Queue) { q.UsedRing |= 1 << 32 }, virtio.ErrQueueMemory},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := newMem(t)
			r, err := virtiotest.NewRing(mem, ringBase, 256)
			if err != nil {
				t.Fatal(err)
			}
			q := r.Queue()
			q.MaxSize = 256
			tc.mod(q)
			err = q.Initialize(mem)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Initialize = %v, want %v", err, tc.want)
			}
			if q.Initialized() != (err == nil) {
				t.Fatalf("Initialized = %v after %v", q.Initialized(), err)
			}
		})
	}
}

func TestInitializeAcrossRegions(t *testing.T) {
	// Two adjacent regions: contiguous in the guest, not on the host, so a
	// ring may not span them (Firecracker needs one host slice too).
	mem := newMem(t, memory.Layout{Start: 0, Size: 0x1000}, memory.Layout{Start: 0x1000, Size: 0x1000})
	q := virtio.NewQueue(16)
	q.Ready = true
	q.DescTable, q.AvailRing, q.UsedRing = 0xf80, 0x1100, 0x1200
	if err := q.Initialize(mem); !errors.Is(err, virtio.ErrQueueMemory) {
		t.Fatalf("ring across regions: %v", err)
	}
	q.DescTable = 0xe00
	if err := q.Initialize(mem); err != nil {
		t.Fatal(err)
	}
}

func TestUninitialized(t *testing.T) {
	mem := newMem(t)
	q := virtio.NewQueue(16)
	if _, err := q.Pop(mem); !errors.Is(err, virtio.ErrQueueNotInitialized) {
		t.Fatalf("Pop: %v", err)
	}
	if err := q.AddUsed(mem, 0, 0); !errors.Is(err, virtio.ErrQueueNotInitialized) {
		t.Fatalf("AddUsed: %v", err)
	}
	q.Ready = true
	q.Size = 3
	if q.Initialize(mem) == nil || q.Initialized() {
		t.Fatal("bad queue initialized")
	}
}

func TestPopAddUsed(t *testing.T) {
	mem, r, q := setup(t, 16)
	req := []byte("hello, device")
	if err := mem.WriteAt(req, dataBase); err != nil {
		t.Fatal(err)
	}
	// A request split over two readable buffers, a response over two
	// writable ones.
	head, err := r.AddChain(
		virtiotest.Buffer{Addr: dataBase, Len: 5},
		virtiotest.Buffer{Addr: dataBase + 5, Len: uint32(len(req) - 5)},
		virtiotest.Buffer{Addr: dataBase + 0x1000, Len: 3, Writable: true},
		virtiotest.Buffer{Addr: dataBase + 0x2000, Len: 100, Writable: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := q.Len(mem); n != 1 {
		t.Fatalf("Len = %d", n)
	}
	c, err := q.Pop(mem)
	if err != nil || c == nil {
		t.Fatalf("Pop = %v, %v", c, err)
	}
	if c.Head != head || len(c.Descriptors()) != 4 || len(c.Readable()) != 2 || len(c.Writable()) != 2 {
		t.Fatalf("chain %+v", c)
	}
	if c.ReadableLen() != uint32(len(req)) || c.WritableLen() != 103 {
		t.Fatalf("lengths %d %d", c.ReadableLen(), c.WritableLen())
	}
	rd := c.Reader()
	got, err := io.ReadAll(&rd)
	if err != nil || !bytes.Equal(got, req) || rd.Remaining() != 0 || rd.Consumed() != len(req) {
		t.Fatalf("read %q, %v", got, err)
	}
	w := c.Writer()
	if n, err := w.Write([]byte("abcdef")); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if w.Written() != 6 || w.Remaining() != 97 {
		t.Fatalf("Written %d Remaining %d", w.Written(), w.Remaining())
	}
	b1, _ := mem.Slice(dataBase+0x1000, 3)
	b2, _ := mem.Slice(dataBase+0x2000, 3)
	if string(b1) != "abc" || string(b2) != "def" {
		t.Fatalf("guest got %q %q", b1, b2)
	}
	if err := q.AddUsed(mem, c.Head, uint32(w.Written())); err != nil {
		t.Fatal(err)
	}
	u, ok, err := r.PopUsed()
	if err != nil || !ok || u.ID != uint32(head) || u.Len != 6 {
		t.Fatalf("used %+v %v %v", u, ok, err)
	}
	if c, err := q.Pop(mem); c != nil || err != nil {
		t.Fatalf("empty Pop = %v, %v", c, err)
	}
}

func TestPopWraps(t *testing.T) {
	// Indices are free-running u16s; run them past the wrap.
	mem, r, q := setup(t, 4)
	for i := range 70000 {
		head, err := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: 8})
		if err != nil {
			t.Fatal(err)
		}
		c, err := q.Pop(mem)
		if err != nil || c == nil || c.Head != head {
			t.Fatalf("iteration %d: Pop = %v, %v", i, c, err)
		}
		if err := q.AddUsed(mem, c.Head, 1); err != nil {
			t.Fatal(err)
		}
		if u, ok, _ := r.PopUsed(); !ok || u.ID != uint32(head) {
			t.Fatalf("iteration %d: used %+v %v", i, u, ok)
		}
	}
}

func TestUndoPop(t *testing.T) {
	mem, r, q := setup(t, 8)
	head, _ := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: 8})
	c, _ := q.Pop(mem)
	q.UndoPop()
	c2, err := q.Pop(mem)
	if err != nil || c2 == nil || c2.Head != head || c.Head != head {
		t.Fatalf("after UndoPop: %v %v", c2, err)
	}
}

func TestAvailIdxTooFar(t *testing.T) {
	mem, r, q := setup(t, 8)
	if err := r.SetAvailIdx(9); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Pop(mem); !errors.Is(err, virtio.ErrAvailIdx) {
		t.Fatalf("Pop: %v", err)
	}
	r.SetAvailIdx(8) // a full ring is fine
	if _, err := q.Len(mem); err != nil {
		t.Fatal(err)
	}
}

func TestAddUsedBadHead(t *testing.T) {
	mem, _, q := setup(t, 8)
	if err := q.AddUsed(mem, 8, 0); !errors.Is(err, virtio.ErrDescIndex) {
		t.Fatalf("AddUsed(8): %v", err)
	}
}

func TestBadChains(t *testing.T) {
	const n = 16
	end := uint64(ramStart + ramSize)
	rd := func(addr uint64, l uint32, next ...uint16) virtio.Descriptor {
		d := virtio.Descriptor{Addr: addr, Len: l}
		if len(next) > 0 {
			d.Flags, d.Next = virtio.DescFlagNext, next[0]
		}
		return d
	}
	wr := func(addr uint64, l uint32, next ...uint16) virtio.Descriptor {
		d := rd(addr, l, next...)
		d.Flags |= virtio.DescFlagWrite
		return d
	}
	tests := []struct {
		name  string
		head  uint16
		descs map[uint16]virtio.Descriptor
		want  error // nil: a valid chain
		count int   // descriptors in a valid chain
	}{
		{"single", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 4)}, nil, 1},
		{"head out of range", n, nil, virtio.ErrDescIndex, 0},
		{"head far out of range", 0xffff, nil, virtio.ErrDescIndex, 0},
		{"next out of range", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 4, n)}, virtio.ErrDescIndex, 0},
		{"self loop", 3, map[uint16]virtio.Descriptor{3: rd(dataBase, 4, 3)}, virtio.ErrChainTooLong, 0},
		{"loop", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 4, 1), 1: wr(dataBase, 4, 2), 2: wr(dataBase, 4, 1)}, virtio.ErrChainTooLong, 0},
		{"address past RAM", 0, map[uint16]virtio.Descriptor{0: rd(end, 1)}, virtio.ErrDescMemory, 0},
		{"address below RAM", 0, map[uint16]virtio.Descriptor{0: rd(0, 1)}, virtio.ErrDescMemory, 0},
		{"length past RAM end", 0, map[uint16]virtio.Descriptor{0: rd(end-4, 5)}, virtio.ErrDescMemory, 0},
		{"buffer ends at RAM end", 0, map[uint16]virtio.Descriptor{0: rd(end-4, 4)}, nil, 1},
		{"addr+len overflows", 0, map[uint16]virtio.Descriptor{0: rd(^uint64(0)-3, 0x100)}, virtio.ErrDescMemory, 0},
		{"huge length", 0, map[uint16]virtio.Descriptor{0: wr(dataBase, 0xffffffff)}, virtio.ErrDescMemory, 0},
		{"second buffer bad", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 4, 1), 1: wr(end+0x1000, 4)}, virtio.ErrDescMemory, 0},
		{"writable before readable", 0, map[uint16]virtio.Descriptor{0: wr(dataBase, 4, 1), 1: rd(dataBase, 4)}, virtio.ErrDescOrder, 0},
		{"readable, writable, readable", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 4, 1), 1: wr(dataBase, 4, 2), 2: rd(dataBase, 4)}, virtio.ErrDescOrder, 0},
		{"indirect", 0, map[uint16]virtio.Descriptor{0: {Addr: dataBase, Len: 16, Flags: virtio.DescFlagIndirect}}, virtio.ErrIndirect, 0},
		{"zero-length chain", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 0)}, virtio.ErrEmptyChain, 0},
		{"all buffers empty", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 0, 1), 1: wr(dataBase, 0)}, virtio.ErrEmptyChain, 0},
		{"empty buffer in a chain", 0, map[uint16]virtio.Descriptor{0: rd(dataBase, 0, 1), 1: wr(dataBase, 4)}, nil, 2},
		{"write-only chain", 5, map[uint16]virtio.Descriptor{5: wr(dataBase, 4, 6), 6: wr(dataBase, 4)}, nil, 2},
	}
	// A chain through every descriptor is as long as a chain can be.
	full := map[uint16]virtio.Descriptor{}
	for i := range uint16(n) {
		full[i] = rd(dataBase, 1, i+1)
	}
	full[n-1] = wr(dataBase, 1)
	tests = append(tests, struct {
		name  string
		head  uint16
		descs map[uint16]virtio.Descriptor
		want  error
		count int
	}{"queue-size chain", 0, full, nil, n})

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem, r, q := setup(t, n)
			for i, d := range tc.descs {
				if err := r.SetDesc(i, d); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Publish(tc.head); err != nil {
				t.Fatal(err)
			}
			c, err := q.Pop(mem)
			if tc.want == nil {
				if err != nil || c == nil || len(c.Descriptors()) != tc.count {
					t.Fatalf("Pop = %v, %v; want %d descriptors", c, err, tc.count)
				}
				return
			}
			var ce *virtio.ChainError
			if c != nil || !errors.Is(err, tc.want) || !errors.As(err, &ce) || ce.Head != tc.head {
				t.Fatalf("Pop = %v, %v; want a ChainError for head %d wrapping %v", c, err, tc.head, tc.want)
			}
			// The bad chain is consumed: the device may return it and
			// carry on with the next one.
			if err := q.AddUsed(mem, ce.Head, 0); (err == nil) != (tc.head < n) {
				t.Fatalf("AddUsed(bad head %d) = %v", tc.head, err)
			}
			if err := r.SetDesc(n-1, rd(dataBase, 1)); err != nil {
				t.Fatal(err)
			}
			r.Publish(n - 1)
			if c, err := q.Pop(mem); err != nil || c == nil || c.Head != n-1 {
				t.Fatalf("Pop after a bad chain = %v, %v", c, err)
			}
		})
	}
}

func TestChainLengthOverflow(t *testing.T) {
	// 256 descriptors of 16 MiB each add up to 4 GiB, one byte too many.
	// The memory is reserved, not touched.
	const big = 16 << 20
	mem := newMem(t, memory.Layout{Start: 0, Size: 2 * big})
	r, err := virtiotest.NewRing(mem, 0, 256)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint16(256) {
		d := virtio.Descriptor{Addr: big, Len: big, Flags: virtio.DescFlagNext, Next: i + 1}
		if i == 255 {
			d.Flags = 0
			d.Len--
		}
		r.SetDesc(i, d)
	}
	r.Publish(0)
	q := r.Queue()
	if err := q.Initialize(mem); err != nil {
		t.Fatal(err)
	}
	c, err := q.Pop(mem)
	if err != nil || c.ReadableLen() != 1<<32-1 {
		t.Fatalf("4 GiB - 1 chain: %v", err)
	}
	r.SetDesc(255, virtio.Descriptor{Addr: big, Len: big})
	r.Publish(0)
	if _, err := q.Pop(mem); !errors.Is(err, virtio.ErrChainLength) {
		t.Fatalf("4 GiB chain: %v", err)
	}
}

func TestChainSnapshotsDescriptors(t *testing.T) {
	// The guest rewriting a descriptor after Pop cannot move the buffer.
	mem, r, q := setup(t, 8)
	head, _ := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: 16, Writable: true})
	c, err := q.Pop(mem)
	if err != nil {
		t.Fatal(err)
	}
	r.SetDesc(head, virtio.Descriptor{Addr: ramStart + ramSize - 1, Len: 0xffff, Flags: virtio.DescFlagWrite})
	w := c.Writer()
	if n, err := w.Write(make([]byte, 20)); n != 16 || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("Write = %d, %v", n, err)
	}
}

func TestReaderWriter(t *testing.T) {
	mem, r, q := setup(t, 8)
	mem.WriteAt([]byte("0123456789"), dataBase)
	r.AddChain(
		virtiotest.Buffer{Addr: dataBase, Len: 3},
		virtiotest.Buffer{Addr: dataBase + 3, Len: 0},
		virtiotest.Buffer{Addr: dataBase + 3, Len: 7},
		virtiotest.Buffer{Addr: dataBase + 0x100, Len: 2, Writable: true},
		virtiotest.Buffer{Addr: dataBase + 0x200, Len: 2, Writable: true},
	)
	c, err := q.Pop(mem)
	if err != nil {
		t.Fatal(err)
	}
	rd := c.Reader()
	if k := rd.Discard(2); k != 2 {
		t.Fatalf("Discard = %d", k)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(&rd, buf); err != nil || string(buf) != "2345" {
		t.Fatalf("ReadFull = %q, %v", buf, err)
	}
	rest, _ := io.ReadAll(&rd)
	if string(rest) != "6789" {
		t.Fatalf("rest %q", rest)
	}
	if n, err := rd.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at end = %d, %v", n, err)
	}
	if k := rd.Discard(5); k != 0 {
		t.Fatalf("Discard at end = %d", k)
	}
	bufs, err := c.ReadableBuffers()
	if err != nil || len(bufs) != 2 || string(bufs[0]) != "012" || string(bufs[1]) != "3456789" {
		t.Fatalf("ReadableBuffers = %q, %v", bufs, err)
	}
	wb, err := c.WritableBuffers()
	if err != nil || len(wb) != 2 || len(wb[0]) != 2 {
		t.Fatalf("WritableBuffers = %v, %v", wb, err)
	}
	w := c.Writer()
	if n, err := w.Write([]byte("abcde")); n != 4 || err != io.ErrShortWrite || w.Remaining() != 0 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := w.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty Write = %d, %v", n, err)
	}
}

func TestNeedsNotification(t *testing.T) {
	tests := []struct {
		name      string
		eventIdx  bool
		start     uint16 // used entries published before the batch
		added     uint16 // entries in the batch
		usedEvent uint16
		want      bool
	}{
		{"no event idx", false, 0, 1, 100, true},
		{"no event idx, nothing added", false, 0, 0, 0, true},
		{"nothing added", true, 5, 0, 4, false},
		{"event is the entry added", true, 0, 1, 0, true},
		{"event not reached", true, 0, 1, 1, false},
		{"event inside batch", true, 10, 5, 12, true},
		{"event at batch start", true, 10, 5, 10, true},
		{"event at batch end", true, 10, 5, 14, true},
		{"event just past batch", true, 10, 5, 15, false},
		{"event before batch", true, 10, 5, 9, false},
		{"batch across wrap", true, 0xfffe, 4, 0xffff, true},
		{"event after wrap inside batch", true, 0xfffe, 4, 1, true},
		{"event after wrap past batch", true, 0xfffe, 4, 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem, r, q := setup(t, 8)
			// Drive the ring to tc.start used entries without EVENT_IDX.
			advance := func(k uint16) {
				for range k {
					h, _ := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: 1})
					c, err := q.Pop(mem)
					if err != nil || c == nil {
						t.Fatalf("Pop: %v", err)
					}
					if err := q.AddUsed(mem, h, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			advance(tc.start)
			q.NeedsNotification(mem) // close the earlier batch
			q.EventIdx = tc.eventIdx
			r.SetUsedEvent(tc.usedEvent)
			advance(tc.added)
			if got := q.NeedsNotification(mem); got != tc.want {
				t.Fatalf("NeedsNotification = %v, want %v", got, tc.want)
			}
			if tc.eventIdx && q.NeedsNotification(mem) {
				t.Fatal("second call in an empty batch wants an interrupt")
			}
		})
	}
}

func TestEventIdxAvailEvent(t *testing.T) {
	mem, r, q := setup(t, 8)
	q.EventIdx = true
	// Empty: PopOrEnableNotification asks to be told about index 0.
	r.Mem.WriteU16(r.Used+4+8*8, 0xaaaa)
	if c, err := q.PopOrEnableNotification(mem); c != nil || err != nil {
		t.Fatalf("empty = %v, %v", c, err)
	}
	if ev, _ := r.AvailEvent(); ev != 0 {
		t.Fatalf("avail_event = %#x", ev)
	}
	h1, _ := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: 1})
	h2, _ := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: 1})
	c, err := q.PopOrEnableNotification(mem)
	if err != nil || c == nil || c.Head != h1 {
		t.Fatalf("first = %v, %v", c, err)
	}
	// Not empty: avail_event is left alone.
	if ev, _ := r.AvailEvent(); ev != 0 {
		t.Fatalf("avail_event = %#x", ev)
	}
	if c, _ := q.PopOrEnableNotification(mem); c == nil || c.Head != h2 {
		t.Fatalf("second = %v", c)
	}
	if c, _ := q.PopOrEnableNotification(mem); c != nil {
		t.Fatalf("third = %v", c)
	}
	if ev, _ := r.AvailEvent(); ev != 2 {
		t.Fatalf("avail_event = %d, want 2", ev)
	}
	r.SetAvailIdx(7)
	if err := q.EnableNotification(mem); err != nil {
		t.Fatal(err)
	}
	if ev, _ := r.AvailEvent(); ev != 7 {
		t.Fatalf("EnableNotification: avail_event = %d, want 7", ev)
	}
	// The bytes after avail_event belong to the guest: untouched.
	after, _ := mem.Slice(r.Used+4+8*8+2, 2)
	if after[0] != 0 || after[1] != 0 {
		t.Fatalf("bytes past the used ring changed: %v", after)
	}
}

func TestNoEventIdxLeavesAvailEvent(t *testing.T) {
	mem, r, q := setup(t, 8)
	r.Mem.WriteU16(r.Used+4+8*8, 0x1234)
	q.PopOrEnableNotification(mem)
	q.EnableNotification(mem)
	if ev, _ := r.AvailEvent(); ev != 0x1234 {
		t.Fatalf("avail_event = %#x", ev)
	}
}

func TestOddRegionLayouts(t *testing.T) {
	// Regions whose start or size is not a multiple of 4 put ring fields
	// at unusual host alignments; the queue must still work.
	for _, start := range []uint64{0, 2, 6, 0x1000 - 2} {
		for _, tail := range []uint64{0, 2} {
			mem := newMem(t, memory.Layout{Start: start, Size: 0x3000 + tail})
			base := (start + 15) &^ 15
			n := uint16(8)
			r, err := virtiotest.NewRing(mem, base, n)
			if err != nil {
				t.Fatal(err)
			}
			q := r.Queue()
			q.EventIdx = true
			// Put the used ring flush against the end of RAM.
			r.Used = (start + 0x3000 + tail - (6 + 8*uint64(n))) &^ 3
			q.UsedRing = r.Used
			if err := q.Initialize(mem); err != nil {
				t.Fatalf("start %#x: %v", start, err)
			}
			data := base + 0x1000
			for i := range 20 {
				r.SetUsedEvent(uint16(i))
				h, _ := r.AddChain(virtiotest.Buffer{Addr: data, Len: 4})
				c, err := q.PopOrEnableNotification(mem)
				if err != nil || c == nil || c.Head != h {
					t.Fatalf("start %#x: Pop = %v, %v", start, c, err)
				}
				if err := q.AddUsed(mem, h, 4); err != nil {
					t.Fatal(err)
				}
				if !q.NeedsNotification(mem) {
					t.Fatalf("start %#x: used_event %d not honoured", start, i)
				}
				if c, _ := q.PopOrEnableNotification(mem); c != nil {
					t.Fatal("extra chain")
				}
				if ev, _ := r.AvailEvent(); ev != uint16(i+1) {
					t.Fatalf("start %#x: avail_event %d, want %d", start, ev, i+1)
				}
				if u, ok, _ := r.PopUsed(); !ok || u.ID != uint32(h) || u.Len != 4 {
					t.Fatalf("start %#x: used %+v", start, u)
				}
			}
		}
	}
}
