package rng

import (
	"bytes"
	"errors"
	"runtime"
	"sync"
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

type rig struct {
	t    *testing.T
	mem  *memory.Guest
	dev  *Device
	line *virtiotest.Line
	tr   *mmio.Transport
	ring *virtiotest.Ring
}

func newRig(t *testing.T, lim Limiter) *rig {
	t.Helper()
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	dev := New(lim)
	tr, l := virtiotest.NewTransport(t, mem, dev)
	// Stop the worker before the memory it uses is unmapped.
	t.Cleanup(func() { dev.Reset() })
	return &rig{t: t, mem: mem, dev: dev, line: l, tr: tr}
}

func (r *rig) rd(off uint64) uint32    { return virtiotest.Read32(r.tr, off) }
func (r *rig) wr(off uint64, v uint32) { virtiotest.Write32(r.tr, off, v) }

func (r *rig) expectStatus(want uint32) {
	r.t.Helper()
	virtiotest.ExpectStatus(r.t, r.tr, want)
}

// linuxInit probes and initialises the device as drivers/virtio/
// virtio_mmio.c and virtio.c do, with a fresh queue of size entries; it
// leaves the device live.
func (r *rig) linuxInit(size uint16) {
	r.t.Helper()
	ring := virtiotest.RingAt(r.t, r.mem, ringBase, size)
	r.linuxInitRing(ring)
}

// linuxInitRing is linuxInit with a ring the driver has already laid out.
func (r *rig) linuxInitRing(ring *virtiotest.Ring) {
	r.t.Helper()
	if r.rd(0x00) != mmio.MagicValue || r.rd(0x04) != 2 || r.rd(0x08) != 4 || r.rd(0x0c) != 0 {
		r.t.Fatal("bad identification registers")
	}
	if offered := virtiotest.Negotiate(r.tr, nil); offered != 1<<virtio.FeatureVersion1 {
		r.t.Fatalf("offered features %#x, want VERSION_1 only", offered)
	}
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
	virtiotest.SetupQueue(r.tr, 0, ring)
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
	return r.ring.Add(r.t, bufs...)
}

// waitUsed waits for n used entries and returns them.
func (r *rig) waitUsed(n int) []virtiotest.Used {
	r.t.Helper()
	return r.ring.WaitUsed(r.t, n)
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
	return virtiotest.ReadGuest(r.t, r.mem, addr, n)
}

func (r *rig) fill(addr uint64, n int, v byte) {
	r.t.Helper()
	virtiotest.WriteGuest(r.t, r.mem, addr, bytes.Repeat([]byte{v}, n))
}

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
	count, got, fails := virtiotest.Track(&em.EntropyEventCount), virtiotest.Track(&em.EntropyBytes), virtiotest.Track(&em.EntropyEventFails)

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
	virtiotest.Eventually(t, "interrupt", func() bool { return r.line.Count() == 1 })
	if r.rd(0x60) != mmio.InterruptUsedRing {
		t.Fatalf("interrupt status %#x", r.rd(0x60))
	}
	r.wr(0x64, mmio.InterruptUsedRing)
	if r.rd(0x60) != 0 {
		t.Fatal("interrupt not acknowledged")
	}
	if count.Get() != 1 || got.Get() != n || fails.Get() != 0 {
		t.Fatalf("metrics: events %d, bytes %d, fails %d", count.Get(), got.Get(), fails.Get())
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
	ring := virtiotest.RingAt(t, r.mem, ringBase, 256)
	r.ring = ring
	count, got := virtiotest.Track(&em.EntropyEventCount), virtiotest.Track(&em.EntropyBytes)
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
	if count.Get() != 3 || got.Get() != 542 {
		t.Fatalf("metrics: events %d, bytes %d", count.Get(), got.Get())
	}
	// One batch, one interrupt.
	virtiotest.Eventually(t, "interrupt", func() bool { return r.line.Count() >= 1 })
	time.Sleep(10 * time.Millisecond)
	if n := r.line.Count(); n != 1 {
		t.Fatalf("%d interrupts for one batch", n)
	}
}

func TestBadChains(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	count, got, fails := virtiotest.Track(&em.EntropyEventCount), virtiotest.Track(&em.EntropyBytes), virtiotest.Track(&em.EntropyEventFails)

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
	if count.Get() != 5 || fails.Get() != 4 || got.Get() != 32 {
		t.Fatalf("metrics: events %d, fails %d, bytes %d", count.Get(), fails.Get(), got.Get())
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
	ring := virtiotest.RingAt(t, r.mem, ringBase, 16)
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
	throttled, events, got := virtiotest.Track(&em.EntropyRateLimiterThrottled), virtiotest.Track(&em.RateLimiterEventCount), virtiotest.Track(&em.EntropyBytes)

	// Bytes refused: the op is given back, nothing is served. The chain
	// is there before activation, so the transport's notification then is
	// the only one and the counts below do not depend on scheduling.
	lim.set(false, true)
	ring := virtiotest.RingAt(t, r.mem, ringBase, 256)
	r.ring = ring
	r.fill(bufBase, 100, 0)
	head := r.add(virtiotest.Buffer{Addr: bufBase, Len: 100, Writable: true})
	r.linuxInitRing(ring)
	virtiotest.Eventually(t, "throttling", throttled.Is(1))
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
	virtiotest.Eventually(t, "rate limiter event", events.Is(1))
	r.expectNoUsed()

	// Ops refused now; a retry tries again and is refused again.
	lim.set(true, false)
	lim.retry <- struct{}{}
	virtiotest.Eventually(t, "second throttling", throttled.Is(2))
	if events.Get() != 2 {
		t.Fatalf("rate limiter events %d, want 2", events.Get())
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
	if got.Get() != 150 || throttled.Get() != 2 || events.Get() != 3 {
		t.Fatalf("metrics: bytes %d, throttled %d, events %d", got.Get(), throttled.Get(), events.Get())
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
	virtiotest.Eventually(t, "op charged", func() bool { ops, _, _ := lim.charged(); return ops == 1 })
	lim.set(false, false)
	lim.retry <- struct{}{}
	if u := r.waitUsed(1)[0]; u.Len != 8 {
		t.Fatalf("used %+v", u)
	}
}

func TestResetStopsWorker(t *testing.T) {
	lim := newFakeLimiter()
	r := newRig(t, lim)
	base := runtime.NumGoroutine()
	r.linuxInit(256)
	w := r.dev.life.Current()
	if w == nil || runtime.NumGoroutine() < base+1 {
		t.Fatalf("want one worker goroutine: %d -> %d", base, runtime.NumGoroutine())
	}
	// Leave the worker throttled, with a chain pending.
	lim.set(true, false)
	throttled := virtiotest.Track(&em.EntropyRateLimiterThrottled)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 8, Writable: true})
	r.kick()
	virtiotest.Eventually(t, "throttling", throttled.Is(1))

	r.wr(0x70, 0)
	r.expectStatus(0)
	if w.Running() != 0 {
		t.Fatal("Reset returned before the worker exited")
	}
	if r.dev.Activated() || r.dev.AckedFeatures() != 0 {
		t.Fatal("device still active after reset")
	}
	virtiotest.WaitGoroutines(t, base)
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
	virtiotest.WaitGoroutines(t, base)
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
	virtiotest.WaitGoroutines(t, base)
}

func TestConcurrentKicks(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	got := virtiotest.Track(&em.EntropyBytes)
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
	if got.Get() != n*64 {
		t.Fatalf("entropy bytes %d", got.Get())
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("no entropy") }

func TestHostRNGFailure(t *testing.T) {
	r := newRig(t, nil)
	r.dev.rand = failingReader{}
	r.linuxInit(256)
	rngFails, fails, got := virtiotest.Track(&em.HostRngFails), virtiotest.Track(&em.EntropyEventFails), virtiotest.Track(&em.EntropyBytes)
	r.fill(bufBase, 32, 0)
	r.add(virtiotest.Buffer{Addr: bufBase, Len: 32, Writable: true})
	r.kick()
	if u := r.waitUsed(1)[0]; u.Len != 0 {
		t.Fatalf("used %+v, want length 0", u)
	}
	if !allZero(r.bytesAt(bufBase, 32)) {
		t.Fatal("buffer written without entropy")
	}
	if rngFails.Get() != 1 || fails.Get() != 1 || got.Get() != 0 {
		t.Fatalf("metrics: host_rng_fails %d, fails %d, bytes %d", rngFails.Get(), fails.Get(), got.Get())
	}
}

func TestActivateErrors(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	fails := virtiotest.Track(&em.ActivateFails)
	d := New(nil)
	if err := d.Activate(mem, nil, &virtiotest.IRQ{}); err == nil {
		t.Fatal("activated without a queue")
	}
	q := virtio.NewQueue(QueueSize)
	if err := d.Activate(nil, []*virtio.Queue{q}, &virtiotest.IRQ{}); err == nil {
		t.Fatal("activated without memory")
	}
	if err := d.Activate(mem, []*virtio.Queue{q}, &virtiotest.IRQ{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Activate(mem, []*virtio.Queue{q}, &virtiotest.IRQ{}); err == nil {
		t.Fatal("activated twice")
	}
	if fails.Get() != 3 {
		t.Fatalf("activate_fails %d, want 3", fails.Get())
	}
	// A kick on an uninitialised queue fails in Pop, without a panic.
	d.QueueNotify(0)
	time.Sleep(10 * time.Millisecond)
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
}
