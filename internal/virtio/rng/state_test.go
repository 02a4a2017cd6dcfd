package rng

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// newRigOn is newRig over existing guest memory: the device a restore
// builds for the same VM.
func newRigOn(t *testing.T, mem *memory.Guest, lim Limiter) *rig {
	t.Helper()
	dev := New(lim)
	tr, l := virtiotest.NewTransport(t, mem, dev)
	t.Cleanup(func() { dev.Reset() })
	return &rig{t: t, mem: mem, dev: dev, line: l, tr: tr}
}

// gateReader is a host RNG whose first Read waits for release, so a test
// can hold the worker inside a request.
type gateReader struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate() *gateReader {
	return &gateReader{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateReader) Read(p []byte) (int, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	for i := range p {
		p[i] = 0x5a
	}
	return len(p), nil
}

func wbuf(i int) virtiotest.Buffer {
	return virtiotest.Buffer{Addr: bufBase + uint64(i)*0x100, Len: 32, Writable: true}
}

// expectEachOnce fails unless used holds every head of heads exactly once,
// in order, each filled whole.
func expectEachOnce(t *testing.T, used []virtiotest.Used, heads []uint16) {
	t.Helper()
	if len(used) != len(heads) {
		t.Fatalf("%d used entries for %d requests: %+v", len(used), len(heads), used)
	}
	for i, u := range used {
		if u.ID != uint32(heads[i]) || u.Len != 32 {
			t.Fatalf("used[%d] = %+v, want head %d, 32 bytes", i, u, heads[i])
		}
	}
}

// TestSnapshotMidStream: the device is suspended while it serves a
// request: Suspend waits for it and returns it to the driver, the rest
// stay on the queue, and a new device restored from the snapshot serves
// them (and those the driver adds while paused) on resume. The driver sees
// each request completed exactly once, in one continuous used ring.
func TestSnapshotMidStream(t *testing.T) {
	r := newRig(t, nil)
	gate := newGate()
	r.dev.rand = gate
	r.linuxInit(256)
	var heads []uint16
	for i := range 8 {
		heads = append(heads, r.add(wbuf(i)))
	}
	r.kick()
	<-gate.entered // the worker holds request 0
	w := r.dev.life.Current()
	suspended := make(chan struct{})
	go func() {
		r.tr.Suspend()
		close(suspended)
	}()
	virtiotest.Eventually(t, "the worker to be told to stop", w.Stopping)
	close(gate.release)
	<-suspended
	used := r.ring.PopAllUsed(t)
	expectEachOnce(t, used, heads[:1])

	// Added while paused: not served by the suspended device.
	for i := 8; i < 10; i++ {
		heads = append(heads, r.add(wbuf(i)))
	}
	r.kick()
	r.expectNoUsed()

	data := virtiotest.SaveJSON(t, r.tr)
	n := newRigOn(t, r.mem, nil)
	n.ring = r.ring
	virtiotest.RestoreJSON(t, n.tr, data)
	if again := virtiotest.SaveJSON(t, n.tr); !bytes.Equal(again, data) {
		t.Fatalf("restored state saves as\n%s\nwant\n%s", again, data)
	}
	n.expectNoUsed() // restored suspended
	if err := n.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	used = append(used, r.waitUsed(9)...)
	expectEachOnce(t, used, heads)
	if idx, _ := r.ring.UsedIdx(); idx != 10 {
		t.Fatalf("used index %d, want 10", idx)
	}
	// The driver goes on with the new device.
	heads = append(heads, r.add(wbuf(10)))
	n.kick()
	used = append(used, r.waitUsed(1)...)
	expectEachOnce(t, used, heads)
	if n.line.Count() < 1 {
		t.Fatal("no interrupt from the restored device")
	}
}

// TestPauseResume: a suspended device serves nothing, and on resume
// serves what the driver made available meanwhile, with an interrupt.
func TestPauseResume(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(256)
	heads := []uint16{r.add(wbuf(0))}
	r.kick()
	used := r.waitUsed(1)
	virtiotest.Eventually(t, "interrupt", func() bool { return r.line.Count() == 1 })

	r.tr.Suspend()
	if !r.dev.Activated() || !r.dev.life.Suspended() {
		t.Fatal("suspended device not active and suspended")
	}
	for i := 1; i < 4; i++ {
		heads = append(heads, r.add(wbuf(i)))
		r.kick()
	}
	r.expectNoUsed()
	if err := r.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	used = append(used, r.waitUsed(3)...)
	expectEachOnce(t, used, heads)
	virtiotest.Eventually(t, "interrupts", func() bool { return r.line.Count() >= 2 })

	// Pause and resume with nothing pending: nothing to serve.
	r.tr.Suspend()
	if err := r.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	heads = append(heads, r.add(wbuf(4)))
	r.kick()
	used = append(used, r.waitUsed(1)...)
	expectEachOnce(t, used, heads)
}

// TestSuspendedReset: a driver reset while suspended leaves an inactive
// device, which Resume leaves alone and the driver can start again.
func TestSuspendedReset(t *testing.T) {
	r := newRig(t, nil)
	r.linuxInit(16)
	r.tr.Suspend()
	r.wr(0x70, 0)
	if r.dev.Activated() {
		t.Fatal("active after reset")
	}
	if err := r.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	r.linuxInit(16)
	h := r.add(wbuf(0))
	r.kick()
	expectEachOnce(t, r.waitUsed(1), []uint16{h})
}

// TestStateLimiter: the limiter's buckets and what the guest spent of
// them move with the snapshot and replace the new device's limiter.
func TestStateLimiter(t *testing.T) {
	bw := ratelimit.NewTokenBucket(1000, 50, 100)
	l := ratelimit.New(bw, ratelimit.NewTokenBucket(10, 0, 1000))
	d := New(ratelimit.DeviceLimiter{L: l})
	l.Consume(300, ratelimit.Bytes)
	l.Consume(4, ratelimit.Ops)
	data, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	n := New(nil)
	if err := n.RestoreState(data); err != nil {
		t.Fatal(err)
	}
	dl, ok := n.limiter.(ratelimit.DeviceLimiter)
	if !ok || n.refunder == nil {
		t.Fatalf("restored limiter %T", n.limiter)
	}
	got, want := dl.L.State(), l.State()
	for _, p := range [][2]*ratelimit.BucketState{{got.Bandwidth, want.Bandwidth}, {got.Ops, want.Ops}} {
		if p[0] == nil || p[1] == nil {
			t.Fatal("bucket lost")
		}
		g, w := *p[0], *p[1]
		g.ElapsedNs, w.ElapsedNs = 0, 0 // time passes
		if g != w {
			t.Fatalf("bucket %+v, want %+v", g, w)
		}
	}
	// And a device without a limiter restores as one without.
	data, err = New(nil).SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.RestoreState(data); err != nil || n.limiter != nil || n.refunder != nil {
		t.Fatalf("limiter %v after restoring none (%v)", n.limiter, err)
	}
	again, _ := n.SaveState()
	if !bytes.Equal(again, data) {
		t.Fatalf("round trip %s, want %s", again, data)
	}
	// A limiter of another kind cannot be saved.
	if _, err := New(newFakeLimiter()).SaveState(); err == nil {
		t.Fatal("saved a fake limiter")
	}
}

// TestRestoreCorrupt: a corrupt blob is an error, and so is restoring an
// active device.
func TestRestoreCorrupt(t *testing.T) {
	for _, b := range []string{
		"", "null", "{", "[]", "5", `{"rate_limiter":5}`, `{"rate_limiter":null,"x":1}`,
		`{"rate_limiter":null} {}`, `{"rate_limiter":{"Bandwidth":{"Size":0,"RefillTime":100}}}`,
		`{"rate_limiter":{"Ops":{"Size":10,"RefillTime":0}}}`,
		`{"rate_limiter":{"Ops":{"Size":10,"RefillTime":18446744073709551615}}}`,
	} {
		if err := New(nil).RestoreState([]byte(b)); err == nil {
			t.Errorf("restored %q", b)
		}
	}
	r := newRig(t, nil)
	r.linuxInit(16)
	data, _ := json.Marshal(state{})
	if err := r.dev.RestoreState(data); err == nil {
		t.Fatal("restored an active device")
	}
}

// TestSnapshotThrottled: a request the limiter refused stays on the
// queue through a snapshot and is served by the restored device.
func TestSnapshotThrottled(t *testing.T) {
	// Room for one 32-byte request, and no refill for a long time.
	l := ratelimit.New(ratelimit.NewTokenBucket(40, 0, 3_600_000), nil)
	r := newRig(t, ratelimit.DeviceLimiter{L: l})
	r.linuxInit(256)
	heads := []uint16{r.add(wbuf(0)), r.add(wbuf(1))}
	r.kick()
	used := r.waitUsed(1)
	r.expectNoUsed()
	data := virtiotest.SaveJSON(t, r.tr)

	// Restored, the limiter is as spent as it was: give the new device's
	// limiter room by editing the saved budget, as time would.
	var s struct {
		Device []byte `json:"device"`
	}
	json.Unmarshal(data, &s)
	var ds state
	if err := json.Unmarshal(s.Device, &ds); err != nil || ds.RateLimiter == nil || ds.RateLimiter.Bandwidth.Budget > 8 {
		t.Fatalf("saved limiter %s (%v)", s.Device, err)
	}
	n := newRigOn(t, r.mem, nil)
	n.ring = r.ring
	virtiotest.RestoreJSON(t, n.tr, data)
	if err := n.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	n.expectNoUsed() // still throttled
	n.dev.limiter.(ratelimit.DeviceLimiter).L.UpdateBuckets(ratelimit.BucketUpdate{Bucket: nil}, ratelimit.BucketUpdate{Keep: true})
	n.kick()
	used = append(used, r.waitUsed(1)...)
	expectEachOnce(t, used, heads)
}
