package net

import (
	"bytes"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// newRigOn is newRig over existing guest memory, with its own backend:
// the device a restore builds for the same VM.
func newRigOn(t testing.TB, mem *memory.Guest, edit func(*Config)) *rig {
	t.Helper()
	be, p := newBackendPair(t)
	cfg := Config{ID: uniqueID(t), Backend: be}
	if edit != nil {
		edit(&cfg)
	}
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return &rig{t: t, mem: mem, dev: dev, be: be, peer: p, irq: &virtiotest.IRQ{}, m: metrics.Default.Net(cfg.ID), next: bufBase,
		chains: map[uint16][]virtiotest.Buffer{}}
}

// follow makes n, a restored device's rig, use r's driver rings.
func (n *rig) follow(r *rig) {
	n.rx, n.tx, n.chains, n.next = r.rx, r.tx, r.chains, r.next
}

// liveMMIO puts the device behind a transport and brings it up as Linux
// does, with the features acknowledged and rxChains RX chains of rxLen
// bytes offered before DRIVER_OK.
func (r *rig) liveMMIO(features uint64, rxChains int, rxLen uint32) *mmio.Transport {
	r.t.Helper()
	tr, _ := virtiotest.NewTransport(r.t, r.mem, r.dev)
	r.bringUp(tr, features, rxChains, rxLen)
	return tr
}

// bringUp is liveMMIO on an existing transport.
func (r *rig) bringUp(tr *mmio.Transport, features uint64, rxChains int, rxLen uint32) {
	r.t.Helper()
	virtiotest.Negotiate(tr, func(uint64) uint64 { return features })
	r.rx = virtiotest.RingAt(r.t, r.mem, rxRingBase, QueueSize)
	r.tx = virtiotest.RingAt(r.t, r.mem, txRingBase, QueueSize)
	r.chains = map[uint16][]virtiotest.Buffer{}
	virtiotest.SetupQueue(tr, RxIndex, r.rx)
	virtiotest.SetupQueue(tr, TxIndex, r.tx)
	for range rxChains {
		r.addRx(rxLen)
	}
	virtiotest.Write32(tr, 0x70, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if !r.dev.Activated() {
		r.t.Fatal("not activated")
	}
}

func notify(tr *mmio.Transport, q uint32) { virtiotest.Write32(tr, mmio.NotifyOffset, q) }

// gateBackend holds the device's first Write until release.
type gateBackend struct {
	Backend
	once             sync.Once
	entered, release chan struct{}
}

func (g *gateBackend) Write(p []byte) (int, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Backend.Write(p)
}

func expectNoUsed(t *testing.T, rings ...*virtiotest.Ring) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	for _, ring := range rings {
		if u, ok, _ := ring.PopUsed(); ok {
			t.Fatalf("unexpected used entry %+v", u)
		}
	}
}

func expectHeads(t *testing.T, what string, used []virtiotest.Used, heads []uint16) {
	t.Helper()
	if len(used) != len(heads) {
		t.Fatalf("%s: %d used entries, want %d: %+v", what, len(used), len(heads), used)
	}
	for i, u := range used {
		if u.ID != uint32(heads[i]) {
			t.Fatalf("%s: used[%d] = %+v, want head %d", what, i, u, heads[i])
		}
	}
}

// TestSnapshotMidStream: the device is suspended while it sends a frame
// and holds RX chains. Suspend waits for the frame and returns its chain;
// the other TX chains stay on the queue, the RX chains are kept in the
// device's state. A new device restored from the snapshot (with the MAC
// and MTU the guest saw) sends the rest, and delivers the next frames
// into the held RX chains, first held first: the driver sees each chain
// used exactly once, the used rings going on where they were.
func TestSnapshotMidStream(t *testing.T) {
	mac, mtu := guestMAC, uint16(1500)
	gate := &gateBackend{entered: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, func(c *Config) {
		c.GuestMAC, c.MTU = &mac, &mtu
		gate.Backend = c.Backend
		c.Backend = gate
	})
	// 40 chains of 2 KiB: room for the largest frame, so the device reads.
	tr := r.liveMMIO(featAll|1<<FeatureMAC|1<<FeatureMTU, 40, 2048)
	rxHeads := []uint16{0}
	for i := range uint16(39) {
		rxHeads = append(rxHeads, i+1)
	}

	in1 := vnet(eth(guestMAC, hostMAC, []byte("first")))
	r.peer.send(in1)
	got, used := r.recvFrame()
	if !bytes.Equal(got, withNumBuffers(in1, 1)) {
		t.Fatalf("RX %x", got)
	}
	rxUsed := used

	var txHeads [][]byte
	var txH []uint16
	for i := range 5 {
		f := vnet(eth(hostMAC, guestMAC, []byte{'o', 'u', 't', byte('0' + i)}))
		txHeads = append(txHeads, f)
		txH = append(txH, r.sendTx(f))
	}
	notify(tr, TxIndex)
	<-gate.entered // sending frame 0
	w := r.dev.life.Current()
	suspended := make(chan struct{})
	go func() {
		tr.Suspend()
		close(suspended)
	}()
	virtiotest.Eventually(t, "the worker to be told to stop", w.Stopping)
	close(gate.release)
	<-suspended
	txUsed := r.tx.PopAllUsed(t)
	expectHeads(t, "TX before suspend", txUsed, txH[:1])
	if got := r.peer.recv(); !bytes.Equal(got, txHeads[0]) {
		t.Fatalf("TX %x", got)
	}

	// While paused the driver adds an RX and a TX chain: nothing moves.
	rxHeads = append(rxHeads, r.addRx(2048))
	f := vnet(eth(hostMAC, guestMAC, []byte("out5")))
	txHeads = append(txHeads, f)
	txH = append(txH, r.sendTx(f))
	notify(tr, RxIndex)
	notify(tr, TxIndex)
	expectNoUsed(t, r.rx, r.tx)

	data := virtiotest.SaveJSON(t, tr)
	var saved struct{ Device []byte }
	json.Unmarshal(data, &saved)
	var st state
	if err := json.Unmarshal(saved.Device, &st); err != nil || len(st.RxChains) != 39 || st.RxChains[0].Head != 1 {
		t.Fatalf("saved device state %s (%v)", saved.Device, err)
	}

	// The new device is configured without MAC and MTU: the guest's view
	// comes from the snapshot.
	n := newRigOn(t, r.mem, nil)
	n.follow(r)
	ntr, nline := virtiotest.NewTransport(t, n.mem, n.dev)
	virtiotest.RestoreJSON(t, ntr, data)
	if again := virtiotest.SaveJSON(t, ntr); !bytes.Equal(again, data) {
		t.Fatalf("restored state saves as\n%s\nwant\n%s", again, data)
	}
	if m, ok := n.dev.GuestMAC(); !ok || m != guestMAC || n.dev.MTU() != 1500 {
		t.Fatal("MAC and MTU not restored")
	}
	expectNoUsed(t, r.rx, r.tx)
	if err := ntr.Resume(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(txHeads); i++ {
		if got := n.peer.recv(); !bytes.Equal(got, txHeads[i]) {
			t.Fatalf("TX %d: %x", i, got)
		}
	}
	txUsed = append(txUsed, r.tx.WaitUsed(t, 5)...)
	expectHeads(t, "TX", txUsed, txH)

	for i := range 3 {
		in := vnet(eth(guestMAC, hostMAC, []byte{'i', 'n', byte('0' + i)}))
		n.peer.send(in)
		got, used := n.recvFrame()
		if !bytes.Equal(got, withNumBuffers(in, 1)) {
			t.Fatalf("RX %d: %x", i, got)
		}
		rxUsed = append(rxUsed, used...)
	}
	expectHeads(t, "RX", rxUsed, rxHeads[:4])
	virtiotest.Eventually(t, "an interrupt", func() bool { return nline.Count() > 0 })
	r.peer.expectNone()
	if idx, _ := r.tx.UsedIdx(); idx != 6 {
		t.Fatalf("TX used index %d", idx)
	}
}

// TestPauseResume: a suspended device moves nothing; on resume it keeps
// its RX chains and the frame it held back, and serves what the driver
// added meanwhile.
func TestPauseResume(t *testing.T) {
	clk := &ratelimit.ManualClock{}
	// 300 bytes per 100 ms: one 200-byte frame at a time.
	lim := ratelimit.New(ratelimit.NewTokenBucket(300, 0, 100), nil).WithClock(clk)
	r := newRig(t, func(c *Config) { c.RxLimiter = lim })
	tr := r.liveMMIO(featAll, 4, MaxBufferSize)
	var frames [][]byte
	for i := range 2 {
		f := vnet(eth(guestMAC, hostMAC, pattern(200-VnetHdrLen-ethHdrLen, byte(i))))
		frames = append(frames, f)
		r.peer.send(f)
	}
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(frames[0], 1)) {
		t.Fatal("frame 0")
	}
	// Frame 1 is read and held back by the limiter.
	virtiotest.Eventually(t, "throttling", func() bool { return r.m.RxRateLimiterThrottled.Count() > 0 })
	tr.Suspend()
	h := r.sendTx(vnet(eth(hostMAC, guestMAC, []byte("paused"))))
	notify(tr, TxIndex)
	clk.Jump(100 * time.Millisecond)
	expectNoUsed(t, r.rx, r.tx)
	if err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(frames[1], 1)) {
		t.Fatal("frame held back across the pause lost or altered")
	}
	expectHeads(t, "TX", r.tx.WaitUsed(t, 1), []uint16{h})
	if got := r.peer.recv(); !bytes.Equal(got[VnetHdrLen+ethHdrLen:], []byte("paused")) {
		t.Fatalf("TX %x", got)
	}
	r.expectCount("rx_packets_count", &r.m.RxPacketsCount, 2)
}

// TestSnapshotPendingFrame: a frame the limiter held back moves with the
// snapshot and reaches the guest from the restored device.
func TestSnapshotPendingFrame(t *testing.T) {
	lim := ratelimit.New(ratelimit.NewTokenBucket(300, 0, 100), nil).WithClock(&ratelimit.ManualClock{})
	r := newRig(t, func(c *Config) { c.RxLimiter = lim })
	tr := r.liveMMIO(featAll, 4, MaxBufferSize)
	var frames [][]byte
	for i := range 2 {
		f := vnet(eth(guestMAC, hostMAC, pattern(200-VnetHdrLen-ethHdrLen, byte(i))))
		frames = append(frames, f)
		r.peer.send(f)
	}
	r.recvFrame()
	virtiotest.Eventually(t, "throttling", func() bool { return r.m.RxRateLimiterThrottled.Count() > 0 })
	data := virtiotest.SaveJSON(t, tr)

	n := newRigOn(t, r.mem, nil)
	n.follow(r)
	ntr, _ := virtiotest.NewTransport(t, n.mem, n.dev)
	virtiotest.RestoreJSON(t, ntr, data)
	if b := n.dev.RxLimiter().State().Bandwidth; b == nil || b.Size != 300 || b.Budget != 100 {
		t.Fatalf("rx limiter %+v", b)
	}
	if err := ntr.Resume(); err != nil {
		t.Fatal(err)
	}
	// The restored limiter refills in real time.
	if got, _ := n.recvFrame(); !bytes.Equal(got, withNumBuffers(frames[1], 1)) {
		t.Fatal("held-back frame lost or altered")
	}
}

// TestSuspendedReset: a driver reset while suspended forgets the held
// chains; the driver starts afresh.
func TestSuspendedReset(t *testing.T) {
	r := newRig(t, nil)
	tr := r.liveMMIO(featAll, 40, 2048)
	// The device reads from the TAP once it holds room for any frame.
	virtiotest.Eventually(t, "RX chains held", func() bool { return r.be.reads.Load() > 0 })
	tr.Suspend()
	r.dev.life.Exclusive(func(*worker) {
		if len(r.dev.kept.rx) != 40 {
			t.Errorf("%d chains kept", len(r.dev.kept.rx))
		}
	})
	virtiotest.Write32(tr, 0x70, 0)
	r.dev.life.Exclusive(func(*worker) {
		if len(r.dev.kept.rx) != 0 {
			t.Error("held chains survive a reset")
		}
	})
	if err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	r.next = bufBase
	r.bringUp(tr, featAll, 40, 2048)
	in := vnet(eth(guestMAC, hostMAC, []byte("again")))
	r.peer.send(in)
	if got, used := r.recvFrame(); !bytes.Equal(got, withNumBuffers(in, 1)) || used[0].ID != 0 {
		t.Fatalf("RX %x %+v", got, used)
	}
}

// TestStateRoundTrip: a device's state saves, restores and saves again to
// the same bytes; MAC and MTU follow the snapshot either way.
func TestStateRoundTrip(t *testing.T) {
	mac, mtu := guestMAC, uint16(9000)
	a := newRig(t, func(c *Config) { c.GuestMAC, c.MTU = &mac, &mtu })
	data, err := a.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b := newRig(t, nil)
	if err := b.dev.RestoreState(data); err != nil {
		t.Fatal(err)
	}
	if again, _ := b.dev.SaveState(); !bytes.Equal(again, data) {
		t.Fatalf("round trip %s, want %s", again, data)
	}
	if b.dev.AvailableFeatures() != a.dev.AvailableFeatures() {
		t.Fatal("features do not follow the MAC and MTU")
	}
	cfgA, cfgB := make([]byte, configSize), make([]byte, configSize)
	a.dev.ReadConfig(0, cfgA)
	b.dev.ReadConfig(0, cfgB)
	if !bytes.Equal(cfgA, cfgB) {
		t.Fatalf("config %x, want %x", cfgB, cfgA)
	}
	// And back to none.
	data, _ = newRig(t, nil).dev.SaveState()
	if err := b.dev.RestoreState(data); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.dev.GuestMAC(); ok || b.dev.MTU() != 0 || b.dev.AvailableFeatures() != baseFeatures {
		t.Fatal("MAC or MTU left over")
	}
	// A running device cannot be saved, nor an active one restored.
	b.activate(featAll)
	if _, err := b.dev.SaveState(); err == nil {
		t.Fatal("saved a running device")
	}
	b.dev.Suspend()
	if err := b.dev.RestoreState(data); err == nil {
		t.Fatal("restored an active device")
	}
}

// TestRestoreCorrupt: a corrupt blob is an error from RestoreState, and
// held chains that do not fit the queue or memory make the transport's
// restore fail.
func TestRestoreCorrupt(t *testing.T) {
	r := newRig(t, nil)
	lim := `"rx_rate_limiter":{},"tx_rate_limiter":{}`
	for _, b := range []string{
		"", "null", "{}", "[]", `{"mtu":67,` + lim + `}`, `{"mtu":1500}`, `{"mtu":1500,"rx_rate_limiter":{}}`,
		`{"guest_mac":[1,2,3,4,5,6],` + lim + `}`, `{"guest_mac":"x",` + lim + `}`, `{"guest_mac":"06:00:ac:10:00:0g",` + lim + `}`,
		`{"guest_mac":"06:00:ac:10:00-02",` + lim + `}`, `{"guest_mac":"06:00:ac:10:00:+2",` + lim + `}`, `{"y":1,` + lim + `}`, `{` + lim + `} 1`,
		`{"rx_chains":[{"head":0,"buffers":[]}],` + lim + `}`,
		`{"rx_chains":[{"head":0,"buffers":[{"addr":0,"len":4294967295},{"addr":0,"len":1}]}],` + lim + `}`,
		`{"rx_rate_limiter":{"Ops":{"Size":1}},"tx_rate_limiter":{}}`,
		`{"tap_frame":"` + string(bytes.Repeat([]byte("AAAA"), MaxBufferSize/3+1)) + `",` + lim + `}`,
	} {
		if err := r.dev.RestoreState([]byte(b)); err == nil {
			t.Errorf("restored %q", b)
		}
	}

	a := newRig(t, nil)
	tr := a.liveMMIO(featSmall, 2, 2048)
	tr.Suspend()
	good, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	for _, chains := range []string{
		`[{"head":0,"buffers":[{"addr":8388600,"len":2048}]}]`,                                                // outside RAM
		`[{"head":256,"buffers":[{"addr":65536,"len":2048}]}]`,                                                // head out of the queue
		`[{"head":3,"buffers":[{"addr":65536,"len":2048}]},{"head":3,"buffers":[{"addr":65536,"len":2048}]}]`, // twice
		`[{"head":3,"buffers":[{"addr":65536,"len":100}]}]`,                                                   // shorter than the minimum
	} {
		s := good
		s.Device = []byte(`{"guest_mac":null,"mtu":0,` + lim + `,"rx_chains":` + chains + `,"tap_frame":null,"mmds_frame":null}`)
		n := newRigOn(t, a.mem, nil)
		ntr, _ := virtiotest.NewTransport(t, n.mem, n.dev)
		if err := ntr.RestoreState(s); err == nil {
			t.Errorf("restored held chains %s", chains)
		}
	}
}

// lateBackend's Read blocks until a read deadline in the past, then
// returns frame: a frame that arrives just as the device stops.
type lateBackend struct {
	Backend
	mu    sync.Mutex
	frame []byte
	wake  chan struct{}
	reads chan struct{} // a value per Read begun
}

func (b *lateBackend) ch() chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	return b.wake
}

func (b *lateBackend) Read(p []byte) (int, error) {
	b.reads <- struct{}{}
	<-b.ch()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.frame == nil {
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(p, b.frame)
	b.frame = nil
	return n, nil
}

func (b *lateBackend) SetReadDeadline(t time.Time) error {
	c := b.ch()
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.IsZero() {
		b.wake = nil
	} else if t.Before(time.Now()) {
		close(c)
		b.wake = make(chan struct{})
		close(b.wake) // until cleared
	}
	return nil
}

// TestSuspendKeepsLateFrame: a frame the reader gets as the device stops
// is kept, and delivered on resume.
func TestSuspendKeepsLateFrame(t *testing.T) {
	in := vnet(eth(guestMAC, hostMAC, []byte("just in time")))
	late := &lateBackend{frame: in, reads: make(chan struct{}, 16)}
	r := newRig(t, func(c *Config) {
		late.Backend = c.Backend
		c.Backend = late
	})
	tr := r.liveMMIO(featAll, 4, MaxBufferSize)
	<-late.reads // the reader waits in Read
	tr.Suspend()
	r.dev.life.Exclusive(func(*worker) {
		if !bytes.Equal(r.dev.kept.tapPending, in) {
			t.Errorf("kept frame %x", r.dev.kept.tapPending)
		}
	})
	if err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.recvFrame(); !bytes.Equal(got, withNumBuffers(in, 1)) {
		t.Fatalf("RX %x", got)
	}
}
