package block

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// benchFileSize is the disk the benchmarks read sequentially, wrapping
// round at its end. It is in the page cache after being written, so both
// benchmarks measure the path to cached data, not the disk.
const benchFileSize = 64 << 20

func benchDisk(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "bench.img")
	if err := os.WriteFile(p, pattern(0, benchFileSize), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

var benchSizes = []int{64 << 10, 4 << 10}

// BenchmarkBlockRead reads the disk sequentially through the whole device
// path: the test driver publishes IN requests, the worker parses them,
// preads into guest memory and returns them with an interrupt, and the
// driver collects them. qd is the number of requests kept in flight.
// Compare with BenchmarkPread, the bare syscall.
func BenchmarkBlockRead(b *testing.B) {
	for _, size := range benchSizes {
		for _, qd := range []int{1, 16} {
			b.Run(fmt.Sprintf("%dKiB/qd%d", size>>10, qd), func(b *testing.B) { benchRead(b, size, qd) })
		}
	}
}

func benchRead(b *testing.B, size, qd int) {
	mem := virtiotest.MemoryAt(b, 0, ramSize)
	f, err := os.Open(benchDisk(b))
	if err != nil {
		b.Fatal(err)
	}
	dev, err := New(Config{ID: "bench", File: f})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	ring := virtiotest.RingAt(b, mem, ringBase, 256)
	q := ring.InitQueue(b, false)
	irq := &virtiotest.IRQ{}
	if err := dev.Activate(mem, []*virtio.Queue{q}, irq); err != nil {
		b.Fatal(err)
	}
	if qd*size > ramSize-dataBase {
		b.Fatal("guest memory too small for the queue depth")
	}

	var hdrBuf [headerLen]byte
	sectors := uint64(size / SectorSize)
	next := uint64(0) // next sector to read
	submit := func(slot int) {
		hdrBuf[0] = TypeIn
		for i := range 8 {
			hdrBuf[8+i] = byte(next >> (8 * i))
		}
		next = (next + sectors) % (benchFileSize / SectorSize)
		h := hdrBase + uint64(slot)*headerLen
		mem.WriteAt(hdrBuf[:], h)
		ring.AddChain(hdr(h), wbuf(dataBase+uint64(slot*size), uint32(size)), wbuf(statusBase+uint64(slot), 1))
	}

	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	submitted, done := 0, 0
	// Slots are reused in order: the device completes requests in the
	// order it pops them.
	for ; submitted < min(qd, b.N); submitted++ {
		submit(submitted % qd)
	}
	dev.QueueNotify(0)
	for done < b.N {
		u, ok, err := ring.PopUsed()
		if err != nil {
			b.Fatal(err)
		}
		if !ok {
			<-irq.Raised()
			continue
		}
		if u.Len != uint32(size)+1 {
			b.Fatalf("used %+v", u)
		}
		done++
		if submitted < b.N {
			submit(submitted % qd)
			submitted++
			dev.QueueNotify(0)
		}
	}
	b.StopTimer()
	if st, _ := mem.ReadU16(statusBase); byte(st) != StatusOK {
		b.Fatalf("status %d", byte(st))
	}
}

// BenchmarkPread is the baseline: (*os.File).ReadAt of the same sizes,
// sequential over the same file, into one buffer.
func BenchmarkPread(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			f, err := os.Open(benchDisk(b))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, size)
			off := int64(0)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := f.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(size)) % benchFileSize
			}
		})
	}
}
