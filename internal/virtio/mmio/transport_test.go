package mmio_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

const (
	ramStart = 0
	ramSize  = 0x100000
	// Queue rings Linux-style, one page apart per queue.
	ringBase = 0x10000
)

const (
	sAck   = virtio.StatusAcknowledge
	sDrv   = sAck | virtio.StatusDriver
	sFeat  = sDrv | virtio.StatusFeaturesOK
	sLive  = sFeat | virtio.StatusDriverOK
	sNeeds = virtio.StatusDeviceNeedsReset
	sFail  = virtio.StatusFailed
)

type rig struct {
	t   *testing.T
	mem *memory.Guest
	dev *virtiotest.Device
	irq *virtiotest.Line
	tr  *mmio.Transport
}

func newRig(t *testing.T) *rig {
	t.Helper()
	mem := virtiotest.MemoryAt(t, ramStart, ramSize)
	dev := &virtiotest.Device{
		Type:     virtio.TypeBlock,
		Features: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<5 | 1<<40,
		MaxSizes: []uint16{256, 64},
		Config:   []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
	}
	tr, irq := virtiotest.NewTransport(t, mem, dev)
	return &rig{t: t, mem: mem, dev: dev, irq: irq, tr: tr}
}

func (r *rig) rd(off uint64) uint32    { return virtiotest.Read32(r.tr, off) }
func (r *rig) wr(off uint64, v uint32) { virtiotest.Write32(r.tr, off, v) }

func (r *rig) expectStatus(want uint32) {
	r.t.Helper()
	virtiotest.ExpectStatus(r.t, r.tr, want)
}

// negotiate runs the driver up to FEATURES_OK, acknowledging features.
func (r *rig) negotiate(features uint64) {
	r.wr(0x70, 0)
	r.wr(0x70, sAck)
	r.wr(0x70, sDrv)
	r.wr(0x24, 1)
	r.wr(0x20, uint32(features>>32))
	r.wr(0x24, 0)
	r.wr(0x20, uint32(features))
	r.wr(0x70, sFeat)
}

// setupQueue programs queue i as Linux does and returns its ring.
func (r *rig) setupQueue(i uint32, size uint16) *virtiotest.Ring {
	r.t.Helper()
	ring := virtiotest.RingAt(r.t, r.mem, ringBase+uint64(i)*0x10000, size)
	r.wr(0x30, i)
	if r.rd(0x44) != 0 {
		r.t.Fatalf("queue %d ready before setup", i)
	}
	virtiotest.SetupQueue(r.tr, i, ring)
	if r.rd(0x44) != 1 {
		r.t.Fatalf("queue %d not ready after setup", i)
	}
	return ring
}

// TestLinuxInitSequence follows drivers/virtio/virtio_mmio.c and
// virtio.c: probe, reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK,
// queues, DRIVER_OK, then a kick, an interrupt and its acknowledgement.
func TestLinuxInitSequence(t *testing.T) {
	r := newRig(t)
	if r.rd(0x00) != mmio.MagicValue || r.rd(0x04) != 2 || r.rd(0x08) != uint32(virtio.TypeBlock) || r.rd(0x0c) != 0 {
		t.Fatal("bad identification registers")
	}
	r.wr(0x70, 0) // reset of a fresh device: nothing to do
	if r.dev.Resets() != 0 {
		t.Fatal("reset at status 0 reached the device")
	}
	r.wr(0x70, sAck)
	r.wr(0x70, sDrv)
	r.wr(0x14, 1)
	hi := r.rd(0x10)
	r.wr(0x14, 0)
	lo := r.rd(0x10)
	offered := uint64(hi)<<32 | uint64(lo)
	if offered != r.dev.Features {
		t.Fatalf("features %#x, want %#x", offered, r.dev.Features)
	}
	// The driver takes VERSION_1, EVENT_IDX and bit 40, not bit 5.
	want := uint64(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<40)
	r.wr(0x24, 1)
	r.wr(0x20, uint32(want>>32))
	r.wr(0x24, 0)
	r.wr(0x20, uint32(want))
	r.wr(0x70, sFeat)
	r.expectStatus(sFeat)
	if got, calls := r.dev.Acked(); got != want || calls != 1 {
		t.Fatalf("device acked %#x (%d calls), want %#x", got, calls, want)
	}
	if r.tr.AckedFeatures() != want {
		t.Fatalf("transport acked %#x", r.tr.AckedFeatures())
	}
	var rings []*virtiotest.Ring
	for i := uint32(0); ; i++ {
		r.wr(0x30, i)
		max := r.rd(0x34)
		if max == 0 {
			if i != 2 {
				t.Fatalf("%d queues, want 2", i)
			}
			break
		}
		rings = append(rings, r.setupQueue(i, uint16(min(max, 128))))
	}
	if r.dev.Active() {
		t.Fatal("active before DRIVER_OK")
	}
	r.wr(0x70, sLive)
	r.expectStatus(sLive)
	if !r.dev.Active() || !r.tr.Activated() {
		t.Fatal("not activated by DRIVER_OK")
	}
	qs := r.dev.Queues()
	if len(qs) != 2 || qs[0].Size != 128 || qs[1].Size != 64 || !qs[0].EventIdx || !qs[1].Initialized() {
		t.Fatalf("queues given to Activate: %+v", qs)
	}
	if n := r.dev.Notifies(); len(n) != 2 || n[0] != 0 || n[1] != 1 {
		t.Fatalf("re-notification after activation: %v", n)
	}

	// The driver kicks queue 1; the device completes a chain and raises
	// an interrupt; the driver reads and acknowledges it.
	head, _ := rings[1].AddChain(virtiotest.Buffer{Addr: 0x80000, Len: 16, Writable: true})
	r.wr(0x50, 1)
	if n := r.dev.Notifies(); len(n) != 1 || n[0] != 1 {
		t.Fatalf("notify: %v", n)
	}
	c, err := qs[1].Pop(r.mem)
	if err != nil || c == nil || c.Head != head {
		t.Fatalf("Pop = %v, %v", c, err)
	}
	qs[1].AddUsed(r.mem, c.Head, 16)
	if qs[1].NeedsNotification(r.mem) {
		if err := r.dev.Interrupt().TriggerQueue(1); err != nil {
			t.Fatal(err)
		}
	}
	if r.irq.Count() != 1 || r.rd(0x60) != mmio.InterruptUsedRing {
		t.Fatalf("irqs %d, status %#x", r.irq.Count(), r.rd(0x60))
	}
	r.dev.Interrupt().TriggerConfig()
	if r.rd(0x60) != mmio.InterruptUsedRing|mmio.InterruptConfig {
		t.Fatalf("status %#x", r.rd(0x60))
	}
	r.wr(0x64, mmio.InterruptUsedRing)
	if r.rd(0x60) != mmio.InterruptConfig {
		t.Fatalf("after ack: %#x", r.rd(0x60))
	}
	if u, ok, _ := rings[1].PopUsed(); !ok || u.ID != uint32(head) || u.Len != 16 {
		t.Fatalf("used %+v", u)
	}

	// Queue registers are frozen now.
	r.wr(0x30, 0)
	r.wr(0x38, 16)
	if qs[0].Size != 128 {
		t.Fatal("queue size changed after DRIVER_OK")
	}

	// Reset (driver unload): the device resets and the transport forgets.
	r.wr(0x70, 0)
	r.expectStatus(0)
	if r.dev.Resets() != 1 || r.dev.Active() || r.tr.Activated() || r.tr.AckedFeatures() != 0 || r.rd(0x60) != 0 {
		t.Fatal("reset incomplete")
	}
	r.wr(0x30, 0)
	if r.rd(0x44) != 0 || r.rd(0x34) != 256 {
		t.Fatal("queue state survived reset")
	}
	// And it comes up again.
	r.negotiate(1 << virtio.FeatureVersion1)
	r.setupQueue(0, 256)
	r.setupQueue(1, 64)
	r.wr(0x70, sLive)
	r.expectStatus(sLive)
	if !r.dev.Active() || r.dev.Queues()[0].EventIdx {
		t.Fatal("second activation")
	}
}

func TestFeatureWindows(t *testing.T) {
	r := newRig(t)
	r.dev.Features = 1 << 3 // a device that forgot VERSION_1
	r.wr(0x14, 1)
	if r.rd(0x10) != 1 {
		t.Fatal("VERSION_1 not forced in window 1")
	}
	r.wr(0x14, 0)
	if r.rd(0x10) != 1<<3 {
		t.Fatal("window 0")
	}
	r.wr(0x14, 2)
	if r.rd(0x10) != 0 {
		t.Fatal("window 2 not empty")
	}
	// Acknowledgement: only between DRIVER and FEATURES_OK, only offered
	// bits (VERSION_1 counts as offered), cumulative.
	r.wr(0x20, 1<<3)
	if r.tr.AckedFeatures() != 0 {
		t.Fatal("features acked before DRIVER")
	}
	r.wr(0x70, sAck)
	r.wr(0x70, sDrv)
	r.wr(0x20, 1<<3|1<<4)
	r.wr(0x24, 1)
	r.wr(0x20, 1|1<<7)
	r.wr(0x24, 2)
	r.wr(0x20, 0xffffffff)
	want := uint64(1<<3 | 1<<virtio.FeatureVersion1)
	if r.tr.AckedFeatures() != want {
		t.Fatalf("acked %#x, want %#x", r.tr.AckedFeatures(), want)
	}
	r.wr(0x70, sFeat)
	r.wr(0x24, 0)
	r.wr(0x20, 0)
	r.wr(0x20, 1<<3)
	if r.tr.AckedFeatures() != want {
		t.Fatal("features changed after FEATURES_OK")
	}
	if f, _ := r.dev.Acked(); f != want {
		t.Fatalf("device got %#x", f)
	}
}

func TestStatusTransitions(t *testing.T) {
	tests := []struct {
		name   string
		writes []uint32
		want   uint32
	}{
		{"skip ACK", []uint32{sDrv}, 0},
		{"skip DRIVER", []uint32{sAck, sAck | virtio.StatusFeaturesOK}, sAck},
		{"skip FEATURES_OK", []uint32{sAck, sDrv, sDrv | virtio.StatusDriverOK}, sDrv},
		{"DRIVER alone", []uint32{sAck, virtio.StatusDriver}, sAck},
		{"clear a bit", []uint32{sAck, sDrv, sAck}, sDrv},
		{"same value", []uint32{sAck, sAck}, sAck},
		{"NEEDS_RESET from driver", []uint32{sAck, sAck | sNeeds}, sAck},
		{"FAILED", []uint32{sAck, sDrv, sFail}, sDrv | sFail},
		{"FAILED with other bits", []uint32{sAck, sFail | 0x7f}, sAck | sFail},
		{"FAILED sticky", []uint32{sAck, sFail, sDrv, sDrv | sFail}, sAck | sFail},
		{"FAILED blocks progress", []uint32{sFail, sAck}, sFail},
		{"FAILED then reset", []uint32{sAck, sFail, 0, sAck}, sAck},
		{"full", []uint32{sAck, sDrv, sFeat, sLive}, sLive},
		{"after live", []uint32{sAck, sDrv, sFeat, sLive, sLive | 0x10}, sLive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			for _, w := range tc.writes {
				if w&virtio.StatusDriverOK != 0 && r.rd(0x70) == sFeat {
					r.setupQueue(0, 16)
					r.setupQueue(1, 16)
				}
				r.wr(0x70, w)
			}
			r.expectStatus(tc.want)
			if r.dev.Active() != (tc.want&virtio.StatusDriverOK != 0) {
				t.Fatalf("active = %v", r.dev.Active())
			}
		})
	}
}

func TestResetFailure(t *testing.T) {
	r := newRig(t)
	r.dev.ResetErr = errors.New("no reset")
	r.wr(0x70, sAck)
	r.wr(0x70, 0)
	r.expectStatus(sAck | sFail)
}

func TestActivationFailure(t *testing.T) {
	t.Run("queue not ready", func(t *testing.T) {
		r := newRig(t)
		r.negotiate(1 << virtio.FeatureVersion1)
		r.setupQueue(0, 16) // queue 1 left unset
		r.wr(0x70, sLive)
		r.expectStatus(sLive | sNeeds)
		if r.dev.Active() || r.tr.Activated() {
			t.Fatal("activated with a bad queue")
		}
		if r.rd(0x60) != mmio.InterruptConfig || r.irq.Count() != 1 {
			t.Fatalf("no config interrupt: status %#x, %d irqs", r.rd(0x60), r.irq.Count())
		}
		// Stuck until reset: config writes and feature acks refused.
		r.tr.Write(0x100, []byte{0xff})
		if r.dev.Config[0] != 1 {
			t.Fatal("config written while NEEDS_RESET")
		}
		r.wr(0x70, 0)
		r.expectStatus(0)
	})
	for _, bad := range []struct {
		name string
		mod  func(rg *virtiotest.Ring, r *rig)
	}{
		{"size not power of two", func(_ *virtiotest.Ring, r *rig) { r.wr(0x38, 24) }},
		{"size above max", func(_ *virtiotest.Ring, r *rig) { r.wr(0x38, 128) }},
		{"misaligned desc", func(rg *virtiotest.Ring, r *rig) { r.wr(0x80, uint32(rg.Desc+8)) }},
		{"used outside RAM", func(rg *virtiotest.Ring, r *rig) { r.wr(0xa4, 1) }},
	} {
		t.Run(bad.name, func(t *testing.T) {
			r := newRig(t)
			r.negotiate(1 << virtio.FeatureVersion1)
			r.setupQueue(0, 16)
			rg := r.setupQueue(1, 16)
			bad.mod(rg, r)
			r.wr(0x70, sLive)
			r.expectStatus(sLive | sNeeds)
		})
	}
	t.Run("device refuses", func(t *testing.T) {
		r := newRig(t)
		r.dev.ActivateErr = virtiotest.ErrActivate
		r.negotiate(1 << virtio.FeatureVersion1)
		r.setupQueue(0, 16)
		r.setupQueue(1, 16)
		r.wr(0x70, sLive)
		r.expectStatus(sLive | sNeeds)
		if r.rd(0x60) != mmio.InterruptConfig {
			t.Fatal("no config interrupt")
		}
	})
}

func TestOnly4ByteRegisterAccess(t *testing.T) {
	r := newRig(t)
	for _, n := range []int{1, 2, 3, 8} {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0xaa
		}
		r.tr.Read(0x00, b)
		for _, x := range b {
			if x != 0xaa {
				t.Fatalf("%d-byte read of magic returned data", n)
			}
		}
		w := make([]byte, n)
		w[0] = sAck
		r.tr.Write(0x70, w)
		r.expectStatus(0)
	}
	// Unknown and write-only registers leave the buffer alone.
	for _, off := range []uint64{0x02, 0x18, 0x20, 0x38, 0x50, 0x64, 0x80, 0xf8} {
		b := []byte{0xaa, 0xaa, 0xaa, 0xaa}
		r.tr.Read(off, b)
		if b[0] != 0xaa {
			t.Fatalf("read of %#x returned data", off)
		}
	}
	// Writes to read-only registers change nothing.
	r.wr(0x00, 0)
	r.wr(0x34, 0)
	r.wr(0x60, 0xff)
	r.wr(0xfc, 7)
	if r.rd(0x00) != mmio.MagicValue || r.rd(0x34) != 256 || r.rd(0x60) != 0 || r.rd(0xfc) != 0 {
		t.Fatal("read-only register written")
	}
	// Outside the window.
	b := []byte{0xaa, 0xaa, 0xaa, 0xaa}
	r.tr.Read(mmio.Size, b)
	r.tr.Write(mmio.Size, b)
	if b[0] != 0xaa {
		t.Fatal("read past the window")
	}
}

func TestConfigSpace(t *testing.T) {
	r := newRig(t)
	// Reads at any size and offset, zero past the end, even before DRIVER.
	b := make([]byte, 8)
	r.tr.Read(0x100+6, b)
	if string(b) != "\x07\x08\x09\x0a\x00\x00\x00\x00" {
		t.Fatalf("config read %v", b)
	}
	r.tr.Read(0x100+0x200, b[:1])
	if b[0] != 0 {
		t.Fatal("config read past the end")
	}
	// Writes need DRIVER.
	r.tr.Write(0x100, []byte{0xee})
	r.wr(0x70, sAck)
	r.tr.Write(0x101, []byte{0xee})
	if r.dev.Config[0] != 1 || r.dev.Config[1] != 2 {
		t.Fatal("config written before DRIVER")
	}
	r.wr(0x70, sDrv)
	r.tr.Write(0x102, []byte{0xee, 0xdd})
	if r.dev.Config[2] != 0xee || r.dev.Config[3] != 0xdd {
		t.Fatal("config write after DRIVER lost")
	}
	r.wr(0x70, sDrv|sFail)
	r.tr.Write(0x104, []byte{0xee})
	if r.dev.Config[4] != 5 {
		t.Fatal("config written after FAILED")
	}
	if r.rd(0xfc) != 0 {
		t.Fatal("config generation")
	}
}

func TestQueueRegistersGated(t *testing.T) {
	r := newRig(t)
	r.wr(0x70, sAck)
	r.wr(0x70, sDrv)
	r.wr(0x30, 0)
	r.wr(0x38, 16)
	r.wr(0x44, 1)
	if r.rd(0x44) != 0 {
		t.Fatal("queue written before FEATURES_OK")
	}
	r.wr(0x70, sFeat)
	r.wr(0x30, 5) // no such queue: ignored, reads 0
	r.wr(0x44, 1)
	if r.rd(0x44) != 0 || r.rd(0x34) != 0 {
		t.Fatal("phantom queue")
	}
	r.wr(0x30, 0)
	r.wr(0x44, 2) // only 1 means ready
	if r.rd(0x44) != 0 {
		t.Fatal("ready = 2 accepted")
	}

	// The address halves combine; a later low write keeps the high half.
	r2 := newRig(t)
	r2.negotiate(0)
	r2.setupQueue(0, 16)
	ring := r2.setupQueue(1, 16)
	r2.wr(0x44, 0)
	r2.wr(0x90, 0xdead0000)
	r2.wr(0x94, 0x1)
	r2.wr(0x94, uint32(ring.Avail>>32))
	r2.wr(0x90, uint32(ring.Avail))
	r2.wr(0x44, 1)
	r2.wr(0x70, sLive)
	r2.expectStatus(sLive)
	if q := r2.dev.Queues()[1]; q.AvailRing != ring.Avail || q.DescTable != ring.Desc || q.UsedRing != ring.Used {
		t.Fatalf("queue addresses %#x %#x %#x", q.DescTable, q.AvailRing, q.UsedRing)
	}
}

func TestInterruptAckNeedsDriverOK(t *testing.T) {
	r := newRig(t)
	r.tr.Interrupt().TriggerConfig()
	r.wr(0x64, 0xffffffff)
	if r.rd(0x60) != mmio.InterruptConfig {
		t.Fatal("interrupt acked before DRIVER_OK")
	}
	r.irq.SetErr(errors.New("irqfd gone"))
	if err := r.tr.Interrupt().TriggerQueue(0); err == nil {
		t.Fatal("trigger error lost")
	}
	if r.rd(0x60) != mmio.InterruptConfig|mmio.InterruptUsedRing {
		t.Fatal("status bit not set before triggering")
	}
}

func TestQueueNotify(t *testing.T) {
	r := newRig(t)
	r.wr(0x50, 0) // before activation: the dummy device drops it
	r.negotiate(1 << virtio.FeatureVersion1)
	r.setupQueue(0, 16)
	r.setupQueue(1, 16)
	r.wr(0x70, sLive)
	r.dev.Notifies()
	r.wr(0x50, 2) // no such queue
	r.tr.QueueNotify(1)
	r.tr.Write(0x50, []byte{0, 0}) // wrong size
	if n := r.dev.Notifies(); len(n) != 1 || n[0] != 1 {
		t.Fatalf("notifies %v", n)
	}
	if r.tr.NumQueues() != 2 {
		t.Fatal("NumQueues")
	}
}

func TestNewValidates(t *testing.T) {
	mem, _ := virtiotest.NewMemory(0, 0x1000)
	for _, sizes := range [][]uint16{{0}, {100}, {512}, {256, 3}} {
		if _, err := mmio.New(mem, &virtiotest.Device{MaxSizes: sizes}, &virtiotest.Line{}); err == nil {
			t.Errorf("sizes %v accepted", sizes)
		}
	}
	if _, err := mmio.New(nil, &virtiotest.Device{}, &virtiotest.Line{}); err == nil {
		t.Error("nil memory accepted")
	}
}

func TestOnBus(t *testing.T) {
	r := newRig(t)
	var bus devices.Bus
	var _ devices.Device = r.tr
	if err := bus.Insert(r.tr, 0xc0001000, mmio.Size); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if !bus.Read(0xc0001000, b) || binary.LittleEndian.Uint32(b) != mmio.MagicValue {
		t.Fatal("magic through the bus")
	}
	if got := mmio.CmdlineParam(0xc0001000, 5); got != "virtio_mmio.device=4K@0xc0001000:5" {
		t.Fatalf("CmdlineParam = %q", got)
	}
}

// TestConcurrentAccess has vCPUs poll and acknowledge interrupts and kick
// queues while the device completes chains and raises interrupts; run
// with -race.
func TestConcurrentAccess(t *testing.T) {
	r := newRig(t)
	r.negotiate(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx)
	ring := r.setupQueue(0, 16)
	r.setupQueue(1, 16)
	r.wr(0x70, sLive)
	q := r.dev.Queues()[0]
	irq := r.dev.Interrupt()
	stop := make(chan struct{})
	done := make(chan struct{})
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			b := make([]byte, 4)
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.tr.Read(0x60, b)
				r.tr.Write(0x64, b)
				r.tr.Write(0x50, []byte{1, 0, 0, 0})
				r.tr.Read(0x70, b)
				r.tr.Read(0x100, b)
			}
		}()
	}
	for i := range 2000 {
		h, err := ring.AddChain(virtiotest.Buffer{Addr: 0x80000, Len: 8})
		if err != nil {
			t.Fatal(err)
		}
		c, err := q.Pop(r.mem)
		if err != nil || c == nil || c.Head != h {
			t.Fatalf("%d: Pop = %v, %v", i, c, err)
		}
		q.AddUsed(r.mem, c.Head, 0)
		ring.PopUsed()
		if q.NeedsNotification(r.mem) {
			irq.TriggerQueue(0)
		}
	}
	close(stop)
	<-done
	<-done
}
