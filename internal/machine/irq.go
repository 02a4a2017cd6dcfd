package machine

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/kvm"
)

// irqLine is an interrupt wired to a GSI of the in-kernel irqchip through
// an eventfd (KVM_IRQFD): a device raises it with one write, without a
// trip through the controller or a vCPU.
type irqLine struct {
	fd  int
	gsi uint32
}

func newIRQLine(vm *kvm.VM, gsi uint32) (*irqLine, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := vm.IRQFD(fd, gsi); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &irqLine{fd: fd, gsi: gsi}, nil
}

// Trigger raises the interrupt (edge-triggered, as Firecracker's legacy
// and virtio-mmio interrupts are).
func (l *irqLine) Trigger() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	_, err := unix.Write(l.fd, b[:])
	if err == unix.EAGAIN {
		// The counter is saturated: an interrupt is pending already.
		return nil
	}
	return err
}

func (l *irqLine) close() { unix.Close(l.fd) }
