package machine

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/snapshot"
)

// sampleState is a well-formed state of a 2-vCPU, 256 MiB VM with every
// field set to something other than zero.
func sampleState() *machineState {
	st := &machineState{
		Config:   json.RawMessage(`{"machine-config":{"vcpu_count":2,"mem_size_mib":256,"smt":false}}`),
		MmdsData: json.RawMessage(`{"latest":{"k":"v"}}`),
	}
	for _, r := range x86.RAMRegions(256 << 20) {
		st.Memory = append(st.Memory, memRegionState{Start: r.Start, Size: r.Size})
	}
	for i := range 2 {
		v := vcpuState{MPState: 1, TSCKHz: 2_500_000, XSAVE: make([]byte, 4096), LAPIC: make([]byte, lapicSize)}
		v.Regs.RIP, v.Regs.RSP, v.Regs.RFLAGS = 0xffffffff81000000+uint64(i), 0x8000, 2
		v.Sregs.CS = kvm.Segment{Base: 0, Limit: 0xffffffff, Selector: 0x10, Type: 11, Present: 1, S: 1, L: 1, G: 1}
		v.Sregs.CR0, v.Sregs.EFER, v.Sregs.APICBase = 0x80050033, 0xd01, 0xfee00900
		v.XSAVE[0], v.XSAVE[4095] = 0x7f, 0x01
		v.LAPIC[0x20], v.LAPIC[0x3ff] = byte(i), 9
		v.XCRs.NrXCRs, v.XCRs.XCRs[0].Value = 1, 7
		v.DebugRegs.DR7 = 0x400
		v.CPUID = []kvm.CPUIDEntry2{{Function: 0, EAX: 0xd}, {Function: 1, EBX: uint32(i) << 24}}
		v.MSRs = []msrState{{Index: msrIA32TSC, Data: 123}, {Index: msrIA32TSCDeadline, Data: 456}}
		v.Events.Exception.Nr, v.Events.Flags, v.Events.NMI.Masked = 14, 4, 1
		st.VCPUs = append(st.VCPUs, v)
	}
	st.VM.PIT.Channels[0].Count, st.VM.PIT.Channels[2].CountLoadTime = 65536, -5
	st.VM.Clock = kvm.ClockData{Clock: 1 << 40, Flags: kvm.ClockRealtime, Realtime: 1 << 60}
	for id := range uint32(numIRQChips) {
		chip := make([]byte, irqChipSize)
		chip[0] = byte(id + 1)
		st.VM.IRQChips = append(st.VM.IRQChips, irqChipState{ChipID: id, Chip: chip})
	}
	st.Serial.InterruptEnable, st.Serial.LineStatus = 0x1, 0x60
	st.RTC.CMOS = make([]byte, 128)
	return st
}

// TestStateRoundTrip: the state, framed and encoded as a state file,
// decodes to the same values, the vCPUs' registers included.
func TestStateRoundTrip(t *testing.T) {
	want := sampleState()
	payload, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := snapshot.Decode(snapshot.Encode(payload))
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeState(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("round trip changed the state:\n got %+v\nwant %+v", st.VCPUs[1], want.VCPUs[1])
	}
	if w := xsaveWords(st.VCPUs[0].XSAVE); w[0] != 0x7f || w[1023] != 0x01000000 || !reflect.DeepEqual(xsaveBytes(w), st.VCPUs[0].XSAVE) {
		t.Errorf("XSAVE words %#x %#x", w[0], w[1023])
	}
}

// TestDecodeStateRejects: a state that does not fit its own configuration
// or KVM's structure sizes is refused with a message naming it.
func TestDecodeStateRejects(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*machineState)
		want   string
	}{
		{"vcpu count", func(s *machineState) { s.VCPUs = s.VCPUs[:1] }, "1 vCPUs"},
		{"lapic", func(s *machineState) { s.VCPUs[0].LAPIC = s.VCPUs[0].LAPIC[:10] }, "LAPIC"},
		{"xsave", func(s *machineState) { s.VCPUs[1].XSAVE = nil }, "XSAVE"},
		{"cpuid", func(s *machineState) { s.VCPUs[0].CPUID = nil }, "CPUID"},
		{"xcrs", func(s *machineState) { s.VCPUs[0].XCRs.NrXCRs = 99 }, "XCRs"},
		{"irqchips", func(s *machineState) { s.VM.IRQChips = s.VM.IRQChips[:2] }, "interrupt controllers"},
		{"irqchip id", func(s *machineState) { s.VM.IRQChips[1].ChipID = 2 }, "interrupt controller 1"},
		{"memory", func(s *machineState) { s.Memory[0].Size++ }, "memory region 0"},
		{"regions", func(s *machineState) { s.Memory = nil }, "memory regions"},
		{"config", func(s *machineState) { s.Config = json.RawMessage(`{}`) }, "machine configuration"},
		{"no config", func(s *machineState) { s.Config = nil }, "no VM configuration"},
	}
	for _, c := range cases {
		st := sampleState()
		c.mutate(st)
		b, _ := json.Marshal(st)
		if _, err := decodeState(b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	if _, err := decodeState([]byte(`{"vcpus":`)); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("truncated JSON: %v", err)
	}
}

// FuzzDecodeState: no state file payload crashes the decoder, and one it
// accepts has the sizes the restore relies on.
func FuzzDecodeState(f *testing.F) {
	b, _ := json.Marshal(sampleState())
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"config":{"machine-config":{"vcpu_count":1,"mem_size_mib":128}},"vcpus":[{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		for _, v := range st.VCPUs {
			if len(v.LAPIC) != lapicSize || len(v.XSAVE)%4 != 0 {
				t.Fatalf("accepted a vCPU with LAPIC %d, XSAVE %d bytes", len(v.LAPIC), len(v.XSAVE))
			}
		}
		if len(st.VM.IRQChips) != numIRQChips {
			t.Fatal("accepted a state without three interrupt controllers")
		}
	})
}
