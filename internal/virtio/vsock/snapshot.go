package vsock

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/squib-vmm/squib/internal/virtio"
)

// ErrRunning is returned by SaveState while the device's worker runs: a
// snapshot is taken of a suspended (or inactive) device.
var ErrRunning = errors.New("vsock: device not suspended")

// ErrState wraps every reason RestoreState refuses a saved state.
var ErrState = errors.New("vsock: invalid saved state")

// savedState is the device's own state in a snapshot, as Firecracker's
// VsockFrontendState and VsockBackendState keep it: the connections
// are not saved (the guest is told to drop its own with a transport
// reset), so only the CID, the RX gate and the host-port sequence remain.
type savedState struct {
	CID uint64 `json:"cid"`
	// PendingEventAck: a transport reset event awaits the guest's ack,
	// and RX stays gated until it comes.
	PendingEventAck bool `json:"pending_event_ack"`
	// EventAvail is resetGate.avail (0 without a pending ack).
	EventAvail uint16 `json:"event_avail"`
	// LocalPortLast is the last host port handed to a host-initiated
	// connection.
	LocalPortLast uint32 `json:"local_port_last"`
}

// Suspend implements virtio.Snapshotter: it stops the worker and the
// accept loop and waits for every goroutine of the device. Host
// connections stay open, established or still sending their CONNECT line,
// with what is buffered for them; clients connecting meanwhile wait in
// the listener's backlog. Nothing reaches the guest until Resume.
func (d *Device) Suspend() { d.life.Suspend() }

// Resume implements virtio.Snapshotter: a new worker takes the
// connections over, every queue is looked at, and a transport reset the
// guest has yet to acknowledge is signalled again.
func (d *Device) Resume() error { return d.life.Resume() }

// SaveState implements virtio.Snapshotter. On a suspended device it first
// does what Firecracker does before a snapshot: it writes a
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET into the guest's next event buffer
// (Resume interrupts the guest for it), gates RX until the guest
// acknowledges it, and closes every host connection, since the
// connections cannot be saved. The listener and the clients still sending
// their CONNECT line stay. A failure to post the event (no event buffer)
// is logged, as in Firecracker, and the snapshot goes on.
//
// SaveState therefore changes the running VM too: call it for a snapshot
// only, never for a plain pause.
func (d *Device) SaveState() ([]byte, error) {
	var data []byte
	var err error
	if xerr := d.life.Exclusive(func(running *worker) {
		if running != nil {
			err = ErrRunning
			return
		}
		if d.life.Active() {
			d.prepareSnapshot()
		}
		s := savedState{
			CID:             d.cid.Load(),
			PendingEventAck: d.gate.wait,
			EventAvail:      d.gate.avail,
			LocalPortLast:   d.portLast,
		}
		if d.mux != nil {
			s.LocalPortLast = d.mux.lastPort
		}
		data, err = json.Marshal(s)
	}); xerr != nil {
		return nil, xerr
	}
	return data, err
}

// prepareSnapshot posts the transport reset and drops the connections of
// a suspended device. It runs under life's lock with no worker running,
// so it owns the event queue.
func (d *Device) prepareSnapshot() {
	avail, _, err := postTransportReset(d.mem, d.evq, d.m)
	if err != nil {
		log.Errorf("vsock: Failed to send reset transport event: %v", err)
	} else {
		d.gate = resetGate{wait: true, avail: avail}
	}
	if d.mux != nil {
		d.mux.dropConns()
	}
}

// RestoreState implements virtio.Snapshotter, on a new device that is not
// active: it takes the guest CID from the state (the configured one may
// differ; the guest re-reads it after the transport reset), the RX gate
// and the host-port sequence. A malformed state is an error wrapping
// ErrState, and changes nothing.
func (d *Device) RestoreState(data []byte) error {
	s, err := decodeState(data)
	if err != nil {
		return err
	}
	var aerr error
	if xerr := d.life.Exclusive(func(*worker) {
		if d.life.Active() {
			aerr = errors.New("vsock: cannot restore the state of an active device")
			return
		}
		d.cid.Store(s.CID)
		d.gate = resetGate{wait: s.PendingEventAck, avail: s.EventAvail}
		d.portLast = s.LocalPortLast
	}); xerr != nil {
		return xerr
	}
	return aerr
}

// decodeState parses and checks a saved state: one JSON object with the
// fields of savedState and no others, and values a device could have
// saved.
func decodeState(data []byte) (*savedState, error) {
	s, err := virtio.DecodeState[savedState](data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrState, err)
	}
	switch {
	// 0 to 2 are reserved, and the configuration takes a 32-bit CID.
	case s.CID < 3 || s.CID > math.MaxUint32:
		return nil, fmt.Errorf("%w: guest CID %d", ErrState, s.CID)
	case s.EventAvail > QueueSize || (!s.PendingEventAck && s.EventAvail != 0):
		return nil, fmt.Errorf("%w: event_avail %d", ErrState, s.EventAvail)
	case s.LocalPortLast < localPortFirst-1 || s.LocalPortLast >= 1<<31:
		return nil, fmt.Errorf("%w: local_port_last %d outside [2^30 - 1, 2^31)", ErrState, s.LocalPortLast)
	}
	return s, nil
}
