package net

import (
	"runtime"
	"testing"

	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// benchBatch is how many frames the benchmarks keep in flight.
const benchBatch = 64

// benchTx measures guest-to-host frames of size bytes (vnet header
// included) through the worker to the socketpair backend.
func benchTx(b *testing.B, size int) {
	r := newBenchRig(b)
	frame := vnet(pattern(size-VnetHdrLen, 1))
	// One buffer per batch slot, written once; chains are re-published.
	addrs := make([]uint64, benchBatch)
	for i := range addrs {
		addrs[i] = r.alloc(uint32(size))
		r.mem.WriteAt(frame, addrs[i])
	}
	buf := make([]byte, 2*MaxBufferSize)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(benchBatch, b.N-done)
		for i := range n {
			r.tx.AddChain(virtiotest.Buffer{Addr: addrs[i], Len: uint32(size)})
		}
		r.kickTx()
		for range n {
			if _, err := r.peer.f.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
		for k := 0; k < n; {
			if _, ok, _ := r.tx.PopUsed(); ok {
				k++
			} else {
				runtime.Gosched() // let the device's goroutines have the CPU
			}
		}
		done += n
	}
}

// benchRx measures host-to-guest frames of size bytes with MRG_RXBUF and
// 2 KiB RX buffers, which the guest hands back as it consumes them.
func benchRx(b *testing.B, size int) {
	r := newBenchRig(b)
	const bufLen = 2048
	const nbuf = 200 // over 65562 bytes even with a batch's worth in use
	addr := map[uint16]uint64{}
	for range nbuf {
		a := r.alloc(bufLen)
		h, _ := r.rx.AddChain(virtiotest.Buffer{Addr: a, Len: bufLen, Writable: true})
		addr[h] = a
	}
	r.kickRx()
	frame := vnet(pattern(size-VnetHdrLen, 2))
	b.SetBytes(int64(size))
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(benchBatch, b.N-done)
		for range n {
			if _, err := r.peer.f.Write(frame); err != nil {
				b.Fatal(err)
			}
		}
		// Each frame takes ceil(size/bufLen) buffers; give each back as
		// soon as it is used, as the driver refills its ring.
		need := n * ((size + bufLen - 1) / bufLen)
		for k := 0; k < need; {
			u, ok, _ := r.rx.PopUsed()
			if !ok {
				runtime.Gosched()
				continue
			}
			k++
			h, _ := r.rx.AddChain(virtiotest.Buffer{Addr: addr[uint16(u.ID)], Len: bufLen, Writable: true})
			addr[h] = addr[uint16(u.ID)]
			if k%16 == 0 {
				r.kickRx()
			}
		}
		r.kickRx()
		done += n
	}
}

func newBenchRig(b *testing.B) *rig {
	r := newRig(b, nil)
	r.activate(featAll)
	return r
}

func BenchmarkTx1500(b *testing.B) { benchTx(b, 1526) }
func BenchmarkTx64K(b *testing.B)  { benchTx(b, MaxBufferSize) }
func BenchmarkRx1500(b *testing.B) { benchRx(b, 1526) }
func BenchmarkRx64K(b *testing.B)  { benchRx(b, MaxBufferSize) }
