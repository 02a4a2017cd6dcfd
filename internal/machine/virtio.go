package machine

import (
	"fmt"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/loader"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
)

// virtioSlot is one attached virtio-mmio device.
type virtioSlot struct {
	transport *mmio.Transport
	base      uint64
	gsi       uint32
	events    []*queueEvent
}

// attachVirtio places dev on the MMIO bus at the next virtio-mmio window
// and GSI, in attach order, as Firecracker allocates them (windows from
// 0xC0001000, GSIs from 5).
func (m *Machine) attachVirtio(dev virtio.Device) error {
	i := len(m.virtio)
	gsi := uint32(x86.IRQBase + i)
	if gsi > x86.IRQMax {
		return fmt.Errorf("Could not allocate GSI: The requested resource is not available.")
	}
	base := uint64(x86.VirtioMMIOStart + i*x86.VirtioMMIOSize)
	irq, err := newIRQLine(m.vm, gsi)
	if err != nil {
		return err
	}
	m.irqs = append(m.irqs, irq)
	t, err := mmio.New(m.mem, dev, irq)
	if err != nil {
		return err
	}
	evs, err := m.wireQueueEvents(t, base)
	if err != nil {
		return err
	}
	if err := m.mmio.Insert(t, base, mmio.Size); err != nil {
		closeQueueEvents(evs)
		return err
	}
	m.virtio = append(m.virtio, virtioSlot{transport: t, base: base, gsi: gsi, events: evs})
	return nil
}

// announceVirtio lists the attached devices on the kernel command line
// (virtio_mmio.device=...) and returns them for the ACPI DSDT: Firecracker
// does both, and a stock kernel without VIRTIO_MMIO_CMDLINE_DEVICES reads
// only the DSDT.
func (m *Machine) announceVirtio(cmdline *loader.Cmdline) ([]x86.MMIODevice, error) {
	var out []x86.MMIODevice
	for _, s := range m.virtio {
		if err := cmdline.AddVirtioMMIODevice(mmio.Size, s.base, s.gsi); err != nil {
			return nil, err
		}
		out = append(out, x86.MMIODevice{Base: s.base, Size: mmio.Size, GSI: s.gsi})
	}
	return out, nil
}

// resetVirtio stops every virtio device's doorbells and worker.
func (m *Machine) resetVirtio() {
	for _, s := range m.virtio {
		closeQueueEvents(s.events)
		s.transport.Device().Reset()
	}
}
