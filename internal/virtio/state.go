package virtio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/squib-vmm/squib/internal/memory"
)

// QueueState is what a snapshot keeps of one queue: the registers the
// driver programmed and the device's ring positions.
type QueueState struct {
	MaxSize     uint16 `json:"max_size"`
	Size        uint16 `json:"size"`
	Ready       bool   `json:"ready"`
	DescTable   uint64 `json:"desc_table"`
	AvailRing   uint64 `json:"avail_ring"`
	UsedRing    uint64 `json:"used_ring"`
	EventIdx    bool   `json:"event_idx"`
	Initialized bool   `json:"initialized"`
	NextAvail   uint16 `json:"next_avail"`
	NextUsed    uint16 `json:"next_used"`
	NumAdded    uint16 `json:"num_added"`
}

// SaveState returns the queue's state. The device must not be using the
// queue (it is suspended or inactive).
func (q *Queue) SaveState() QueueState {
	return QueueState{
		MaxSize: q.MaxSize, Size: q.Size, Ready: q.Ready,
		DescTable: q.DescTable, AvailRing: q.AvailRing, UsedRing: q.UsedRing,
		EventIdx: q.EventIdx, Initialized: q.initialized,
		NextAvail: q.nextAvail, NextUsed: q.nextUsed, NumAdded: q.numAdded,
	}
}

// ErrQueueState is returned by RestoreState for a saved state that no
// device could have produced.
var ErrQueueState = errors.New("invalid saved queue state")

// RestoreState sets the queue from a saved state, on the queue of a new
// device with the same MaxSize. A queue saved initialized is validated
// against mem again, as at activation, so a snapshot file cannot place a
// ring outside guest memory.
func (q *Queue) RestoreState(mem *memory.Guest, s QueueState) error {
	if s.MaxSize != q.MaxSize {
		return fmt.Errorf("%w: maximum size %d, the device has %d", ErrQueueState, s.MaxSize, q.MaxSize)
	}
	*q = Queue{MaxSize: q.MaxSize, Size: s.Size, Ready: s.Ready,
		DescTable: s.DescTable, AvailRing: s.AvailRing, UsedRing: s.UsedRing, EventIdx: s.EventIdx}
	if !s.Initialized {
		return nil
	}
	if err := q.Initialize(mem); err != nil {
		return err
	}
	q.nextAvail, q.nextUsed, q.numAdded = s.NextAvail, s.NextUsed, s.NumAdded
	return nil
}

// Snapshotter is a device whose state a snapshot keeps, and which stops
// working while its VM is paused. The transport calls these methods under
// its lock; the machine calls Suspend on pause, Resume on resume, and
// SaveState only while suspended.
type Snapshotter interface {
	// Suspend stops the device's processing and returns once none of its
	// goroutines touches guest memory, the queues or the interrupt. The
	// activation (queues, features) is kept for Resume; chains the device
	// holds (a popped buffer waiting for data) are kept in its state.
	Suspend()
	// Resume restarts processing after Suspend (or after a restore) and
	// looks at every queue, as after a kick. It is a no-op when the
	// device is not active.
	Resume() error
	// SaveState returns the device's own state (not the transport's or
	// the queues'), encoded by the device. Called while suspended or
	// inactive.
	SaveState() ([]byte, error)
	// RestoreState sets the device's own state on a new, inactive device,
	// before the transport activates it with the restored queues. It must
	// reject (not crash on) any malformed data.
	RestoreState(data []byte) error
}

// DecodeState decodes a device's saved state: exactly one JSON object with
// the fields of T and no others, nothing after it, and not null. A blob
// from another device or a corrupt file thus fails instead of restoring
// defaults. Devices then check the values themselves.
func DecodeState[T any](data []byte) (*T, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var v *T
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errors.New("no state (null)")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the state")
	}
	return v, nil
}
