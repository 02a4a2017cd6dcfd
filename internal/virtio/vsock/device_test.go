package vsock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Test guest memory layout.
const (
	ramSize   = 16 << 20
	rxRingAt  = 0x10000
	txRingAt  = 0x20000
	evRingAt  = 0x30000
	evBufAt   = 0x40000
	rxBufBase = 0x100000 // rxSlots slots of rxSlotSize
	rxSlots   = 128
	rxSlot    = 0x2000
	txBufBase = 0x400000 // txSlots slots of txSlot
	txSlots   = 64
	txSlot    = 0x11000 // a header and a 64 KiB payload
	guestCID  = 3
	// guestBufAlloc is the receive buffer the test guest advertises.
	guestBufAlloc = 256 << 10
	// failAfter guards every wait; no assertion depends on it.
	failAfter = 10 * time.Second
)

// vm is the vsock metrics group. Tests do not run in parallel, so deltas
// are each test's own.
var vm = &metrics.Default.Vsock

// pkt is a packet as the test guest sees it.
type pkt struct {
	hdr  header
	data []byte
}

// guest is a small guest vsock driver: it owns the driver side of the
// three rings, keeps RX buffers posted, sends TX packets and parses what
// the device returns.
type guest struct {
	t      *testing.T
	mem    *memory.Guest
	dev    *Device
	irq    *virtiotest.IRQ
	uds    string
	rx     *virtiotest.Ring
	tx     *virtiotest.Ring
	ev     *virtiotest.Ring
	rxBufs map[uint16]rxBuf // posted RX chains by head
	rxNext int
	txNext int
	// kick notifies the device of a queue.
	kick func(int)
	// rxData is the payload room of each RX buffer; split puts the
	// header and the payload in separate descriptors, as Linux once did.
	rxData uint32
	split  bool
}

type rxBuf struct {
	hdr, data uint64
	room      uint32 // payload room
}

// newGuest creates a device on a fresh listener and activates it.
func newGuest(t *testing.T) *guest {
	t.Helper()
	g := newIdleGuest(t)
	g.activate()
	return g
}

// newIdleGuest creates the device and the guest without activating.
func newIdleGuest(t *testing.T) *guest {
	t.Helper()
	uds := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := New(Config{GuestCID: guestCID, UDSPath: uds, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	// Stop the device before the memory it uses is unmapped.
	t.Cleanup(func() { dev.Close() })
	g := &guest{t: t, mem: mem, dev: dev, uds: uds, irq: &virtiotest.IRQ{}, rxData: 4096}
	g.kick = dev.QueueNotify
	return g
}

// layout lays out fresh, empty rings.
func (g *guest) layout() {
	g.t.Helper()
	g.rx = virtiotest.RingAt(g.t, g.mem, rxRingAt, 256)
	g.tx = virtiotest.RingAt(g.t, g.mem, txRingAt, 256)
	g.ev = virtiotest.RingAt(g.t, g.mem, evRingAt, 8)
	g.rxBufs = make(map[uint16]rxBuf)
}

// activate lays out fresh rings and activates the device on them.
func (g *guest) activate() {
	g.t.Helper()
	g.layout()
	qs := []*virtio.Queue{g.rx.InitQueue(g.t, false), g.tx.InitQueue(g.t, false), g.ev.InitQueue(g.t, false)}
	if err := g.dev.Activate(g.mem, qs, g.irq); err != nil {
		g.t.Fatal(err)
	}
}

// postRx makes n RX buffers available and kicks the RX queue.
func (g *guest) postRx(n int) {
	g.t.Helper()
	for range n {
		base := rxBufBase + uint64(g.rxNext%rxSlots)*rxSlot
		g.rxNext++
		var head uint16
		var err error
		if g.split {
			head, err = g.rx.AddChain(
				virtiotest.Buffer{Addr: base, Len: HdrSize, Writable: true},
				virtiotest.Buffer{Addr: base + 64, Len: g.rxData, Writable: true})
			g.rxBufs[head] = rxBuf{hdr: base, data: base + 64, room: g.rxData}
		} else {
			head, err = g.rx.AddChain(virtiotest.Buffer{Addr: base, Len: HdrSize + g.rxData, Writable: true})
			g.rxBufs[head] = rxBuf{hdr: base, data: base + HdrSize, room: g.rxData}
		}
		if err != nil {
			g.t.Fatal(err)
		}
	}
	g.kick(rxQ)
}

// waitUsed waits for r's next used entry.
func (g *guest) waitUsed(r *virtiotest.Ring, what string) virtiotest.Used {
	g.t.Helper()
	deadline := time.Now().Add(failAfter)
	for {
		u, ok, err := r.PopUsed()
		if err != nil {
			g.t.Fatal(err)
		}
		if ok {
			return u
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-g.irq.Raised():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// recv returns the next packet the device delivers, and posts a fresh
// buffer in place of the one it used.
func (g *guest) recv() pkt {
	g.t.Helper()
	return g.take(g.waitUsed(g.rx, "an RX packet"))
}

// tryRecv is recv without waiting.
func (g *guest) tryRecv() (pkt, bool) {
	g.t.Helper()
	u, ok, err := g.rx.PopUsed()
	if err != nil {
		g.t.Fatal(err)
	}
	if !ok {
		return pkt{}, false
	}
	return g.take(u), true
}

// take parses the packet in used RX entry u.
func (g *guest) take(u virtiotest.Used) pkt {
	g.t.Helper()
	b, ok := g.rxBufs[uint16(u.ID)]
	if !ok {
		g.t.Fatalf("used RX head %d was not posted", u.ID)
	}
	delete(g.rxBufs, uint16(u.ID))
	if u.Len < HdrSize {
		g.t.Fatalf("RX used length %d", u.Len)
	}
	var raw [HdrSize]byte
	if err := g.mem.ReadAt(raw[:], b.hdr); err != nil {
		g.t.Fatal(err)
	}
	var p pkt
	p.hdr.decode(&raw)
	if u.Len != HdrSize+p.hdr.Len {
		g.t.Fatalf("used length %d for a packet of %d bytes: %v", u.Len, p.hdr.Len, &p.hdr)
	}
	if p.hdr.Len > b.room {
		g.t.Fatalf("payload %d larger than the buffer", p.hdr.Len)
	}
	p.data = make([]byte, p.hdr.Len)
	if err := g.mem.ReadAt(p.data, b.data); err != nil {
		g.t.Fatal(err)
	}
	if p.hdr.SrcCID != HostCID || p.hdr.DstCID != guestCID || p.hdr.Type != typeStream {
		g.t.Fatalf("bad addressing in %v", &p.hdr)
	}
	g.postRx(1)
	return p
}

// expect receives a packet and checks its op.
func (g *guest) expect(op uint16) pkt {
	g.t.Helper()
	p := g.recv()
	if p.hdr.Op != op {
		g.t.Fatalf("got op %d, want %d: %v", p.hdr.Op, op, &p.hdr)
	}
	return p
}

// send puts one packet on the TX queue (header and payload in separate
// descriptors, as Linux does) and waits for the device to consume it.
func (g *guest) send(h header, data []byte) {
	g.t.Helper()
	base := txBufBase + uint64(g.txNext%txSlots)*txSlot
	g.txNext++
	if h.Len == 0 {
		h.Len = uint32(len(data))
	}
	var raw [HdrSize]byte
	h.encode(&raw)
	if err := g.mem.WriteAt(raw[:], base); err != nil {
		g.t.Fatal(err)
	}
	bufs := []virtiotest.Buffer{{Addr: base, Len: HdrSize}}
	if len(data) > 0 {
		if err := g.mem.WriteAt(data, base+HdrSize); err != nil {
			g.t.Fatal(err)
		}
		bufs = append(bufs, virtiotest.Buffer{Addr: base + HdrSize, Len: uint32(len(data))})
	}
	head, err := g.tx.AddChain(bufs...)
	if err != nil {
		g.t.Fatal(err)
	}
	g.kick(txQ)
	if u := g.waitUsed(g.tx, "the TX packet to be consumed"); u.ID != uint32(head) || u.Len != 0 {
		g.t.Fatalf("TX used %+v, want head %d length 0", u, head)
	}
}

// sync waits until the worker has finished what it was doing.
func (g *guest) sync() {
	g.t.Helper()
	if err := g.dev.call(func(*worker) {}); err != nil {
		g.t.Fatal(err)
	}
}

// expectNoRx checks, after a sync, that nothing was delivered.
func (g *guest) expectNoRx() {
	g.t.Helper()
	g.sync()
	if u, ok, _ := g.rx.PopUsed(); ok {
		g.t.Fatalf("unexpected RX used entry %+v", u)
	}
}

// gconn is a guest-side connection.
type gconn struct {
	g              *guest
	local, remote  uint32 // guest port, host port
	bufAlloc       uint32
	fwdCnt         uint32 // bytes the guest consumed
	rxCnt          uint32 // bytes the guest received
	txCnt          uint32 // bytes the guest sent
	peerBufAlloc   uint32
	peerFwdCnt     uint32
	creditRequests int
}

func (c *gconn) hdr(op uint16) header {
	return header{
		SrcCID: guestCID, DstCID: HostCID, SrcPort: c.local, DstPort: c.remote,
		Type: typeStream, Op: op, BufAlloc: c.bufAlloc, FwdCnt: c.fwdCnt,
	}
}

func (c *gconn) sendOp(op uint16, flags uint32) {
	h := c.hdr(op)
	h.Flags = flags
	c.g.send(h, nil)
}

// write sends data as RW packets within the host's credit.
func (c *gconn) write(data []byte) {
	c.g.t.Helper()
	for len(data) > 0 {
		n := min(len(data), MaxPktBufSize)
		if credit := c.peerBufAlloc - (c.txCnt - c.peerFwdCnt); uint32(n) > credit {
			c.g.t.Fatalf("out of host credit (%d)", credit)
		}
		c.g.send(c.hdr(opRW), data[:n])
		c.txCnt += uint32(n)
		data = data[n:]
	}
}

// observe takes the credit fields of a packet from the host, and checks
// the host never sent more than the guest's buffer allows.
func (c *gconn) observe(p pkt) {
	c.g.t.Helper()
	if p.hdr.SrcPort != c.remote || p.hdr.DstPort != c.local {
		c.g.t.Fatalf("packet for another connection: %v", &p.hdr)
	}
	c.peerBufAlloc, c.peerFwdCnt = p.hdr.BufAlloc, p.hdr.FwdCnt
	if p.hdr.Op == opRW {
		c.rxCnt += p.hdr.Len
		if c.rxCnt-c.fwdCnt > c.bufAlloc {
			c.g.t.Fatalf("host overran the guest's credit: %d bytes outstanding, buf_alloc %d", c.rxCnt-c.fwdCnt, c.bufAlloc)
		}
	}
}

// read receives exactly n bytes of RW data, consuming them at once.
func (c *gconn) read(n int) []byte {
	c.g.t.Helper()
	var out []byte
	for len(out) < n {
		p := c.g.recv()
		c.observe(p)
		switch p.hdr.Op {
		case opRW:
			out = append(out, p.data...)
			c.fwdCnt += p.hdr.Len
		case opCreditUpdate:
		case opCreditRequest:
			c.creditRequests++
			c.sendOp(opCreditUpdate, 0)
		default:
			c.g.t.Fatalf("unexpected packet while reading: %v", &p.hdr)
		}
	}
	if len(out) != n {
		c.g.t.Fatalf("read %d bytes, want %d", len(out), n)
	}
	return out
}

// expect receives a packet for this connection and checks its op.
func (c *gconn) expect(op uint16) pkt {
	c.g.t.Helper()
	p := c.g.expect(op)
	c.observe(p)
	return p
}

// hostConnect connects a client to the device's socket for guest port
// port and completes the handshake as the guest; it returns the client
// and the guest side.
func (g *guest) hostConnect(port uint32) (*net.UnixConn, *gconn) {
	g.t.Helper()
	client := g.dial()
	if _, err := fmt.Fprintf(client, "CONNECT %d\n", port); err != nil {
		g.t.Fatal(err)
	}
	p := g.expect(opRequest)
	if p.hdr.DstPort != port || p.hdr.SrcPort < 1<<30 || p.hdr.SrcPort >= 1<<31 {
		g.t.Fatalf("request %v", &p.hdr)
	}
	c := &gconn{g: g, local: port, remote: p.hdr.SrcPort, bufAlloc: guestBufAlloc}
	c.observe(p)
	c.sendOp(opResponse, 0)
	if line := readLine(g.t, client); line != fmt.Sprintf("OK %d", c.remote) {
		g.t.Fatalf("client got %q, want OK %d", line, c.remote)
	}
	return client, c
}

// guestConnect connects guest port local to host port remote, whose
// listener must exist.
func (g *guest) guestConnect(local, remote uint32, bufAlloc uint32) *gconn {
	g.t.Helper()
	c := &gconn{g: g, local: local, remote: remote, bufAlloc: bufAlloc}
	c.sendOp(opRequest, 0)
	p := c.expect(opResponse)
	if p.hdr.BufAlloc != ConnTxBufSize || p.hdr.FwdCnt != 0 {
		g.t.Fatalf("response %v", &p.hdr)
	}
	return c
}

func (g *guest) dial() *net.UnixConn {
	g.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: g.uds, Net: "unix"})
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(failAfter))
	return c
}

// listen opens the host listener for guest connections to port.
func (g *guest) listen(port uint32) *net.UnixListener {
	g.t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("%s_%d", g.uds, port), Net: "unix"})
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { ln.Close() })
	ln.SetDeadline(time.Now().Add(failAfter))
	return ln
}

func accept(t *testing.T, ln *net.UnixListener) *net.UnixConn {
	t.Helper()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(failAfter))
	return c
}

// readLine reads up to a newline one byte at a time, so nothing after it
// is consumed.
func readLine(t *testing.T, r io.Reader) string {
	t.Helper()
	var b []byte
	var c [1]byte
	for {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			t.Fatalf("reading a line (got %q): %v", b, err)
		}
		if c[0] == '\n' {
			return string(b)
		}
		b = append(b, c[0])
	}
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// expectEOF checks that the device closed the client: EOF, or a reset
// if the device closed its end with unread data.
func expectEOF(t *testing.T, c *net.UnixConn) {
	t.Helper()
	var b [64]byte
	n, err := c.Read(b[:])
	if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %q, %v; want EOF", b[:n], err)
	}
}

func TestIdentity(t *testing.T) {
	uds := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{GuestCID: 3, UDSPath: uds}); err == nil {
		t.Fatal("New without a listener")
	}
	d, err := New(Config{GuestCID: 0x1234_5678, UDSPath: uds, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.DeviceType() != virtio.TypeVsock || d.DeviceType() != 19 {
		t.Fatalf("device type %v", d.DeviceType())
	}
	want := uint64(1)<<32 | 1<<35 | 1<<29
	if d.AvailableFeatures() != want {
		t.Fatalf("features %#x, want %#x", d.AvailableFeatures(), want)
	}
	if s := d.QueueMaxSizes(); len(s) != 3 || s[0] != 256 || s[1] != 256 || s[2] != 256 {
		t.Fatalf("queues %v", s)
	}
	cfg := make([]byte, 12)
	for i := range cfg {
		cfg[i] = 0xee
	}
	d.ReadConfig(0, cfg)
	if !bytes.Equal(cfg, []byte{0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("config %x", cfg)
	}
	hi := make([]byte, 4)
	d.ReadConfig(4, hi)
	if !bytes.Equal(hi, []byte{0, 0, 0, 0}) {
		t.Fatalf("config[4:8] %x", hi)
	}
	fails := virtiotest.Track(&vm.CfgFails)
	d.WriteConfig(0, []byte{9, 9, 9, 9})
	d.ReadConfig(0, cfg[:4])
	if fails.Get() != 1 || cfg[0] != 0x78 {
		t.Fatalf("config write: cfg_fails +%d, config %x", fails.Get(), cfg[:4])
	}
	d.AckFeatures(want)
	if d.AckedFeatures() != want {
		t.Fatal("acked features lost")
	}
	if err := d.SendTransportReset(); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("transport reset before activation: %v", err)
	}
}

func TestActivateErrors(t *testing.T) {
	g := newGuest(t)
	fails := virtiotest.Track(&vm.ActivateFails)
	if err := g.dev.Activate(g.mem, nil, g.irq); err == nil {
		t.Fatal("activated twice")
	}
	g.dev.Reset()
	if err := g.dev.Activate(g.mem, []*virtio.Queue{virtio.NewQueue(256)}, g.irq); err == nil {
		t.Fatal("activated with one queue")
	}
	if err := g.dev.Activate(nil, []*virtio.Queue{g.rx.Queue(), g.tx.Queue(), g.ev.Queue()}, g.irq); err == nil {
		t.Fatal("activated without memory")
	}
	if fails.Get() != 3 {
		t.Fatalf("activate_fails +%d, want 3", fails.Get())
	}
	g.dev.Close()
	if err := g.dev.Activate(g.mem, []*virtio.Queue{g.rx.Queue(), g.tx.Queue(), g.ev.Queue()}, g.irq); !errors.Is(err, ErrClosed) {
		t.Fatalf("activate after close: %v", err)
	}
}

func TestHostInitiated(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	added := virtiotest.Track(&vm.ConnsAdded)
	client, c := g.hostConnect(52)
	if c.remote != 1<<30 {
		t.Fatalf("first host port %d, want %d", c.remote, 1<<30)
	}

	// Host to guest.
	msg := []byte("hello from the host")
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	if got := c.read(len(msg)); !bytes.Equal(got, msg) {
		t.Fatalf("guest read %q", got)
	}
	// Guest to host.
	reply := []byte("hello from the guest")
	c.write(reply)
	if got := readN(t, client, len(reply)); !bytes.Equal(got, reply) {
		t.Fatalf("host read %q", got)
	}

	// A second client, keyword in lower case and data sent right after
	// the line: it is not swallowed by the handshake.
	client2 := g.dial()
	if _, err := client2.Write([]byte("connect 1234\nearly")); err != nil {
		t.Fatal(err)
	}
	p := g.expect(opRequest)
	if p.hdr.DstPort != 1234 || p.hdr.SrcPort != 1<<30+1 {
		t.Fatalf("second request %v", &p.hdr)
	}
	c2 := &gconn{g: g, local: 1234, remote: p.hdr.SrcPort, bufAlloc: guestBufAlloc}
	c2.observe(p)
	c2.sendOp(opResponse, 0)
	if line := readLine(t, client2); line != fmt.Sprintf("OK %d", 1<<30+1) {
		t.Fatalf("second client got %q", line)
	}
	if got := c2.read(5); string(got) != "early" {
		t.Fatalf("guest read %q", got)
	}
	if added.Get() != 2 {
		t.Fatalf("conns_added +%d", added.Get())
	}

	// Lots of data both ways, larger than a guest buffer and than the
	// credit update threshold, so packets split and credit flows.
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes
	go func() { client.Write(big) }()
	if got := c.read(len(big)); !bytes.Equal(got, big) {
		t.Fatal("guest read corrupted bulk data")
	}
	errc := make(chan error, 1)
	go func() {
		got := make([]byte, len(big))
		_, err := io.ReadFull(client, got)
		if err == nil && !bytes.Equal(got, big) {
			err = errors.New("host read corrupted bulk data")
		}
		errc <- err
	}()
	for off := 0; off < len(big); {
		// Stay within the host's credit, waiting for its updates.
		credit := int(c.peerBufAlloc - (c.txCnt - c.peerFwdCnt))
		if credit == 0 {
			c.sendOp(opCreditRequest, 0)
			c.observe(c.g.expect(opCreditUpdate))
			continue
		}
		n := min(credit, len(big)-off, 4096)
		c.write(big[off : off+n])
		off += n
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestGuestInitiated(t *testing.T) {
	g := newGuest(t)
	g.split = true
	g.postRx(8)
	ln := g.listen(52)
	c := g.guestConnect(1025, 52, guestBufAlloc)
	server := accept(t, ln)

	c.write([]byte("ping"))
	if got := readN(t, server, 4); string(got) != "ping" {
		t.Fatalf("server read %q", got)
	}
	if _, err := server.Write([]byte("pong!")); err != nil {
		t.Fatal(err)
	}
	if got := c.read(5); string(got) != "pong!" {
		t.Fatalf("guest read %q", got)
	}
	// The host's fwd_cnt tells the guest what reached the socket.
	c.sendOp(opCreditRequest, 0)
	if p := c.expect(opCreditUpdate); p.hdr.FwdCnt != 4 || p.hdr.BufAlloc != ConnTxBufSize {
		t.Fatalf("credit update %v", &p.hdr)
	}
}

func TestGuestConnectNoListener(t *testing.T) {
	g := newGuest(t)
	g.postRx(4)
	c := &gconn{g: g, local: 1025, remote: 53, bufAlloc: guestBufAlloc}
	c.sendOp(opRequest, 0)
	c.expect(opRst)
	// The port was never added, so data for it is answered with RST too.
	c.sendOp(opRW, 0)
	c.expect(opRst)
}

func TestBadConnectLine(t *testing.T) {
	g := newGuest(t)
	g.postRx(4)
	added := virtiotest.Track(&vm.ConnsAdded)
	for _, line := range []string{
		"BOGUS 1234\n",
		"CONNECT abc\n",
		"CONNECT -1\n",
		"CONNECT 99999999999\n",
		"CONNECT\n\n\n\n\n\n\n\n",
		"CONNECT" + strings.Repeat(" ", 40) + "5\n", // past 32 bytes
		"\xffCONNECT 52\n",
		"short", // EOF before 10 bytes
	} {
		client := g.dial()
		if _, err := client.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if line == "short" {
			client.CloseWrite()
		}
		expectEOF(t, client)
	}
	g.expectNoRx()
	if added.Get() != 0 {
		t.Fatalf("conns_added +%d", added.Get())
	}
}

func TestConnectLineParsing(t *testing.T) {
	for _, tc := range []struct {
		in   string
		port uint32
		ok   bool
	}{
		{"CONNECT 52\n", 52, true},
		{"connect 52\n", 52, true},
		{"CoNnEcT 7\n\n", 7, true},
		{"CONNECT +52\n", 52, true},
		{"CONNECT 4294967295\n", 4294967295, true},
		{"CONNECT 52 trailing words\n", 52, true},
		{"  CONNECT\t52\r\n", 52, true},
		{"CONNECT ++52\n", 0, false},
		{"CONNECT 4294967296\n", 0, false},
		{"CONNECTX 52\n", 0, false},
		{"CONNECT 5_2\n", 0, false},
	} {
		port, err := readConnectPort(strings.NewReader(tc.in))
		if (err == nil) != tc.ok || port != tc.port {
			t.Errorf("%q: got %d, %v", tc.in, port, err)
		}
	}
	// Only the line is consumed.
	r := strings.NewReader("CONNECT 52\nrest")
	if _, err := readConnectPort(r); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "rest" {
		t.Fatalf("left %q", rest)
	}
}

func TestCreditFlowControl(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	ln := g.listen(52)
	const window = 16
	c := g.guestConnect(1025, 52, window)
	server := accept(t, ln)

	data := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") // 62 bytes
	if _, err := server.Write(data); err != nil {
		t.Fatal(err)
	}
	// The host sends exactly the window, then asks for credit.
	var got []byte
	for len(got) < window {
		p := c.expect(opRW)
		got = append(got, p.data...)
	}
	if !bytes.Equal(got, data[:window]) {
		t.Fatalf("first window %q", got)
	}
	c.expect(opCreditRequest)
	g.expectNoRx()

	// Each credit update (the guest consumed what it got) releases one
	// more window; observe checks the host never overruns it.
	for len(got) < len(data) {
		c.fwdCnt = c.rxCnt
		c.sendOp(opCreditUpdate, 0)
		before := len(got)
		for len(got) < min(before+window, len(data)) {
			p := c.expect(opRW)
			got = append(got, p.data...)
		}
		if len(got) < len(data) {
			c.expect(opCreditRequest)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("guest read %q", got)
	}

	// The other way: once the host has forwarded more than 60 KiB without
	// telling the guest, it volunteers a credit update.
	chunk := bytes.Repeat([]byte{'x'}, 32<<10)
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(server, make([]byte, 64<<10))
		done <- err
	}()
	c.write(chunk)
	c.write(chunk)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p := c.expect(opCreditUpdate); p.hdr.FwdCnt != 64<<10 {
		t.Fatalf("credit update %v", &p.hdr)
	}
}

func TestGuestShutdown(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	removed := virtiotest.Track(&vm.ConnsRemoved)

	// Both directions at once.
	client, c := g.hostConnect(52)
	c.sendOp(opShutdown, flagShutdownRcv|flagShutdownSend)
	c.expect(opRst)
	expectEOF(t, client)

	// One direction, then the other.
	ln := g.listen(60)
	c2 := g.guestConnect(1026, 60, guestBufAlloc)
	server := accept(t, ln)
	c2.sendOp(opShutdown, flagShutdownSend)
	// Still receiving: data from the host flows.
	server.Write([]byte("still here"))
	if got := c2.read(10); string(got) != "still here" {
		t.Fatalf("guest read %q", got)
	}
	c2.sendOp(opShutdown, flagShutdownRcv)
	c2.expect(opRst)
	expectEOF(t, server)
	if removed.Get() != 2 {
		t.Fatalf("conns_removed +%d", removed.Get())
	}
}

func TestHostClose(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	removed := virtiotest.Track(&vm.ConnsRemoved)

	client, c := g.hostConnect(52)
	client.Close()
	p := c.expect(opShutdown)
	if p.hdr.Flags != flagShutdownRcv|flagShutdownSend {
		t.Fatalf("shutdown flags %#x", p.hdr.Flags)
	}
	c.sendOp(opRst, 0)
	virtiotest.Eventually(t, "the connection to go", func() bool { return removed.Get() == 1 })

	// A guest that does not answer the shutdown is reset after the
	// shutdown timeout.
	killed := virtiotest.Track(&vm.ConnsKilled)
	ln := g.listen(70)
	c2 := g.guestConnect(1027, 70, guestBufAlloc)
	accept(t, ln).Close()
	c2.expect(opShutdown)
	c2.expect(opRst)
	if killed.Get() != 1 || removed.Get() != 2 {
		t.Fatalf("conns_killed +%d, conns_removed +%d", killed.Get(), removed.Get())
	}
}

func TestHostConnectTimeout(t *testing.T) {
	g := newGuest(t)
	g.postRx(4)
	client := g.dial()
	fmt.Fprintf(client, "CONNECT 52\n")
	p := g.expect(opRequest)
	// The guest never answers: the device gives up.
	rst := g.expect(opRst)
	if rst.hdr.SrcPort != p.hdr.SrcPort || rst.hdr.DstPort != 52 {
		t.Fatalf("rst %v", &rst.hdr)
	}
	expectEOF(t, client)
}

func TestGuestRefusesHostConnect(t *testing.T) {
	g := newGuest(t)
	g.postRx(4)
	client := g.dial()
	fmt.Fprintf(client, "CONNECT 52\n")
	p := g.expect(opRequest)
	c := &gconn{g: g, local: 52, remote: p.hdr.SrcPort}
	c.sendOp(opRst, 0)
	expectEOF(t, client)
}

func TestTransportReset(t *testing.T) {
	g := newGuest(t)
	g.postRx(4)
	fails := virtiotest.Track(&vm.EvQueueEventFails)
	if err := g.dev.SendTransportReset(); err == nil || fails.Get() != 1 {
		t.Fatalf("transport reset with no event buffer: %v, ev_queue_event_fails +%d", err, fails.Get())
	}
	// The driver posts its event buffer (pre-filled, to see the write).
	g.mem.WriteAt([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, evBufAt)
	if _, err := g.ev.AddChain(virtiotest.Buffer{Addr: evBufAt, Len: 4, Writable: true}); err != nil {
		t.Fatal(err)
	}
	irqs := g.irq.Queue(evQ)
	if err := g.dev.SendTransportReset(); err != nil {
		t.Fatal(err)
	}
	u, ok, err := g.ev.PopUsed()
	if err != nil || !ok || u.ID != 0 || u.Len != 4 {
		t.Fatalf("event used %+v %v %v", u, ok, err)
	}
	ev := make([]byte, 8)
	g.mem.ReadAt(ev, evBufAt)
	if !bytes.Equal(ev, []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("event buffer %x", ev)
	}
	if g.irq.Queue(evQ) != irqs+1 {
		t.Fatal("event queue not signalled")
	}

	// RX is gated until the guest acknowledges: a host connection gets
	// no REQUEST to the guest.
	added := virtiotest.Track(&vm.ConnsAdded)
	client := g.dial()
	fmt.Fprintf(client, "CONNECT 52\n")
	virtiotest.Eventually(t, "the connection", func() bool { return added.Get() == 1 })
	g.expectNoRx()
	g.dev.QueueNotify(rxQ)
	g.expectNoRx()
	// The driver refills the event queue and kicks it: RX flows.
	g.ev.AddChain(virtiotest.Buffer{Addr: evBufAt, Len: 4, Writable: true})
	g.dev.QueueNotify(evQ)
	if p := g.expect(opRequest); p.hdr.DstPort != 52 {
		t.Fatalf("request %v", &p.hdr)
	}
}

func TestResetClosesConnections(t *testing.T) {
	base := runtime.NumGoroutine()
	g := newGuest(t)
	g.postRx(8)
	hostClient, _ := g.hostConnect(52)
	ln := g.listen(60)
	g.guestConnect(1025, 60, guestBufAlloc)
	server := accept(t, ln)
	// A client still to send its CONNECT line.
	pending := g.dial()
	pending.Write([]byte("CONN"))
	virtiotest.Eventually(t, "the handshake to start", func() bool {
		h := &g.dev.life.Current().handshakes
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.m) == 1
	})
	// A guest-initiated connection whose host end does not read fills
	// the socket and then its TX buffer, within the credit the host
	// grants: it has a write waiter, the others read waiters.
	ln2 := g.listen(61)
	c3 := g.guestConnect(1026, 61, guestBufAlloc)
	slow := accept(t, ln2)
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("the TX buffer never stayed full")
		}
		fillTxBuffer(c3)
		var armed bool
		if err := g.dev.call(func(w *worker) {
			c := w.mux.conns[connKey{61, 1026}]
			armed = c != nil && c.writeArmed && !c.tx.empty()
		}); err != nil {
			t.Fatal(err)
		}
		if armed {
			break
		}
	}
	removed := virtiotest.Track(&vm.ConnsRemoved)
	if err := g.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if g.dev.Activated() || g.dev.AckedFeatures() != 0 {
		t.Fatal("still active")
	}
	expectEOF(t, hostClient)
	expectEOF(t, server)
	expectEOF(t, pending)
	if _, err := io.Copy(io.Discard, slow); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("slow reader: %v", err)
	}
	if removed.Get() != 3 {
		t.Fatalf("conns_removed +%d", removed.Get())
	}
	if err := g.dev.SendTransportReset(); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("transport reset after reset: %v", err)
	}
	// Kicks after reset go nowhere.
	g.dev.QueueNotify(txQ)

	// The listener survives: a new activation serves new clients, with
	// host ports starting over.
	g.activate()
	g.postRx(4)
	if _, c := g.hostConnect(52); c.remote != 1<<30 {
		t.Fatalf("host port after reset %d", c.remote)
	}
	// Close stops everything and removes the socket file.
	g.dev.Close()
	if _, err := os.Stat(g.uds); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after close: %v", err)
	}
	if _, err := net.Dial("unix", g.uds); err == nil {
		t.Fatal("listener still accepts after Close")
	}
	if err := g.dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Everything the device started is gone (the test's own sockets are
	// closed by cleanups, which have no goroutines).
	virtiotest.Eventually(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
}

func TestResetWhileBusy(t *testing.T) {
	base := runtime.NumGoroutine()
	g := newGuest(t)
	ln := g.listen(52)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	for range 5 {
		g.postRx(32)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("unix", g.uds)
				if err != nil {
					return
				}
				fmt.Fprintf(c, "CONNECT %d\n", i)
				c.Close()
			}
		}()
		for i := range uint32(16) {
			c := &gconn{g: g, local: 2000 + i, remote: 52, bufAlloc: guestBufAlloc}
			c.sendOp(opRequest, 0)
		}
		for range 50 {
			g.dev.QueueNotify(txQ)
			g.dev.QueueNotify(rxQ)
		}
		g.dev.Reset()
		close(stop)
		<-done
		g.activate()
	}
	g.dev.Close()
	ln.Close()
	virtiotest.Eventually(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
}

// fillTxBuffer sends data within the host's credit until the host grants
// no more: its socket is full and its TX buffer holds the rest.
func fillTxBuffer(c *gconn) {
	c.g.t.Helper()
	chunk := bytes.Repeat([]byte{'f'}, MaxPktBufSize)
	for i := 0; ; i++ {
		if i > 1000 {
			c.g.t.Fatal("credit never ran out")
		}
		credit := c.peerBufAlloc - (c.txCnt - c.peerFwdCnt)
		if credit > 0 {
			c.write(chunk[:min(credit, MaxPktBufSize)])
		}
		c.sendOp(opCreditRequest, 0)
		c.expect(opCreditUpdate)
		if credit == 0 && c.peerBufAlloc-(c.txCnt-c.peerFwdCnt) == 0 {
			return
		}
	}
}

// TestCreditBackpressure: a guest that respects the host's credit never
// overflows the TX buffer of a slow host reader, and everything arrives.
func TestCreditBackpressure(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	ln := g.listen(52)
	c := g.guestConnect(1025, 52, guestBufAlloc)
	server := accept(t, ln)
	fillTxBuffer(c)
	sent := c.txCnt
	if sent <= ConnTxBufSize {
		t.Fatalf("only %d bytes sent", sent)
	}
	// The host reads: the device flushes its buffer and, once the guest's
	// view of its free space is stale enough, volunteers credit.
	n, err := io.CopyN(io.Discard, server, int64(sent))
	if err != nil {
		t.Fatalf("server read %d of %d: %v", n, sent, err)
	}
	c.expect(opCreditUpdate)
	c.sendOp(opCreditRequest, 0)
	if p := c.expect(opCreditUpdate); p.hdr.FwdCnt != sent {
		t.Fatalf("fwd_cnt %d after %d bytes", p.hdr.FwdCnt, sent)
	}
}

func TestTxBufferOverflow(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	ln := g.listen(52)
	c := g.guestConnect(1025, 52, guestBufAlloc)
	accept(t, ln) // never reads
	writeFails := virtiotest.Track(&vm.TxWriteFails)

	// A guest that ignores the host's credit overflows the TX buffer
	// once the socket is full, and its connection is reset.
	chunk := bytes.Repeat([]byte{'z'}, MaxPktBufSize)
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("no reset after 64 MiB")
		}
		g.send(c.hdr(opRW), chunk)
		g.sync()
		reset := false
		for !reset {
			p, ok := g.tryRecv()
			if !ok {
				break
			}
			switch p.hdr.Op {
			case opRst:
				reset = true
			case opCreditUpdate:
			default:
				t.Fatalf("unexpected %v", &p.hdr)
			}
		}
		if reset {
			break
		}
	}
	if writeFails.Get() != 0 {
		t.Fatalf("tx_write_fails +%d", writeFails.Get())
	}
}

func TestBadPackets(t *testing.T) {
	g := newGuest(t)
	g.postRx(8)
	ln := g.listen(52)
	c := g.guestConnect(1025, 52, guestBufAlloc)
	server := accept(t, ln)

	// Another socket type: RST.
	h := c.hdr(opRW)
	h.Type = 2
	g.send(h, []byte("seq"))
	if p := g.expect(opRst); p.hdr.SrcPort != 52 || p.hdr.DstPort != 1025 {
		t.Fatalf("rst %v", &p.hdr)
	}
	// The RST for the bad packet did not touch the connection.
	c.write([]byte("ok"))
	if got := readN(t, server, 2); string(got) != "ok" {
		t.Fatalf("server read %q", got)
	}
	// Another destination CID: dropped.
	h = c.hdr(opRW)
	h.DstCID = 7
	g.send(h, []byte("lost"))
	g.expectNoRx()
	// A packet for no connection: RST.
	h = c.hdr(opCreditUpdate)
	h.SrcPort = 999
	g.send(h, nil)
	if p := g.expect(opRst); p.hdr.DstPort != 999 {
		t.Fatalf("rst %v", &p.hdr)
	}

	// Malformed chains come back with length 0 and change nothing.
	base := uint64(txBufBase)
	var raw [HdrSize]byte
	h = c.hdr(opRW)
	h.Len = 100 // more than the chain holds
	h.encode(&raw)
	g.mem.WriteAt(raw[:], base)
	for _, bufs := range [][]virtiotest.Buffer{
		{{Addr: base, Len: HdrSize}, {Addr: base + HdrSize, Len: 10}}, // short for the length
		{{Addr: base, Len: 20}}, // short for a header
		{{Addr: base, Len: HdrSize}, {Addr: base + HdrSize, Len: 100, Writable: true}}, // writable
		{{Addr: ramSize - 10, Len: HdrSize}},                                           // outside RAM
	} {
		head, err := g.tx.AddChain(bufs...)
		if err != nil {
			t.Fatal(err)
		}
		g.kick(txQ)
		if u := g.waitUsed(g.tx, "a bad chain"); u.ID != uint32(head) || u.Len != 0 {
			t.Fatalf("used %+v", u)
		}
	}
	h = c.hdr(opRW)
	h.Len = MaxPktBufSize + 1
	g.send(h, make([]byte, MaxPktBufSize+1))
	g.expectNoRx()

	// A malformed RX chain (readable) is returned empty.
	g.rx.AddChain(virtiotest.Buffer{Addr: rxBufBase, Len: 100})
	server.Write([]byte("data"))
	var got []byte
	for len(got) < 4 {
		u := g.waitUsed(g.rx, "RX")
		b, ok := g.rxBufs[uint16(u.ID)]
		if !ok {
			if u.Len != 0 {
				t.Fatalf("readable RX chain used with length %d", u.Len)
			}
			continue
		}
		delete(g.rxBufs, uint16(u.ID))
		data := make([]byte, u.Len-HdrSize)
		g.mem.ReadAt(data, b.data)
		got = append(got, data...)
	}
	if string(got) != "data" {
		t.Fatalf("guest read %q", got)
	}
}

func TestSmallRxBuffers(t *testing.T) {
	g := newGuest(t)
	g.rxData = 3 // data arrives three bytes at a time
	g.postRx(8)
	ln := g.listen(52)
	c := g.guestConnect(1025, 52, guestBufAlloc)
	server := accept(t, ln)
	server.Write([]byte("0123456789"))
	if got := c.read(10); string(got) != "0123456789" {
		t.Fatalf("guest read %q", got)
	}

	// A buffer with no room past the header gets a credit update, not a
	// bogus EOF, and the data waits for a bigger one.
	g = newGuest(t)
	g.rxData = 0
	g.postRx(1)
	ln = g.listen(52)
	c = g.guestConnect(1025, 52, guestBufAlloc)
	server = accept(t, ln)
	server.Write([]byte("x"))
	g.rxData = 16 // for the buffer posted in place of the next one used
	c.expect(opCreditUpdate)
	if got := c.read(1); string(got) != "x" {
		t.Fatalf("guest read %q", got)
	}
}

func TestMetricsCount(t *testing.T) {
	g := newGuest(t)
	txp, rxp := virtiotest.Track(&vm.TxPacketsCount), virtiotest.Track(&vm.RxPacketsCount)
	txb, rxb := virtiotest.Track(&vm.TxBytesCount), virtiotest.Track(&vm.RxBytesCount)
	txe, rxe := virtiotest.Track(&vm.TxQueueEventCount), virtiotest.Track(&vm.RxQueueEventCount)
	ln := g.listen(52)
	// The RESPONSE waits for an RX buffer; the RX kick that brings one
	// counts.
	c := &gconn{g: g, local: 1025, remote: 52, bufAlloc: guestBufAlloc}
	c.sendOp(opRequest, 0)
	g.sync()
	g.postRx(8)
	c.expect(opResponse)
	server := accept(t, ln)
	c.write([]byte("12345"))
	readN(t, server, 5)
	server.Write([]byte("abc"))
	c.read(3)
	if txb.Get() != 5 || rxb.Get() != 3 {
		t.Fatalf("tx_bytes +%d rx_bytes +%d", txb.Get(), rxb.Get())
	}
	// The REQUEST has no connection yet; the RW has.
	if txp.Get() != 1 || rxp.Get() != 2 {
		t.Fatalf("tx_packets +%d rx_packets +%d", txp.Get(), rxp.Get())
	}
	if txe.Get() != 2 || rxe.Get() < 1 {
		t.Fatalf("tx_queue_event_count +%d rx_queue_event_count +%d", txe.Get(), rxe.Get())
	}
}

func TestRxQueueOverflow(t *testing.T) {
	g := newGuest(t)
	// No RX buffers: RSTs for unroutable packets pile up in the muxer's
	// bounded queue; the overflow is dropped, not buffered.
	for i := range uint32(300) {
		h := header{SrcCID: guestCID, DstCID: HostCID, SrcPort: 5000 + i, DstPort: 1, Type: typeStream, Op: opRW}
		g.send(h, nil)
	}
	var n int
	if err := g.dev.call(func(w *worker) { n = w.mux.rxq.n }); err != nil {
		t.Fatal(err)
	}
	if n != muxerRxQSize {
		t.Fatalf("rxq holds %d", n)
	}
	g.postRx(64)
	for i := range uint32(10) {
		if p := g.expect(opRst); p.hdr.DstPort != 5000+i {
			t.Fatalf("rst %v", &p.hdr)
		}
	}
}

func TestRxQueueResync(t *testing.T) {
	q := newRxQueue()
	for i := range uint32(muxerRxQSize) {
		if !q.push(rxItem{key: connKey{1, i}}) {
			t.Fatal("push failed below capacity")
		}
	}
	if q.push(rxItem{key: connKey{2, 0}}) || q.synced {
		t.Fatal("overflowing connection entry kept the queue in sync")
	}
	// An RST still gets in, in place of the newest connection entry.
	if !q.push(rxItem{key: connKey{3, 3}, rst: true}) {
		t.Fatal("RST dropped")
	}
	if it := q.q[(q.head+q.n-1)%muxerRxQSize]; !it.rst || it.key != (connKey{3, 3}) {
		t.Fatalf("last entry %+v", it)
	}
}

func TestKillQueueResync(t *testing.T) {
	now := time.Now()
	q := newKillQueue()
	for i := range uint32(muxerKillQSize) {
		q.push(connKey{i, 0}, now.Add(time.Duration(i)))
	}
	q.push(connKey{999, 0}, now)
	if q.synced || len(q.q) != muxerKillQSize {
		t.Fatalf("synced %v len %d", q.synced, len(q.q))
	}
	if _, ok := q.pop(now.Add(-time.Second)); ok {
		t.Fatal("popped before time")
	}
	if k, ok := q.pop(now.Add(time.Second)); !ok || k != (connKey{0, 0}) {
		t.Fatalf("pop %v %v", k, ok)
	}
}

// TestThroughMMIO drives the device through the real transport, as Linux
// probes it: features (with EVENT_IDX), three queues, config space,
// notifications.
func TestThroughMMIO(t *testing.T) {
	g := newIdleGuest(t)
	// Waits on the guest's queues poll: the transport's line wakes nobody.
	tr, err := mmio.New(g.mem, g.dev, &virtiotest.Line{})
	if err != nil {
		t.Fatal(err)
	}
	rd := func(off uint64) uint32 { return virtiotest.Read32(tr, off) }
	wr := func(off uint64, v uint32) { virtiotest.Write32(tr, off, v) }
	if rd(0x08) != 19 {
		t.Fatalf("device id %d", rd(0x08))
	}
	if offered := virtiotest.Negotiate(tr, nil); offered != availFeatures {
		t.Fatalf("offered %#x", offered)
	}
	if cid := uint64(rd(0x100)) | uint64(rd(0x104))<<32; cid != guestCID {
		t.Fatalf("config cid %d", cid)
	}
	g.layout()
	for i, r := range []*virtiotest.Ring{g.rx, g.tx, g.ev} {
		wr(0x30, uint32(i))
		if rd(0x34) != QueueSize {
			t.Fatalf("queue %d max %d", i, rd(0x34))
		}
		virtiotest.SetupQueue(tr, uint32(i), r)
	}
	wr(0x30, 3)
	if rd(0x34) != 0 {
		t.Fatal("a fourth queue is offered")
	}
	wr(0x70, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if !g.dev.Activated() || g.dev.AckedFeatures() != availFeatures {
		t.Fatalf("activated %v, acked %#x", g.dev.Activated(), g.dev.AckedFeatures())
	}
	g.kick = func(q int) { wr(0x50, uint32(q)) }

	g.postRx(8)
	client, c := g.hostConnect(52)
	client.Write([]byte("via mmio"))
	if got := c.read(8); string(got) != "via mmio" {
		t.Fatalf("guest read %q", got)
	}
	c.write([]byte("back"))
	if got := readN(t, client, 4); string(got) != "back" {
		t.Fatalf("host read %q", got)
	}
	// With EVENT_IDX the device asks for a kick past what it consumed.
	if ev, _ := g.tx.AvailEvent(); ev != g.tx.AvailIdx() {
		t.Fatalf("tx avail_event %d, avail idx %d", ev, g.tx.AvailIdx())
	}
	// A driver reset stops the device and closes the connection.
	wr(0x70, 0)
	if g.dev.Activated() {
		t.Fatal("active after driver reset")
	}
	expectEOF(t, client)
}
