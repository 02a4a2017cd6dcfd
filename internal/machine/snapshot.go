package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/snapshot"
	"github.com/squib-vmm/squib/internal/vmm"
)

// CreateSnapshot implements vmm.VM: it saves the paused VM's state file
// and memory file. The devices are suspended already (Pause), so nothing
// changes guest memory or device state while it runs.
func (m *Machine) CreateSnapshot(ctx context.Context, p *vmm.SnapshotCreateParams, config []byte) error {
	m.mu.Lock()
	paused := m.paused && m.parked == m.running()
	m.mu.Unlock()
	if !paused {
		return errNotParked
	}
	diff := p.SnapshotType != nil && *p.SnapshotType == "Diff"
	st, err := m.saveState(config)
	if err != nil {
		return fmt.Errorf("Cannot save the microVM state: %s", err)
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("Cannot save the microVM state: %s", err)
	}
	// Memory first, state last: a state file on disk always has its
	// memory next to it.
	if err := m.saveMemory(*p.MemFilePath, diff); err != nil {
		return fmt.Errorf("Cannot save the memory: %s", err)
	}
	if err := snapshot.WriteFile(*p.SnapshotPath, payload); err != nil {
		return fmt.Errorf("Cannot save the microVM state: Failed to write the snapshot file: %s", vmm.OSErrorText(err))
	}
	return nil
}

// saveState collects the devices', vCPUs' and VM's state. Devices come
// first, as in Firecracker: saving the vsock writes its transport-reset
// event into guest memory, which the memory file must then include.
func (m *Machine) saveState(config []byte) (*machineState, error) {
	st := &machineState{Config: json.RawMessage(config)}
	for _, r := range m.mem.Regions() {
		st.Memory = append(st.Memory, memRegionState{Start: r.Start, Size: uint64(len(r.Mem))})
	}
	for _, s := range m.virtio {
		ts, err := s.transport.SaveState()
		if err != nil {
			return nil, err
		}
		st.Virtio = append(st.Virtio, virtioState{Type: uint32(s.transport.Device().DeviceType()), Base: s.base, GSI: s.gsi, Transport: ts})
	}
	st.Serial = m.serial.SaveState()
	st.I8042 = m.i8042.SaveState()
	st.RTC = m.rtc.SaveState()
	if m.mmdsStore != nil {
		st.MmdsData = json.RawMessage(m.mmdsStore.Get())
	}
	msrs, err := m.msrList()
	if err != nil {
		return nil, err
	}
	for _, v := range m.vcpus {
		vs, err := saveVCPU(v.fd, msrs)
		if err != nil {
			return nil, fmt.Errorf("vCPU %d: %s", v.id, err)
		}
		st.VCPUs = append(st.VCPUs, vs)
	}
	if st.VM.PIT, err = m.vm.GetPIT2(); err != nil {
		return nil, err
	}
	if st.VM.Clock, err = m.vm.GetClock(); err != nil {
		return nil, err
	}
	for id := range uint32(numIRQChips) {
		c, err := m.vm.GetIRQChip(id)
		if err != nil {
			return nil, err
		}
		st.VM.IRQChips = append(st.VM.IRQChips, irqChipState{ChipID: id, Chip: append([]byte(nil), c.Chip[:]...)})
	}
	return st, nil
}

// msrList is the MSRs a snapshot saves: every MSR KVM reports as
// saveable, read once per VM.
func (m *Machine) msrList() ([]uint32, error) {
	if m.msrs == nil {
		l, err := m.sys.MSRIndexList()
		if err != nil {
			return nil, err
		}
		m.msrs = l
	}
	return m.msrs, nil
}

// saveMemory writes the memory file. A full snapshot writes every page to
// a temporary file renamed into place. A diff writes only the pages dirtied
// since the last snapshot: in place when the file already has the memory's
// size (a copy of the base, which then becomes a full image), else into a
// new sparse file. The dirty set is cleared only once the file is written,
// so a failed snapshot loses nothing for the next diff.
func (m *Machine) saveMemory(path string, diff bool) error {
	dirty, err := m.collectDirty(diff)
	if err != nil {
		return err
	}
	if !diff {
		if err := snapshot.WriteAtomic(path, m.mem.WriteFull); err != nil {
			return err
		}
		m.clearDirty()
		return nil
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && uint64(fi.Size()) == m.mem.Size() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = m.mem.WriteDirty(f, dirty)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	} else if err := snapshot.WriteAtomic(path, func(f *os.File) error { return m.mem.WriteDirty(f, dirty) }); err != nil {
		return err
	}
	m.clearDirty()
	return nil
}

// collectDirty gathers the pages written since the last snapshot into
// m.dirty (KVM's log of guest writes joined with squib's own writes), or,
// without dirty-page tracking, the resident pages (Firecracker's mincore
// fallback, an over-approximation). A full snapshot needs none of it but
// still drains KVM's log, so the next diff starts from this snapshot.
func (m *Machine) collectDirty(diff bool) ([][]uint64, error) {
	regions := m.mem.Regions()
	if m.dirty == nil {
		m.dirty = make([][]uint64, len(regions))
		for i, r := range regions {
			m.dirty[i] = make([]uint64, kvm.DirtyLogWords(uint64(len(r.Mem))))
		}
	}
	if !m.trackDirty {
		if !diff {
			return nil, nil
		}
		res := make([][]uint64, len(regions))
		for i := range regions {
			res[i] = make([]uint64, len(m.dirty[i]))
			if err := m.mem.Resident(i, res[i]); err != nil {
				return nil, err
			}
		}
		return res, nil
	}
	for i := range regions {
		scratch := make([]uint64, len(m.dirty[i]))
		if err := m.vm.GetDirtyLog(uint32(i), scratch); err != nil {
			return nil, err
		}
		for w, x := range scratch {
			m.dirty[i][w] |= x
		}
		m.mem.TakeDirty(i, m.dirty[i])
	}
	return m.dirty, nil
}

// clearDirty forgets the pages a successful snapshot saved.
func (m *Machine) clearDirty() {
	for _, d := range m.dirty {
		clear(d)
	}
}

// errNotParked is returned for a snapshot of a VM whose vCPUs run.
var errNotParked = errors.New("the vCPUs are not paused")
