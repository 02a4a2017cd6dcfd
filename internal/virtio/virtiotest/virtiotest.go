// Package virtiotest is test support for virtio devices and transports: a
// driver-side split virtqueue (Ring) that lays out a descriptor table and
// avail and used rings in a memory.Guest, publishes chains and reads used
// entries back, much like rust-vmm virtio-queue's mock; a configurable
// dummy Device that records what the transport does to it; and the
// scaffolding the device tests share:
//
//   - fuzzing: FuzzInput to read values from a fuzz input, guest memory
//     with a hole (NewMemoryWithHole), and Snapshot with Ring.WritableSpans
//     to check that a device wrote guest memory only inside the buffers it
//     was given and no more than it reported;
//   - waiting without timed assertions: Eventually, Ring.WaitUsed,
//     WaitGoroutines (goroutine leaks after a reset), metric deltas
//     (Track);
//   - interrupts that count (IRQ for a device, Line for a transport) and
//     virtio-mmio register access (Read32, Write32, SetupQueue);
//   - snapshots of a transport and its device as JSON (SaveJSON,
//     RestoreJSON, MoveState).
//
// Only tests import it.
package virtiotest

import (
	"errors"
	"fmt"
	"sync"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
)

// NewMemory maps one region of anonymous guest RAM at [start, start+size).
func NewMemory(start, size uint64) (*memory.Guest, error) {
	return memory.New([]memory.Layout{{Start: start, Size: size}}, memory.Options{})
}

// Ring is the driver's view of a split virtqueue in guest memory.
type Ring struct {
	// Mem is the guest memory holding the ring.
	Mem *memory.Guest
	// Size is the queue size (number of descriptors).
	Size uint16
	// Desc, Avail and Used are the addresses of the three structures.
	Desc, Avail, Used uint64

	nextDesc uint16 // next descriptor AddChain fills, round-robin
	availIdx uint16 // the driver's avail.idx
	lastUsed uint16 // used entries PopUsed has consumed
}

// RingBytes is the guest memory a ring of size descriptors needs from a
// 16-byte aligned base in NewRing's layout.
func RingBytes(size uint16) uint64 {
	n := uint64(size)
	avail := 16 * n
	used := (avail + 6 + 2*n + 3) &^ 3
	return used + 6 + 8*n
}

// NewRing lays out a ring of size descriptors at base as Linux does: the
// descriptor table, then the avail ring, then the used ring 4-byte aligned.
// It zeroes the area.
func NewRing(mem *memory.Guest, base uint64, size uint16) (*Ring, error) {
	if size == 0 {
		return nil, errors.New("virtiotest: ring of size 0")
	}
	n := uint64(size)
	r := &Ring{Mem: mem, Size: size, Desc: base, Avail: base + 16*n}
	r.Used = (r.Avail + 6 + 2*n + 3) &^ 3
	if err := mem.Zero(base, RingBytes(size)); err != nil {
		return nil, err
	}
	return r, nil
}

// Queue returns a device-side queue programmed with the ring, as a driver
// would through the transport: ready, with the ring's size and addresses.
// It is not initialized.
func (r *Ring) Queue() *virtio.Queue {
	q := virtio.NewQueue(max(r.Size, virtio.MaxQueueSize))
	q.Size, q.Ready = r.Size, true
	q.DescTable, q.AvailRing, q.UsedRing = r.Desc, r.Avail, r.Used
	return q
}

// Buffer is one buffer of a chain to add.
type Buffer struct {
	Addr     uint64
	Len      uint32
	Writable bool
}

// SetDesc writes descriptor i of the table verbatim (to build bad chains).
func (r *Ring) SetDesc(i uint16, d virtio.Descriptor) error {
	base := r.Desc + 16*uint64(i)
	if err := r.Mem.WriteU64(base, d.Addr); err != nil {
		return err
	}
	if err := r.Mem.WriteU32(base+8, d.Len); err != nil {
		return err
	}
	if err := r.Mem.WriteU16(base+12, d.Flags); err != nil {
		return err
	}
	return r.Mem.WriteU16(base+14, d.Next)
}

// AddChain writes bufs into consecutive free descriptors (wrapping round
// the table), links them with NEXT and publishes the chain's head.
func (r *Ring) AddChain(bufs ...Buffer) (head uint16, err error) {
	if len(bufs) == 0 || len(bufs) > int(r.Size) {
		return 0, fmt.Errorf("virtiotest: chain of %d buffers in a ring of %d", len(bufs), r.Size)
	}
	head = r.nextDesc
	for i, b := range bufs {
		idx := r.nextDesc
		r.nextDesc = (r.nextDesc + 1) % r.Size
		d := virtio.Descriptor{Addr: b.Addr, Len: b.Len}
		if b.Writable {
			d.Flags |= virtio.DescFlagWrite
		}
		if i < len(bufs)-1 {
			d.Flags |= virtio.DescFlagNext
			d.Next = r.nextDesc
		}
		if err := r.SetDesc(idx, d); err != nil {
			return 0, err
		}
	}
	return head, r.Publish(head)
}

// Publish puts heads in the avail ring and then advances avail.idx.
func (r *Ring) Publish(heads ...uint16) error {
	for _, h := range heads {
		slot := uint64(r.availIdx % r.Size)
		if err := r.Mem.WriteU16(r.Avail+4+2*slot, h); err != nil {
			return err
		}
		r.availIdx++
	}
	return r.SetAvailIdx(r.availIdx)
}

// SetAvailIdx writes avail.idx (any value, to model a confused driver);
// later Publish calls continue from it.
func (r *Ring) SetAvailIdx(idx uint16) error {
	r.availIdx = idx
	return r.Mem.WriteU16(r.Avail+2, idx)
}

// AvailIdx is the driver's avail.idx.
func (r *Ring) AvailIdx() uint16 { return r.availIdx }

// SetAvailFlags writes avail.flags.
func (r *Ring) SetAvailFlags(f uint16) error { return r.Mem.WriteU16(r.Avail, f) }

// SetUsedEvent writes used_event, the used index after which the driver
// wants an interrupt (EVENT_IDX).
func (r *Ring) SetUsedEvent(v uint16) error {
	return r.Mem.WriteU16(r.Avail+4+2*uint64(r.Size), v)
}

// AvailEvent reads avail_event, the avail index after which the device
// wants a notification (EVENT_IDX).
func (r *Ring) AvailEvent() (uint16, error) {
	return r.Mem.ReadU16(r.Used + 4 + 8*uint64(r.Size))
}

// UsedIdx reads used.idx.
func (r *Ring) UsedIdx() (uint16, error) { return r.Mem.ReadU16(r.Used + 2) }

// Used is a used-ring entry.
type Used struct {
	ID  uint32
	Len uint32
}

// UsedAt reads the used-ring entry in slot (modulo the size).
func (r *Ring) UsedAt(slot uint16) (Used, error) {
	base := r.Used + 4 + 8*uint64(slot%r.Size)
	id, err := r.Mem.ReadU32(base)
	if err != nil {
		return Used{}, err
	}
	n, err := r.Mem.ReadU32(base + 4)
	return Used{ID: id, Len: n}, err
}

// PopUsed returns the next used entry the driver has not seen, and false
// when used.idx shows none.
func (r *Ring) PopUsed() (Used, bool, error) {
	idx, err := r.UsedIdx()
	if err != nil || idx == r.lastUsed {
		return Used{}, false, err
	}
	u, err := r.UsedAt(r.lastUsed)
	if err != nil {
		return Used{}, false, err
	}
	r.lastUsed++
	return u, true, nil
}

// ErrActivate is a ready-made activation failure for Device.ActivateErr.
var ErrActivate = errors.New("virtiotest: activation refused")

// Device is a dummy virtio device. Set the configuration fields before
// handing it to a transport; the recorded fields say what the transport
// did (read them while no transport call is in flight, or use the
// accessor methods).
type Device struct {
	// Type is returned by DeviceType.
	Type virtio.DeviceType
	// Features is returned by AvailableFeatures.
	Features uint64
	// MaxSizes is returned by QueueMaxSizes.
	MaxSizes []uint16
	// Config is the configuration space; WriteConfig writes into it.
	Config []byte
	// ActivateErr, when set, is returned by Activate.
	ActivateErr error
	// ResetErr, when set, is returned by Reset.
	ResetErr error

	mu        sync.Mutex
	acked     uint64
	active    bool
	queues    []*virtio.Queue
	mem       *memory.Guest
	interrupt virtio.Interrupt
	notifies  []int
	resets    int
	acks      int
}

// DeviceType implements virtio.Device.
func (d *Device) DeviceType() virtio.DeviceType { return d.Type }

// AvailableFeatures implements virtio.Device.
func (d *Device) AvailableFeatures() uint64 { return d.Features }

// AckFeatures implements virtio.Device.
func (d *Device) AckFeatures(f uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.acked = f
	d.acks++
}

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	virtio.ReadConfigBytes(d.Config, offset, data)
}

// WriteConfig implements virtio.Device; writes past the end are dropped.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset < uint64(len(d.Config)) {
		copy(d.Config[offset:], data)
	}
}

// QueueMaxSizes implements virtio.Device.
func (d *Device) QueueMaxSizes() []uint16 { return d.MaxSizes }

// Activate implements virtio.Device.
func (d *Device) Activate(mem *memory.Guest, queues []*virtio.Queue, irq virtio.Interrupt) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ActivateErr != nil {
		return d.ActivateErr
	}
	d.active, d.mem, d.queues, d.interrupt = true, mem, queues, irq
	return nil
}

// QueueNotify implements virtio.Device; it records notifications while
// active.
func (d *Device) QueueNotify(index int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active {
		d.notifies = append(d.notifies, index)
	}
}

// Reset implements virtio.Device.
func (d *Device) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ResetErr != nil {
		return d.ResetErr
	}
	d.resets++
	d.active, d.mem, d.queues, d.interrupt, d.acked = false, nil, nil, nil, 0
	return nil
}

// Active reports whether the device is activated.
func (d *Device) Active() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active
}

// Acked returns the features last passed to AckFeatures and how many
// times it was called.
func (d *Device) Acked() (features uint64, calls int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.acked, d.acks
}

// Queues returns the queues given to Activate.
func (d *Device) Queues() []*virtio.Queue {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queues
}

// Interrupt returns the interrupt given to Activate.
func (d *Device) Interrupt() virtio.Interrupt {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.interrupt
}

// Notifies returns and forgets the queue notifications received while
// active.
func (d *Device) Notifies() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.notifies
	d.notifies = nil
	return n
}

// Resets is the number of successful resets.
func (d *Device) Resets() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resets
}
