package vsock

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Fuzz memory: two RAM regions with a hole between them, so buffers can
// straddle the hole, sit in it or lie past the end of RAM.
const (
	fzRxRing  = 0x0000
	fzTxRing  = 0x1000
	fzEvRing  = 0x2000
	fzEvBuf   = 0x3000
	fzRingEnd = 0x3004 // rings and the event buffer end here
	fzSize    = 16     // rx and tx ring size
	fzRxArea  = 0x4000 // RX buffers from here
	fzTxArea  = 0x20000
	fzRegion0 = 0x40000
	fzRegion1 = 0x48000
	fzEnd1    = 0x60000
	// fzPort is the host port with a listener; others have none.
	fzPort = 52
)

// Input records: a kind byte, then
//
//	fzRecRx: n (1..3 buffers), then per buffer: offset u16 (bit 15: in
//	         region 1), length u16 (12 bits), flags (bit 0: readable).
//	fzRecTx: a raw 44-byte header, payload length u16 (13 bits), number of
//	         descriptors (1..4), split points u16 each, a writable mask and
//	         a misplacement byte (bit 0..3: that descriptor moves into the
//	         hole; bit 4: past the end of RAM).
//	fzRecRun: nothing; the device processes what was built so far.
const (
	fzRecRx = iota
	fzRecTx
	fzRecRun
)

// fzBuild lays out the chains the input describes in the rings, up to a
// fzRecRun record or the end of the input. TX packets go at *txAt.
func fzBuild(mem *memory.Guest, rx, tx *virtiotest.Ring, in *virtiotest.FuzzInput, txAt *uint64) {
	nrx, ntx := 0, 0
	for in.Len() > 0 && (nrx < fzSize || ntx < fzSize) {
		switch in.U8() % 3 {
		case fzRecRun:
			return
		case fzRecRx:
			n := int(in.U8()%3) + 1
			bufs := make([]virtiotest.Buffer, n)
			for i := range bufs {
				off := in.U16()
				base := uint64(fzRxArea) + uint64(off&0x7fff)%(fzTxArea-fzRxArea)
				if off&0x8000 != 0 {
					base = fzRegion1 + uint64(off&0x7fff)
				}
				bufs[i] = virtiotest.Buffer{Addr: base, Len: uint32(in.U16() & 0xfff), Writable: in.U8()&1 == 0}
			}
			if nrx < fzSize {
				rx.AddChain(bufs...)
				nrx++
			}
		case fzRecTx:
			hdr := in.Bytes(HdrSize)
			plen := int(in.U16() & 0x1fff)
			nd := int(in.U8()%4) + 1
			total := HdrSize + plen
			cuts := []int{0}
			for range nd - 1 {
				cuts = append(cuts, int(in.U16())%(total+1))
			}
			cuts = append(cuts, total)
			for i := 1; i < len(cuts); i++ { // sort the few cuts
				for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
					cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
				}
			}
			wmask, misplace := in.U8(), in.U8()
			if *txAt+uint64(total) > fzRegion0 {
				*txAt = fzTxArea
			}
			pkt := make([]byte, total)
			copy(pkt, hdr)
			for i := HdrSize; i < total; i++ {
				pkt[i] = byte(i)
			}
			mem.WriteAt(pkt, *txAt)
			bufs := make([]virtiotest.Buffer, nd)
			for i := range bufs {
				addr := *txAt + uint64(cuts[i])
				if misplace&(1<<i) != 0 {
					addr = fzRegion0 + uint64(cuts[i])%(fzRegion1-fzRegion0)
				}
				if misplace&0x10 != 0 && i == nd-1 {
					addr = fzEnd1 - 8
				}
				bufs[i] = virtiotest.Buffer{Addr: addr, Len: uint32(cuts[i+1] - cuts[i]), Writable: wmask&(1<<i) != 0}
			}
			*txAt += uint64(total+15) &^ 15
			if ntx < fzSize {
				tx.AddChain(bufs...)
				ntx++
			}
		}
	}
}

// fzRecordRx and fzRecordTx encode records, for the seeds.
func fzRecordRx(bufs ...virtiotest.Buffer) []byte {
	b := []byte{fzRecRx, byte(len(bufs) - 1)}
	for _, x := range bufs {
		flags := byte(0)
		if !x.Writable {
			flags = 1
		}
		b = append(b, byte(x.Addr), byte(x.Addr>>8), byte(x.Len), byte(x.Len>>8), flags)
	}
	return b
}

func fzRecordTx(h header, plen int, cuts []uint16, wmask, misplace byte) []byte {
	var raw [HdrSize]byte
	h.encode(&raw)
	b := append([]byte{fzRecTx}, raw[:]...)
	b = append(b, byte(plen), byte(plen>>8), byte(len(cuts)))
	for _, c := range cuts {
		b = append(b, byte(c), byte(c>>8))
	}
	return append(b, wmask, misplace)
}

// FuzzTxPacket runs arbitrary packets and descriptor layouts through the
// TX queue, with arbitrary RX buffers for the replies, and checks that the
// device never panics, writes only into the rings and device-writable RX
// (and event) buffers, reports used lengths that fit, and keeps its queues
// and buffers within their bounds.
func FuzzTxPacket(f *testing.F) {
	g := func(op uint16, src, dst uint32) header {
		return header{SrcCID: 3, DstCID: HostCID, SrcPort: src, DstPort: dst, Type: typeStream, Op: op, BufAlloc: 1 << 16}
	}
	rxb := func(off uint16, n uint32) []byte {
		return fzRecordRx(virtiotest.Buffer{Addr: uint64(off), Len: n, Writable: true})
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rw := g(opRW, 1025, fzPort)
	rw.Len = 100
	shut := g(opShutdown, 1025, fzPort)
	shut.Flags = 3
	badType := g(opRW, 1025, fzPort)
	badType.Type = 2
	badCID := g(opRequest, 1025, fzPort)
	badCID.DstCID = 9
	huge := g(opRW, 1025, fzPort)
	huge.Len = 1 << 20
	f.Add(byte(0), cat(rxb(0, 4000), rxb(0x2000, 4000), fzRecordTx(g(opRequest, 1025, fzPort), 0, nil, 0, 0)))
	run := []byte{fzRecRun}
	f.Add(byte(0), cat(rxb(0, 4000), rxb(0x1000, 4000), rxb(0x2000, 4000),
		fzRecordTx(g(opRequest, 1025, fzPort), 0, nil, 0, 0), run,
		fzRecordTx(rw, 100, []uint16{HdrSize}, 0, 0),
		fzRecordTx(g(opCreditRequest, 1025, fzPort), 0, nil, 0, 0),
		fzRecordTx(shut, 0, nil, 0, 0)))
	f.Add(byte(0), cat(rxb(0, 50), fzRecordRx(virtiotest.Buffer{Addr: 0x100, Len: 20, Writable: true}, virtiotest.Buffer{Addr: 0x200, Len: 30, Writable: true}),
		fzRecordTx(g(opRequest, 1, 53), 0, nil, 0, 0),
		fzRecordTx(badType, 3, nil, 0, 0),
		fzRecordTx(badCID, 0, nil, 0, 0),
		fzRecordTx(g(opRst, 1025, fzPort), 0, nil, 0, 0)))
	f.Add(byte(1), cat(rxb(0, 4000),
		fzRecordTx(huge, 0x1000, []uint16{10, 20, 30}, 0x4, 0x2),
		fzRecordTx(rw, 100, []uint16{HdrSize}, 0, 0x10),
		fzRecordTx(g(opRequest, 1025, fzPort), 0, nil, 0, 0)))
	f.Add(byte(0), cat(fzRecordRx(virtiotest.Buffer{Addr: 0, Len: 4000}),
		rxb(0x8000, 4000),
		fzRecordTx(g(opRequest, 1025, fzPort), 0, []uint16{5}, 0, 0), run,
		fzRecordTx(rw, 100, []uint16{50}, 0, 0)))
	// A guest that ignores credit: the socket fills, then the TX buffer
	// overflows and the connection is reset.
	flood := g(opRW, 1025, fzPort)
	flood.Len = 0x1fff
	var floods [][]byte
	for range 40 {
		floods = append(floods, fzRecordTx(flood, 0x1fff, []uint16{HdrSize}, 0, 0), run)
	}
	f.Add(byte(4), cat(rxb(0, 4000), rxb(0x1000, 4000), fzRecordTx(g(opRequest, 1025, fzPort), 0, nil, 0, 0), run,
		cat(floods...), rxb(0x2000, 4000), rxb(0x3000, 4000), run))
	// Host-initiated state is out of reach here; shutdown, credit and
	// reset handling on an established connection are not.
	f.Add(byte(2), cat(rxb(0, 4000), fzRecordTx(g(opRequest, 1025, fzPort), 0, nil, 0, 0), run,
		rxb(0x1000, 4000), rxb(0x2000, 4000),
		fzRecordTx(g(opCreditRequest, 1025, fzPort), 0, nil, 0, 0),
		fzRecordTx(shut, 0, nil, 0, 0), run,
		fzRecordTx(g(opRst, 1025, fzPort), 0, nil, 0, 0), run))

	mem := virtiotest.NewMemoryWithHole(f, fzRegion0, fzRegion1, fzEnd1)
	uds := filepath.Join(f.TempDir(), "v.sock")
	var snap virtiotest.Snapshot

	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		virtiotest.ClearMemory(mem)
		rx := virtiotest.RingAt(t, mem, fzRxRing, fzSize)
		tx := virtiotest.RingAt(t, mem, fzTxRing, fzSize)
		ev := virtiotest.RingAt(t, mem, fzEvRing, 4)
		ev.AddChain(virtiotest.Buffer{Addr: fzEvBuf, Len: 4, Writable: true})

		// Host port fzPort listens (and never accepts: the backlog holds
		// the connections, deterministically); others refuse.
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("%s_%d", uds, fzPort), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()

		var qs []*virtio.Queue
		for _, r := range []*virtiotest.Ring{rx, tx, ev} {
			q := r.InitQueue(t, mode&2 != 0)
			qs = append(qs, q)
		}
		w := newWorker(newMuxer(3, uds, vm), vm, mem, qs, &virtiotest.IRQ{})
		// As run does when Reset stops it: closing the connections wakes
		// their readiness waiters.
		w.OnStop(w.mux.closeAll, nil)
		defer w.Shutdown()
		if mode&1 != 0 {
			w.sendTransportReset()
		}

		in := virtiotest.NewFuzzInput(data)
		txAt := uint64(fzTxArea)
		for round := 0; round == 0 || in.Len() > 0; round++ {
			fzBuild(mem, rx, tx, in, &txAt)
			snap.Take(mem)
			// Drive the worker synchronously, as its loop does on a TX
			// kick; an event-queue kick lifts the RX gate.
			if mode&4 != 0 && round == 1 {
				w.eventWait = false
			}
			w.processTx()
			w.processRx()
			fzCheck(t, w, rx, tx, &snap)
		}
	})
}

// fzCheck checks the device's state and what it did to guest memory
// since before.
func fzCheck(t *testing.T, w *worker, rx, tx *virtiotest.Ring, snap *virtiotest.Snapshot) {
	t.Helper()
	// Bounded state.
	m := w.mux
	if m.rxq.n > muxerRxQSize || len(m.killq.q) > muxerKillQSize || len(m.conns) > MaxConnections {
		t.Fatalf("rxq %d killq %d conns %d", m.rxq.n, len(m.killq.q), len(m.conns))
	}
	for _, c := range m.conns {
		if c.tx.len() > ConnTxBufSize || len(c.tx.data) > ConnTxBufSize {
			t.Fatalf("tx buffer %d (%d allocated)", c.tx.len(), len(c.tx.data))
		}
	}

	// TX chains come back empty; RX used lengths fit their chains.
	for _, u := range tx.PopAllUsed(t) {
		if u.Len != 0 {
			t.Fatalf("TX used %+v", u)
		}
	}
	var total uint64
	for _, u := range rx.PopAllUsed(t) {
		if u.Len > 0 {
			room, ok := rx.WritableRoom(uint16(u.ID))
			if !ok || uint64(u.Len) > room || u.Len < HdrSize || u.Len > HdrSize+MaxPktBufSize {
				t.Fatalf("RX used %+v for a chain with %d writable bytes (all writable: %v)", u, room, ok)
			}
		}
		total += uint64(u.Len)
	}

	// Every changed byte is in the rings, the event buffer or a writable
	// RX buffer; and no more changed than was reported.
	snap.ExpectWrites(t, virtiotest.Spans{{Start: 0, End: fzRingEnd}}, rx.WritableSpans(), total)
}

// FuzzConnectLine feeds arbitrary client bytes to the CONNECT parser.
func FuzzConnectLine(f *testing.F) {
	for _, s := range []string{"CONNECT 52\n", "connect 1\n", "CONNECT +7\nrest", "BOGUS 1234\n", "CONNECT\n\n\n\n\n\n", "CONNECT 4294967296\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		port, err := readConnectPort(r)
		read := len(data) - r.Len()
		if read > connectLineMax {
			t.Fatalf("read %d bytes", read)
		}
		if err != nil {
			return
		}
		words := strings.Fields(string(data[:read]))
		if len(words) < 2 || !strings.EqualFold(words[0], "connect") {
			t.Fatalf("accepted %q", data[:read])
		}
		if want, perr := strconv.ParseUint(strings.TrimPrefix(words[1], "+"), 10, 32); perr != nil || uint32(want) != port {
			t.Fatalf("%q gave port %d", data[:read], port)
		}
	})
}
