package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/tap"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

const (
	ramSize    = 8 << 20
	rxRingBase = 0x1000
	txRingBase = 0x8000
	bufBase    = 0x10000 // buffers from here on, bump-allocated
)

// Feature sets a Linux guest acknowledges: everything offered (modern
// driver), and variants without merged RX buffers.
const (
	featAll   = baseFeatures
	featNoMrg = baseFeatures &^ (1 << FeatureMrgRxbuf)
	// featSmall: no MRG_RXBUF and no receive offloads, so 1526-byte RX
	// chains are enough.
	featSmall = featNoMrg &^ (1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestUFO)
)

// waitGuard bounds every wait; it only matters when a test fails.
const waitGuard = 10 * time.Second

// fakeBackend is the device's end of a SOCK_SEQPACKET socketpair: frame
// boundaries hold, and the non-blocking fd sits on the Go poller, so read
// deadlines work as on a TAP.
type fakeBackend struct {
	f     *os.File
	reads atomic.Int32 // Read calls begun

	mu         sync.Mutex
	offloads   []uint
	offloadErr error
	closed     bool
}

func (b *fakeBackend) Read(p []byte) (int, error) {
	b.reads.Add(1)
	return b.f.Read(p)
}

func (b *fakeBackend) Write(p []byte) (int, error)       { return b.f.Write(p) }
func (b *fakeBackend) SetReadDeadline(t time.Time) error { return b.f.SetReadDeadline(t) }

func (b *fakeBackend) SetOffload(flags uint) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.offloads = append(b.offloads, flags)
	return b.offloadErr
}

func (b *fakeBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.f.Close()
}

func (b *fakeBackend) lastOffload() (uint, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.offloads) == 0 {
		return 0, 0
	}
	return b.offloads[len(b.offloads)-1], len(b.offloads)
}

// peer is the host network: the other end of the socketpair.
type peer struct {
	t testing.TB
	f *os.File
}

func newBackendPair(t testing.TB) (*fakeBackend, *peer) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		// Room for a few 64 KiB frames in flight either way.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	p := &peer{t: t, f: os.NewFile(uintptr(fds[1]), "peer")}
	t.Cleanup(func() { p.f.Close() })
	return &fakeBackend{f: os.NewFile(uintptr(fds[0]), "backend")}, p
}

func (p *peer) send(frame []byte) {
	p.t.Helper()
	if _, err := p.f.Write(frame); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next frame the device wrote.
func (p *peer) recv() []byte {
	p.t.Helper()
	p.f.SetReadDeadline(time.Now().Add(waitGuard))
	buf := make([]byte, 2*MaxBufferSize)
	n, err := p.f.Read(buf)
	if err != nil {
		p.t.Fatalf("no frame from the device: %v", err)
	}
	return buf[:n]
}

// expectNone checks that the device has written nothing more. Call it
// after the device is quiescent (a Reset, or the used entries of
// everything sent were seen).
func (p *peer) expectNone() {
	p.t.Helper()
	p.f.SetReadDeadline(time.Unix(1, 0))
	buf := make([]byte, 2*MaxBufferSize)
	if n, err := p.f.Read(buf); err == nil {
		p.t.Fatalf("unexpected frame of %d bytes: %x", n, buf[:min(n, 64)])
	}
}

// fakeMMDS takes the frames sent to mmdsMAC and answers each with one
// frame, "reply:" and the request's payload, back to its sender.
type fakeMMDS struct {
	mu      sync.Mutex
	got     [][]byte
	replies [][]byte
}

var mmdsMAC = [6]byte{0x06, 0x01, 0x23, 0x45, 0x67, 0x01}

func (m *fakeMMDS) DetourFrame(f []byte) bool {
	if len(f) < ethHdrLen || !bytes.Equal(f[:6], mmdsMAC[:]) {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, bytes.Clone(f))
	var src [6]byte
	copy(src[:], f[6:12])
	m.replies = append(m.replies, eth(src, mmdsMAC, append([]byte("reply:"), f[ethHdrLen:]...)))
	return true
}

func (m *fakeMMDS) WriteNextFrame(buf []byte) (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.replies) == 0 {
		return 0, false
	}
	n := copy(buf, m.replies[0])
	m.replies = m.replies[1:]
	return n, true
}

func (m *fakeMMDS) requests() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slicesClone(m.got)
}

func slicesClone(s [][]byte) [][]byte { return append([][]byte(nil), s...) }

var (
	guestMAC = [6]byte{0x06, 0, 0xac, 0x10, 0, 2}
	hostMAC  = [6]byte{0x06, 0, 0xac, 0x10, 0, 1}
)

// eth builds an Ethernet frame with a local experimental EtherType.
func eth(dst, src [6]byte, payload []byte) []byte {
	f := append(append(append([]byte{}, dst[:]...), src[:]...), 0x88, 0xb5)
	return append(f, payload...)
}

// vnet prefixes frame with a vnet header whose fields are all set to
// something (num_buffers to 0xeeee), to check they pass through.
func vnet(frame []byte) []byte {
	h := []byte{0x01, 0x01, 0x36, 0x00, 0xb8, 0x05, 0x22, 0x00, 0x10, 0x00, 0xee, 0xee}
	return append(h, frame...)
}

// withNumBuffers is what the guest should find for a frame from the TAP.
func withNumBuffers(f []byte, n uint16) []byte {
	g := bytes.Clone(f)
	binary.LittleEndian.PutUint16(g[numBuffersOff:], n)
	return g
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

type rig struct {
	t      testing.TB
	mem    *memory.Guest
	dev    *Device
	be     *fakeBackend
	peer   *peer
	irq    *virtiotest.IRQ
	rx, tx *virtiotest.Ring
	mmds   *fakeMMDS
	m      *metrics.NetMetrics
	next   uint64
	chains map[uint16][]virtiotest.Buffer // RX chains by head
}

// newRig makes a device on a fake backend; edit adjusts its config.
func newRig(t testing.TB, edit func(*Config)) *rig {
	t.Helper()
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	be, p := newBackendPair(t)
	cfg := Config{ID: uniqueID(t), Backend: be}
	if edit != nil {
		edit(&cfg)
	}
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, mem: mem, dev: dev, be: be, peer: p, irq: &virtiotest.IRQ{}, m: metrics.Default.Net(cfg.ID), next: bufBase}
	if m, ok := cfg.MMDS.(*fakeMMDS); ok {
		r.mmds = m
	}
	// Stop the device before the memory it uses is unmapped.
	t.Cleanup(func() { dev.Close() })
	return r
}

// activate negotiates features and activates the device as the MMIO
// transport would, then kicks both queues as it does.
func (r *rig) activate(features uint64) {
	r.t.Helper()
	r.rx = virtiotest.RingAt(r.t, r.mem, rxRingBase, QueueSize)
	r.tx = virtiotest.RingAt(r.t, r.mem, txRingBase, QueueSize)
	r.chains = map[uint16][]virtiotest.Buffer{}
	eventIdx := virtio.HasFeature(features, virtio.FeatureEventIdx)
	qs := []*virtio.Queue{r.rx.InitQueue(r.t, eventIdx), r.tx.InitQueue(r.t, eventIdx)}
	r.dev.AckFeatures(features)
	if err := r.dev.Activate(r.mem, qs, r.irq); err != nil {
		r.t.Fatal(err)
	}
	r.dev.QueueNotify(RxIndex)
	r.dev.QueueNotify(TxIndex)
}

func (r *rig) alloc(n uint32) uint64 {
	a := r.next
	r.next += (uint64(n) + 15) &^ 15
	if r.next > ramSize {
		r.t.Fatal("test RAM exhausted")
	}
	return a
}

// sendTx puts a TX chain of one readable buffer per part on the queue,
// without a kick.
func (r *rig) sendTx(parts ...[]byte) uint16 {
	r.t.Helper()
	var bufs []virtiotest.Buffer
	for _, p := range parts {
		a := r.alloc(uint32(len(p)))
		if err := r.mem.WriteAt(p, a); err != nil {
			r.t.Fatal(err)
		}
		bufs = append(bufs, virtiotest.Buffer{Addr: a, Len: uint32(len(p))})
	}
	h, err := r.tx.AddChain(bufs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// addRx offers one RX chain made of writable buffers of the given sizes,
// without a kick. The buffers are filled with 0xaa.
func (r *rig) addRx(sizes ...uint32) uint16 {
	r.t.Helper()
	var bufs []virtiotest.Buffer
	for _, n := range sizes {
		a := r.alloc(n)
		if err := r.mem.WriteAt(bytes.Repeat([]byte{0xaa}, int(n)), a); err != nil {
			r.t.Fatal(err)
		}
		bufs = append(bufs, virtiotest.Buffer{Addr: a, Len: n, Writable: true})
	}
	h, err := r.rx.AddChain(bufs...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.chains[h] = bufs
	return h
}

func (r *rig) kickRx() { r.dev.QueueNotify(RxIndex) }
func (r *rig) kickTx() { r.dev.QueueNotify(TxIndex) }

// chainData reads the first n bytes of the RX chain with head h.
func (r *rig) chainData(h uint16, n uint32) []byte {
	r.t.Helper()
	var out []byte
	for _, b := range r.chains[h] {
		k := min(n, b.Len)
		p := make([]byte, k)
		if err := r.mem.ReadAt(p, b.Addr); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, p...)
		n -= k
	}
	if n != 0 {
		r.t.Fatalf("used length exceeds chain %d", h)
	}
	return out
}

// recvFrame waits for the next frame in the guest's RX queue and returns
// it (vnet header included) and the chains it used.
func (r *rig) recvFrame() ([]byte, []virtiotest.Used) {
	r.t.Helper()
	first := r.rx.WaitUsed(r.t, 1)
	data := r.chainData(uint16(first[0].ID), first[0].Len)
	if len(data) < VnetHdrLen {
		r.t.Fatalf("RX entry %+v shorter than a vnet header", first[0])
	}
	nb := int(binary.LittleEndian.Uint16(data[numBuffersOff:]))
	if nb < 1 {
		r.t.Fatalf("num_buffers %d", nb)
	}
	used := append(first, r.rx.WaitUsed(r.t, nb-1)...)
	for _, u := range used[1:] {
		data = append(data, r.chainData(uint16(u.ID), u.Len)...)
	}
	return data, used
}

var rigs atomic.Int32

// uniqueID names each device's metrics group afresh, so that every test
// (and every -count repetition) starts from zero counters.
func uniqueID(t testing.TB) string {
	return t.Name() + "_" + strconv.Itoa(int(rigs.Add(1)))
}

func (r *rig) expectCount(name string, m *metrics.IncMetric, want uint64) {
	r.t.Helper()
	if got := m.Count(); got != want {
		r.t.Errorf("%s = %d, want %d", name, got, want)
	}
}

func TestIdentity(t *testing.T) {
	r := newRig(t, nil)
	d := r.dev
	if d.DeviceType() != virtio.TypeNet || d.DeviceType() != 1 {
		t.Fatalf("device type %v", d.DeviceType())
	}
	if s := d.QueueMaxSizes(); len(s) != 2 || s[0] != 256 || s[1] != 256 {
		t.Fatalf("queues %v", s)
	}
	// CSUM, GUEST_CSUM, GUEST_TSO4/6, GUEST_UFO, HOST_TSO4/6, HOST_UFO,
	// MRG_RXBUF, EVENT_IDX, VERSION_1.
	const want = 1<<0 | 1<<1 | 1<<7 | 1<<8 | 1<<10 | 1<<11 | 1<<12 | 1<<14 | 1<<15 | 1<<29 | 1<<32
	if f := d.AvailableFeatures(); f != want {
		t.Fatalf("features %#x, want %#x", f, want)
	}
	cfg := bytes.Repeat([]byte{9}, 16)
	d.ReadConfig(0, cfg)
	if !bytes.Equal(cfg, make([]byte, 16)) {
		t.Fatalf("config %x", cfg)
	}
	if metrics.Default.Net(d.ID()) != r.m || d.MTU() != 0 {
		t.Fatal("id or mtu")
	}
	if _, ok := d.GuestMAC(); ok {
		t.Fatal("a MAC without one configured")
	}
	if d.RxLimiter() == nil || d.TxLimiter() == nil || d.RxLimiter() == d.TxLimiter() {
		t.Fatal("limiters must be two distinct non-nil limiters")
	}
	cfgFails := virtiotest.Track(&r.m.CfgFails)
	d.WriteConfig(0, []byte{1, 2})
	d.ReadConfig(0, cfg[:2])
	if cfgFails.Get() != 1 || cfg[0] != 0 {
		t.Fatal("config write not refused")
	}
}

func TestMACAndMTU(t *testing.T) {
	mac, mtu := guestMAC, uint16(9000)
	r := newRig(t, func(c *Config) { c.GuestMAC, c.MTU = &mac, &mtu })
	d := r.dev
	f := d.AvailableFeatures()
	if f != baseFeatures|1<<FeatureMAC|1<<FeatureMTU {
		t.Fatalf("features %#x", f)
	}
	cfg := make([]byte, 12)
	d.ReadConfig(0, cfg)
	want := append(append([]byte{}, guestMAC[:]...), 0, 0, 0, 0, 0x28, 0x23)
	if !bytes.Equal(cfg, want) {
		t.Fatalf("config %x, want %x", cfg, want)
	}
	// Byte-wise reads, as a driver may do.
	b := make([]byte, 2)
	d.ReadConfig(10, b)
	if binary.LittleEndian.Uint16(b) != 9000 {
		t.Fatalf("mtu %x", b)
	}
	if m, ok := d.GuestMAC(); !ok || m != guestMAC || d.MTU() != 9000 {
		t.Fatal("accessors")
	}
	// The config keeps its own copy.
	mac[0] = 0xff
	d.ReadConfig(0, cfg[:1])
	if cfg[0] != guestMAC[0] {
		t.Fatal("config aliases the caller's MAC")
	}
}

func TestBadConfig(t *testing.T) {
	be, _ := newBackendPair(t)
	mtu := uint16(67)
	if _, err := New(Config{ID: "bad", Backend: be, MTU: &mtu}); err == nil || err.Error() != "MTU 67 is out of range [68, 65535]" {
		t.Fatalf("err %v", err)
	}
	if !be.closed {
		t.Fatal("New did not close the backend it owned")
	}
	if _, err := New(Config{ID: "bad"}); err == nil {
		t.Fatal("no error without a backend")
	}
	be2, _ := newBackendPair(t)
	mtu = 68
	d, err := New(Config{ID: "ok68", Backend: be2, MTU: &mtu})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}

func TestActivateOffload(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	if f, n := r.be.lastOffload(); n != 1 || f != tap.OffloadCSUM|tap.OffloadTSO4|tap.OffloadTSO6|tap.OffloadUFO {
		t.Fatalf("offload %#x (%d calls)", f, n)
	}
	r.dev.Reset()
	r.activate(1<<virtio.FeatureVersion1 | 1<<FeatureGuestCsum | 1<<FeatureGuestTSO6)
	if f, n := r.be.lastOffload(); n != 2 || f != tap.OffloadCSUM|tap.OffloadTSO6 {
		t.Fatalf("offload %#x (%d calls)", f, n)
	}
	r.dev.Reset()
	r.activate(1 << virtio.FeatureVersion1)
	if f, n := r.be.lastOffload(); n != 3 || f != 0 {
		t.Fatalf("offload %#x (%d calls)", f, n)
	}
}

func TestActivateErrors(t *testing.T) {
	r := newRig(t, nil)
	fails := virtiotest.Track(&r.m.ActivateFails)
	ring, _ := virtiotest.NewRing(r.mem, rxRingBase, 16)
	q := ring.Queue()
	if err := r.dev.Activate(r.mem, []*virtio.Queue{q}, r.irq); err == nil {
		t.Fatal("activated with one queue")
	}
	if err := r.dev.Activate(nil, []*virtio.Queue{q, q}, r.irq); err == nil {
		t.Fatal("activated without memory")
	}
	r.be.offloadErr = unix.EINVAL
	if err := r.dev.Activate(r.mem, []*virtio.Queue{q, ring.Queue()}, r.irq); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("activation despite TUNSETOFFLOAD failing: %v", err)
	}
	if r.dev.Activated() || fails.Get() != 3 {
		t.Fatalf("activated %v, activate_fails %d", r.dev.Activated(), fails.Get())
	}
	r.be.offloadErr = nil
	r.activate(featAll)
	if err := r.dev.Activate(r.mem, []*virtio.Queue{q, q}, r.irq); err == nil {
		t.Fatal("activated twice")
	}
	if err := r.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.Activate(r.mem, []*virtio.Queue{q, q}, r.irq); err == nil || r.dev.Activated() {
		t.Fatal("activated after Close")
	}
	if !r.be.closed {
		t.Fatal("Close left the backend open")
	}
	if err := r.dev.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// TestTx sends frames split over several descriptors and checks that each
// reaches the backend byte for byte, header included, in one write.
func TestTx(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	f1 := vnet(eth(hostMAC, guestMAC, pattern(1500, 1)))
	f2 := vnet(eth(hostMAC, guestMAC, pattern(MaxBufferSize-VnetHdrLen-ethHdrLen, 2)))
	r.sendTx(f1[:VnetHdrLen], f1[VnetHdrLen:100], f1[100:])
	r.sendTx(f2[:5], f2[5:40000], f2[40000:])
	r.kickTx()
	used := r.tx.WaitUsed(t, 2)
	for _, u := range used {
		if u.Len != 0 {
			t.Fatalf("TX used %+v, want length 0", u)
		}
	}
	if got := r.peer.recv(); !bytes.Equal(got, f1) {
		t.Fatalf("frame 1 differs (%d bytes, want %d)", len(got), len(f1))
	}
	if got := r.peer.recv(); !bytes.Equal(got, f2) {
		t.Fatalf("frame 2 differs (%d bytes, want %d)", len(got), len(f2))
	}
	r.expectCount("tx_packets_count", &r.m.TxPacketsCount, 2)
	r.expectCount("tx_count", &r.m.TxCount, 2)
	r.expectCount("tx_bytes_count", &r.m.TxBytesCount, uint64(len(f1)+len(f2)))
	if r.irq.Queue(TxIndex) == 0 {
		t.Fatal("no TX interrupt")
	}
	r.expectCount("tx_spoofed_mac_count", &r.m.TxSpoofedMacCount, 0)
}

func TestTxSpoofedMAC(t *testing.T) {
	mac := guestMAC
	r := newRig(t, func(c *Config) { c.GuestMAC = &mac })
	r.activate(featAll)
	good := vnet(eth(hostMAC, guestMAC, []byte("own")))
	other := [6]byte{0x02, 9, 9, 9, 9, 9}
	spoofed := vnet(eth(hostMAC, other, []byte("spoofed")))
	r.sendTx(good)
	r.sendTx(spoofed)
	r.sendTx(vnet([]byte{1, 2, 3})) // too short to have a source MAC
	r.kickTx()
	r.tx.WaitUsed(t, 3)
	// Counted, not filtered.
	for _, want := range [][]byte{good, spoofed, vnet([]byte{1, 2, 3})} {
		if got := r.peer.recv(); !bytes.Equal(got, want) {
			t.Fatalf("got %x, want %x", got, want)
		}
	}
	r.expectCount("tx_spoofed_mac_count", &r.m.TxSpoofedMacCount, 1)
}

func TestTxBadChains(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	// Oversized: one byte over the limit, over two descriptors.
	big := vnet(pattern(MaxBufferSize+1-VnetHdrLen, 3))
	r.sendTx(big[:40000], big[40000:])
	// Shorter than a vnet header.
	r.sendTx([]byte{1, 2, 3, 4, 5})
	// A device-writable buffer in a TX chain.
	a := r.alloc(64)
	r.tx.AddChain(virtiotest.Buffer{Addr: bufBase, Len: 20}, virtiotest.Buffer{Addr: a, Len: 64, Writable: true})
	// A buffer outside guest memory.
	r.tx.AddChain(virtiotest.Buffer{Addr: ramSize + 0x1000, Len: 64})
	ok := vnet(eth(hostMAC, guestMAC, []byte("still works")))
	r.sendTx(ok)
	r.kickTx()
	for _, u := range r.tx.WaitUsed(t, 5) {
		if u.Len != 0 {
			t.Fatalf("used %+v", u)
		}
	}
	if got := r.peer.recv(); !bytes.Equal(got, ok) {
		t.Fatalf("got %x", got)
	}
	r.dev.Reset()
	r.peer.expectNone()
	r.expectCount("tx_malformed_frames", &r.m.TxMalformedFrames, 2)
	r.expectCount("tx_fails", &r.m.TxFails, 2)
	r.expectCount("tx_packets_count", &r.m.TxPacketsCount, 1)
}

// TestRxMergeable: with MRG_RXBUF a frame fills the chains in order and
// num_buffers says how many it took.
func TestRxMergeable(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	// 50 chains of 1500 bytes: 75000 bytes in all, enough for the device
	// to read from the TAP. One chain is made of two descriptors.
	heads := []uint16{r.addRx(1000, 500)}
	for range 49 {
		heads = append(heads, r.addRx(1500))
	}
	r.kickRx()
	small := vnet(eth(guestMAC, hostMAC, pattern(100, 4)))
	spanning := vnet(eth(guestMAC, hostMAC, pattern(3000-VnetHdrLen-ethHdrLen+12, 5))) // 3012 bytes: 1500+1500+12
	r.peer.send(small)
	r.peer.send(spanning)

	got, used := r.recvFrame()
	if !bytes.Equal(got, withNumBuffers(small, 1)) || len(used) != 1 || used[0].ID != uint32(heads[0]) || used[0].Len != uint32(len(small)) {
		t.Fatalf("frame 1: used %+v, data %x", used, got[:min(len(got), 32)])
	}
	got, used = r.recvFrame()
	if !bytes.Equal(got, withNumBuffers(spanning, 3)) {
		t.Fatalf("frame 2 differs")
	}
	want := []virtiotest.Used{{ID: uint32(heads[1]), Len: 1500}, {ID: uint32(heads[2]), Len: 1500}, {ID: uint32(heads[3]), Len: 12}}
	for i := range want {
		if used[i] != want[i] {
			t.Fatalf("frame 2 used %+v, want %+v", used, want)
		}
	}
	r.expectCount("rx_packets_count", &r.m.RxPacketsCount, 2)
	r.expectCount("rx_count", &r.m.RxCount, 2)
	r.expectCount("rx_bytes_count", &r.m.RxBytesCount, uint64(len(small)+len(spanning)))
	if r.irq.Queue(RxIndex) == 0 {
		t.Fatal("no RX interrupt")
	}
	// The bytes past the frame in the last chain are untouched.
	if b := r.chainData(heads[3], 13)[12]; b != 0xaa {
		t.Fatalf("byte past the frame overwritten: %#x", b)
	}
}

// TestRxLargestFrame: a 65562-byte frame spans 44 chains of 1500.
func TestRxLargestFrame(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	for range 44 {
		r.addRx(1500)
	}
	r.kickRx()
	f := vnet(pattern(MaxBufferSize-VnetHdrLen, 6))
	r.peer.send(f)
	got, used := r.recvFrame()
	if len(used) != 44 || !bytes.Equal(got, withNumBuffers(f, 44)) {
		t.Fatalf("%d chains used", len(used))
	}
}

// TestRxWaitsForBuffers: the device reads from the TAP only once the
// guest has room for the largest frame.
func TestRxWaitsForBuffers(t *testing.T) {
	r := newRig(t, nil)
	noBuf := virtiotest.Track(&r.m.NoRxAvailBuffer)
	r.activate(featAll)
	// The activation's kick is taken, so the next one is not merged
	// with it.
	virtiotest.Eventually(t, "first RX event", func() bool { return r.m.RxQueueEventCount.Count() >= 1 })
	f := vnet(eth(guestMAC, hostMAC, []byte("waiting")))
	r.peer.send(f)
	// 65561 bytes: one short.
	r.addRx(65000)
	r.addRx(561)
	r.kickRx()
	// Both RX passes (activation's and ours) end short of buffers.
	virtiotest.Eventually(t, "no_rx_avail_buffer", func() bool { return noBuf.Get() == 2 })
	if n := r.be.reads.Load(); n != 0 {
		t.Fatalf("read from the TAP without room (%d reads)", n)
	}
	r.addRx(VnetHdrLen)
	r.kickRx()
	got, used := r.recvFrame()
	if !bytes.Equal(got, withNumBuffers(f, 1)) || used[0].Len != uint32(len(f)) {
		t.Fatalf("got %x", got)
	}
}

// TestRxNoMergeable: without MRG_RXBUF each frame goes into one chain, and
// chains smaller than a full frame are handed back unused.
func TestRxNoMergeable(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featSmall)
	fails := virtiotest.Track(&r.m.RxFails)
	tooSmall := r.addRx(1525)
	var heads []uint16
	// The device reads only while it holds 65562 bytes: 43 chains of
	// 1526 (65618 bytes), and one more for the second frame.
	for range 44 {
		heads = append(heads, r.addRx(1000, 526))
	}
	r.kickRx()
	u := r.rx.WaitUsed(t, 1)[0]
	if u.ID != uint32(tooSmall) || u.Len != 0 || fails.Get() != 1 {
		t.Fatalf("small chain: used %+v, rx_fails %d", u, fails.Get())
	}
	f1 := vnet(eth(guestMAC, hostMAC, pattern(1514-ethHdrLen, 7)))
	f2 := vnet(eth(guestMAC, hostMAC, []byte("x")))
	r.peer.send(f1)
	r.peer.send(f2)
	for i, f := range [][]byte{f1, f2} {
		got, used := r.recvFrame()
		if len(used) != 1 || used[0].ID != uint32(heads[i]) || !bytes.Equal(got, withNumBuffers(f, 1)) {
			t.Fatalf("frame %d: used %+v", i, used)
		}
	}
}

// TestRxNoMergeableOffloads: without MRG_RXBUF but with receive offloads,
// a chain must hold the largest frame.
func TestRxNoMergeableOffloads(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featNoMrg)
	small := r.addRx(MaxBufferSize - 1)
	big := r.addRx(40000, MaxBufferSize-40000)
	r.kickRx()
	if u := r.rx.WaitUsed(t, 1)[0]; u.ID != uint32(small) || u.Len != 0 {
		t.Fatalf("used %+v", u)
	}
	f := vnet(pattern(MaxBufferSize-VnetHdrLen, 8))
	r.peer.send(f)
	got, used := r.recvFrame()
	if used[0].ID != uint32(big) || !bytes.Equal(got, withNumBuffers(f, 1)) {
		t.Fatalf("used %+v", used)
	}
}

// TestRxFrameTooBig: without MRG_RXBUF, a frame larger than the chain it
// would go into is dropped, and the next one still arrives.
func TestRxFrameTooBig(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featSmall)
	fails := virtiotest.Track(&r.m.RxFails)
	h1 := r.addRx(40000)
	r.addRx(40000)
	r.kickRx()
	r.peer.send(vnet(pattern(50000, 9)))
	f := vnet(eth(guestMAC, hostMAC, []byte("fits")))
	r.peer.send(f)
	got, used := r.recvFrame()
	if used[0].ID != uint32(h1) || !bytes.Equal(got, withNumBuffers(f, 1)) {
		t.Fatalf("used %+v", used)
	}
	if fails.Get() != 1 {
		t.Fatalf("rx_fails %d", fails.Get())
	}
	if b := r.chainData(h1, uint32(len(f))+1)[len(f)]; b != 0xaa {
		t.Fatal("the dropped frame left bytes in the buffer")
	}
}

// TestRxBadFrames: frames shorter than a vnet header are dropped.
func TestRxBadFrames(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	fails := virtiotest.Track(&r.m.RxFails)
	r.addRx(MaxBufferSize)
	r.addRx(MaxBufferSize)
	r.kickRx()
	r.peer.send([]byte{1, 2, 3})
	f := vnet(nil) // a bare header is a frame
	r.peer.send(f)
	got, _ := r.recvFrame()
	if !bytes.Equal(got, withNumBuffers(f, 1)) || fails.Get() != 1 {
		t.Fatalf("got %x, rx_fails %d", got, fails.Get())
	}
}

func TestRxBadChains(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	fails := virtiotest.Track(&r.m.RxFails)
	a := r.alloc(64)
	ro, _ := r.rx.AddChain(virtiotest.Buffer{Addr: a, Len: 64}, virtiotest.Buffer{Addr: a, Len: 64, Writable: true})
	tiny := r.addRx(11)
	outside, _ := r.rx.AddChain(virtiotest.Buffer{Addr: ramSize - 8, Len: 64, Writable: true})
	r.kickRx()
	used := r.rx.WaitUsed(t, 3)
	for i, h := range []uint16{ro, tiny, outside} {
		if used[i].ID != uint32(h) || used[i].Len != 0 {
			t.Fatalf("used %+v", used)
		}
	}
	if fails.Get() != 3 {
		t.Fatalf("rx_fails %d", fails.Get())
	}
}

// TestMMDS: frames for the MMDS stack never reach the TAP, its replies
// reach the guest before TAP frames, and right after the TX batch.
func TestMMDS(t *testing.T) {
	mm := &fakeMMDS{}
	r := newRig(t, func(c *Config) { c.MMDS = mm })
	r.activate(featAll)
	accepted := virtiotest.Track(&metrics.Default.MMDS.RxAccepted)
	txFrames := virtiotest.Track(&metrics.Default.MMDS.TxFrames)

	// No RX buffers yet: a TAP frame waits in the socket, and the reply
	// to a request waits in the stack.
	tapFrame := vnet(eth(guestMAC, hostMAC, []byte("from the TAP")))
	r.peer.send(tapFrame)
	req := vnet(eth(mmdsMAC, guestMAC, []byte("GET /")))
	r.sendTx(req)
	r.kickTx()
	r.tx.WaitUsed(t, 1)
	if reqs := mm.requests(); len(reqs) != 1 || !bytes.Equal(reqs[0], req[VnetHdrLen:]) {
		t.Fatalf("MMDS got %x", reqs)
	}
	// Room for three frames: the reply comes first.
	r.addRx(MaxBufferSize)
	r.addRx(MaxBufferSize)
	r.addRx(MaxBufferSize)
	r.kickRx()
	got, _ := r.recvFrame()
	wantReply := append(make([]byte, VnetHdrLen), eth(guestMAC, mmdsMAC, []byte("reply:GET /"))...)
	wantReply[numBuffersOff] = 1
	if !bytes.Equal(got, wantReply) {
		t.Fatalf("first RX frame %q, want the MMDS reply", got)
	}
	if got, _ = r.recvFrame(); !bytes.Equal(got, withNumBuffers(tapFrame, 1)) {
		t.Fatalf("second RX frame %q, want the TAP frame", got)
	}
	// With room in the RX queue, a reply arrives without an RX kick.
	req2 := vnet(eth(mmdsMAC, guestMAC, []byte("GET /2")))
	r.sendTx(req2)
	r.kickTx()
	got, _ = r.recvFrame()
	if !bytes.Contains(got, []byte("reply:GET /2")) {
		t.Fatalf("RX frame %q", got)
	}
	if accepted.Get() != 2 || txFrames.Get() != 2 {
		t.Fatalf("mmds rx_accepted %d, tx_frames %d", accepted.Get(), txFrames.Get())
	}
	// Frames for others still go to the TAP.
	other := vnet(eth(hostMAC, guestMAC, []byte("not MMDS")))
	r.sendTx(other)
	r.kickTx()
	if got := r.peer.recv(); !bytes.Equal(got, other) {
		t.Fatalf("TAP got %q", got)
	}
	r.dev.Reset()
	r.peer.expectNone()
	r.expectCount("tx_packets_count", &r.m.TxPacketsCount, 1)
}

// TestMMDSNotRateLimited: frames the MMDS stack takes give their tokens
// back; the others are limited.
func TestMMDSNotRateLimited(t *testing.T) {
	mm := &fakeMMDS{}
	lim := ratelimit.New(nil, ratelimit.NewTokenBucket(2, 0, 1_000_000))
	r := newRig(t, func(c *Config) { c.MMDS, c.TxLimiter = mm, lim })
	r.activate(featAll)
	throttled := virtiotest.Track(&r.m.TxRateLimiterThrottled)
	for i := range 3 {
		r.sendTx(vnet(eth(mmdsMAC, guestMAC, []byte{byte(i)})))
	}
	var normal [][]byte
	for i := range 3 {
		f := vnet(eth(hostMAC, guestMAC, []byte{byte(i)}))
		normal = append(normal, f)
		r.sendTx(f)
	}
	r.kickTx()
	r.tx.WaitUsed(t, 5)
	virtiotest.Eventually(t, "throttling", func() bool { return throttled.Get() >= 1 })
	r.dev.Reset()
	for _, f := range normal[:2] {
		if got := r.peer.recv(); !bytes.Equal(got, f) {
			t.Fatalf("got %x, want %x", got, f)
		}
	}
	r.peer.expectNone()
	if len(mm.requests()) != 3 {
		t.Fatalf("MMDS got %d frames", len(mm.requests()))
	}
	if u, ok, _ := r.tx.PopUsed(); ok {
		t.Fatalf("throttled chain returned: %+v", u)
	}
}

// TestTxRateLimiter: one frame per 100 ms; a refused frame waits for the
// limiter's wake-up, and the device carries on by itself.
func TestTxRateLimiter(t *testing.T) {
	clk := &ratelimit.ManualClock{}
	lim := ratelimit.New(nil, ratelimit.NewTokenBucket(1, 0, 100)).WithClock(clk)
	r := newRig(t, func(c *Config) { c.TxLimiter = lim })
	r.activate(featAll)
	var frames [][]byte
	for i := range 3 {
		f := vnet(eth(hostMAC, guestMAC, pattern(200, byte(i))))
		frames = append(frames, f)
		r.sendTx(f)
	}
	r.kickTx()
	var throttled, events uint64
	for i := range 3 {
		if got := r.peer.recv(); !bytes.Equal(got, frames[i]) {
			t.Fatalf("frame %d altered", i)
		}
		if u := r.tx.WaitUsed(t, 1)[0]; u.Len != 0 {
			t.Fatalf("used %+v", u)
		}
		if i == 2 {
			break
		}
		// The next frame is refused (the clock stands still), and a kick
		// meanwhile is refused too.
		virtiotest.Eventually(t, "throttling", func() bool { return r.m.TxRateLimiterThrottled.Count() > throttled })
		throttled = r.m.TxRateLimiterThrottled.Count()
		r.kickTx()
		virtiotest.Eventually(t, "the kick", func() bool { return r.m.TxRateLimiterThrottled.Count() > throttled })
		throttled = r.m.TxRateLimiterThrottled.Count()
		clk.Jump(100 * time.Millisecond)
		virtiotest.Eventually(t, "the limiter's wake-up", func() bool { return r.m.TxRateLimiterEventCount.Count() > events })
		events = r.m.TxRateLimiterEventCount.Count()
	}
	r.dev.Reset()
	r.peer.expectNone()
}

// TestRxRateLimiter: the same on receive, with the bytes bucket.
func TestRxRateLimiter(t *testing.T) {
	clk := &ratelimit.ManualClock{}
	// 300 bytes per 100 ms: one 200-byte frame at a time.
	lim := ratelimit.New(ratelimit.NewTokenBucket(300, 0, 100), nil).WithClock(clk)
	r := newRig(t, func(c *Config) { c.RxLimiter = lim })
	r.activate(featAll)
	for range 4 {
		r.addRx(MaxBufferSize)
	}
	r.kickRx()
	var frames [][]byte
	for i := range 3 {
		f := vnet(eth(guestMAC, hostMAC, pattern(200-VnetHdrLen-ethHdrLen, byte(i))))
		frames = append(frames, f)
		r.peer.send(f)
	}
	var throttled, events uint64
	for i := range 3 {
		if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(frames[i], 1)) {
			t.Fatalf("frame %d altered", i)
		}
		if i == 2 {
			break
		}
		virtiotest.Eventually(t, "throttling", func() bool { return r.m.RxRateLimiterThrottled.Count() > throttled })
		throttled = r.m.RxRateLimiterThrottled.Count()
		clk.Jump(100 * time.Millisecond)
		virtiotest.Eventually(t, "the limiter's wake-up", func() bool { return r.m.RxEventRateLimiterCount.Count() > events })
		events = r.m.RxEventRateLimiterCount.Count()
	}
	r.expectCount("rx_packets_count", &r.m.RxPacketsCount, 3)
	r.expectCount("rx_bytes_count", &r.m.RxBytesCount, 600)
}

// TestLimiterPatch: an unlimited device's limiters take buckets later.
func TestLimiterPatch(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	r.dev.TxLimiter().UpdateBuckets(ratelimit.BucketUpdate{Keep: true},
		ratelimit.BucketUpdate{Bucket: ratelimit.NewTokenBucket(1, 0, 1_000_000)})
	f := vnet(eth(hostMAC, guestMAC, []byte("one")))
	r.sendTx(f)
	r.sendTx(f)
	r.kickTx()
	r.tx.WaitUsed(t, 1)
	virtiotest.Eventually(t, "throttling", func() bool { return r.m.TxRateLimiterThrottled.Count() >= 1 })
	r.dev.Reset()
	r.peer.recv()
	r.peer.expectNone()
}

// TestResetStopsGoroutines resets a device whose reader is blocked in Read
// and whose worker is throttled, and starts it again.
func TestResetStopsGoroutines(t *testing.T) {
	lim := ratelimit.New(nil, ratelimit.NewTokenBucket(1, 0, 1_000_000))
	r := newRig(t, func(c *Config) { c.TxLimiter = lim })
	base := runtime.NumGoroutine()
	r.activate(featAll)
	w := r.dev.life.Current()
	r.addRx(MaxBufferSize)
	r.kickRx()
	// The reader is asked for a frame and blocks.
	virtiotest.Eventually(t, "a blocked read", func() bool { return r.be.reads.Load() == 1 })
	f := vnet(eth(hostMAC, guestMAC, []byte("x")))
	r.sendTx(f)
	r.sendTx(f)
	r.kickTx()
	virtiotest.Eventually(t, "throttling", func() bool { return r.m.TxRateLimiterThrottled.Count() >= 1 })

	if err := r.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if w.Running() != 0 {
		t.Fatal("Reset returned before the goroutines exited")
	}
	if r.dev.Activated() || r.dev.AckedFeatures() != 0 {
		t.Fatal("still active after Reset")
	}
	virtiotest.WaitGoroutines(t, base)
	r.dev.QueueNotify(RxIndex)
	r.dev.QueueNotify(TxIndex)
	if runtime.NumGoroutine() > base {
		t.Fatal("a kick after Reset started a goroutine")
	}
	r.peer.recv() // the one frame sent before the limiter ran dry

	// A fresh start reads again: the deadline that stopped the reader is
	// gone.
	lim.UpdateBuckets(ratelimit.BucketUpdate{Keep: true}, ratelimit.BucketUpdate{})
	r.activate(featAll)
	r.addRx(MaxBufferSize)
	r.kickRx()
	in := vnet(eth(guestMAC, hostMAC, []byte("after reset")))
	r.peer.send(in)
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(in, 1)) {
		t.Fatalf("got %q", got)
	}
	r.sendTx(f)
	r.kickTx()
	if got := r.peer.recv(); !bytes.Equal(got, f) {
		t.Fatal("TX after reset")
	}
	if err := r.dev.Close(); err != nil {
		t.Fatal(err)
	}
	virtiotest.WaitGoroutines(t, base)
}

// TestResetWhileBusy resets while frames flow both ways.
func TestResetWhileBusy(t *testing.T) {
	r := newRig(t, nil)
	base := runtime.NumGoroutine()
	for i := range 20 {
		r.next = bufBase
		r.activate(featAll)
		for range 4 {
			r.addRx(MaxBufferSize)
		}
		for range 16 {
			r.sendTx(vnet(eth(hostMAC, guestMAC, pattern(1000, byte(i)))))
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 8 {
				r.peer.f.Write(vnet(pattern(500, 1)))
				r.dev.QueueNotify(RxIndex)
				r.dev.QueueNotify(TxIndex)
			}
		})
		r.kickTx()
		r.dev.Reset()
		wg.Wait()
		if r.dev.Activated() {
			t.Fatal("active after Reset")
		}
		// Drain both directions, so the sockets never fill.
		for _, f := range []*os.File{r.peer.f, r.be.f} {
			f.SetReadDeadline(time.Unix(1, 0))
			buf := make([]byte, MaxBufferSize)
			for {
				if _, err := f.Read(buf); err != nil {
					break
				}
			}
			f.SetReadDeadline(time.Time{})
		}
	}
	virtiotest.WaitGoroutines(t, base)
}

// TestReadErrors: a failing backend read is counted, and the device keeps
// going.
func TestReadErrors(t *testing.T) {
	be, p := newBackendPair(t)
	fb := &failingBackend{fakeBackend: be, fail: 3}
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	id := uniqueID(t)
	dev, err := New(Config{ID: id, Backend: fb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	r := &rig{t: t, mem: mem, dev: dev, be: be, peer: p, irq: &virtiotest.IRQ{}, m: metrics.Default.Net(id), next: bufBase}
	r.activate(featAll)
	r.addRx(MaxBufferSize)
	r.kickRx()
	f := vnet(eth(guestMAC, hostMAC, []byte("after errors")))
	r.peer.send(f)
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(f, 1)) {
		t.Fatalf("got %q", got)
	}
	r.expectCount("tap_read_fails", &r.m.TapReadFails, 3)
}

type failingBackend struct {
	*fakeBackend
	mu   sync.Mutex
	fail int
}

func (b *failingBackend) Read(p []byte) (int, error) {
	b.mu.Lock()
	fail := b.fail > 0
	if fail {
		b.fail--
	}
	b.mu.Unlock()
	if fail {
		return 0, unix.EIO
	}
	return b.fakeBackend.Read(p)
}

func TestWriteErrors(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll)
	r.peer.f.Close() // writes now fail with EPIPE... or ECONNRESET
	r.sendTx(vnet(eth(hostMAC, guestMAC, []byte("lost"))))
	r.kickTx()
	if u := r.tx.WaitUsed(t, 1)[0]; u.Len != 0 {
		t.Fatalf("used %+v", u)
	}
	r.expectCount("tap_write_fails", &r.m.TapWriteFails, 1)
	r.expectCount("tx_packets_count", &r.m.TxPacketsCount, 0)
}

// TestEventIdx: without EVENT_IDX (and with it) frames flow; the rings'
// notification fields are the transport's business, only the result is
// checked.
func TestNoEventIdx(t *testing.T) {
	r := newRig(t, nil)
	r.activate(featAll &^ (1 << virtio.FeatureEventIdx))
	r.addRx(MaxBufferSize)
	r.kickRx()
	f := vnet(eth(guestMAC, hostMAC, []byte("no event idx")))
	r.peer.send(f)
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(f, 1)) {
		t.Fatal("RX")
	}
	r.sendTx(f)
	r.kickTx()
	if got := r.peer.recv(); !bytes.Equal(got, f) {
		t.Fatal("TX")
	}
}

// openTestTap creates a throw-away TAP, or skips where the host does not
// allow it.
func openTestTap(t *testing.T, name string) *tap.Tap {
	t.Helper()
	tp, err := tap.Open(name, func(err error) string { return err.Error() })
	if err != nil {
		t.Skipf("cannot create a TAP here: %v", err)
	}
	return tp
}

// TestTapReset: on a real TAP the reader blocks on the poller and Reset
// wakes it.
func TestTapReset(t *testing.T) {
	tp := openTestTap(t, "sqnr"+strconv.Itoa(os.Getpid()%100000))
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	be := &countingBackend{Backend: NewTapBackend(tp)}
	dev, err := New(Config{ID: uniqueID(t), Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	base := runtime.NumGoroutine()
	r := &rig{t: t, mem: mem, dev: dev, irq: &virtiotest.IRQ{}, next: bufBase}
	r.activate(featAll) // TUNSETOFFLOAD with every offload the kernel must take
	r.addRx(MaxBufferSize)
	r.kickRx()
	virtiotest.Eventually(t, "a blocked read", func() bool { return be.reads.Load() == 1 })
	done := make(chan struct{})
	go func() { dev.Reset(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitGuard):
		t.Fatal("Reset hangs on a TAP read")
	}
	virtiotest.WaitGoroutines(t, base+1) // the Reset goroutine may still be exiting
}

// countingBackend counts the Read calls begun.
type countingBackend struct {
	Backend
	reads atomic.Int32
}

func (b *countingBackend) Read(p []byte) (int, error) {
	b.reads.Add(1)
	return b.Backend.Read(p)
}

// TestThroughMMIO brings the device up through the virtio-mmio transport
// as Linux's virtio_net does (features, config, both queues, DRIVER_OK)
// and moves a frame each way.
func TestThroughMMIO(t *testing.T) {
	mac, mtu := guestMAC, uint16(1500)
	r := newRig(t, func(c *Config) { c.GuestMAC, c.MTU = &mac, &mtu })
	tr, l := virtiotest.NewTransport(t, r.mem, r.dev)
	rd := func(off uint64) uint32 { return virtiotest.Read32(tr, off) }
	wr := func(off uint64, v uint32) { virtiotest.Write32(tr, off, v) }
	if rd(0x00) != mmio.MagicValue || rd(0x04) != 2 || rd(0x08) != 1 {
		t.Fatal("identification registers")
	}
	offered := virtiotest.Negotiate(tr, nil)
	if offered != baseFeatures|1<<FeatureMAC|1<<FeatureMTU {
		t.Fatalf("offered %#x", offered)
	}
	if r.dev.AckedFeatures() != offered {
		t.Fatalf("acked %#x", r.dev.AckedFeatures())
	}
	// The driver reads the MAC a byte at a time and the MTU as a u16.
	var got [6]byte
	for i := range got {
		tr.Read(0x100+uint64(i), got[i:i+1])
	}
	var m [2]byte
	tr.Read(0x100+10, m[:])
	if got != guestMAC || binary.LittleEndian.Uint16(m[:]) != 1500 {
		t.Fatalf("config mac %x mtu %x", got, m)
	}
	r.rx = virtiotest.RingAt(t, r.mem, rxRingBase, QueueSize)
	r.tx = virtiotest.RingAt(t, r.mem, txRingBase, QueueSize)
	r.chains = map[uint16][]virtiotest.Buffer{}
	for i, ring := range []*virtiotest.Ring{r.rx, r.tx} {
		wr(0x30, uint32(i))
		if rd(0x34) != QueueSize {
			t.Fatalf("queue %d max %d", i, rd(0x34))
		}
		virtiotest.SetupQueue(tr, uint32(i), ring)
	}
	wr(0x30, 2)
	if rd(0x34) != 0 {
		t.Fatal("a third queue")
	}
	// Linux fills the RX queue before DRIVER_OK.
	for range 2 {
		r.addRx(MaxBufferSize)
	}
	wr(0x70, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if !r.dev.Activated() {
		t.Fatalf("not activated, status %#x", rd(0x70))
	}
	if f, n := r.be.lastOffload(); n != 1 || f == 0 {
		t.Fatalf("offload %#x", f)
	}
	in := vnet(eth(guestMAC, hostMAC, []byte("in")))
	r.peer.send(in)
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(in, 1)) {
		t.Fatalf("RX %x", got)
	}
	out := vnet(eth(hostMAC, guestMAC, []byte("out")))
	r.sendTx(out)
	wr(0x50, TxIndex)
	if got := r.peer.recv(); !bytes.Equal(got, out) {
		t.Fatalf("TX %x", got)
	}
	virtiotest.Eventually(t, "interrupts", func() bool { return l.Count() >= 2 })
	wr(0x70, 0)
	if r.dev.Activated() || rd(0x70) != 0 {
		t.Fatal("reset through the status register")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestTapRoundTrip moves a frame each way between the guest and a real
// TAP, seen from the host through a packet socket on the interface.
func TestTapRoundTrip(t *testing.T) {
	name := "sqnt" + strconv.Itoa(os.Getpid()%100000)
	tp := openTestTap(t, name)
	// Keep the kernel's own IPv6 traffic off the interface.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skip(err)
	}
	defer unix.Close(ctl)
	ifr, _ := unix.NewIfreq(name)
	if err := unix.IoctlIfreq(ctl, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Skip(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(ctl, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Skipf("cannot bring %s up: %v", name, err)
	}
	ifr, _ = unix.NewIfreq(name)
	if err := unix.IoctlIfreq(ctl, unix.SIOCGIFINDEX, ifr); err != nil {
		t.Skip(err)
	}
	const etherType = 0x88b5
	pfd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(etherType)))
	if err != nil {
		t.Skipf("no packet socket: %v", err)
	}
	if err := unix.Bind(pfd, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: int(ifr.Uint32())}); err != nil {
		unix.Close(pfd)
		t.Skip(err)
	}
	host := os.NewFile(uintptr(pfd), "packet")
	defer host.Close()

	mem := virtiotest.MemoryAt(t, 0, ramSize)
	dev, err := New(Config{ID: uniqueID(t), Backend: NewTapBackend(tp)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	r := &rig{t: t, mem: mem, dev: dev, irq: &virtiotest.IRQ{}, next: bufBase}
	r.activate(featAll)
	for range 4 {
		r.addRx(MaxBufferSize)
	}
	r.kickRx()

	// Guest to host: a plain frame, with a vnet header that asks for
	// nothing.
	out := eth([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, guestMAC, []byte("guest to host"))
	r.sendTx(append(make([]byte, VnetHdrLen), out...))
	r.kickTx()
	host.SetReadDeadline(time.Now().Add(waitGuard))
	buf := make([]byte, 4096)
	n, err := host.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], out) {
		t.Fatalf("host got %x (%v), want %x", buf[:n], err, out)
	}

	// Host to guest: the frame arrives behind a vnet header.
	in := eth(guestMAC, hostMAC, []byte("host to guest"))
	if _, err := host.Write(in); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		got, used := r.recvFrame()
		if len(used) != 1 || binary.LittleEndian.Uint16(got[numBuffersOff:]) != 1 {
			t.Fatalf("used %+v", used)
		}
		if bytes.Equal(got[VnetHdrLen:], in) {
			return
		}
	}
	t.Fatal("the guest did not get the host's frame")
}
