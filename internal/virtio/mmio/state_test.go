package mmio_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// snapDev is the dummy device with virtio.Snapshotter: its own state is
// an opaque blob, and it records the snapshot calls.
type snapDev struct {
	*virtiotest.Device

	mu        sync.Mutex
	blob      []byte
	suspended bool
	suspends  int
	resumes   int
	restores  int
	resumeErr error
}

var errBlob = errors.New("snapDev: corrupt blob")

func newSnapDev() *snapDev {
	return &snapDev{Device: &virtiotest.Device{
		Type:     virtio.TypeBlock,
		Features: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<5 | 1<<40,
		MaxSizes: []uint16{256, 64},
		Config:   []byte{1, 2, 3, 4},
	}, blob: []byte("dev-state")}
}

func (d *snapDev) Suspend() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Active() {
		d.suspended = true
		d.suspends++
	}
}

func (d *snapDev) Resume() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.resumeErr != nil {
		return d.resumeErr
	}
	if d.suspended {
		d.suspended = false
		d.resumes++
	}
	return nil
}

func (d *snapDev) SaveState() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.blob...), nil
}

func (d *snapDev) RestoreState(b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if bytes.HasPrefix(b, []byte("bad")) {
		return errBlob
	}
	d.blob = append([]byte(nil), b...)
	d.restores++
	return nil
}

func (d *snapDev) Reset() error {
	err := d.Device.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.suspended = false
	}
	return err
}

func (d *snapDev) counts() (suspends, resumes int, suspended bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.suspends, d.resumes, d.suspended
}

type snapRig struct {
	t    *testing.T
	mem  *memory.Guest
	dev  *snapDev
	line *virtiotest.Line
	tr   *mmio.Transport
}

func newSnapRig(t *testing.T, mem *memory.Guest) *snapRig {
	t.Helper()
	dev := newSnapDev()
	tr, line := virtiotest.NewTransport(t, mem, dev)
	return &snapRig{t: t, mem: mem, dev: dev, line: line, tr: tr}
}

func (r *snapRig) wr(off uint64, v uint32) { virtiotest.Write32(r.tr, off, v) }
func (r *snapRig) rd(off uint64) uint32    { return virtiotest.Read32(r.tr, off) }

// live brings the device up with EVENT_IDX and returns the driver's rings.
func (r *snapRig) live() []*virtiotest.Ring {
	r.t.Helper()
	virtiotest.Negotiate(r.tr, func(o uint64) uint64 { return o &^ (1 << 5) })
	var rings []*virtiotest.Ring
	for i, size := range []uint16{256, 64} {
		ring := virtiotest.RingAt(r.t, r.mem, ringBase+uint64(i)*0x10000, size)
		virtiotest.SetupQueue(r.tr, uint32(i), ring)
		rings = append(rings, ring)
	}
	r.wr(0x70, sLive)
	if !r.dev.Active() {
		r.t.Fatal("device not activated")
	}
	return rings
}

// work makes the device use n chains of queue 0.
func (r *snapRig) work(ring *virtiotest.Ring, n int) {
	r.t.Helper()
	q := r.dev.Queues()[0]
	for range n {
		ring.Add(r.t, virtiotest.Buffer{Addr: 0x80000, Len: 16, Writable: true})
		c, err := q.Pop(r.mem)
		if err != nil || c == nil {
			r.t.Fatalf("pop: %v %v", c, err)
		}
		if err := q.AddUsed(r.mem, c.Head, 16); err != nil {
			r.t.Fatal(err)
		}
	}
}

func saved(t *testing.T, tr *mmio.Transport) mmio.State {
	t.Helper()
	s, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSnapshotActive: an active device's registers, queues and own state
// move to a new transport and device, which come back suspended and
// active with the same queues, and run again on Resume with one
// interrupt.
func TestSnapshotActive(t *testing.T) {
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	r := newSnapRig(t, mem)
	rings := r.live()
	r.work(rings[0], 5)
	r.wr(0x14, 1) // features page 1 selected
	r.wr(0x30, 1) // queue 1 selected
	r.dev.Interrupt().TriggerConfig()
	r.dev.blob = []byte("state of the old device")

	if _, err := r.tr.SaveState(); err == nil {
		t.Fatal("saved a running device")
	}
	r.tr.Suspend()
	if n, _, sus := r.dev.counts(); n != 1 || !sus {
		t.Fatalf("%d suspends, suspended %v", n, sus)
	}
	data := virtiotest.SaveJSON(t, r.tr)
	r.tr.Suspend() // again: harmless
	if n, _, _ := r.dev.counts(); n != 1 {
		t.Fatalf("second Suspend reached the device again (%d)", n)
	}
	s := saved(t, r.tr)
	if !s.Active || s.Status != sLive || s.QueueSel != 1 || s.FeaturesSel != 1 || s.Queues[0].NextUsed != 5 ||
		s.Queues[0].NextAvail != 5 || !s.Queues[0].EventIdx || s.InterruptStatus != mmio.InterruptConfig {
		t.Fatalf("saved %+v", s)
	}

	n := newSnapRig(t, mem)
	virtiotest.RestoreJSON(t, n.tr, data)
	if got := virtiotest.SaveJSON(t, n.tr); !bytes.Equal(got, data) {
		t.Fatalf("restored state saves as\n%s\nwant\n%s", got, data)
	}
	if !n.tr.Activated() || !n.tr.Suspended() || !n.dev.Active() || string(n.dev.blob) != "state of the old device" {
		t.Fatal("restored device not active and suspended with its state")
	}
	if acked, calls := n.dev.Acked(); acked != s.AckedFeatures || calls != 1 {
		t.Fatalf("device acked %#x in %d calls", acked, calls)
	}
	if sus, _, suspended := n.dev.counts(); sus != 1 || !suspended {
		t.Fatal("restored device not suspended")
	}
	if n.rd(0x70) != sLive || n.rd(0x60) != mmio.InterruptConfig {
		t.Fatal("registers not restored")
	}
	if n.line.Count() != 0 {
		t.Fatal("interrupt before resume")
	}
	if err := n.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, res, sus := n.dev.counts(); res != 1 || sus {
		t.Fatal("device not resumed")
	}
	if n.line.Count() != 1 || n.tr.InterruptStatus() != mmio.InterruptConfig|mmio.InterruptUsedRing {
		t.Fatalf("%d interrupts, status %#x after resume", n.line.Count(), n.tr.InterruptStatus())
	}
	if err := n.tr.Resume(); err != nil || n.line.Count() != 1 {
		t.Fatal("a second Resume signalled again")
	}
	// The queues go on where the old device left them.
	q := n.dev.Queues()[0]
	rings[0].Add(t, virtiotest.Buffer{Addr: 0x80000, Len: 16, Writable: true})
	c, err := q.Pop(mem)
	if err != nil || c == nil {
		t.Fatalf("pop after restore: %v", err)
	}
	if err := q.AddUsed(mem, c.Head, 7); err != nil {
		t.Fatal(err)
	}
	used := rings[0].PopAllUsed(t)
	if len(used) != 6 || used[5].ID != uint32(c.Head) || used[5].Len != 7 {
		t.Fatalf("used %+v", used)
	}
	// The queue registers came back: QueueSel 1 reads queue 1's.
	if n.rd(0x34) != 64 || n.rd(0x44) != 1 {
		t.Fatal("queue 1 registers")
	}
	// And the driver can reset the restored device.
	n.wr(0x70, 0)
	if n.dev.Active() || n.tr.Activated() || n.rd(0x70) != 0 {
		t.Fatal("reset of a restored device")
	}
}

// TestSnapshotInactive: a device the driver has only begun to set up
// moves with its registers and is not activated; the device sees the
// features it saw at FEATURES_OK.
func TestSnapshotInactive(t *testing.T) {
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	for _, status := range []uint32{0, sAck, sDrv, sFeat, sFeat | sFail} {
		r := newSnapRig(t, mem)
		virtiotest.Negotiate(r.tr, nil)
		r.wr(0x70, 0)
		for _, st := range []uint32{sAck, sDrv, sFeat} {
			if status&st == st {
				if st == sFeat {
					r.wr(0x24, 1)
					r.wr(0x20, 1)
				}
				r.wr(0x70, st)
			}
		}
		if status&sFail != 0 {
			r.wr(0x70, sFail)
		}
		if r.rd(0x70) != status {
			t.Fatalf("status %#x, want %#x", r.rd(0x70), status)
		}
		if status&sFeat == sFeat {
			virtiotest.SetupQueue(r.tr, 0, virtiotest.RingAt(t, mem, ringBase, 16))
		}
		// An inactive device need not be suspended to be saved.
		s := saved(t, r.tr)
		data, _ := json.Marshal(s)

		n := newSnapRig(t, mem)
		virtiotest.RestoreJSON(t, n.tr, data)
		if n.tr.Activated() || n.dev.Active() || n.rd(0x70) != status || n.tr.AckedFeatures() != s.AckedFeatures {
			t.Fatalf("status %#x: restored wrong", status)
		}
		_, calls := n.dev.Acked()
		if want := status&sFeat == sFeat; (calls == 1) != want {
			t.Fatalf("status %#x: %d AckFeatures calls", status, calls)
		}
		if got := virtiotest.SaveJSON(t, n.tr); !bytes.Equal(got, data) {
			t.Fatalf("status %#x: round trip\n%s\n%s", status, got, data)
		}
		if err := n.tr.Resume(); err != nil || n.line.Count() != 0 {
			t.Fatal("resume of an inactive device signalled")
		}
		// The driver finishes the setup on the restored transport.
		if status == sFeat {
			virtiotest.SetupQueue(n.tr, 1, virtiotest.RingAt(t, mem, ringBase+0x10000, 16))
			n.wr(0x70, sLive)
			if !n.dev.Active() {
				t.Fatal("restored device does not activate")
			}
		}
	}
}

// TestSnapshotFailedActivation: the state a failed activation leaves
// (DEVICE_NEEDS_RESET, some queues initialized) moves too.
func TestSnapshotFailedActivation(t *testing.T) {
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	r := newSnapRig(t, mem)
	r.dev.ActivateErr = virtiotest.ErrActivate
	r.live2()
	s := saved(t, r.tr)
	if s.Active || s.Status != sLive|sNeeds || !s.Queues[0].Initialized {
		t.Fatalf("saved %+v", s)
	}
	data, _ := json.Marshal(s)
	n := newSnapRig(t, mem)
	virtiotest.RestoreJSON(t, n.tr, data)
	if n.dev.Active() || n.rd(0x70) != sLive|sNeeds {
		t.Fatal("restored wrong")
	}
	if got := virtiotest.SaveJSON(t, n.tr); !bytes.Equal(got, data) {
		t.Fatalf("round trip\n%s\n%s", got, data)
	}
}

// live2 is live without the activation check.
func (r *snapRig) live2() {
	virtiotest.Negotiate(r.tr, nil)
	for i, size := range []uint16{256, 64} {
		virtiotest.SetupQueue(r.tr, uint32(i), virtiotest.RingAt(r.t, r.mem, ringBase+uint64(i)*0x10000, size))
	}
	r.wr(0x70, sLive)
}

// TestSuspendedDriverWrites: register writes still work while suspended.
// A reset stops the device; a driver that activates it again meanwhile
// (a vCPU finishing its last access as the VM pauses) gets a device that
// stays suspended until Resume.
func TestSuspendedDriverWrites(t *testing.T) {
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	r := newSnapRig(t, mem)
	r.live()
	r.tr.Suspend()
	r.wr(0x70, 0)
	if r.dev.Active() || r.tr.Activated() || r.dev.Resets() != 1 {
		t.Fatal("reset while suspended")
	}
	if err := r.tr.Resume(); err != nil || r.line.Count() != 0 {
		t.Fatal("resume of a reset device signalled")
	}

	r.tr.Suspend()
	r.live()
	r.dev.Notifies()
	if n, _, sus := r.dev.counts(); n != 2 || !sus {
		t.Fatalf("activated while suspended: %d suspends, suspended %v", n, sus)
	}
	if s, err := r.tr.SaveState(); err != nil || !s.Active {
		t.Fatalf("save: %v", err)
	}
	if err := r.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, res, sus := r.dev.counts(); res != 1 || sus || r.line.Count() != 1 {
		t.Fatal("not resumed")
	}
}

// TestSuspendResumeErrors: Resume reports the device's failure and stays
// suspended; a device without Snapshotter cannot be saved or restored.
func TestSuspendResumeErrors(t *testing.T) {
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	r := newSnapRig(t, mem)
	r.live()
	r.tr.Suspend()
	r.dev.resumeErr = errors.New("no")
	if err := r.tr.Resume(); err == nil || !r.tr.Suspended() || r.line.Count() != 0 {
		t.Fatalf("resume error %v", err)
	}
	r.dev.resumeErr = nil
	if err := r.tr.Resume(); err != nil || r.tr.Suspended() {
		t.Fatal(err)
	}
	// Resume without Suspend does nothing.
	if err := r.tr.Resume(); err != nil || r.line.Count() != 1 {
		t.Fatal("resume without suspend")
	}

	plain := &virtiotest.Device{Type: virtio.TypeRNG, Features: 1 << virtio.FeatureVersion1, MaxSizes: []uint16{16}}
	tr, _ := virtiotest.NewTransport(t, mem, plain)
	if _, err := tr.SaveState(); err == nil || !strings.Contains(err.Error(), "does not support snapshots") {
		t.Fatalf("save of a plain device: %v", err)
	}
	if err := tr.RestoreState(mmio.State{DeviceType: virtio.TypeRNG, Queues: make([]virtio.QueueState, 1)}); err == nil {
		t.Fatal("restored a plain device")
	}
	tr.Suspend() // nothing to forward to
	if err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRejects: every inconsistency of a saved state is an error,
// and a transport in use cannot be restored.
func TestRestoreRejects(t *testing.T) {
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	r := newSnapRig(t, mem)
	r.live()
	r.tr.Suspend()
	good := saved(t, r.tr)
	clone := func() mmio.State {
		var s mmio.State
		b, _ := json.Marshal(good)
		json.Unmarshal(b, &s)
		return s
	}
	for _, tc := range []struct {
		name string
		mod  func(s *mmio.State)
	}{
		{"device type", func(s *mmio.State) { s.DeviceType = virtio.TypeNet }},
		{"fewer queues", func(s *mmio.State) { s.Queues = s.Queues[:1] }},
		{"more queues", func(s *mmio.State) { s.Queues = append(s.Queues, s.Queues[0]) }},
		{"queue max size", func(s *mmio.State) { s.Queues[1].MaxSize = 256 }},
		{"unknown status bit", func(s *mmio.State) { s.Status |= 0x10 }},
		{"skipped status step", func(s *mmio.State) { s.Status = sAck | virtio.StatusFeaturesOK; s.Active = false }},
		{"needs reset before live", func(s *mmio.State) { s.Status = sFeat | sNeeds; s.Active = false }},
		{"needs reset and active", func(s *mmio.State) { s.Status |= sNeeds }},
		{"live but inactive", func(s *mmio.State) { s.Active = false }},
		{"active before live", func(s *mmio.State) { s.Status = sFeat }},
		{"features not offered", func(s *mmio.State) { s.AckedFeatures |= 1 << 6 }},
		{"features before driver", func(s *mmio.State) {
			s.Status, s.Active = sAck, false
			for i := range s.Queues {
				s.Queues[i].Initialized = false
			}
		}},
		{"interrupt status", func(s *mmio.State) { s.InterruptStatus = 4 }},
		{"queue outside memory", func(s *mmio.State) { s.Queues[0].UsedRing = ramSize - 8 }},
		{"queue misaligned", func(s *mmio.State) { s.Queues[1].DescTable++ }},
		{"queue size", func(s *mmio.State) { s.Queues[1].Size = 48 }},
		{"active queue not initialized", func(s *mmio.State) { s.Queues[1].Initialized = false }},
		{"event idx mismatch", func(s *mmio.State) { s.Queues[1].EventIdx = false }},
		{"initialized while inactive", func(s *mmio.State) { s.Status, s.Active = sFeat, false }},
		{"device blob", func(s *mmio.State) { s.Device = []byte("bad blob") }},
	} {
		s := clone()
		tc.mod(&s)
		n := newSnapRig(t, mem)
		if err := n.tr.RestoreState(s); err == nil {
			t.Errorf("%s: restored", tc.name)
		}
	}
	n := newSnapRig(t, mem)
	if err := n.tr.RestoreState(clone()); err != nil {
		t.Fatal(err)
	}
	if err := n.tr.RestoreState(clone()); err == nil {
		t.Fatal("restored twice")
	}
	n.tr.Resume()
	n.wr(0x70, 0)
	virtiotest.Negotiate(n.tr, nil)
	if err := n.tr.RestoreState(clone()); err == nil {
		t.Fatal("restored a transport the driver uses")
	}
}
