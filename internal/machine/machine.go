package machine

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/devices/legacy"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/loader"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/virtio/balloon"
	vnet "github.com/squib-vmm/squib/internal/virtio/net"
	"github.com/squib-vmm/squib/internal/virtio/vsock"
	"github.com/squib-vmm/squib/internal/vmm"
)

const unixNonblock = unix.O_NONBLOCK

var errENOMEM error = unix.ENOMEM

// errUnsupported is returned for VM operations whose devices this build
// does not have yet.
var errUnsupported = errors.New("the device is not present in this microVM")

// Machine is a running microVM. It implements vmm.VM.
type Machine struct {
	sys    *kvm.System
	vm     *kvm.VM
	mem    *memory.Guest
	cpuid  []kvm.CPUIDEntry2
	kernel *loader.Kernel
	log    logger.Handle

	pio, mmio devices.Bus
	irqs      []*irqLine
	serial    *legacy.Serial
	serialOut *os.File
	i8042     *legacy.I8042
	rtc       *legacy.RTC
	virtio    []virtioSlot

	// The virtio devices by kind, for the API's updates; closers release
	// their host resources after the vCPUs and workers stopped.
	balloon     *balloon.Device
	guestMemMib uint64
	drives      []driveSlot
	nets        []*vnet.Device
	vsock       *vsock.Device
	mmds        *mmds.Service
	mmdsStore   *mmds.Store
	closers     []func() error

	// Snapshot support: the MSRs a vCPU's state includes (read once),
	// whether KVM logs dirty pages, and the pages dirtied since the last
	// snapshot that a failed snapshot did not get to save.
	msrs       []uint32
	trackDirty bool
	dirty      [][]uint64

	vcpus []*vcpu
	wg    sync.WaitGroup

	// mu guards paused and parked; cond signals changes to either.
	mu     sync.Mutex
	cond   sync.Cond
	paused bool
	parked int

	// exitOnce makes the first reason to stop win; done is closed then.
	exitOnce sync.Once
	exitCode int
	done     chan struct{}
	stopOnce sync.Once
}

// exitWith records why the VM ends and wakes the controller, which then
// calls Stop. It never blocks, so devices may call it from a vCPU.
func (m *Machine) exitWith(code int) {
	m.exitOnce.Do(func() {
		m.exitCode = code
		close(m.done)
		// The guest is finished: stop every vCPU now rather than let them
		// run (and, after a reset request, repeat it) until Stop.
		for _, v := range m.vcpus {
			v.stopping.Store(true)
			v.kick()
		}
	})
}

// Done implements vmm.VM.
func (m *Machine) Done() <-chan struct{} { return m.done }

// ExitCode implements vmm.VM.
func (m *Machine) ExitCode() int { return m.exitCode }

// Pause stops every vCPU outside the guest and waits until all are parked.
func (m *Machine) Pause() error {
	m.mu.Lock()
	m.paused = true
	m.mu.Unlock()
	for _, v := range m.vcpus {
		v.kick()
	}
	m.mu.Lock()
	for m.parked < m.running() {
		m.cond.Wait()
	}
	m.mu.Unlock()
	// Then the devices: no queue is processed and no guest memory written
	// while paused, so a snapshot sees a consistent machine.
	for _, s := range m.virtio {
		s.transport.Suspend()
	}
	return nil
}

// running counts vCPU goroutines still alive; called with mu held.
func (m *Machine) running() int {
	n := 0
	for _, v := range m.vcpus {
		if !v.exited {
			n++
		}
	}
	return n
}

// Resume restarts the devices, each of which looks at its queues and
// signals the driver once (as Firecracker kicks every device on resume),
// then lets the parked vCPUs run again.
func (m *Machine) Resume() error {
	for _, s := range m.virtio {
		if err := s.transport.Resume(); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.paused = false
	m.cond.Broadcast()
	m.mu.Unlock()
	return nil
}

// SendCtrlAltDel injects Ctrl+Alt+Del through the i8042.
func (m *Machine) SendCtrlAltDel() error { return m.i8042.SendCtrlAltDel() }

// UpdatePmem implements vmm.VM.
func (m *Machine) UpdatePmem(string, *vmm.RateLimiter) error { return errUnsupported }

// UpdateHotplugMemory implements vmm.VM.
func (m *Machine) UpdateHotplugMemory(uint32) error { return errUnsupported }

// HotplugStatus implements vmm.VM.
func (m *Machine) HotplugStatus() (vmm.MemoryHotplugStatus, error) {
	return vmm.MemoryHotplugStatus{}, errUnsupported
}

// Stop ends the vCPUs and releases everything the VM holds.
func (m *Machine) Stop() {
	m.stopOnce.Do(func() {
		m.exitWith(0)
		m.release() // stops and waits for the vCPUs first
	})
}

// release closes the VM's resources; used by Stop and by a failed Build.
func (m *Machine) release() {
	for _, v := range m.vcpus {
		v.stop()
	}
	m.mu.Lock()
	m.paused = false
	m.cond.Broadcast()
	m.mu.Unlock()
	m.wg.Wait()
	m.resetVirtio()
	for _, c := range m.closers {
		c()
	}
	if m.serial != nil {
		m.serial.Flush(defaultFlushTimeout)
		m.serial.Close()
	}
	if m.serialOut != nil {
		m.serialOut.Close()
	}
	for _, l := range m.irqs {
		l.close()
	}
	if m.vm != nil {
		m.vm.Close()
	}
	if m.mem != nil {
		m.mem.Close()
	}
	if m.sys != nil {
		m.sys.Close()
	}
}
