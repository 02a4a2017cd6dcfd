package virtiotest

import (
	"encoding/binary"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
)

// NewTransport puts dev behind a virtio-mmio transport over mem, with a
// Line that counts the transport's interrupts.
func NewTransport(t testing.TB, mem *memory.Guest, dev virtio.Device) (*mmio.Transport, *Line) {
	t.Helper()
	l := &Line{}
	tr, err := mmio.New(mem, dev, l)
	if err != nil {
		t.Fatal(err)
	}
	return tr, l
}

// RegisterSpace is an MMIO register space as a driver sees it, such as
// *mmio.Transport.
type RegisterSpace interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// Read32 reads the 32-bit register at offset, as virtio-mmio drivers do.
func Read32(s RegisterSpace, offset uint64) uint32 {
	var b [4]byte
	s.Read(offset, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// Write32 writes v to the 32-bit register at offset.
func Write32(s RegisterSpace, offset uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	s.Write(offset, b[:])
}

// virtio-mmio registers (virtio 1.x §4.2.2).
const (
	regDeviceFeatures    = 0x10
	regDeviceFeaturesSel = 0x14
	regDriverFeatures    = 0x20
	regDriverFeaturesSel = 0x24
	regStatus            = 0x70
	regQueueSel          = 0x30
	regQueueNum          = 0x38
	regQueueReady        = 0x44
	regDescLow           = 0x80
	regDescHigh          = 0x84
	regAvailLow          = 0x90
	regAvailHigh         = 0x94
	regUsedLow           = 0xa0
	regUsedHigh          = 0xa4
)

// ExpectStatus fails t unless the device status register reads want.
func ExpectStatus(t testing.TB, s RegisterSpace, want uint32) {
	t.Helper()
	if got := Read32(s, regStatus); got != want {
		t.Fatalf("status = %#x, want %#x", got, want)
	}
}

// Negotiate runs a virtio-mmio driver's start up to FEATURES_OK, as
// Linux's virtio core does: it resets the device, sets ACKNOWLEDGE and
// DRIVER, reads the offered features, acknowledges accept(offered) (all of
// them if accept is nil) and sets FEATURES_OK. It returns the offered
// features; the caller checks the status the device ends up in.
func Negotiate(s RegisterSpace, accept func(offered uint64) uint64) (offered uint64) {
	Write32(s, regStatus, 0)
	Write32(s, regStatus, virtio.StatusAcknowledge)
	Write32(s, regStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	for sel := range uint32(2) {
		Write32(s, regDeviceFeaturesSel, sel)
		offered |= uint64(Read32(s, regDeviceFeatures)) << (32 * sel)
	}
	acked := offered
	if accept != nil {
		acked = accept(offered)
	}
	for sel := range uint32(2) {
		Write32(s, regDriverFeaturesSel, sel)
		Write32(s, regDriverFeatures, uint32(acked>>(32*sel)))
	}
	Write32(s, regStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	return offered
}

// SetupQueue programs queue index of a virtio-mmio device with ring, as
// Linux's virtio_mmio setup_vq does: select it, set its size and the three
// addresses (both halves), and mark it ready.
func SetupQueue(s RegisterSpace, index uint32, ring *Ring) {
	Write32(s, regQueueSel, index)
	Write32(s, regQueueNum, uint32(ring.Size))
	Write32(s, regDescLow, uint32(ring.Desc))
	Write32(s, regDescHigh, uint32(ring.Desc>>32))
	Write32(s, regAvailLow, uint32(ring.Avail))
	Write32(s, regAvailHigh, uint32(ring.Avail>>32))
	Write32(s, regUsedLow, uint32(ring.Used))
	Write32(s, regUsedHigh, uint32(ring.Used>>32))
	Write32(s, regQueueReady, 1)
}
