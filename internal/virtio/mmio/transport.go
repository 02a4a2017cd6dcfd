package mmio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
)

// Transport constants.
const (
	// Size is the MMIO window of one device.
	Size = 0x1000
	// MagicValue is "virt" in little-endian, at offset 0.
	MagicValue = 0x74726976
	// Version is the register layout: 2, virtio 1.x (no legacy).
	Version = 2
	// VendorID is 0, as in Firecracker.
	VendorID = 0
	// NotifyOffset is the queue-notify register, where the machine places
	// the per-queue ioeventfds.
	NotifyOffset = 0x50
	// ConfigOffset is where the device configuration space starts.
	ConfigOffset = 0x100
)

// Interrupt-status bits (VIRTIO_MMIO_INT_VRING and VIRTIO_MMIO_INT_CONFIG).
const (
	InterruptUsedRing = 0x1
	InterruptConfig   = 0x2
)

// Register offsets below ConfigOffset.
const (
	regMagic             = 0x00
	regVersion           = 0x04
	regDeviceID          = 0x08
	regVendorID          = 0x0c
	regDeviceFeatures    = 0x10
	regDeviceFeaturesSel = 0x14
	regDriverFeatures    = 0x20
	regDriverFeaturesSel = 0x24
	regQueueSel          = 0x30
	regQueueNumMax       = 0x34
	regQueueNum          = 0x38
	regQueueReady        = 0x44
	regInterruptStatus   = 0x60
	regInterruptAck      = 0x64
	regStatus            = 0x70
	regQueueDescLow      = 0x80
	regQueueDescHigh     = 0x84
	regQueueAvailLow     = 0x90
	regQueueAvailHigh    = 0x94
	regQueueUsedLow      = 0xa0
	regQueueUsedHigh     = 0xa4
	regConfigGeneration  = 0xfc
)

// statusLive is the status after a complete initialisation.
const statusLive = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK

// validTransitions are the only status changes a driver may make, besides
// setting FAILED and writing 0: one step at a time, in order.
var validTransitions = [...][2]uint32{
	{0, virtio.StatusAcknowledge},
	{virtio.StatusAcknowledge, virtio.StatusAcknowledge | virtio.StatusDriver},
	{virtio.StatusAcknowledge | virtio.StatusDriver, virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK},
	{virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK, statusLive},
}

// Register accesses come from vCPUs, so every message the guest can cause
// is rate-limited, one limiter per message.
var (
	log = logger.For("fc_vcpu", "virtio/mmio")

	rlBadRead, rlBadWrite, rlUnknownRead, rlUnknownWrite  logger.RateLimiter
	rlFeaturePage, rlAckPage, rlAckUnknown, rlAckState    logger.RateLimiter
	rlQueueState, rlConfigState, rlTransition, rlActivate logger.RateLimiter
	rlReset, rlIRQ                                        logger.RateLimiter
)

// Transport is one virtio-mmio device window. It implements devices.Device.
type Transport struct {
	dev      virtio.Device
	mem      *memory.Guest
	irq      devices.Interrupt
	maxSizes []uint16

	// irqStatus is read and acknowledged by vCPUs and set by device
	// goroutines, hence atomic and outside mu.
	irqStatus atomic.Uint32

	mu                sync.Mutex // serialises register accesses and device calls
	status            uint32
	featuresSel       uint32
	driverFeaturesSel uint32
	queueSel          uint32
	acked             uint64
	configGeneration  uint32
	queues            []*virtio.Queue
	active            bool
	// suspended is set between Suspend (or RestoreState) and Resume: the
	// VM is paused, and a device the driver activates meanwhile is
	// suspended straight away.
	suspended bool
}

// New makes the transport for dev, which sees guest memory mem and raises
// irq. The device's queue sizes must each be a power of two no larger
// than virtio.MaxQueueSize.
func New(mem *memory.Guest, dev virtio.Device, irq devices.Interrupt) (*Transport, error) {
	if mem == nil || dev == nil || irq == nil {
		return nil, errors.New("virtio-mmio: nil memory, device or interrupt")
	}
	sizes := append([]uint16(nil), dev.QueueMaxSizes()...)
	for i, s := range sizes {
		if s == 0 || s&(s-1) != 0 || s > virtio.MaxQueueSize {
			return nil, fmt.Errorf("virtio-mmio: %v queue %d: invalid maximum size %d", dev.DeviceType(), i, s)
		}
	}
	t := &Transport{dev: dev, mem: mem, irq: irq, maxSizes: sizes}
	t.queues = newQueues(sizes)
	return t, nil
}

func newQueues(sizes []uint16) []*virtio.Queue {
	qs := make([]*virtio.Queue, len(sizes))
	for i, s := range sizes {
		qs[i] = virtio.NewQueue(s)
	}
	return qs
}

// Device returns the device behind the transport.
func (t *Transport) Device() virtio.Device { return t.dev }

// NumQueues is the device's queue count: the machine wires one ioeventfd
// per queue, with datamatch 0..NumQueues()-1.
func (t *Transport) NumQueues() int { return len(t.maxSizes) }

// Interrupt is the handle the device receives at activation; the VMM uses
// it to raise a config interrupt after changing a device's configuration.
func (t *Transport) Interrupt() virtio.Interrupt { return irqHandle{t} }

// Status returns the device status register.
func (t *Transport) Status() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

// Activated reports whether the device has been activated and not reset
// since.
func (t *Transport) Activated() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active
}

// AckedFeatures returns the features the driver has acknowledged so far.
func (t *Transport) AckedFeatures() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked
}

// InterruptStatus returns the interrupt-status register.
func (t *Transport) InterruptStatus() uint32 { return t.irqStatus.Load() }

// QueueNotify delivers the driver's kick of queue index to the device.
// The notify register and the machine's ioeventfd readers both call it.
// The device decides what a kick before activation means (Firecracker's
// devices drop it as spurious).
func (t *Transport) QueueNotify(index uint32) {
	if index >= uint32(len(t.maxSizes)) {
		// With ioeventfds, no datamatch catches this value and the write
		// exits to the VMM, where Firecracker reports it as unknown.
		log.RateLimited(&rlUnknownWrite).Warnf("unknown virtio mmio register write: %#x", NotifyOffset)
		return
	}
	t.dev.QueueNotify(int(index))
}

// availableFeatures includes VERSION_1, which the transport offers
// whatever the device says, so the driver may acknowledge it.
func (t *Transport) availableFeatures() uint64 {
	return t.dev.AvailableFeatures() | 1<<virtio.FeatureVersion1
}

// statusIs reports whether every bit of set and no bit of clear is set.
func (t *Transport) statusIs(set, clear uint32) bool { return t.status&(set|clear) == set }

// Read implements devices.Device.
func (t *Transport) Read(offset uint64, data []byte) {
	if offset >= ConfigOffset && offset < Size {
		t.mu.Lock()
		t.dev.ReadConfig(offset-ConfigOffset, data)
		t.mu.Unlock()
		return
	}
	if offset >= Size || len(data) != 4 {
		log.RateLimited(&rlBadRead).Warnf("invalid virtio mmio read: %#x:%#x", offset, len(data))
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var v uint32
	switch offset {
	case regMagic:
		v = MagicValue
	case regVersion:
		v = Version
	case regDeviceID:
		v = uint32(t.dev.DeviceType())
	case regVendorID:
		v = VendorID
	case regDeviceFeatures:
		f := t.availableFeatures()
		switch t.featuresSel {
		case 0:
			v = uint32(f)
		case 1:
			v = uint32(f>>32) | 1 // VERSION_1 is bit 0 of page 1
		default:
			log.RateLimited(&rlFeaturePage).Warnf("Received request for unknown features page.")
		}
	case regQueueNumMax:
		if q := t.selected(); q != nil {
			v = uint32(q.MaxSize)
		}
	case regQueueReady:
		if q := t.selected(); q != nil && q.Ready {
			v = 1
		}
	case regInterruptStatus:
		v = t.irqStatus.Load()
	case regStatus:
		v = t.status
	case regConfigGeneration:
		v = t.configGeneration
	default:
		log.RateLimited(&rlUnknownRead).Warnf("unknown virtio mmio register read: %#x", offset)
		return
	}
	binary.LittleEndian.PutUint32(data, v)
}

// selected is the queue QueueSel points at, or nil.
func (t *Transport) selected() *virtio.Queue {
	if t.queueSel < uint32(len(t.queues)) {
		return t.queues[t.queueSel]
	}
	return nil
}

// Write implements devices.Device.
func (t *Transport) Write(offset uint64, data []byte) {
	if offset >= ConfigOffset && offset < Size {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.statusIs(virtio.StatusDriver, virtio.StatusFailed|virtio.StatusDeviceNeedsReset) {
			t.dev.WriteConfig(offset-ConfigOffset, data)
		} else {
			log.RateLimited(&rlConfigState).Warnf("can not write to device config data area before driver is ready")
		}
		return
	}
	if offset >= Size || len(data) != 4 {
		log.RateLimited(&rlBadWrite).Warnf("invalid virtio mmio write: %#x:%#x", offset, len(data))
		return
	}
	v := binary.LittleEndian.Uint32(data)
	if offset == NotifyOffset {
		// Outside mu: a kick must not wait behind another vCPU's register
		// access, and the device may be slow to take it.
		t.QueueNotify(v)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case regDeviceFeaturesSel:
		t.featuresSel = v
	case regDriverFeatures:
		t.ackFeatures(v)
	case regDriverFeaturesSel:
		t.driverFeaturesSel = v
	case regQueueSel:
		t.queueSel = v
	case regQueueNum:
		t.updateQueue(func(q *virtio.Queue) { q.Size = uint16(v) })
	case regQueueReady:
		t.updateQueue(func(q *virtio.Queue) { q.Ready = v == 1 })
	case regInterruptAck:
		if t.statusIs(virtio.StatusDriverOK, 0) {
			t.irqStatus.And(^v)
		}
	case regStatus:
		t.setStatus(v)
	case regQueueDescLow:
		t.updateQueue(func(q *virtio.Queue) { q.DescTable = setLow(q.DescTable, v) })
	case regQueueDescHigh:
		t.updateQueue(func(q *virtio.Queue) { q.DescTable = setHigh(q.DescTable, v) })
	case regQueueAvailLow:
		t.updateQueue(func(q *virtio.Queue) { q.AvailRing = setLow(q.AvailRing, v) })
	case regQueueAvailHigh:
		t.updateQueue(func(q *virtio.Queue) { q.AvailRing = setHigh(q.AvailRing, v) })
	case regQueueUsedLow:
		t.updateQueue(func(q *virtio.Queue) { q.UsedRing = setLow(q.UsedRing, v) })
	case regQueueUsedHigh:
		t.updateQueue(func(q *virtio.Queue) { q.UsedRing = setHigh(q.UsedRing, v) })
	default:
		log.RateLimited(&rlUnknownWrite).Warnf("unknown virtio mmio register write: %#x", offset)
	}
}

func setLow(a uint64, v uint32) uint64  { return a&^0xffff_ffff | uint64(v) }
func setHigh(a uint64, v uint32) uint64 { return a&0xffff_ffff | uint64(v)<<32 }

// ackFeatures records a driver-features write: allowed only between DRIVER
// and FEATURES_OK, restricted to what is offered, and cumulative.
func (t *Transport) ackFeatures(v uint32) {
	if !t.statusIs(virtio.StatusDriver, virtio.StatusFeaturesOK|virtio.StatusFailed|virtio.StatusDeviceNeedsReset) {
		log.RateLimited(&rlAckState).Warnf("ack virtio features in invalid state %#x", t.status)
		return
	}
	var f uint64
	switch t.driverFeaturesSel {
	case 0:
		f = uint64(v)
	case 1:
		f = uint64(v) << 32
	default:
		log.RateLimited(&rlAckPage).Warnf("Cannot acknowledge unknown features page: %d", t.driverFeaturesSel)
	}
	if unknown := f &^ t.availableFeatures(); unknown != 0 {
		log.RateLimited(&rlAckUnknown).Warnf("Received acknowledge request for unknown feature: %#x", f)
		f &^= unknown
	}
	t.acked |= f
}

// updateQueue applies a queue register write, allowed only after
// FEATURES_OK and before DRIVER_OK; an out-of-range QueueSel is ignored.
func (t *Transport) updateQueue(f func(*virtio.Queue)) {
	if !t.statusIs(virtio.StatusFeaturesOK, virtio.StatusDriverOK|virtio.StatusFailed) {
		log.RateLimited(&rlQueueState).Warnf("update virtio queue in invalid state %#x", t.status)
		return
	}
	if q := t.selected(); q != nil {
		f(q)
	}
}

// setStatus runs the status state machine (virtio 1.x §2.1.1, §3.1.1).
func (t *Transport) setStatus(v uint32) {
	switch {
	case v&virtio.StatusFailed != 0:
		// FAILED is sticky: no transition below starts from a status
		// that has it, so only a reset clears it.
		t.status |= virtio.StatusFailed
	case v == 0:
		if t.status == 0 {
			return
		}
		if err := t.dev.Reset(); err != nil {
			log.RateLimited(&rlReset).Errorf("failed to reset virtio device: %v", err)
			t.status |= virtio.StatusFailed
			return
		}
		t.reset()
	case t.validTransition(v):
		t.status = v
		switch v {
		case virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK:
			t.dev.AckFeatures(t.acked)
		case statusLive:
			if !t.active {
				t.activate()
			}
		}
	default:
		log.RateLimited(&rlTransition).Warnf("invalid virtio driver status transition: %#x -> %#x", t.status, v)
	}
}

func (t *Transport) validTransition(v uint32) bool {
	for _, tr := range validTransitions {
		if t.status == tr[0] && v == tr[1] {
			return true
		}
	}
	return false
}

// reset returns the transport to its power-on state after the device
// has reset. configGeneration is kept: it must only ever increase.
func (t *Transport) reset() {
	t.featuresSel, t.driverFeaturesSel, t.queueSel = 0, 0, 0
	t.irqStatus.Store(0)
	t.status = 0
	t.acked = 0
	t.active = false
	// Fresh queues: the device may have kept pointers to the old ones.
	t.queues = newQueues(t.maxSizes)
}

// activate validates the queues and starts the device. On failure the
// device needs a reset, which the driver learns from a config interrupt
// (virtio 1.x §2.1.2).
func (t *Transport) activate() {
	err := t.initQueues()
	if err == nil {
		err = t.dev.Activate(t.mem, t.queues, irqHandle{t})
	}
	if err != nil {
		t.status |= virtio.StatusDeviceNeedsReset
		_ = t.raise(InterruptConfig)
		log.RateLimited(&rlActivate).Errorf("Failed to activate virtio device: %v", err)
		return
	}
	t.active = true
	if sn, ok := t.dev.(virtio.Snapshotter); ok && t.suspended {
		// A vCPU finished this write as the VM paused: the device must not
		// run until Resume, which looks at every queue.
		sn.Suspend()
		return
	}
	// A kick that came before activation may have been dropped: let the
	// device look at every queue once.
	for i := range t.queues {
		t.dev.QueueNotify(i)
	}
}

func (t *Transport) initQueues() error {
	eventIdx := virtio.HasFeature(t.acked, virtio.FeatureEventIdx)
	for i, q := range t.queues {
		if err := q.Initialize(t.mem); err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
		q.EventIdx = eventIdx
	}
	return nil
}

// raise sets bit in the interrupt status, then signals the line, so that
// the guest's handler always finds the cause.
func (t *Transport) raise(bit uint32) error {
	t.irqStatus.Or(bit)
	if err := t.irq.Trigger(); err != nil {
		log.RateLimited(&rlIRQ).Errorf("Failed to send irq to the guest: %v", err)
		return err
	}
	return nil
}

// irqHandle is the virtio.Interrupt of a transport. All queues share the
// one line and the used-ring bit.
type irqHandle struct{ t *Transport }

// TriggerQueue sets the used-ring bit and raises the line.
func (h irqHandle) TriggerQueue(int) error { return h.t.raise(InterruptUsedRing) }

// TriggerConfig sets the config bit and raises the line.
func (h irqHandle) TriggerConfig() error { return h.t.raise(InterruptConfig) }

// CmdlineParam is the kernel command-line token announcing a device at
// base on GSI gsi, as Firecracker writes it: virtio_mmio.device=4K@0xc0001000:5.
func CmdlineParam(base uint64, gsi uint32) string {
	return fmt.Sprintf("virtio_mmio.device=%dK@%#x:%d", Size>>10, base, gsi)
}
