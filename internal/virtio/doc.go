// Package virtio is the device side of virtio 1.x as Firecracker implements
// it: the split virtqueue (Queue, DescriptorChain and the Reader and Writer
// over a chain's buffers), the feature, status and device-type constants,
// and the Device interface a transport (virtio/mmio) drives.
//
// Everything in a ring is written by the guest and may change while the
// device reads it, so the queue reads each guest-controlled value once,
// validates the copy and never trusts it again: descriptor indices, chain
// length, buffer addresses and lengths, and the avail index. Every access
// goes through memory.Guest, so a malformed ring yields an error, never a
// panic or an access outside guest RAM.
//
// As in Firecracker, squib offers neither indirect descriptors nor the
// packed ring; a descriptor flagged VIRTQ_DESC_F_INDIRECT is rejected.
// VIRTIO_RING_F_EVENT_IDX (used_event/avail_event notification
// suppression) is supported and enabled per queue by the transport when the
// driver acknowledges it.
//
// Lifecycle: the transport creates one Queue per entry of
// Device.QueueMaxSizes, lets the driver program it, calls Queue.Initialize
// on each at DRIVER_OK and hands them to Device.Activate. From then on the
// device owns the queues: a Queue is not safe for concurrent use, so one
// goroutine of the device pops, adds used entries and decides on
// interrupts for it.
//
// The devices share their activation machinery: a Lifecycle holds the
// acknowledged features and the running worker and implements the checks
// and concurrency rules of Activate, QueueNotify and Reset; a Worker is
// one activation's goroutines, kicks and stop signal, and its Pop is the
// drain-loop pop with the common recovery from bad rings. Queue.Signal
// raises a queue's interrupt when the driver wants it.
package virtio
