package virtio_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"sync"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// The fuzzed guest: two small regions with a hole between them, so chains
// can point below, between and past RAM.
var (
	// Small, so that the fuzzer's inputs (a RAM image) stay small.
	fuzzLayout = []memory.Layout{{Start: 0x1000, Size: 0x800}, {Start: 0x2000, Size: 0x400}}
	fuzzOnce   sync.Once
	fuzzMem    *memory.Guest
)

const fuzzSpan = 0x1800 // guest addresses 0x1000..0x2800 cover both regions and more

func fuzzGuest(t testing.TB) *memory.Guest {
	fuzzOnce.Do(func() {
		var err error
		if fuzzMem, err = memory.New(fuzzLayout, memory.Options{}); err != nil {
			t.Fatal(err)
		}
	})
	return fuzzMem
}

// loadImage fills RAM from image (zero beyond it) and returns a copy of
// each region.
func loadImage(mem *memory.Guest, image []byte) [][]byte {
	var snap [][]byte
	for _, r := range mem.Regions() {
		n := copy(r.Mem, image)
		clear(r.Mem[n:])
		image = image[n:]
		snap = append(snap, bytes.Clone(r.Mem))
	}
	return snap
}

// fuzzParams encodes a queue: size exponent, desc/avail/used offsets into
// the span, flags (bit 0 EVENT_IDX, bit 1 keep addresses unaligned).
func fuzzParams(sizeExp uint8, desc, avail, used uint16, flags uint8) []byte {
	p := []byte{sizeExp, 0, 0, 0, 0, 0, 0, flags}
	binary.LittleEndian.PutUint16(p[1:], desc)
	binary.LittleEndian.PutUint16(p[3:], avail)
	binary.LittleEndian.PutUint16(p[5:], used)
	return p
}

func FuzzQueue(f *testing.F) {
	// Seeds: well-formed rings, as virtiotest lays them out, with chains.
	seed := func(n uint16, flags uint8, chains [][]virtiotest.Buffer, ops []byte) {
		mem, err := memory.New(fuzzLayout, memory.Options{})
		if err != nil {
			f.Fatal(err)
		}
		defer mem.Close()
		r, err := virtiotest.NewRing(mem, 0x1000, n)
		if err != nil {
			f.Fatal(err)
		}
		for _, c := range chains {
			if _, err := r.AddChain(c...); err != nil {
				f.Fatal(err)
			}
		}
		img := bytes.TrimRight(mem.Regions()[0].Mem, "\x00")
		exp := uint8(0)
		for 1<<exp < n {
			exp++
		}
		f.Add(fuzzParams(exp, 0, uint16(r.Avail-0x1000), uint16(r.Used-0x1000), flags), bytes.Clone(img), ops)
	}
	two := []virtiotest.Buffer{{Addr: 0x1400, Len: 64}, {Addr: 0x1500, Len: 512, Writable: true}}
	one := []virtiotest.Buffer{{Addr: 0x2000, Len: 0x400}}
	seed(16, 0, [][]virtiotest.Buffer{two, one}, []byte{0, 1, 0, 1, 2, 0})
	seed(16, 1, [][]virtiotest.Buffer{two, one, two}, []byte{3, 1, 2, 3, 3, 1, 1, 2, 4, 3})
	seed(4, 1, [][]virtiotest.Buffer{two, two}, []byte{3, 3, 3, 1, 1, 2, 4, 4, 3, 0, 1, 2})
	seed(1, 0, [][]virtiotest.Buffer{one}, []byte{0, 1, 4, 0, 1, 2})

	f.Fuzz(func(t *testing.T, params, image, ops []byte) {
		if len(params) < 8 {
			return
		}
		mem := fuzzGuest(t)
		want := loadImage(mem, image)
		q := virtio.NewQueue(virtio.MaxQueueSize)
		q.Ready = true
		q.Size = 1 << (params[0] % 7) // up to 64: a 1 KiB table fits the RAM
		q.DescTable = 0x1000 + uint64(binary.LittleEndian.Uint16(params[1:]))%fuzzSpan
		q.AvailRing = 0x1000 + uint64(binary.LittleEndian.Uint16(params[3:]))%fuzzSpan
		q.UsedRing = 0x1000 + uint64(binary.LittleEndian.Uint16(params[5:]))%fuzzSpan
		if params[7]&2 == 0 {
			q.DescTable &^= 15
			q.AvailRing &^= 1
			q.UsedRing &^= 3
		}
		if err := q.Initialize(mem); err != nil {
			return
		}
		q.EventIdx = params[7]&1 != 0
		size := uint64(q.Size)
		usedLo, usedHi := q.UsedRing, q.UsedRing+6+8*size

		var held []uint16
		take := func(c *virtio.DescriptorChain, err error) {
			if err != nil || c == nil {
				return
			}
			checkChain(t, mem, c, q.Size)
			held = append(held, c.Head)
		}
		for i, op := range ops {
			switch op % 5 {
			case 0:
				take(q.Pop(mem))
			case 1:
				if len(held) > 0 {
					if err := q.AddUsed(mem, held[0], uint32(op)); err != nil {
						t.Fatalf("AddUsed of a popped head %d: %v", held[0], err)
					}
					held = held[1:]
				} else if err := q.AddUsed(mem, uint16(op)*3, 0); err == nil && uint16(op)*3 >= q.Size {
					t.Fatalf("AddUsed accepted head %d in a queue of %d", uint16(op)*3, q.Size)
				}
			case 2:
				q.NeedsNotification(mem)
			case 3:
				take(q.PopOrEnableNotification(mem))
			case 4:
				// The guest publishes: bump avail.idx, in RAM and in the
				// expected image.
				idx, err := mem.ReadU16(q.AvailRing + 2)
				if err != nil {
					t.Fatal(err)
				}
				idx += uint16(i%3) + 1
				mem.WriteU16(q.AvailRing+2, idx)
				setExpected(mem, want, q.AvailRing+2, idx)
			}
			if n, err := q.Len(mem); err == nil && n > q.Size {
				t.Fatalf("Len %d > size %d", n, q.Size)
			}
		}
		// The device wrote nothing but the used ring.
		for ri, r := range mem.Regions() {
			for off := range r.Mem {
				gpa := r.Start + uint64(off)
				if r.Mem[off] != want[ri][off] && (gpa < usedLo || gpa >= usedHi) {
					t.Fatalf("byte at %#x changed outside the used ring [%#x, %#x)", gpa, usedLo, usedHi)
				}
			}
		}
	})
}

func setExpected(mem *memory.Guest, want [][]byte, gpa uint64, v uint16) {
	for ri, r := range mem.Regions() {
		if gpa >= r.Start && gpa+2 <= r.End() {
			binary.LittleEndian.PutUint16(want[ri][gpa-r.Start:], v)
		}
	}
}

// checkChain asserts what Pop promises about every chain it returns.
func checkChain(t *testing.T, mem *memory.Guest, c *virtio.DescriptorChain, size uint16) {
	t.Helper()
	ds := c.Descriptors()
	if c.Head >= size || len(ds) == 0 || len(ds) > int(size) {
		t.Fatalf("head %d, %d descriptors in a queue of %d", c.Head, len(ds), size)
	}
	var total, readable uint64
	seenWrite := false
	for _, d := range ds {
		if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
			t.Fatalf("descriptor outside RAM: %+v", d)
		}
		if d.Flags&virtio.DescFlagIndirect != 0 {
			t.Fatalf("indirect descriptor accepted: %+v", d)
		}
		if d.IsWriteOnly() {
			seenWrite = true
		} else {
			if seenWrite {
				t.Fatal("readable after writable")
			}
			readable += uint64(d.Len)
		}
		total += uint64(d.Len)
	}
	if total == 0 || total > math.MaxUint32 || readable != uint64(c.ReadableLen()) || total-readable != uint64(c.WritableLen()) {
		t.Fatalf("lengths: total %d readable %d (%d) writable (%d)", total, readable, c.ReadableLen(), c.WritableLen())
	}
	r := c.Reader()
	n, err := io.Copy(io.Discard, &r)
	if err != nil || n != int64(readable) {
		t.Fatalf("Reader gave %d bytes, %v; want %d", n, err, readable)
	}
}

func BenchmarkPopAddUsed(b *testing.B) {
	mem, r, q := setup(b, 256)
	q.EventIdx = true
	var heads []uint16
	for range 128 {
		h, err := r.AddChain(
			virtiotest.Buffer{Addr: dataBase, Len: 16},
			virtiotest.Buffer{Addr: dataBase + 0x1000, Len: 4096, Writable: true},
		)
		if err != nil {
			b.Fatal(err)
		}
		heads = append(heads, h)
	}
	r.SetAvailIdx(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// The driver republishes a chain; the device pops and returns it.
		if err := r.Publish(heads[i%len(heads)]); err != nil {
			b.Fatal(err)
		}
		c, err := q.Pop(mem)
		if err != nil || c == nil {
			b.Fatalf("Pop = %v, %v", c, err)
		}
		if err := q.AddUsed(mem, c.Head, 1); err != nil {
			b.Fatal(err)
		}
		q.NeedsNotification(mem)
	}
}
