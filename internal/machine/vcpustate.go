package machine

import (
	"fmt"
	"slices"

	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/metrics"
)

// MSRs whose order matters on restore.
const (
	msrIA32TSC         = 0x10
	msrIA32TSCDeadline = 0x6e0
)

// msrChunk is how many MSRs one KVM_GET/SET_MSRS carries (Firecracker's
// limit).
const msrChunk = 256

// saveVCPU reads a parked vCPU's state in Firecracker's order: MP state
// first (it may flush pending events into the registers), vCPU events
// last.
func saveVCPU(fd *kvm.VCPU, msrList []uint32) (vcpuState, error) {
	var st vcpuState
	var err error
	step := func(name string, f func() error) {
		if err == nil {
			if e := f(); e != nil {
				err = fmt.Errorf("%s: %w", name, e)
			}
		}
	}
	step("mp state", func() (e error) { st.MPState, e = fd.GetMPState(); return })
	step("registers", func() (e error) { st.Regs, e = fd.GetRegs(); return })
	step("special registers", func() (e error) { st.Sregs, e = fd.GetSregs(); return })
	step("xsave", func() error {
		w, e := fd.GetXSAVE()
		st.XSAVE = xsaveBytes(w)
		return e
	})
	step("xcrs", func() (e error) { st.XCRs, e = fd.GetXCRs(); return })
	step("debug registers", func() (e error) { st.DebugRegs, e = fd.GetDebugRegs(); return })
	step("lapic", func() error {
		l, e := fd.GetLAPIC()
		st.LAPIC = append([]byte(nil), l.Regs[:]...)
		return e
	})
	step("tsc frequency", func() (e error) { st.TSCKHz, e = fd.GetTSCKHz(); return })
	step("cpuid", func() (e error) { st.CPUID, e = fd.GetCPUID2(); return })
	step("msrs", func() (e error) { st.MSRs, e = saveMSRs(fd, msrList); return })
	step("vcpu events", func() (e error) { st.Events, e = fd.GetVcpuEvents(); return })
	return st, err
}

// saveMSRs reads every MSR in list that KVM can read. KVM_GET_MSRS stops at
// the first MSR it refuses; that one is skipped and the rest read on, so
// an MSR KVM lists but cannot read here (a feature the host lacks) does not
// fail the snapshot.
func saveMSRs(fd *kvm.VCPU, list []uint32) ([]msrState, error) {
	var out []msrState
	var tsc uint64
	for len(list) > 0 {
		n := min(len(list), msrChunk)
		entries := make([]kvm.MSREntry, n)
		for i := range entries {
			entries[i].Index = list[i]
		}
		got, err := fd.GetMSRs(entries)
		if err != nil {
			return nil, err
		}
		for _, e := range entries[:got] {
			out = append(out, msrState{Index: e.Index, Data: e.Data})
			if e.Index == msrIA32TSC {
				tsc = e.Data
			}
		}
		skip := got
		if got < n {
			skip++ // the refused MSR
		}
		list = list[skip:]
	}
	// A zero TSC deadline means no timer is armed; restoring it as is
	// would leave a guest that expects one waiting forever, so Firecracker
	// replaces it by the current TSC, which fires at once.
	for i := range out {
		if out[i].Index == msrIA32TSCDeadline && out[i].Data == 0 {
			out[i].Data = tsc
		}
	}
	return out, nil
}

// restoreVCPU writes a saved state to a new vCPU in Firecracker's order:
// CPUID first (KVM derives the valid MSRs from it), MP state, registers,
// special registers (which set the APIC base) before the LAPIC, the LAPIC
// before the MSRs (the TSC deadline needs the timer mode), and the events
// after the registers.
func restoreVCPU(fd *kvm.VCPU, st *vcpuState) error {
	if err := fd.SetCPUID2(st.CPUID); err != nil {
		return fmt.Errorf("cpuid: %w", err)
	}
	if st.TSCKHz != 0 {
		if cur, err := fd.GetTSCKHz(); err == nil && tscDiffers(cur, st.TSCKHz) {
			if err := fd.SetTSCKHz(st.TSCKHz); err != nil {
				// The guest's clock may drift; it still runs.
				log.Warnf("Cannot set the saved TSC frequency %d kHz (this host's is %d kHz): %v", st.TSCKHz, cur, err)
			}
		}
	}
	if err := fd.SetMPState(st.MPState); err != nil {
		return fmt.Errorf("mp state: %w", err)
	}
	if err := fd.SetRegs(&st.Regs); err != nil {
		return fmt.Errorf("registers: %w", err)
	}
	if err := fd.SetSregs(&st.Sregs); err != nil {
		return fmt.Errorf("special registers: %w", err)
	}
	if err := fd.SetXSAVE(xsaveWords(st.XSAVE)); err != nil {
		return fmt.Errorf("xsave: %w", err)
	}
	if err := fd.SetXCRs(&st.XCRs); err != nil {
		return fmt.Errorf("xcrs: %w", err)
	}
	if err := fd.SetDebugRegs(&st.DebugRegs); err != nil {
		return fmt.Errorf("debug registers: %w", err)
	}
	var l kvm.LAPICState
	copy(l.Regs[:], st.LAPIC)
	if err := fd.SetLAPIC(&l); err != nil {
		return fmt.Errorf("lapic: %w", err)
	}
	if err := restoreMSRs(fd, st.MSRs); err != nil {
		return err
	}
	if err := fd.SetVcpuEvents(&st.Events); err != nil {
		return fmt.Errorf("vcpu events: %w", err)
	}
	if err := fd.KVMClockCtrl(); err != nil {
		metrics.Default.Vcpu.KvmclockCtrlFails.Inc()
	}
	return nil
}

// restoreMSRs writes the saved MSRs, the TSC deadline last (after the
// TSC it is relative to). An MSR this host's KVM refuses is logged and
// skipped rather than failing the restore.
func restoreMSRs(fd *kvm.VCPU, saved []msrState) error {
	entries := make([]kvm.MSREntry, 0, len(saved))
	var deadline []kvm.MSREntry
	for _, m := range saved {
		e := kvm.MSREntry{Index: m.Index, Data: m.Data}
		if m.Index == msrIA32TSCDeadline {
			deadline = append(deadline, e)
			continue
		}
		entries = append(entries, e)
	}
	for _, list := range [][]kvm.MSREntry{entries, deadline} {
		for len(list) > 0 {
			n := min(len(list), msrChunk)
			chunk := slices.Clone(list[:n])
			got, err := fd.SetMSRs(chunk)
			if err != nil {
				return fmt.Errorf("msrs: %w", err)
			}
			if got < n {
				log.Warnf("KVM refused to restore MSR %#x; skipping it", chunk[got].Index)
				got++
			}
			list = list[got:]
		}
	}
	return nil
}

// tscDiffers reports a TSC frequency more than 250 ppm away from the
// saved one: Firecracker's tolerance before it scales the guest's TSC.
func tscDiffers(cur, saved uint32) bool {
	d := int64(cur) - int64(saved)
	if d < 0 {
		d = -d
	}
	return d*1_000_000 > int64(saved)*250
}
