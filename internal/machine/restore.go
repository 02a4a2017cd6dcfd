package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/squib-vmm/squib/internal/devices/boottimer"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/snapshot"
	"github.com/squib-vmm/squib/internal/vmm"
)

// loadErr is a snapshot-load failure with Firecracker's prefixes.
func loadErr(format string, args ...any) error {
	return &vmm.Error{Msg: vmm.PrefixLoadSnap + "Failed to restore from snapshot: " + fmt.Sprintf(format, args...)}
}

// Restore implements vmm.Builder: it rebuilds a VM from a state file and
// its memory, paused unless the request resumes it. Guest memory is not
// read here: the File backend maps the memory file privately (pages fault
// in as the guest touches them) and the Uffd backend hands faults to the
// user's handler, so the time a restore takes does not grow with memory.
func (b *Builder) Restore(ctx context.Context, p *vmm.SnapshotLoadParams, opts vmm.BuildOptions) (vmm.VM, *vmm.Resources, error) {
	start := boottimer.Now()
	_, payload, err := snapshot.ReadFile(*p.SnapshotPath)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, nil, loadErr("Failed to get snapshot state from file: Failed to open snapshot file: %s", vmm.OSErrorText(pe.Err))
		}
		return nil, nil, loadErr("Failed to get snapshot state from file: %s", err)
	}
	st, err := decodeState(payload)
	if err != nil {
		return nil, nil, loadErr("Failed to get snapshot state from file: %s", err)
	}
	newMem, err := restoredMemory(p)
	if err != nil {
		return nil, nil, err
	}
	res, err := vmm.RestoreResources(st.Config, p, opts.Serial)
	if err != nil {
		var e *vmm.Error
		if errors.As(err, &e) {
			return nil, nil, loadErr("Failed to build microVM from snapshot: %s", e.Msg)
		}
		return nil, nil, loadErr("Failed to build microVM from snapshot: %s", err)
	}
	if opts.EnablePCI {
		res.Close()
		return nil, nil, loadErr("the PCI transport (--enable-pci) is not supported by squib yet.")
	}
	m, err := b.restore(res, opts, st, newMem, start)
	if err != nil {
		res.Close()
		return nil, nil, err
	}
	if p.ResumeVM != nil && *p.ResumeVM {
		if err := m.Resume(); err != nil {
			m.Stop()
			res.Close()
			return nil, nil, loadErr("Failed to resume the microVM: %s", err)
		}
	}
	log.Infof("Successfully restored microvm from %s", *p.SnapshotPath)
	debug.FreeOSMemory()
	return m, res, nil
}

// restoredMemory picks the memory backend of the load request.
func restoredMemory(p *vmm.SnapshotLoadParams) (memFactory, error) {
	path, uffd := "", false
	if p.MemBackend != nil {
		path, uffd = *p.MemBackend.BackendPath, *p.MemBackend.BackendType == "Uffd"
	} else {
		path = *p.MemFilePath
	}
	if uffd {
		return func(layout []memory.Layout, opts memory.Options) (*memory.Guest, error) {
			g, err := memory.NewUffd(layout, path, opts)
			if err != nil {
				return nil, loadErr("Failed to load guest memory: %s", err)
			}
			return g, nil
		}, nil
	}
	return func(layout []memory.Layout, opts memory.Options) (*memory.Guest, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, loadErr("Failed to load guest memory: Error creating guest memory from file: Failed to load guest memory: %s", vmm.OSErrorText(errors.Unwrap(err)))
		}
		defer f.Close() // the mapping keeps its own reference
		g, err := memory.NewFromFile(layout, f, opts)
		if err != nil {
			return nil, loadErr("Failed to load guest memory: Error creating guest memory from file: %s", err)
		}
		return g, nil
	}, nil
}

// restore builds the machine from the resources, as Build does, then
// writes the saved state over it in Firecracker's order: vCPUs, then the
// VM (PIT, clock, interrupt controllers), then the devices.
func (b *Builder) restore(res *vmm.Resources, opts vmm.BuildOptions, st *machineState, newMem memFactory, start boottimer.Timestamp) (*Machine, error) {
	m, err := b.newMachine()
	if err != nil {
		return nil, loadErr("%s", err)
	}
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()
	if err := m.create(res, newMem); err != nil {
		var e *vmm.Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, loadErr("Failed to build microVM from snapshot: %s", err)
	}
	if err := m.setupDevices(b, res, opts, start); err != nil {
		return nil, loadErr("Failed to build microVM from snapshot: %s", err)
	}
	if err := m.checkDevices(st); err != nil {
		return nil, loadErr("Failed to build microVM from snapshot: %s", err)
	}
	// The vCPUs start parked: the restored VM is paused until resumed.
	m.paused = true
	if err := m.startVCPUs(len(st.VCPUs), res.Machine.Smt, st.VCPUs); err != nil {
		return nil, loadErr("Failed to build microVM from snapshot: %s", err)
	}
	if err := m.restoreVM(st, opts.ClockRealtime); err != nil {
		return nil, loadErr("Failed to restore the VM state: %s", err)
	}
	if err := m.restoreDevices(st); err != nil {
		return nil, loadErr("Failed to restore the devices: %s", err)
	}
	// Wait until every vCPU is parked, so the controller sees a paused VM.
	m.mu.Lock()
	for m.parked < m.running() {
		m.cond.Wait()
	}
	m.mu.Unlock()
	ok = true
	return m, nil
}

// checkDevices compares the devices the configuration rebuilt with the
// saved ones: the same kinds at the same windows and GSIs.
func (m *Machine) checkDevices(st *machineState) error {
	if len(st.Virtio) != len(m.virtio) {
		return fmt.Errorf("the snapshot has %d virtio devices, its configuration %d", len(st.Virtio), len(m.virtio))
	}
	for i, s := range m.virtio {
		v := st.Virtio[i]
		if v.Type != uint32(s.transport.Device().DeviceType()) || v.Base != s.base || v.GSI != s.gsi {
			return fmt.Errorf("virtio device %d: the snapshot has type %d at %#x (GSI %d), the configuration type %d at %#x (GSI %d)",
				i, v.Type, v.Base, v.GSI, s.transport.Device().DeviceType(), s.base, s.gsi)
		}
	}
	return nil
}

// restoreVM writes the PIT, kvmclock and interrupt controllers. With
// clockRealtime the clock is advanced by the real time elapsed since the
// snapshot (KVM_CLOCK_REALTIME), when the snapshot recorded it.
func (m *Machine) restoreVM(st *machineState, clockRealtime bool) error {
	pit := st.VM.PIT
	if err := m.vm.SetPIT2(&pit); err != nil {
		return err
	}
	c := kvm.ClockData{Clock: st.VM.Clock.Clock}
	switch {
	case clockRealtime && st.VM.Clock.Flags&kvm.ClockRealtime != 0:
		c.Flags = kvm.ClockRealtime
		c.Realtime = st.VM.Clock.Realtime
	case clockRealtime:
		// KVM records the real time with the clock only on hosts whose
		// clocksource is the TSC; without it the guest's clock continues
		// from the snapshot, as without clock_realtime.
		log.Warnf("clock_realtime: the snapshot holds no real time (its host's KVM did not report one); the guest's clock continues from the snapshot")
	}
	if err := m.vm.SetClock(&c); err != nil {
		return err
	}
	for _, s := range st.VM.IRQChips {
		chip := kvm.IRQChip{ChipID: s.ChipID}
		copy(chip.Chip[:], s.Chip)
		if err := m.vm.SetIRQChip(&chip); err != nil {
			return err
		}
	}
	return nil
}

// restoreDevices writes the legacy and virtio devices' state; each virtio
// device ends activated (if it was) and suspended until Resume.
func (m *Machine) restoreDevices(st *machineState) error {
	if err := m.serial.RestoreState(st.Serial); err != nil {
		return fmt.Errorf("serial: %w", err)
	}
	if err := m.i8042.RestoreState(st.I8042); err != nil {
		return fmt.Errorf("i8042: %w", err)
	}
	if err := m.rtc.RestoreState(st.RTC); err != nil {
		return fmt.Errorf("rtc: %w", err)
	}
	for i, s := range m.virtio {
		if err := s.transport.RestoreState(st.Virtio[i].Transport); err != nil {
			return fmt.Errorf("virtio device %d (%v): %w", i, s.transport.Device().DeviceType(), err)
		}
	}
	// The saved data store fills an empty store; data PUT before the load
	// (Firecracker's only way, as it keeps none) wins.
	if len(st.MmdsData) > 0 && m.mmdsStore != nil && string(m.mmdsStore.Get()) == "{}" {
		if err := m.mmdsStore.Put(st.MmdsData); err != nil {
			return fmt.Errorf("mmds: %w", err)
		}
	}
	return nil
}
