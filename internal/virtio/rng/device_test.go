package rng

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

const (
	ramSize  = 0x200000
	ringBase = 0x10000
	bufBase  = 0x40000 // request buffers from here on
)

const (
	sAck  = virtio.StatusAcknowledge
	sDrv  = sAck | virtio.StatusDriver
	sFeat = sDrv | virtio.StatusFeaturesOK
	sLive = sFeat | virtio.StatusDriverOK
)

// em is the metrics group the device counts in. Tests compare deltas and
// do not run in parallel, so each sees only its own device's counts.
var em = &metrics.Default.Entropy

// line is the transport's interrupt line; it counts triggers.
type line struct{ n atomic.Int32 }

func (l *line) Trigger() error { l.n.Add(1); return nil }

type rig struct {
	t    *testing.T
	mem  *memory.Guest
	dev  *Device
	line *line
	tr   *mmio.Transport
	ring *virtiotest.Ring
}

func newRig(t *testing.T, lim Limiter) *rig {
	t.Helper()
	mem, err := virtiotest.NewMemory(0, ramSize)
	if err != nil {
		t.Fatal(err)
	}
	dev := New(lim)
	l := &line{}
	tr, err := mmio.New(mem, dev, l)
	if err != nil {
		t.Fatal(err)
	}
	// Stop the worker before unmapping the memory it uses.
	t.Cleanup(func() {
		dev.Reset()
		mem.Close()
	})
	return &rig{t: t, mem: mem, dev: dev, line: l, tr: tr}
}

func (r *rig) rd(off uint64) uint32 {
	var b [4]byte
	r.tr.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) wr(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.tr.Write(off, b[:])
}

func (r *rig) expectStatus(want uint32) {
	r.t.Helper()
	if got := r.rd(0x70); got != want {
		r.t.Fatalf("status = %#x, want %#x", got, want)
	}
}

// linuxInit probes and initialises the device as drivers/virtio/
// virtio_mmio.c and virtio.c do, with a fresh queue of size entries; it
// leaves the device live.
func (r *rig) linuxInit(size uint16) {
	r.t.Helper()
	ring, err := virtiotest.NewRing(r.mem, ringBase, size)
	if err != nil {
		r.t.Fatal(err)
	}
	r.linuxInitRing(ring)
}

// linuxInitRing is linuxInit with a ring the driver has already laid out.
func (r *rig) linuxInitRing(ring *virtiotest.Ring) {
	r.t.Helper()
	if r.rd(0x00) != mmio.MagicValue || r.rd(0x04) != 2 || r.rd(0x08) != 4 || r.rd(0x0c) != 0 {
		r.t.Fatal("bad identification registers")
	}
	r.wr(0x70, 0)
	r.wr(0x70, sAck)
	r.wr(0x70, sDrv)
	r.wr(0x14, 1)
	hi := r.rd(0x10)
	r.wr(0x14, 0)
	lo := r.rd(0x10)
	if offered := uint64(hi)<<32 | uint64(lo); offered != 1<<virtio.FeatureVersion1 {
		r.t.Fatalf("offered features %#x, want VERSION_1 only", offered)
	}
	r.wr(0x24, 1)
	r.wr(0x20, 1) // VERSION_1
	r.wr(0x24, 0)
	r.wr(0x20, 0)
	r.wr(0x70, sFeat)
	r.expectStatus(sFeat)
	if r.dev.AckedFeatures() != 1<<virtio.FeatureVersion1 {
		r.t.Fatalf("acked features %#x", r.dev.AckedFeatures())
	}
	// virtio_mmio's setup_vq for each queue the driver wants (one), after
	// checking there is no second one.
	r.wr(0x30, 1)
	if r.rd(0x34) != 0 {
		r.t.Fatal("a second queue is offered")
	}
	r.wr(0x30, 0)
	if r.rd(0x44) != 0 {
		r.t.Fatal("queue ready before setup")
	}
	if m := r.rd(0x34); m != QueueSize {
		r.t.Fatalf("queue num max %d, want %d", m, QueueSize)
	}
	r.wr(0x38, uint32(ring.Size))
	r.wr(0x80, uint32(ring.Desc))
	r.wr(0x84, uint32(ring.Desc>>32))
	r.wr(0x90, uint32(ring.Avail))
	r.wr(0x94, uint32(ring.Avail>>32))
	r.wr(0xa0, uint32(ring.Used))
	r.wr(0xa4, uint32(ring.Used>>32))
	r.wr(0x44, 1)
	r.wr(0x70, sLive)
	r.expectStatus(sLive)
	if !r.dev.Activated() {
		r.t.Fatal("not activated by DRIVER_OK")
	}
	r.ring = ring
}

func (r *rig) kick() { r.wr(0x50, 0) }

func (r *rig) add(bufs ...virtiotest.Buffer) uint16 {
	r.t.Helper()
	h, err := r.ring.AddChain(bufs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

// waitUsed waits for n used entries and returns them.
func (r *rig) waitUsed(n int) []virtiotest.Used {
	r.t.Helper()
	var out []virtiotest.Used
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n {
		u, ok, err := r.ring.PopUsed()
		if err != nil {
			r.t.Fatal(err)
		}
		if ok {
			out = append(out, u)
			continue
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("got %d used entries, want %d: %+v", len(out), n, out)
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

// expectNoUsed checks that nothing is returned within a short while.
func (r *rig) expectNoUsed() {
	r.t.Helper()
	time.Sleep(20 * time.Millisecond)
	if u, ok, _ := r.ring.PopUsed(); ok {
		r.t.Fatalf("unexpected used entry %+v", u)
	}
}

func (r *rig) bytesAt(addr uint64, n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if err := r.mem.ReadAt(b, addr); err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *rig) fill(addr uint64, n int, v byte) {
	r.t.Helper()
	if err := r.mem.WriteAt(bytes.Repeat([]byte{v}, n), addr); err != nil {
		r.t.Fatal(err)
	}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// delta snapshots a counter, for "grew by" checks.
type delta struct {
	m    *metrics.IncMetric
	base uint64
}

func track(m *metrics.IncMetric) delta  { return delta{m, m.Count()} }
func (d delta) get() uint64             { return d.m.Count() - d.base }
func (d delta) is(n uint64) func() bool { return func() bool { return d.get() == n } }

func allZero(b []byte) bool { return !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) }

func TestIdentity(t *testing.T) {
	d := New(nil)
	if d.DeviceType() != virtio.TypeRNG || d.DeviceType() != 4 {
		t.Fatalf("device type %v", d.DeviceType())
	}
	if d.AvailableFeatures() != 1<<virtio.FeatureVersion1 {
		t.Fatalf("features %#x", d.AvailableFeatures())
	}
	if s := d.QueueMaxSizes(); len(s) != 1 || s[0] != 256 {
		t.Fatalf("queues %v", s)
	}
	d.WriteConfig(0, []byte{1, 2, 3, 4})
	cfg := []byte{9, 9, 9, 9}
	d.ReadConfig(0, cfg)
	if !allZero(cfg) {
		t.Fatalf("config space reads %v", cfg)
	}
	if d.Activated() {
		t.Fatal("active when new")
	}
	d.QueueNotify(0) // ignored before activation
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
}

func TestRequest(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	count, got, fails := track(&em.EntropyEventCount), track(&em.EntropyBytes), track(&em.EntropyEventFails)

	const n = 64
	r.fill(bufBase, n+16, 0)
	r.fill(bufBase+n, 16, 0xaa) // guard after the buffer
	head := r.add(virtiotest.Buffer{Addr: bufBase, Len: n, Writable: true})
	r.kick()
	u := r.waitUsed(1)[0]
	if u.ID != uint32(head) || u.Len != n {
		t.Fatalf("used %+v, want {%d %d}", u, head, n)
	}
	if allZero(r.bytesAt(bufBase, n)) {
		t.Fatal("request buffer left zero")
	}
	if !bytes.Equal(r.bytesAt(bufBase+n, 16), bytes.Repeat([]byte{0xaa}, 16)) {
		t.Fatal("write past the buffer")
	}
	eventually(t, "interrupt", func() bool { return r.line.n.Load() == 1 })
	if r.rd(0x60) != mmio.InterruptUsedRing {
		t.Fatalf("interrupt status %#x", r.rd(0x60))
	}
	r.wr(0x64, mmio.InterruptUsedRing)
	if r.rd(0x60) != 0 {
		t.Fatal("interrupt not acknowledged")
	}
	if count.get() != 1 || got.get() != n || fails.get() != 0 {
		t.Fatalf("metrics: events %d, bytes %d, fails %d", count.get(), got.get(), fails.get())
	}

	// A second request in the same buffer gets fresh bytes.
	first := r.bytesAt(bufBase, n)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: n, Writable: true})
	r.kick()
	if u := r.waitUsed(1)[0]; u.Len != n {
		t.Fatalf("second request used %+v", u)
	}
	if bytes.Equal(first, r.bytesAt(bufBase, n)) {
		t.Fatal("same bytes twice")
	}
}

func TestSeveralChainsOneNotify(t *testing.T) {
	r := newRig(t, nil)
	// The chains are all available before the worker's first look (the
	// transport's notification at activation), so the batch and its one
	// interrupt do not depend on scheduling.
	ring, err := virtiotest.NewRing(r.mem, ringBase, 256)
	if err != nil {
		t.Fatal(err)
	}
	r.ring = ring
	count, got := track(&em.EntropyEventCount), track(&em.EntropyBytes)
	type req struct {
		bufs []virtiotest.Buffer
		want uint32
	}
	w := func(addr uint64, n uint32) virtiotest.Buffer {
		return virtiotest.Buffer{Addr: addr, Len: n, Writable: true}
	}
	reqs := []req{
		{[]virtiotest.Buffer{w(bufBase, 10)}, 10},
		{[]virtiotest.Buffer{w(bufBase+0x1000, 128), w(bufBase+0x2000, 128), w(bufBase+0x3000, 256)}, 512},
		{[]virtiotest.Buffer{w(bufBase+0x4000, 20)}, 20},
	}
	heads := make([]uint16, len(reqs))
	for i, q := range reqs {
		heads[i] = r.add(q.bufs...)
	}
	r.linuxInitRing(ring)
	r.kick() // finds nothing left
	used := r.waitUsed(len(reqs))
	for i, u := range used {
		if u.ID != uint32(heads[i]) || u.Len != reqs[i].want {
			t.Fatalf("used[%d] = %+v, want {%d %d}", i, u, heads[i], reqs[i].want)
		}
		for _, b := range reqs[i].bufs {
			if allZero(r.bytesAt(b.Addr, int(b.Len))) {
				t.Fatalf("buffer at %#x left zero", b.Addr)
			}
		}
	}
	if count.get() != 3 || got.get() != 542 {
		t.Fatalf("metrics: events %d, bytes %d", count.get(), got.get())
	}
	// One batch, one interrupt.
	eventually(t, "interrupt", func() bool { return r.line.n.Load() >= 1 })
	time.Sleep(10 * time.Millisecond)
	if n := r.line.n.Load(); n != 1 {
		t.Fatalf("%d interrupts for one batch", n)
	}
}

func TestBadChains(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	count, got, fails := track(&em.EntropyEventCount), track(&em.EntropyBytes), track(&em.EntropyEventFails)

	r.fill(bufBase, 0x3000, 0)
	h1 := r.add(virtiotest.Buffer{Addr: bufBase, Len: 64}) // readable only
	h2 := r.add(virtiotest.Buffer{Addr: bufBase + 0x1000, Len: 16},
		virtiotest.Buffer{Addr: bufBase + 0x2000, Len: 64, Writable: true}) // readable, then writable
	h3 := r.add(virtiotest.Buffer{Addr: ramSize - 8, Len: 64, Writable: true})      // outside RAM
	h4 := r.add(virtiotest.Buffer{Addr: bufBase, Len: 0, Writable: true})           // empty
	h5 := r.add(virtiotest.Buffer{Addr: bufBase + 0x2000, Len: 32, Writable: true}) // good
	r.kick()
	used := r.waitUsed(5)
	want := []virtiotest.Used{
		{ID: uint32(h1)}, {ID: uint32(h2)}, {ID: uint32(h3)}, {ID: uint32(h4)}, {ID: uint32(h5), Len: 32},
	}
	for i := range want {
		if used[i] != want[i] {
			t.Fatalf("used[%d] = %+v, want %+v", i, used[i], want[i])
		}
	}
	if !allZero(r.bytesAt(bufBase, 0x2000)) || !allZero(r.bytesAt(bufBase+0x2020, 0x20)) {
		t.Fatal("a rejected chain's buffer was written")
	}
	if count.get() != 5 || fails.get() != 4 || got.get() != 32 {
		t.Fatalf("metrics: events %d, fails %d, bytes %d", count.get(), fails.get(), got.get())
	}
}

func TestRequestCapped(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	// Two overlapping 48 KiB buffers: 96 KiB claimed, capped at 64 KiB.
	const half = 48 << 10
	r.fill(bufBase, 2*half, 0)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: half, Writable: true},
		virtiotest.Buffer{Addr: bufBase + half, Len: half, Writable: true})
	r.kick()
	if u := r.waitUsed(1)[0]; u.Len != MaxRequestBytes {
		t.Fatalf("used length %d, want %d", u.Len, MaxRequestBytes)
	}
	if allZero(r.bytesAt(bufBase+MaxRequestBytes-16, 16)) {
		t.Fatal("tail of the capped request not written")
	}
	if !allZero(r.bytesAt(bufBase+MaxRequestBytes, 2*half-MaxRequestBytes)) {
		t.Fatal("wrote past the cap")
	}
}

func TestKickBeforeDriverOK(t *testing.T) {
	r := newRig(t, nil)
	// The driver publishes a chain and kicks before DRIVER_OK: the device
	// drops the kick, and serves the chain on the transport's
	// re-notification at activation.
	ring, err := virtiotest.NewRing(r.mem, ringBase, 16)
	if err != nil {
		t.Fatal(err)
	}
	head, err := ring.AddChain(virtiotest.Buffer{Addr: bufBase, Len: 8, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	r.dev.QueueNotify(0)
	r.linuxInitRing(ring)
	if u := r.waitUsed(1)[0]; u != (virtiotest.Used{ID: uint32(head), Len: 8}) {
		t.Fatalf("used %+v", u)
	}
	r.dev.QueueNotify(7) // no such queue: ignored
	r.expectNoUsed()
}

// fakeLimiter refuses while told to and records what it was charged.
type fakeLimiter struct {
	mu                    sync.Mutex
	refuseOps, refuseByte bool
	ops, bytes            uint64 // charged
	refundedOps           uint64
	refundedBytes         uint64
	retry                 chan struct{}
}

func newFakeLimiter() *fakeLimiter { return &fakeLimiter{retry: make(chan struct{}, 1)} }

func (l *fakeLimiter) ConsumeOps(n uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refuseOps {
		return false
	}
	l.ops += n
	return true
}

func (l *fakeLimiter) ConsumeBytes(n uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refuseByte {
		return false
	}
	l.bytes += n
	return true
}

func (l *fakeLimiter) Retry() <-chan struct{} { return l.retry }

func (l *fakeLimiter) RefundOps(n uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops -= n
	l.refundedOps += n
}

func (l *fakeLimiter) RefundBytes(n uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bytes -= n
	l.refundedBytes += n
}

func (l *fakeLimiter) set(ops, byts bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refuseOps, l.refuseByte = ops, byts
}

func (l *fakeLimiter) charged() (ops, bytes, refundedOps uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops, l.bytes, l.refundedOps
}

func TestThrottled(t *testing.T) {
	lim := newFakeLimiter()
	r := newRig(t, lim)
	throttled, events, got := track(&em.EntropyRateLimiterThrottled), track(&em.RateLimiterEventCount), track(&em.EntropyBytes)

	// Bytes refused: the op is given back, nothing is served. The chain
	// is there before activation, so the transport's notification then is
	// the only one and the counts below do not depend on scheduling.
	lim.set(false, true)
	ring, err := virtiotest.NewRing(r.mem, ringBase, 256)
	if err != nil {
		t.Fatal(err)
	}
	r.ring = ring
	r.fill(bufBase, 100, 0)
	head := r.add(virtiotest.Buffer{Addr: bufBase, Len: 100, Writable: true})
	r.linuxInitRing(ring)
	eventually(t, "throttling", throttled.is(1))
	r.expectNoUsed()
	if ops, b, refunded := lim.charged(); ops != 0 || b != 0 || refunded != 1 {
		t.Fatalf("charged %d ops, %d bytes, refunded %d ops", ops, b, refunded)
	}
	if !allZero(r.bytesAt(bufBase, 100)) {
		t.Fatal("throttled request written")
	}

	// Kicks while throttled are counted and left for the retry, even once
	// the limiter would allow: only Retry resumes the queue.
	lim.set(false, false)
	r.kick()
	eventually(t, "rate limiter event", events.is(1))
	r.expectNoUsed()

	// Ops refused now; a retry tries again and is refused again.
	lim.set(true, false)
	lim.retry <- struct{}{}
	eventually(t, "second throttling", throttled.is(2))
	if events.get() != 2 {
		t.Fatalf("rate limiter events %d, want 2", events.get())
	}
	r.expectNoUsed()

	// Allowed: the retry serves the pending chain, with its full length
	// charged, and a new one behind it.
	lim.set(false, false)
	head2 := r.add(virtiotest.Buffer{Addr: bufBase + 0x1000, Len: 50, Writable: true})
	lim.retry <- struct{}{}
	used := r.waitUsed(2)
	if used[0] != (virtiotest.Used{ID: uint32(head), Len: 100}) || used[1] != (virtiotest.Used{ID: uint32(head2), Len: 50}) {
		t.Fatalf("used %+v", used)
	}
	if ops, b, _ := lim.charged(); ops != 2 || b != 150 {
		t.Fatalf("charged %d ops, %d bytes; want 2, 150", ops, b)
	}
	if got.get() != 150 || throttled.get() != 2 || events.get() != 3 {
		t.Fatalf("metrics: bytes %d, throttled %d, events %d", got.get(), throttled.get(), events.get())
	}

	// Not throttled any more: a kick serves at once.
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 10, Writable: true})
	r.kick()
	r.waitUsed(1)
}

// noRefundLimiter is a Limiter that cannot give tokens back.
type noRefundLimiter struct{ l *fakeLimiter }

func (n noRefundLimiter) ConsumeOps(k uint64) bool   { return n.l.ConsumeOps(k) }
func (n noRefundLimiter) ConsumeBytes(k uint64) bool { return n.l.ConsumeBytes(k) }
func (n noRefundLimiter) Retry() <-chan struct{}     { return n.l.Retry() }

func TestThrottledWithoutRefunder(t *testing.T) {
	lim := newFakeLimiter()
	r := newRig(t, noRefundLimiter{lim})
	r.linuxInit(256)
	lim.set(false, true)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 8, Writable: true})
	r.kick()
	eventually(t, "op charged", func() bool { ops, _, _ := lim.charged(); return ops == 1 })
	lim.set(false, false)
	lim.retry <- struct{}{}
	if u := r.waitUsed(1)[0]; u.Len != 8 {
		t.Fatalf("used %+v", u)
	}
}

func goroutinesBack(t *testing.T, base int) {
	t.Helper()
	eventually(t, "worker exit", func() bool { return runtime.NumGoroutine() <= base })
}

func TestResetStopsWorker(t *testing.T) {
	lim := newFakeLimiter()
	r := newRig(t, lim)
	base := runtime.NumGoroutine()
	r.linuxInit(256)
	w := r.dev.w.Load()
	if w == nil || runtime.NumGoroutine() < base+1 {
		t.Fatalf("want one worker goroutine: %d -> %d", base, runtime.NumGoroutine())
	}
	// Leave the worker throttled, with a chain pending.
	lim.set(true, false)
	throttled := track(&em.EntropyRateLimiterThrottled)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 8, Writable: true})
	r.kick()
	eventually(t, "throttling", throttled.is(1))

	r.wr(0x70, 0)
	r.expectStatus(0)
	select {
	case <-w.done:
	default:
		t.Fatal("Reset returned before the worker exited")
	}
	if r.dev.Activated() || r.dev.AckedFeatures() != 0 {
		t.Fatal("device still active after reset")
	}
	goroutinesBack(t, base)
	// Kicks and retries after reset go nowhere.
	r.dev.QueueNotify(0)
	lim.set(false, false)
	lim.retry <- struct{}{}
	r.expectNoUsed()
	if runtime.NumGoroutine() > base {
		t.Fatal("a kick after reset started a goroutine")
	}

	// The driver starts over: a fresh worker serves the new ring (the
	// pending retry value is picked up harmlessly).
	r.linuxInit(64)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 8, Writable: true})
	r.kick()
	if u := r.waitUsed(1)[0]; u.Len != 8 {
		t.Fatalf("used %+v", u)
	}
	if err := r.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	goroutinesBack(t, base)
}

// TestResetWhileBusy resets while kicks race with the worker.
func TestResetWhileBusy(t *testing.T) {
	r := newRig(t, nil)
	base := runtime.NumGoroutine()
	for range 20 {
		r.linuxInit(256)
		for i := range 32 {
			r.add(virtiotest.Buffer{Addr: bufBase + uint64(i)*0x1000, Len: 0x1000, Writable: true})
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 100 {
				r.dev.QueueNotify(0)
			}
		})
		r.kick()
		r.wr(0x70, 0)
		wg.Wait()
		if r.dev.Activated() {
			t.Fatal("active after reset")
		}
	}
	goroutinesBack(t, base)
}

func TestConcurrentKicks(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	got := track(&em.EntropyBytes)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					r.dev.QueueNotify(0)
					runtime.Gosched()
				}
			}
		})
	}
	const n = 200
	for i := range n {
		r.add(virtiotest.Buffer{Addr: bufBase + uint64(i)*64, Len: 64, Writable: true})
		if i%7 == 0 {
			r.kick()
		}
	}
	r.kick()
	used := r.waitUsed(n)
	close(stop)
	wg.Wait()
	for i, u := range used {
		if u.ID != uint32(i) || u.Len != 64 {
			t.Fatalf("used[%d] = %+v", i, u)
		}
	}
	if got.get() != n*64 {
		t.Fatalf("entropy bytes %d", got.get())
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

func TestHostRNGFailure(t *testing.T) {
	r := newRig(t, nil)
	r.dev.rand = failingReader{}
	r.linuxInit(256)
	rngFails, fails, got := track(&em.HostRngFails), track(&em.EntropyEventFails), track(&em.EntropyBytes)
	r.fill(bufBase, 32, 0)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 32, Writable: true})
	r.kick()
	if u := r.waitUsed(1)[0]; u.Len != 0 {
		t.Fatalf("used %+v, want length 0", u)
	}
	if !allZero(r.bytesAt(bufBase, 32)) {
		t.Fatal("buffer written without entropy")
	}
	if rngFails.get() != 1 || fails.get() != 1 || got.get() != 0 {
		t.Fatalf("metrics: host_rng_fails %d, fails %d, bytes %d", rngFails.get(), fails.get(), got.get())
	}
}

type nopIRQ struct{}

func (nopIRQ) TriggerQueue(int) error { return nil }
func (nopIRQ) TriggerConfig() error   { return nil }

func TestActivateErrors(t *testing.T) {
	mem, err := virtiotest.NewMemory(0, ramSize)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	fails := track(&em.ActivateFails)
	d := New(nil)
	if err := d.Activate(mem, nil, nopIRQ{}); err == nil {
		t.Fatal("activated without a queue")
	}
	q := virtio.NewQueue(QueueSize)
	if err := d.Activate(nil, []*virtio.Queue{q}, nopIRQ{}); err == nil {
		t.Fatal("activated without memory")
	}
	if err := d.Activate(mem, []*virtio.Queue{q}, nopIRQ{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Activate(mem, []*virtio.Queue{q}, nopIRQ{}); err == nil {
		t.Fatal("activated twice")
	}
	if fails.get() != 3 {
		t.Fatalf("activate_fails %d, want 3", fails.get())
	}
	// A kick on an uninitialised queue fails in Pop, without a panic.
	d.QueueNotify(0)
	time.Sleep(10 * time.Millisecond)
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
}
