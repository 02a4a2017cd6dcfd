package virtio

import "github.com/squib-vmm/squib/internal/memory"

// Interrupt is how an activated device signals the driver. The transport
// provides it: virtio-mmio sets a bit in its interrupt-status register and
// raises the device's one interrupt line; a PCI transport would pick the
// queue's or the config MSI-X vector.
type Interrupt interface {
	// TriggerQueue reports that queue index's used ring has new entries.
	// With EVENT_IDX, call it only when Queue.NeedsNotification says so.
	TriggerQueue(index int) error
	// TriggerConfig reports a change of the device configuration space.
	TriggerConfig() error
}

// Device is a virtio device model, driven by a transport. It mirrors
// Firecracker's VirtioDevice trait, except that the transport owns the
// queues until activation and negotiates features itself.
//
// The transport serialises its calls (one at a time, under its lock),
// except QueueNotify, but they may come from any vCPU goroutine while the
// device's own goroutines run: a device synchronises its state with them.
type Device interface {
	// DeviceType is the virtio device ID.
	DeviceType() DeviceType
	// AvailableFeatures is the feature set the device offers. Include
	// 1<<FeatureVersion1; the MMIO transport forces it on regardless.
	AvailableFeatures() uint64
	// AckFeatures receives the features the driver acknowledged, already
	// restricted to AvailableFeatures, when the driver sets FEATURES_OK.
	// Reset forgets them.
	AckFeatures(features uint64)
	// ReadConfig fills data from the configuration space at offset; bytes
	// past its end read as zero (see ReadConfigBytes).
	ReadConfig(offset uint64, data []byte)
	// WriteConfig is a driver write to the configuration space. The
	// transport calls it only once the driver has set DRIVER.
	WriteConfig(offset uint64, data []byte)
	// QueueMaxSizes gives the number of queues and each one's maximum size
	// (a power of two, at most MaxQueueSize). It must not change.
	QueueMaxSizes() []uint16
	// Activate starts the device when the driver sets DRIVER_OK. The
	// queues have passed Queue.Initialize and have EventIdx set if the
	// feature was negotiated; the device owns them until Reset. An error
	// makes the transport set DEVICE_NEEDS_RESET and raise a config
	// interrupt.
	Activate(mem *memory.Guest, queues []*Queue, interrupt Interrupt) error
	// QueueNotify is the driver's kick of queue index (a write of the
	// index to the notify register, or its ioeventfd firing). It is called
	// from vCPU or ioeventfd goroutines, possibly before activation or
	// after Reset, where it is ignored; it must not block (typically it
	// wakes the device's worker). The transport also calls it for every
	// queue right after a successful Activate, so buffers made available
	// before activation are seen.
	QueueNotify(index int)
	// Reset returns the device to its pre-activation state when the driver
	// writes 0 to the status register: it stops using (and forgets) the
	// queues, memory and interrupt before returning, and forgets the
	// acknowledged features. An error means the device cannot be reset;
	// the transport then sets FAILED.
	Reset() error
}

// ReadConfigBytes implements Device.ReadConfig over a device's config
// bytes as Firecracker's default does: copy what lies at offset and zero
// the rest of data.
func ReadConfigBytes(config []byte, offset uint64, data []byte) {
	n := 0
	if offset < uint64(len(config)) {
		n = copy(data, config[offset:])
	}
	clear(data[n:])
}
