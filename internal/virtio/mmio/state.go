package mmio

import (
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/virtio"
)

// State is what a snapshot keeps of one virtio-mmio device: the registers
// the driver programmed, the queues, and the device's own state as the
// device encoded it (virtio.Snapshotter.SaveState).
type State struct {
	DeviceType        virtio.DeviceType   `json:"device_type"`
	Status            uint32              `json:"status"`
	FeaturesSel       uint32              `json:"features_sel"`
	DriverFeaturesSel uint32              `json:"driver_features_sel"`
	QueueSel          uint32              `json:"queue_sel"`
	AckedFeatures     uint64              `json:"acked_features"`
	InterruptStatus   uint32              `json:"interrupt_status"`
	ConfigGeneration  uint32              `json:"config_generation"`
	Active            bool                `json:"active"`
	Queues            []virtio.QueueState `json:"queues"`
	Device            []byte              `json:"device"`
}

// ErrState is wrapped by RestoreState's errors for a saved state that no
// driver and device could have produced.
var ErrState = errors.New("virtio-mmio: invalid saved state")

// statusBases are the statuses a driver reaches one step at a time
// (validTransitions), to which FAILED may be added at any point and
// DEVICE_NEEDS_RESET after a failed activation.
var statusBases = [...]uint32{
	0,
	virtio.StatusAcknowledge,
	virtio.StatusAcknowledge | virtio.StatusDriver,
	virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK,
	statusLive,
}

// snapshotter returns the device as a virtio.Snapshotter, or an error
// naming it.
func (t *Transport) snapshotter() (virtio.Snapshotter, error) {
	sn, ok := t.dev.(virtio.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("virtio-mmio: the %v device does not support snapshots", t.dev.DeviceType())
	}
	return sn, nil
}

// Suspend stops the device's processing while the VM is paused: it
// forwards to the device if it is a virtio.Snapshotter and active. The
// registers stay usable (a vCPU may still finish an access), and a device
// the driver activates meanwhile is suspended at once, so that nothing
// runs until Resume. Suspending twice is harmless.
func (t *Transport) Suspend() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.suspended {
		return
	}
	t.suspended = true
	if sn, ok := t.dev.(virtio.Snapshotter); ok && t.active {
		sn.Suspend()
	}
}

// Resume restarts a device stopped by Suspend or restored by
// RestoreState. An active device then looks at every queue, and the
// driver gets one used-ring interrupt, as Firecracker signals every device
// on resume: a completion whose interrupt was lost across the snapshot
// would otherwise hang the driver, while a spurious one is harmless.
// Without a Suspend before, it does nothing.
func (t *Transport) Resume() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.suspended {
		return nil
	}
	if sn, ok := t.dev.(virtio.Snapshotter); ok && t.active {
		if err := sn.Resume(); err != nil {
			return fmt.Errorf("virtio-mmio: resuming the %v device: %w", t.dev.DeviceType(), err)
		}
	}
	t.suspended = false
	if t.active {
		if err := t.raise(InterruptUsedRing); err != nil {
			return fmt.Errorf("virtio-mmio: interrupt on resume: %w", err)
		}
	}
	return nil
}

// Suspended reports whether the transport is between Suspend (or
// RestoreState) and Resume.
func (t *Transport) Suspended() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.suspended
}

// SaveState returns the transport's and the device's state. Call it while
// the VM is paused, after Suspend (an inactive device need not be
// suspended); it fails if an active device runs, or if the device is not
// a virtio.Snapshotter.
func (t *Transport) SaveState() (State, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sn, err := t.snapshotter()
	if err != nil {
		return State{}, err
	}
	if t.active && !t.suspended {
		return State{}, fmt.Errorf("virtio-mmio: the %v device is running: suspend it before saving its state", t.dev.DeviceType())
	}
	dev, err := sn.SaveState()
	if err != nil {
		return State{}, fmt.Errorf("virtio-mmio: saving the %v device: %w", t.dev.DeviceType(), err)
	}
	s := State{
		DeviceType:        t.dev.DeviceType(),
		Status:            t.status,
		FeaturesSel:       t.featuresSel,
		DriverFeaturesSel: t.driverFeaturesSel,
		QueueSel:          t.queueSel,
		AckedFeatures:     t.acked,
		InterruptStatus:   t.irqStatus.Load(),
		ConfigGeneration:  t.configGeneration,
		Active:            t.active,
		Queues:            make([]virtio.QueueState, len(t.queues)),
		Device:            dev,
	}
	for i, q := range t.queues {
		s.Queues[i] = q.SaveState()
	}
	return s, nil
}

// RestoreState sets a freshly built transport and its device (built from
// the same configuration, over the VM's memory) to a saved state. It
// checks the state against what a driver could have done, restores the
// registers and queues, hands the device its own state, and, for an
// active device, acknowledges the features and activates it with the
// restored queues, suspended: a restored VM starts paused, and Resume
// starts the device. Malformed state gives an error wrapping ErrState (or
// the device's error), never a panic; after an error, discard the
// transport and the device.
func (t *Transport) RestoreState(s State) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	sn, err := t.snapshotter()
	if err != nil {
		return err
	}
	if t.status != 0 || t.active || t.acked != 0 {
		return errors.New("virtio-mmio: restoring a device the driver already uses")
	}
	if err := t.checkState(s); err != nil {
		return err
	}
	eventIdx := virtio.HasFeature(s.AckedFeatures, virtio.FeatureEventIdx)
	queues := newQueues(t.maxSizes)
	for i, qs := range s.Queues {
		if err := queues[i].RestoreState(t.mem, qs); err != nil {
			return fmt.Errorf("%w: queue %d: %w", ErrState, i, err)
		}
		q := queues[i]
		switch {
		case s.Active && !q.Initialized():
			return fmt.Errorf("%w: queue %d of an active device is not initialized", ErrState, i)
		case s.Active && q.EventIdx != eventIdx:
			return fmt.Errorf("%w: queue %d: EVENT_IDX %v, negotiated %v", ErrState, i, q.EventIdx, eventIdx)
		case !s.Active && q.Initialized() && s.Status&virtio.StatusDeviceNeedsReset == 0:
			// Only a failed activation leaves initialized queues behind.
			return fmt.Errorf("%w: queue %d initialized on an inactive device", ErrState, i)
		}
	}
	if err := sn.RestoreState(s.Device); err != nil {
		return fmt.Errorf("virtio-mmio: restoring the %v device: %w", t.dev.DeviceType(), err)
	}
	// Checked after the device's state: what it offers may depend on it.
	if unknown := s.AckedFeatures &^ t.availableFeatures(); unknown != 0 {
		return fmt.Errorf("%w: acknowledged features %#x the device does not offer", ErrState, unknown)
	}
	if s.Status&virtio.StatusFeaturesOK != 0 {
		// The device saw them when the driver set FEATURES_OK.
		t.dev.AckFeatures(s.AckedFeatures)
	}
	// Set before activation, so that an interrupt the device raises
	// meanwhile adds to the saved bits.
	t.irqStatus.Store(s.InterruptStatus)
	if s.Active {
		if err := t.dev.Activate(t.mem, queues, irqHandle{t}); err != nil {
			t.irqStatus.Store(0)
			return fmt.Errorf("virtio-mmio: activating the restored %v device: %w", t.dev.DeviceType(), err)
		}
		sn.Suspend()
	}
	t.status = s.Status
	t.featuresSel, t.driverFeaturesSel, t.queueSel = s.FeaturesSel, s.DriverFeaturesSel, s.QueueSel
	t.acked = s.AckedFeatures
	t.configGeneration = s.ConfigGeneration
	t.queues = queues
	t.active = s.Active
	t.suspended = true
	return nil
}

// checkState rejects the register values no driver could have set.
func (t *Transport) checkState(s State) error {
	if s.DeviceType != t.dev.DeviceType() {
		return fmt.Errorf("%w: a %v device's state for a %v device", ErrState, s.DeviceType, t.dev.DeviceType())
	}
	if len(s.Queues) != len(t.maxSizes) {
		return fmt.Errorf("%w: %d queues, the device has %d", ErrState, len(s.Queues), len(t.maxSizes))
	}
	base := s.Status &^ (virtio.StatusFailed | virtio.StatusDeviceNeedsReset)
	valid := false
	for _, b := range statusBases {
		valid = valid || base == b
	}
	if !valid || s.Status&virtio.StatusDeviceNeedsReset != 0 && base != statusLive {
		return fmt.Errorf("%w: status %#x", ErrState, s.Status)
	}
	// The device is active exactly when DRIVER_OK's activation succeeded.
	if live := base == statusLive && s.Status&virtio.StatusDeviceNeedsReset == 0; s.Active != live {
		return fmt.Errorf("%w: active %v with status %#x", ErrState, s.Active, s.Status)
	}
	if s.AckedFeatures != 0 && s.Status&virtio.StatusDriver == 0 {
		return fmt.Errorf("%w: features acknowledged before DRIVER (status %#x)", ErrState, s.Status)
	}
	if s.InterruptStatus&^(InterruptUsedRing|InterruptConfig) != 0 {
		return fmt.Errorf("%w: interrupt status %#x", ErrState, s.InterruptStatus)
	}
	return nil
}
