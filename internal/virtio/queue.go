package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/memory"
)

// MaxQueueSize is the largest queue size any device offers (Firecracker's
// FIRECRACKER_MAX_QUEUE_SIZE).
const MaxQueueSize = 256

// Ring layout (virtio 1.x §2.7): 16-byte descriptors; avail and used rings
// are {flags u16, idx u16, ring[size], event u16} with u16 avail entries
// and {id u32, len u32} used entries.
const (
	descSize      = 16
	usedElemSize  = 8
	ringHeaderLen = 4
	descAlign     = 16
	availAlign    = 2
	usedAlign     = 4
)

// Errors of Queue.Initialize and of the ring operations.
var (
	ErrQueueNotReady       = errors.New("queue not ready")
	ErrQueueSize           = errors.New("invalid queue size")
	ErrQueueAlignment      = errors.New("queue address not aligned")
	ErrQueueMemory         = errors.New("queue ring outside guest memory")
	ErrQueueNotInitialized = errors.New("queue not initialized")
	// ErrAvailIdx: the driver's avail index is more than the queue size
	// ahead of the device, which no correct driver produces.
	ErrAvailIdx = errors.New("invalid avail index")
)

// Queue is the device side of one split virtqueue.
//
// The exported fields are the registers the transport lets the driver
// program before DRIVER_OK. Initialize validates them and snapshots the
// result; the ring operations use only that snapshot, so later changes to
// the fields have no effect until the next Initialize.
type Queue struct {
	// MaxSize is the largest Size the device accepts (QueueNumMax).
	MaxSize uint16
	// Size is the number of descriptors the driver chose (QueueNum).
	Size uint16
	// Ready is the driver's QueueReady.
	Ready bool
	// DescTable, AvailRing and UsedRing are the guest-physical addresses
	// of the descriptor table, the avail (driver) ring and the used
	// (device) ring.
	DescTable, AvailRing, UsedRing uint64
	// EventIdx enables VIRTIO_RING_F_EVENT_IDX notification suppression
	// (Firecracker's uses_notif_suppression). The transport sets it when
	// the feature is negotiated.
	EventIdx bool

	initialized bool
	size        uint16
	desc        uint64
	avail       uint64
	used        uint64

	// The 16-bit ring fields the guest and the device race on.
	availIdx, usedEvent, usedIdx, availEvent halfWord

	// Free-running indices, as the ring's own idx fields are.
	nextAvail, nextUsed uint16
	// numAdded counts used entries since the last NeedsNotification.
	numAdded uint16
}

// NewQueue returns a queue whose size defaults to maxSize, as after reset.
func NewQueue(maxSize uint16) *Queue {
	return &Queue{MaxSize: maxSize, Size: maxSize}
}

// Initialize validates the queue as Firecracker does at activation: ready,
// size non-zero, a power of two and at most MaxSize (and MaxQueueSize),
// descriptor table 16-byte, avail ring 2-byte and used ring 4-byte aligned,
// and each structure wholly inside one guest RAM region. It keeps the ring
// positions, so it may be called again on a live queue.
func (q *Queue) Initialize(mem *memory.Guest) error {
	q.initialized = false
	if !q.Ready {
		return ErrQueueNotReady
	}
	s := q.Size
	if s == 0 || s&(s-1) != 0 || s > q.MaxSize || s > MaxQueueSize {
		return fmt.Errorf("%w: %d (max %d)", ErrQueueSize, s, min(q.MaxSize, MaxQueueSize))
	}
	n := uint64(s)
	if err := checkRing(mem, "descriptor table", q.DescTable, descSize*n, descAlign); err != nil {
		return err
	}
	if err := checkRing(mem, "avail ring", q.AvailRing, ringHeaderLen+2*n+2, availAlign); err != nil {
		return err
	}
	if err := checkRing(mem, "used ring", q.UsedRing, ringHeaderLen+usedElemSize*n+2, usedAlign); err != nil {
		return err
	}
	q.size, q.desc, q.avail, q.used = s, q.DescTable, q.AvailRing, q.UsedRing
	q.availIdx = locateHalf(mem, q.avail+2)
	q.usedEvent = locateHalf(mem, q.avail+ringHeaderLen+2*n)
	q.usedIdx = locateHalf(mem, q.used+2)
	q.availEvent = locateHalf(mem, q.used+ringHeaderLen+usedElemSize*n)
	q.initialized = true
	return nil
}

func checkRing(mem *memory.Guest, what string, addr, size, align uint64) error {
	if addr&(align-1) != 0 {
		return fmt.Errorf("%w: %s at %#x (needs %d-byte alignment)", ErrQueueAlignment, what, addr, align)
	}
	if _, err := mem.Slice(addr, size); err != nil {
		return fmt.Errorf("%w: %s [%#x, +%#x)", ErrQueueMemory, what, addr, size)
	}
	return nil
}

// Initialized reports whether the last Initialize succeeded.
func (q *Queue) Initialized() bool { return q.initialized }

// Len is how many chains the driver has made available and the device has
// not popped yet.
func (q *Queue) Len(mem *memory.Guest) (uint16, error) {
	if !q.initialized {
		return 0, ErrQueueNotInitialized
	}
	idx, err := q.availIdx.load(mem)
	if err != nil {
		return 0, err
	}
	n := idx - q.nextAvail
	if n > q.size {
		return 0, fmt.Errorf("%w: %d available in a queue of %d", ErrAvailIdx, n, q.size)
	}
	return n, nil
}

// Pop takes the next available descriptor chain, or returns nil, nil when
// there is none. Reading the avail index is an atomic load, so the ring
// entry and descriptors read after it are the ones the driver published
// (acquire).
//
// A malformed chain is consumed and reported as a *ChainError that carries
// its head index; the device may hand it back with AddUsed(head, 0) (which
// refuses an out-of-range head) or fail. An ErrAvailIdx error means the
// ring itself is corrupt.
func (q *Queue) Pop(mem *memory.Guest) (*DescriptorChain, error) {
	n, err := q.Len(mem)
	if err != nil || n == 0 {
		return nil, err
	}
	return q.popUnchecked(mem)
}

func (q *Queue) popUnchecked(mem *memory.Guest) (*DescriptorChain, error) {
	slot := uint64(q.nextAvail & (q.size - 1))
	head, err := mem.ReadU16(q.avail + ringHeaderLen + 2*slot)
	if err != nil {
		return nil, err
	}
	q.nextAvail++
	c := &DescriptorChain{Head: head, mem: mem}
	if err := q.walk(mem, c); err != nil {
		return nil, &ChainError{Head: head, Err: err}
	}
	return c, nil
}

// UndoPop puts the last popped chain back, for a device that cannot
// process it yet (say, a rate limiter ran dry).
func (q *Queue) UndoPop() { q.nextAvail-- }

// PopOrEnableNotification pops like Pop, but with EVENT_IDX, when the queue
// is empty, it first asks the driver for a notification on the next
// available chain (avail_event) and re-checks, closing the race with a
// driver that publishes a chain at that moment. Devices loop on it until
// it returns nil, then wait for QueueNotify.
func (q *Queue) PopOrEnableNotification(mem *memory.Guest) (*DescriptorChain, error) {
	if !q.EventIdx {
		return q.Pop(mem)
	}
	n, err := q.Len(mem)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		if err := q.availEvent.store(mem, q.nextAvail); err != nil {
			return nil, err
		}
		// The store above is sequentially consistent, so this load cannot
		// be ordered before it: either the driver sees avail_event and
		// notifies, or we see its new chain here.
		if n, err = q.Len(mem); err != nil || n == 0 {
			return nil, err
		}
	}
	return q.popUnchecked(mem)
}

// EnableNotification asks the driver, with EVENT_IDX, to notify when it
// adds a chain past those already available. Without EVENT_IDX the driver
// always notifies and this does nothing.
func (q *Queue) EnableNotification(mem *memory.Guest) error {
	if !q.EventIdx || !q.initialized {
		return nil
	}
	idx, err := q.availIdx.load(mem)
	if err != nil {
		return err
	}
	return q.availEvent.store(mem, idx)
}

// AddUsed returns the chain whose head is headIndex to the driver with len
// bytes written into it, and publishes the new used index (an atomic store,
// so the entry is visible first: release).
func (q *Queue) AddUsed(mem *memory.Guest, headIndex uint16, length uint32) error {
	if err := q.AddUsedDeferred(mem, headIndex, length); err != nil {
		return err
	}
	return q.PublishUsed(mem)
}

// AddUsedDeferred writes a used entry like AddUsed but leaves the used
// index alone, so that several entries become visible to the driver at
// once with PublishUsed. virtio-net needs that for a frame spread over
// several buffers (MRG_RXBUF): Linux drops a frame whose buffers it finds
// only partly used.
func (q *Queue) AddUsedDeferred(mem *memory.Guest, headIndex uint16, length uint32) error {
	if !q.initialized {
		return ErrQueueNotInitialized
	}
	if headIndex >= q.size {
		return fmt.Errorf("%w: used head %d in a queue of %d", ErrDescIndex, headIndex, q.size)
	}
	slot := uint64(q.nextUsed & (q.size - 1))
	b, err := mem.Slice(q.used+ringHeaderLen+usedElemSize*slot, usedElemSize)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b[0:4], uint32(headIndex))
	binary.LittleEndian.PutUint32(b[4:8], length)
	q.nextUsed++
	q.numAdded++
	return nil
}

// PublishUsed makes every used entry added so far visible to the driver
// (release store of the used index).
func (q *Queue) PublishUsed(mem *memory.Guest) error {
	if !q.initialized {
		return ErrQueueNotInitialized
	}
	return q.usedIdx.store(mem, q.nextUsed)
}

// NeedsNotification reports whether the driver wants an interrupt for the
// used entries added since the last call, and starts a new batch. Without
// EVENT_IDX it is always true (Firecracker ignores
// VIRTQ_AVAIL_F_NO_INTERRUPT); with it, true when used_event falls among
// the indices just published (virtio 1.x §2.7.10, vring_need_event).
func (q *Queue) NeedsNotification(mem *memory.Guest) bool {
	added := q.numAdded
	q.numAdded = 0
	if !q.EventIdx || !q.initialized {
		return true
	}
	// usedIdx was stored atomically and this load is atomic too, so the
	// driver cannot miss both our index and our reading of its used_event.
	ev, err := q.usedEvent.load(mem)
	if err != nil {
		return true // a spurious interrupt is harmless, a lost one is not
	}
	newIdx := q.nextUsed
	return newIdx-ev-1 < added
}

// Signal interrupts the driver for this queue (its index in the device)
// if used entries were added since the last call (used) and the driver
// wants to hear of them (NeedsNotification, which starts a new batch, so
// it must not be asked when nothing was added). It returns the
// interrupt's error, for the device to log and count.
func (q *Queue) Signal(mem *memory.Guest, irq Interrupt, index int, used bool) error {
	if !used || !q.NeedsNotification(mem) {
		return nil
	}
	return irq.TriggerQueue(index)
}
