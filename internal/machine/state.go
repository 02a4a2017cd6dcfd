package machine

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/devices/legacy"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/vmm"
)

// machineState is the payload of a squib state file: everything but guest
// memory. It is JSON: self-describing, so a later squib can add fields
// within a format major version, and decoded by the hardened standard
// library, which matters because a state file is untrusted input.
type machineState struct {
	// Config is the VM's configuration as GET /vm/config shows it; the
	// restore rebuilds the devices from it.
	Config json.RawMessage `json:"config"`
	// Memory lists the RAM regions, in guest-physical order, as laid out
	// in the memory file.
	Memory []memRegionState   `json:"memory"`
	VCPUs  []vcpuState        `json:"vcpus"`
	VM     vmState            `json:"vm"`
	Serial legacy.SerialState `json:"serial"`
	I8042  legacy.I8042State  `json:"i8042"`
	RTC    legacy.RTCState    `json:"rtc"`
	Virtio []virtioState      `json:"virtio"`
	// MmdsData is the MMDS data store's content (squib keeps it; Firecracker
	// does not).
	MmdsData json.RawMessage `json:"mmds_data,omitempty"`
}

type memRegionState struct {
	Start uint64 `json:"start"`
	Size  uint64 `json:"size"`
}

// vcpuState is one vCPU's architectural state, as KVM reports it.
type vcpuState struct {
	MPState   uint32            `json:"mp_state"`
	Regs      kvm.Regs          `json:"regs"`
	Sregs     kvm.Sregs         `json:"sregs"`
	XSAVE     []byte            `json:"xsave"`
	XCRs      kvm.XCRs          `json:"xcrs"`
	DebugRegs kvm.DebugRegs     `json:"debug_regs"`
	LAPIC     []byte            `json:"lapic"`
	TSCKHz    uint32            `json:"tsc_khz"`
	CPUID     []kvm.CPUIDEntry2 `json:"cpuid"`
	MSRs      []msrState        `json:"msrs"`
	Events    kvm.VcpuEvents    `json:"events"`
}

type msrState struct {
	Index uint32 `json:"index"`
	Data  uint64 `json:"data"`
}

// vmState is the VM-wide in-kernel state: the PIT, kvmclock and the three
// interrupt controllers (PIC master, PIC slave, IOAPIC).
type vmState struct {
	PIT      kvm.PITState2  `json:"pit"`
	Clock    kvm.ClockData  `json:"clock"`
	IRQChips []irqChipState `json:"irqchips"`
}

type irqChipState struct {
	ChipID uint32 `json:"chip_id"`
	Chip   []byte `json:"chip"`
}

// virtioState is one attached virtio-mmio device: where it sits, and its
// transport's state (which carries the device's own).
type virtioState struct {
	Type      uint32     `json:"type"`
	Base      uint64     `json:"base"`
	GSI       uint32     `json:"gsi"`
	Transport mmio.State `json:"transport"`
}

// Limits a decoded state must respect before any of it reaches KVM.
const (
	lapicSize    = 1024
	maxXSAVESize = 1 << 20
	maxCPUID     = 256
	maxMSRs      = 4096
	numIRQChips  = 3
	irqChipSize  = 512
)

// decodeState parses and checks a state file's payload. It checks what
// the restore relies on (counts, sizes, the memory layout) so that a
// malformed file is refused with a message before anything is built.
func decodeState(payload []byte) (*machineState, error) {
	var st machineState
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("the state is malformed: %s", err)
	}
	if len(st.Config) == 0 || string(st.Config) == "null" {
		return nil, fmt.Errorf("the state has no VM configuration")
	}
	var cfg struct {
		MachineConfig *vmm.MachineConfig `json:"machine-config"`
	}
	if err := json.Unmarshal(st.Config, &cfg); err != nil || cfg.MachineConfig == nil || cfg.MachineConfig.VcpuCount == nil || cfg.MachineConfig.MemSizeMib == nil {
		return nil, fmt.Errorf("the state's VM configuration has no valid machine configuration")
	}
	n := int(*cfg.MachineConfig.VcpuCount)
	if n < 1 || n > vmm.MaxVcpus || len(st.VCPUs) != n {
		return nil, fmt.Errorf("the state holds %d vCPUs, its configuration %d", len(st.VCPUs), n)
	}
	memBytes := *cfg.MachineConfig.MemSizeMib << 20
	if memBytes>>20 != *cfg.MachineConfig.MemSizeMib {
		return nil, fmt.Errorf("the state's memory size is invalid")
	}
	want := x86.RAMRegions(memBytes)
	if len(st.Memory) != len(want) {
		return nil, fmt.Errorf("the state holds %d memory regions, %d MiB of memory has %d", len(st.Memory), memBytes>>20, len(want))
	}
	for i, r := range want {
		if st.Memory[i].Start != r.Start || st.Memory[i].Size != r.Size {
			return nil, fmt.Errorf("memory region %d is [%#x, +%#x), expected [%#x, +%#x)", i, st.Memory[i].Start, st.Memory[i].Size, r.Start, r.Size)
		}
	}
	for i, v := range st.VCPUs {
		switch {
		case len(v.LAPIC) != lapicSize:
			return nil, fmt.Errorf("vCPU %d: the LAPIC state is %d bytes, not %d", i, len(v.LAPIC), lapicSize)
		case len(v.XSAVE) < 4096 || len(v.XSAVE) > maxXSAVESize || len(v.XSAVE)%4 != 0:
			return nil, fmt.Errorf("vCPU %d: the XSAVE area is %d bytes", i, len(v.XSAVE))
		case len(v.CPUID) == 0 || len(v.CPUID) > maxCPUID:
			return nil, fmt.Errorf("vCPU %d: %d CPUID entries", i, len(v.CPUID))
		case len(v.MSRs) > maxMSRs:
			return nil, fmt.Errorf("vCPU %d: %d MSRs", i, len(v.MSRs))
		case v.XCRs.NrXCRs > uint32(len(v.XCRs.XCRs)):
			return nil, fmt.Errorf("vCPU %d: %d XCRs", i, v.XCRs.NrXCRs)
		}
	}
	if len(st.VM.IRQChips) != numIRQChips {
		return nil, fmt.Errorf("the state holds %d interrupt controllers, not %d", len(st.VM.IRQChips), numIRQChips)
	}
	for i, c := range st.VM.IRQChips {
		if c.ChipID != uint32(i) || len(c.Chip) != irqChipSize {
			return nil, fmt.Errorf("interrupt controller %d is malformed", i)
		}
	}
	return &st, nil
}

// xsaveBytes and xsaveWords convert the XSAVE area between KVM's words and
// the state's bytes (little-endian, as in memory).
func xsaveBytes(w []uint32) []byte {
	b := make([]byte, 4*len(w))
	for i, x := range w {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

func xsaveWords(b []byte) []uint32 {
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}
