package machine

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/virtio/mmio"
)

// queueEvent is one virtqueue's notify doorbell: KVM signals the eventfd
// when the guest writes the queue's index to the notify register, so a
// kick costs the vCPU no exit to squib (Firecracker does the same).
type queueEvent struct {
	f    *os.File
	done chan struct{}
}

// wireQueueEvents registers an ioeventfd for every queue of t at
// base+NotifyOffset (4-byte writes matching the queue index) and starts a
// goroutine per queue that forwards its kicks to the transport. The
// eventfds are non-blocking, so os.NewFile parks those goroutines on the
// Go poller instead of holding an OS thread each.
func (m *Machine) wireQueueEvents(t *mmio.Transport, base uint64) ([]*queueEvent, error) {
	var evs []*queueEvent
	for i := 0; i < t.NumQueues(); i++ {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			closeQueueEvents(evs)
			return nil, fmt.Errorf("eventfd: %w", err)
		}
		match := uint64(i)
		if err := m.vm.IOEventFD(fd, base+mmio.NotifyOffset, 4, &match, false); err != nil {
			unix.Close(fd)
			closeQueueEvents(evs)
			return nil, err
		}
		ev := &queueEvent{f: os.NewFile(uintptr(fd), fmt.Sprintf("ioeventfd:%#x:%d", base, i)), done: make(chan struct{})}
		evs = append(evs, ev)
		go ev.forward(t, uint32(i))
	}
	return evs, nil
}

// forward delivers each signal of the eventfd as a queue notification
// until the eventfd is closed.
func (ev *queueEvent) forward(t *mmio.Transport, index uint32) {
	defer close(ev.done)
	var b [8]byte
	for {
		n, err := ev.f.Read(b[:])
		if err != nil {
			return
		}
		// The counter coalesces kicks; one notification drains the queue.
		if n == 8 && binary.LittleEndian.Uint64(b[:]) != 0 {
			t.QueueNotify(index)
		}
	}
}

// closeQueueEvents stops the forwarders and waits for them. The KVM
// registrations go with the VM file descriptor.
func closeQueueEvents(evs []*queueEvent) {
	for _, ev := range evs {
		ev.f.Close()
	}
	for _, ev := range evs {
		<-ev.done
	}
}
