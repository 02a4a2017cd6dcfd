package virtio

import "fmt"

// Feature bits shared by all device types (virtio 1.x §6), given as bit
// numbers: a device offers feature f with 1<<f.
const (
	// FeatureIndirectDesc (VIRTIO_RING_F_INDIRECT_DESC) is never offered,
	// as in Firecracker; Pop rejects indirect descriptors.
	FeatureIndirectDesc = 28
	// FeatureEventIdx (VIRTIO_RING_F_EVENT_IDX) enables the used_event and
	// avail_event fields that suppress notifications and interrupts.
	FeatureEventIdx = 29
	// FeatureVersion1 (VIRTIO_F_VERSION_1) marks a modern (non-legacy)
	// device. Every device offers it; the MMIO transport forces it on.
	FeatureVersion1 = 32
	// FeatureAccessPlatform (VIRTIO_F_ACCESS_PLATFORM) is not offered.
	FeatureAccessPlatform = 33
	// FeatureRingPacked (VIRTIO_F_RING_PACKED) is not offered.
	FeatureRingPacked = 34
	// FeatureInOrder (VIRTIO_F_IN_ORDER): the device uses buffers in the
	// order it pops them (Firecracker's vsock offers it).
	FeatureInOrder = 35
)

// HasFeature reports whether bit f is set in features.
func HasFeature(features uint64, f uint) bool { return f < 64 && features&(1<<f) != 0 }

// Device status bits (virtio 1.x §2.1), written by the driver to the status
// register.
const (
	StatusAcknowledge      = 0x01
	StatusDriver           = 0x02
	StatusDriverOK         = 0x04
	StatusFeaturesOK       = 0x08
	StatusDeviceNeedsReset = 0x40
	StatusFailed           = 0x80
)

// Descriptor flags (virtq_desc.flags).
const (
	// DescFlagNext: the chain continues at the descriptor in Next.
	DescFlagNext = 0x1
	// DescFlagWrite: the buffer is device-writable (otherwise readable).
	DescFlagWrite = 0x2
	// DescFlagIndirect: the buffer is a table of descriptors. Not
	// supported.
	DescFlagIndirect = 0x4
)

// DeviceType is a virtio device ID (virtio 1.x §5), as read from the
// transport's device-id register.
type DeviceType uint32

// The device types Firecracker (and squib) implement.
const (
	TypeNet     DeviceType = 1
	TypeBlock   DeviceType = 2
	TypeRNG     DeviceType = 4
	TypeBalloon DeviceType = 5
	TypeVsock   DeviceType = 19
	TypeMem     DeviceType = 24
	TypePmem    DeviceType = 27
)

// String names the device type as Firecracker's VirtioDeviceType does.
func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "Net"
	case TypeBlock:
		return "Block"
	case TypeRNG:
		return "Rng"
	case TypeBalloon:
		return "Balloon"
	case TypeVsock:
		return "Vsock"
	case TypeMem:
		return "Mem"
	case TypePmem:
		return "Pmem"
	}
	return fmt.Sprintf("DeviceType(%d)", uint32(t))
}
