package vsock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// activateKeep is activate, returning the queues the device got, for a
// test to save them as the transport does.
func (g *guest) activateKeep() []*virtio.Queue {
	g.t.Helper()
	g.layout()
	qs := []*virtio.Queue{g.rx.InitQueue(g.t, false), g.tx.InitQueue(g.t, false), g.ev.InitQueue(g.t, false)}
	g.dev.AckFeatures(availFeatures)
	if err := g.dev.Activate(g.mem, qs, g.irq); err != nil {
		g.t.Fatal(err)
	}
	return qs
}

// postEvents makes n event buffers available, as Linux keeps them, each
// pre-filled with 0xff to see the device's write; the i-th is at
// evBufAt+8*i.
func (g *guest) postEvents(n int) {
	g.t.Helper()
	for i := range n {
		addr := evBufAt + 8*uint64(i)
		virtiotest.WriteGuest(g.t, g.mem, addr, []byte{0xff, 0xff, 0xff, 0xff})
		g.ev.Add(g.t, virtiotest.Buffer{Addr: addr, Len: 4, Writable: true})
	}
}

// takeResetEvent checks that the device used the first event buffer for a
// TRANSPORT_RESET.
func (g *guest) takeResetEvent() virtiotest.Used {
	g.t.Helper()
	u, ok, err := g.ev.PopUsed()
	if err != nil || !ok || u.Len != 4 {
		g.t.Fatalf("event queue used %+v, %v, %v: want a 4-byte event", u, ok, err)
	}
	if ev := virtiotest.ReadGuest(g.t, g.mem, evBufAt+8*uint64(u.ID), 4); !bytes.Equal(ev, []byte{0, 0, 0, 0}) {
		g.t.Fatalf("event %x, want TRANSPORT_RESET", ev)
	}
	return u
}

// ackReset does what Linux does with the event: it posts the buffer again
// and kicks the event queue.
func (g *guest) ackReset(u virtiotest.Used) {
	g.t.Helper()
	g.ev.Add(g.t, virtiotest.Buffer{Addr: evBufAt + 8*uint64(u.ID), Len: 4, Writable: true})
	g.kick(evQ)
}

// queueTx puts a packet on the TX queue and kicks it without waiting.
func (g *guest) queueTx(h header, data []byte) {
	g.t.Helper()
	base := txBufBase + uint64(g.txNext%txSlots)*txSlot
	g.txNext++
	h.Len = uint32(len(data))
	var raw [HdrSize]byte
	h.encode(&raw)
	virtiotest.WriteGuest(g.t, g.mem, base, raw[:])
	virtiotest.WriteGuest(g.t, g.mem, base+HdrSize, data)
	g.tx.Add(g.t, virtiotest.Buffer{Addr: base, Len: HdrSize}, virtiotest.Buffer{Addr: base + HdrSize, Len: uint32(len(data))})
	g.kick(txQ)
}

// hostAccept completes a host client's connection to guest port port as
// the guest, once the device sent its REQUEST p.
func (g *guest) hostAccept(client *net.UnixConn, p pkt, port uint32) *gconn {
	g.t.Helper()
	if p.hdr.Op != opRequest || p.hdr.DstPort != port {
		g.t.Fatalf("got %v, want a REQUEST for port %d", &p.hdr, port)
	}
	c := &gconn{g: g, local: port, remote: p.hdr.SrcPort, bufAlloc: guestBufAlloc}
	c.observe(p)
	c.sendOp(opResponse, 0)
	if line := readLine(g.t, client); line != fmt.Sprintf("OK %d", c.remote) {
		g.t.Fatalf("client got %q, want OK %d", line, c.remote)
	}
	return c
}

// echo checks data both ways on a connection.
func echo(t *testing.T, host *net.UnixConn, c *gconn, what string) {
	t.Helper()
	if _, err := host.Write([]byte(what)); err != nil {
		t.Fatal(err)
	}
	if got := c.read(len(what)); string(got) != what {
		t.Fatalf("guest read %q, want %q", got, what)
	}
	c.write([]byte(strings.ToUpper(what)))
	if got := readN(t, host, len(what)); string(got) != strings.ToUpper(what) {
		t.Fatalf("host read %q", got)
	}
}

func handshaking(d *Device) int {
	w := d.life.Current()
	if w == nil {
		return -1
	}
	w.handshakes.mu.Lock()
	defer w.handshakes.mu.Unlock()
	return len(w.handshakes.m)
}

// TestPauseKeepsConnections: a plain Suspend and Resume, with no snapshot,
// keeps every connection and loses nothing sent meanwhile; nothing moves
// while suspended, and no transport reset gates RX afterwards.
func TestPauseKeepsConnections(t *testing.T) {
	base := runtime.NumGoroutine()
	g := newGuest(t)
	g.postRx(16)
	g.postEvents(4)
	client, hc := g.hostConnect(52)
	ln := g.listen(60)
	gc := g.guestConnect(1025, 60, guestBufAlloc)
	server := accept(t, ln)
	// A client half-way through its CONNECT line.
	pending := g.dial()
	pending.Write([]byte("CONNECT 5"))
	virtiotest.Eventually(t, "the handshake to start", func() bool { return handshaking(g.dev) == 1 })
	evIRQs := g.irq.Queue(evQ)

	g.dev.Suspend()
	if !g.dev.Activated() || g.dev.life.Current() != nil {
		t.Fatal("not suspended")
	}
	// Every goroutine of the device has exited.
	virtiotest.WaitGoroutines(t, base)
	added := virtiotest.Track(&vm.ConnsAdded)
	client.Write([]byte("to guest"))
	g.queueTx(gc.hdr(opRW), []byte("to host"))
	gc.txCnt += 7
	pending.Write([]byte("3\n"))
	late := g.dial()
	fmt.Fprintf(late, "CONNECT 54\n")
	if _, ok, _ := g.tx.PopUsed(); ok {
		t.Fatal("TX consumed while suspended")
	}
	if _, ok, _ := g.rx.PopUsed(); ok {
		t.Fatal("RX delivered while suspended")
	}
	if err := g.dev.SendTransportReset(); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("SendTransportReset while suspended = %v", err)
	}

	if err := g.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	g.waitUsed(g.tx, "the TX packet")
	if got := readN(t, server, 7); string(got) != "to host" {
		t.Fatalf("host read %q", got)
	}
	// The guest gets the data and both clients' requests, in some order.
	var requests []pkt
	var data []byte
	for len(requests) < 2 || len(data) < 8 {
		p := g.recv()
		switch {
		case p.hdr.Op == opRequest:
			requests = append(requests, p)
		case p.hdr.Op == opRW && p.hdr.DstPort == 52:
			hc.observe(p)
			data = append(data, p.data...)
			hc.fwdCnt += p.hdr.Len
		default:
			t.Fatalf("unexpected %v", &p.hdr)
		}
	}
	if string(data) != "to guest" {
		t.Fatalf("guest read %q", data)
	}
	if requests[0].hdr.DstPort != 53 {
		requests[0], requests[1] = requests[1], requests[0]
	}
	c53 := g.hostAccept(pending, requests[0], 53)
	c54 := g.hostAccept(late, requests[1], 54)
	if added.Get() != 2 {
		t.Fatalf("conns_added +%d", added.Get())
	}
	echo(t, client, hc, "still here")
	echo(t, server, gc, "and here")
	echo(t, pending, c53, "resumed handshake")
	echo(t, late, c54, "from the backlog")
	// No transport reset: the event queue is untouched.
	if _, ok, _ := g.ev.PopUsed(); ok || g.irq.Queue(evQ) != evIRQs {
		t.Fatal("a pause sent a transport reset")
	}
}

// TestSuspendMidStream suspends and resumes the device over and over while
// the host streams to the guest: every byte arrives, in order.
func TestSuspendMidStream(t *testing.T) {
	g := newGuest(t)
	g.postRx(64)
	client, c := g.hostConnect(52)
	const n = 1 << 20
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i % 251)
	}
	stop := make(chan struct{})
	cycles := make(chan int)
	go func() {
		k := 0
		for {
			select {
			case <-stop:
				cycles <- k
				return
			default:
			}
			g.dev.Suspend()
			runtime.Gosched()
			g.dev.Resume()
			k++
		}
	}()
	werr := make(chan error, 1)
	go func() {
		_, err := client.Write(data)
		werr <- err
	}()
	got := c.read(n)
	close(stop)
	k := <-cycles
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the stream changed across suspends")
	}
	t.Logf("%d suspends during the stream", k)
}

// TestSuspendKeepsTxBuffer: guest data waiting in a connection's TX
// buffer for a host that does not read survives suspends, and flows once
// the host reads.
func TestSuspendKeepsTxBuffer(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	ln := g.listen(60)
	gc := g.guestConnect(1025, 60, guestBufAlloc)
	server := accept(t, ln)
	// Fill the socket and then the TX buffer, until the device waits for
	// the socket to drain.
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("the TX buffer never stayed full")
		}
		fillTxBuffer(gc)
		var waiting bool
		if err := g.dev.call(func(w *worker) {
			c := w.mux.conns[connKey{60, 1025}]
			waiting = c.writeArmed && !c.tx.empty()
		}); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
	}
	sent := bytes.Repeat([]byte{'f'}, int(gc.txCnt))
	for range 10 {
		g.dev.Suspend()
		g.dev.Resume()
	}
	if got := readN(t, server, len(sent)); !bytes.Equal(got, sent) {
		t.Fatal("buffered guest data changed across suspends")
	}
}

// TestSnapshotResetsConnections: SaveState posts the transport reset and
// drops the connections; after Resume, RX waits for the guest's ack, and
// new connections then work.
func TestSnapshotResetsConnections(t *testing.T) {
	g := newGuest(t)
	g.postRx(16)
	g.postEvents(4)
	client, _ := g.hostConnect(52)
	ln := g.listen(60)
	gc := g.guestConnect(1025, 60, guestBufAlloc)
	server := accept(t, ln)
	removed := virtiotest.Track(&vm.ConnsRemoved)
	if _, err := g.dev.SaveState(); !errors.Is(err, ErrRunning) {
		t.Fatalf("SaveState while running = %v", err)
	}

	g.dev.Suspend()
	blob, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	u := g.takeResetEvent()
	expectEOF(t, client)
	expectEOF(t, server)
	if removed.Get() != 2 {
		t.Fatalf("conns_removed +%d", removed.Get())
	}
	var st savedState
	if err := json.Unmarshal(blob, &st); err != nil {
		t.Fatal(err)
	}
	if st != (savedState{CID: guestCID, PendingEventAck: true, EventAvail: 3, LocalPortLast: 1 << 30}) {
		t.Fatalf("saved %s", blob)
	}

	evIRQs := g.irq.Queue(evQ)
	if err := g.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	virtiotest.Eventually(t, "the event interrupt", func() bool { return g.irq.Queue(evQ) > evIRQs })
	// A new client's REQUEST waits for the ack, which a kick without a
	// new event buffer (as Resume's own) is not.
	added := virtiotest.Track(&vm.ConnsAdded)
	client2 := g.dial()
	fmt.Fprintf(client2, "CONNECT 54\n")
	virtiotest.Eventually(t, "the connection", func() bool { return added.Get() == 1 })
	g.expectNoRx()
	g.kick(evQ)
	g.expectNoRx()
	g.ackReset(u)
	p := g.recv()
	if p.hdr.SrcPort != 1<<30+1 {
		t.Fatalf("host port %d: the sequence should go on", p.hdr.SrcPort)
	}
	c := g.hostAccept(client2, p, 54)
	echo(t, client2, c, "after the snapshot")
	// The guest's old connection is gone on the host side.
	gc.queueTx(gc.hdr(opRW), []byte("x"))
	if p := g.expect(opRst); p.hdr.SrcPort != 60 || p.hdr.DstPort != 1025 {
		t.Fatalf("RST %v", &p.hdr)
	}
	// A later pause does not gate again.
	g.dev.Suspend()
	g.dev.Resume()
	client3 := g.dial()
	fmt.Fprintf(client3, "CONNECT 55\n")
	g.hostAccept(client3, g.recv(), 55)
}

func (c *gconn) queueTx(h header, data []byte) {
	c.g.t.Helper()
	c.g.queueTx(h, data)
	c.g.waitUsed(c.g.tx, "the TX packet")
}

// TestRestoreIntoNewDevice restores a snapshot into a new device with its
// socket at another path (uds_path overridden), as a new process would:
// the guest finds the reset event, RX waits for its ack, and then
// connections both ways work.
func TestRestoreIntoNewDevice(t *testing.T) {
	g := newIdleGuest(t)
	qs := g.activateKeep()
	g.postRx(16)
	g.postEvents(4)
	client, _ := g.hostConnect(52)
	g.dev.Suspend()
	blob, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	expectEOF(t, client)

	uds := filepath.Join(t.TempDir(), "restored.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{GuestCID: guestCID, UDSPath: uds, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	restored := make([]*virtio.Queue, len(qs))
	for i, q := range qs {
		restored[i] = virtio.NewQueue(QueueSize)
		if err := restored[i].RestoreState(g.mem, q.SaveState()); err != nil {
			t.Fatal(err)
		}
	}
	irq := &virtiotest.IRQ{}
	d.AckFeatures(g.dev.AckedFeatures())
	if err := d.Activate(g.mem, restored, irq); err != nil {
		t.Fatal(err)
	}
	d.Suspend()
	g.dev, g.kick, g.uds, g.irq = d, d.QueueNotify, uds, irq
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
	virtiotest.Eventually(t, "the event interrupt", func() bool { return irq.Queue(evQ) == 1 })
	u := g.takeResetEvent()

	added := virtiotest.Track(&vm.ConnsAdded)
	client2 := g.dial()
	fmt.Fprintf(client2, "CONNECT 52\n")
	virtiotest.Eventually(t, "the connection", func() bool { return added.Get() == 1 })
	g.expectNoRx()
	g.ackReset(u)
	p := g.recv()
	if p.hdr.SrcPort != 1<<30+1 {
		t.Fatalf("host port %d: the sequence should go on", p.hdr.SrcPort)
	}
	echo(t, client2, g.hostAccept(client2, p, 52), "host to restored guest")

	ln60 := g.listen(60)
	gc := g.guestConnect(1025, 60, guestBufAlloc)
	echo(t, accept(t, ln60), gc, "restored guest to host")
}

func TestStateRoundTrip(t *testing.T) {
	g := newGuest(t)
	g.postRx(4)
	g.postEvents(2)
	g.hostConnect(52)
	g.hostConnect(53)
	g.dev.Suspend()
	blob, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	uds := filepath.Join(t.TempDir(), "r.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	// Another CID in the configuration: the saved one wins.
	d, _ := New(Config{GuestCID: 99, UDSPath: uds, Listener: ln})
	defer d.Close()
	if err := d.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	if d.CID() != guestCID {
		t.Fatalf("restored CID %d", d.CID())
	}
	again, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, blob) {
		t.Fatalf("saved again %s, first %s", again, blob)
	}
	// Without a pending reset, and from an inactive device.
	g.dev.Reset()
	b, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"cid":3,"pending_event_ack":false,"event_avail":0,"local_port_last":1073741823}` {
		t.Fatalf("inactive state %s", b)
	}
	if err := d.RestoreState(b); err != nil {
		t.Fatal(err)
	}
	if again, _ := d.SaveState(); !bytes.Equal(again, b) {
		t.Fatalf("saved again %s, first %s", again, b)
	}
	d.Close()
	if _, err := d.SaveState(); !errors.Is(err, ErrClosed) {
		t.Fatalf("SaveState after Close = %v", err)
	}
	if err := d.RestoreState(b); !errors.Is(err, ErrClosed) {
		t.Fatalf("RestoreState after Close = %v", err)
	}
}

func TestRestoreStateErrors(t *testing.T) {
	g := newIdleGuest(t)
	good := `{"cid":3,"pending_event_ack":true,"event_avail":3,"local_port_last":1073741824}`
	if err := g.dev.RestoreState([]byte(good)); err != nil {
		t.Fatalf("the good state: %v", err)
	}
	before, _ := g.dev.SaveState()
	for _, c := range []struct{ name, data string }{
		{"empty", ""},
		{"null", "null"},
		{"an object of nothing", "{}"},
		{"truncated", good[:len(good)-1]},
		{"trailing data", good + " 1"},
		{"a string", `"cid"`},
		{"unknown field", strings.Replace(good, `"cid"`, `"connections":[],"cid"`, 1)},
		{"wrong type", strings.Replace(good, `true`, `1`, 1)},
		{"reserved CID", strings.Replace(good, `"cid":3`, `"cid":2`, 1)},
		{"64-bit CID", strings.Replace(good, `"cid":3`, `"cid":4294967296`, 1)},
		{"negative", strings.Replace(good, `"cid":3`, `"cid":-3`, 1)},
		{"event_avail past the queue", strings.Replace(good, `"event_avail":3`, `"event_avail":257`, 1)},
		{"event_avail without a reset", strings.Replace(good, `true`, `false`, 1)},
		{"port below the range", strings.Replace(good, `1073741824`, `5`, 1)},
		{"port above the range", strings.Replace(good, `1073741824`, `2147483648`, 1)},
	} {
		if err := g.dev.RestoreState([]byte(c.data)); !errors.Is(err, ErrState) {
			t.Errorf("%s: RestoreState = %v, want ErrState", c.name, err)
		}
		if after, _ := g.dev.SaveState(); !bytes.Equal(after, before) {
			t.Errorf("%s: a refused state changed the device", c.name)
		}
	}
	g.activate()
	if err := g.dev.RestoreState([]byte(good)); err == nil {
		t.Error("restored a running device")
	}
	g.dev.Suspend()
	if err := g.dev.RestoreState([]byte(good)); err == nil {
		t.Error("restored a suspended device")
	}
}

// TestResetWhileSuspended: Reset of a suspended device closes the
// connections it kept, and the clients in their handshake, and clears a
// pending transport reset.
func TestResetWhileSuspended(t *testing.T) {
	base := runtime.NumGoroutine()
	g := newGuest(t)
	g.postRx(8)
	g.postEvents(2)
	client, _ := g.hostConnect(52)
	pending := g.dial()
	pending.Write([]byte("CONN"))
	virtiotest.Eventually(t, "the handshake to start", func() bool { return handshaking(g.dev) == 1 })
	g.dev.Suspend()
	if err := g.dev.SendTransportReset(); !errors.Is(err, ErrNotActivated) {
		t.Fatal(err)
	}
	g.dev.Reset()
	expectEOF(t, client)
	expectEOF(t, pending)
	b, _ := g.dev.SaveState()
	var st savedState
	json.Unmarshal(b, &st)
	if st.PendingEventAck || st.LocalPortLast != 1<<30-1 {
		t.Fatalf("state after reset %s", b)
	}
	g.dev.Close()
	virtiotest.WaitGoroutines(t, base)
}

// FuzzRestoreState feeds arbitrary bytes to RestoreState: it never
// panics, and a state it accepts saves back to one that restores to the
// same.
func FuzzRestoreState(f *testing.F) {
	f.Add([]byte(`{"cid":3,"pending_event_ack":true,"event_avail":3,"local_port_last":1073741824}`))
	f.Add([]byte(`{"cid":4294967295,"pending_event_ack":false,"event_avail":0,"local_port_last":2147483647}`))
	f.Add([]byte(`{"cid":3,"pending_event_ack":false,"event_avail":0,"local_port_last":1073741823}`))
	f.Add([]byte(`null`))
	uds := filepath.Join(f.TempDir(), "f.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		// Devices that are never activated start nothing; they share the
		// listener.
		d, _ := New(Config{GuestCID: 3, UDSPath: uds, Listener: ln})
		if d.RestoreState(data) != nil {
			return
		}
		saved, err := d.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		d2, _ := New(Config{GuestCID: 3, UDSPath: uds, Listener: ln})
		if err := d2.RestoreState(saved); err != nil {
			t.Fatalf("a saved state does not restore: %v\n%s", err, saved)
		}
		if again, _ := d2.SaveState(); !bytes.Equal(again, saved) {
			t.Fatalf("round trip:\n%s\n%s", saved, again)
		}
	})
}

// TestSnapshotThroughMMIO takes the snapshot and restores it through the
// virtio-mmio transport, with EVENT_IDX negotiated as Linux does: the
// driver's ack of the reset is a notification the device asked for.
func TestSnapshotThroughMMIO(t *testing.T) {
	g := newIdleGuest(t)
	tr, _ := virtiotest.NewTransport(t, g.mem, g.dev)
	virtiotest.Negotiate(tr, nil)
	g.layout()
	for i, r := range []*virtiotest.Ring{g.rx, g.tx, g.ev} {
		virtiotest.SetupQueue(tr, uint32(i), r)
	}
	virtiotest.Write32(tr, 0x70, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	notify := func(tr *mmio.Transport) func(int) { return func(q int) { virtiotest.Write32(tr, 0x50, uint32(q)) } }
	g.kick = notify(tr)
	g.postRx(8)
	g.postEvents(4)
	client, c := g.hostConnect(52)
	echo(t, client, c, "before")

	state := virtiotest.SaveJSON(t, tr)
	expectEOF(t, client)
	if ev, _ := g.ev.AvailEvent(); ev != g.ev.AvailIdx() {
		t.Fatalf("event queue avail_event %d, avail idx %d: the ack would not be notified", ev, g.ev.AvailIdx())
	}

	uds := filepath.Join(t.TempDir(), "restored.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{GuestCID: guestCID, UDSPath: uds, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	tr2, _ := virtiotest.NewTransport(t, g.mem, d)
	virtiotest.RestoreJSON(t, tr2, state)
	g.dev, g.kick, g.uds = d, notify(tr2), uds
	if err := tr2.Resume(); err != nil {
		t.Fatal(err)
	}
	u := g.takeResetEvent()
	added := virtiotest.Track(&vm.ConnsAdded)
	client2 := g.dial()
	fmt.Fprintf(client2, "CONNECT 52\n")
	virtiotest.Eventually(t, "the connection", func() bool { return added.Get() == 1 })
	g.expectNoRx()
	g.ackReset(u)
	echo(t, client2, g.hostAccept(client2, g.recv(), 52), "after the restore")
	ln60 := g.listen(60)
	gc := g.guestConnect(1025, 60, guestBufAlloc)
	echo(t, accept(t, ln60), gc, "guest to host")
}
