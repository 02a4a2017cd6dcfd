package kvm

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// VCPU is a virtual CPU (the fd KVM_CREATE_VCPU returns) with its mmapped
// kvm_run.
//
// Every method except RunData().SetImmediateExit/ImmediateExit must be
// called from the goroutine that created the vCPU, which must have called
// runtime.LockOSThread and never unlock: KVM ties the vCPU to the thread
// that runs it, and kicking it needs that thread's id (unix.Gettid on that
// goroutine), which this package does not track.
type VCPU struct {
	fd        int
	id        int
	run       *RunData
	xsaveSize int  // bytes KVM copies for GET_XSAVE2/SET_XSAVE
	xsave2    bool // use KVM_GET_XSAVE2 (the size exceeds the legacy 4 KiB)
	closed    bool
}

// FD is the vCPU file descriptor.
func (v *VCPU) FD() int { return v.fd }

// ID is the vCPU id passed to CreateVCPU.
func (v *VCPU) ID() int { return v.id }

// RunData is the vCPU's shared kvm_run region.
func (v *VCPU) RunData() *RunData { return v.run }

// Close unmaps kvm_run and closes the vCPU fd. Nothing may use RunData
// afterwards, kickers included: the memory is gone and an access faults.
// RunData's slice is deliberately left untouched here, so that a kicker
// reading it concurrently with a (wrongly ordered) Close is not also a Go
// data race.
func (v *VCPU) Close() error {
	if v.closed {
		return nil
	}
	v.closed = true
	err := unix.Munmap(v.run.mem)
	if cerr := unix.Close(v.fd); err == nil {
		err = cerr
	}
	return err
}

// Run is one KVM_RUN: enter the guest until an exit userspace must handle.
// It returns nil when the guest exited (see RunData().ExitReason()),
// unix.EINTR unwrapped when a signal or immediate_exit stopped it (a normal
// event for the caller's loop), and a wrapped errno otherwise.
func (v *VCPU) Run() error {
	_, e := ioctlInt(v.fd, kvmRun, 0)
	switch e {
	case 0:
		return nil
	case unix.EINTR:
		return unix.EINTR // no wrapping: this is the hot kick/preemption path
	default:
		return ioctlErr("KVM_RUN", e)
	}
}

// GetRegs is KVM_GET_REGS: the general-purpose registers.
func (v *VCPU) GetRegs() (Regs, error) {
	var r Regs
	if _, e := ioctlPtr(v.fd, kvmGetRegs, &r); e != 0 {
		return Regs{}, ioctlErr("KVM_GET_REGS", e)
	}
	return r, nil
}

// SetRegs is KVM_SET_REGS: set the general-purpose registers.
func (v *VCPU) SetRegs(r *Regs) error {
	if _, e := ioctlPtr(v.fd, kvmSetRegs, r); e != 0 {
		return ioctlErr("KVM_SET_REGS", e)
	}
	return nil
}

// GetSregs is KVM_GET_SREGS: segment, control and descriptor-table
// registers, EFER and the APIC base.
func (v *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	if _, e := ioctlPtr(v.fd, kvmGetSregs, &s); e != 0 {
		return Sregs{}, ioctlErr("KVM_GET_SREGS", e)
	}
	return s, nil
}

// SetSregs is KVM_SET_SREGS: set the special registers.
func (v *VCPU) SetSregs(s *Sregs) error {
	if _, e := ioctlPtr(v.fd, kvmSetSregs, s); e != 0 {
		return ioctlErr("KVM_SET_SREGS", e)
	}
	return nil
}

// GetFPU is KVM_GET_FPU: the x87 and SSE state in FXSAVE form.
func (v *VCPU) GetFPU() (FPU, error) {
	var f FPU
	if _, e := ioctlPtr(v.fd, kvmGetFPU, &f); e != 0 {
		return FPU{}, ioctlErr("KVM_GET_FPU", e)
	}
	return f, nil
}

// SetFPU is KVM_SET_FPU: set the x87 and SSE state.
func (v *VCPU) SetFPU(f *FPU) error {
	if _, e := ioctlPtr(v.fd, kvmSetFPU, f); e != 0 {
		return ioctlErr("KVM_SET_FPU", e)
	}
	return nil
}

// GetLAPIC is KVM_GET_LAPIC: the in-kernel local APIC's register page.
func (v *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	if _, e := ioctlPtr(v.fd, kvmGetLAPIC, &l); e != 0 {
		return LAPICState{}, ioctlErr("KVM_GET_LAPIC", e)
	}
	return l, nil
}

// SetLAPIC is KVM_SET_LAPIC: set the local APIC's register page.
func (v *VCPU) SetLAPIC(l *LAPICState) error {
	if _, e := ioctlPtr(v.fd, kvmSetLAPIC, l); e != 0 {
		return ioctlErr("KVM_SET_LAPIC", e)
	}
	return nil
}

// msrs runs KVM_GET_MSRS or KVM_SET_MSRS over entries (struct kvm_msrs
// header plus flexible array) and copies the result back.
func (v *VCPU) msrs(req uintptr, name string, entries []MSREntry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	buf := newFAM[msrsHeader, MSREntry](len(entries))
	buf.header().NMSRs = uint32(len(entries))
	copy(buf.entries(), entries)
	r, e := buf.ioctl(v.fd, req)
	if e != 0 {
		return 0, ioctlErr(name, e)
	}
	copy(entries, buf.entries())
	return int(r), nil
}

// GetMSRs is KVM_GET_MSRS: fill in Data for each entry's Index. It returns
// how many entries were read; reading stops at the first MSR KVM rejects.
func (v *VCPU) GetMSRs(entries []MSREntry) (int, error) {
	return v.msrs(kvmGetMSRs, "KVM_GET_MSRS", entries)
}

// SetMSRs is KVM_SET_MSRS: write each entry's Data to its Index. It
// returns how many entries were written; writing stops at the first MSR
// KVM rejects.
func (v *VCPU) SetMSRs(entries []MSREntry) (int, error) {
	return v.msrs(kvmSetMSRs, "KVM_SET_MSRS", entries)
}

// SetCPUID2 is KVM_SET_CPUID2: the CPUID leaves the guest sees (call it
// before the first Run; later changes are rejected by modern kernels).
func (v *VCPU) SetCPUID2(entries []CPUIDEntry2) error {
	buf := newFAM[cpuid2Header, CPUIDEntry2](len(entries))
	buf.header().Nent = uint32(len(entries))
	copy(buf.entries(), entries)
	if _, e := buf.ioctl(v.fd, kvmSetCPUID2); e != 0 {
		return ioctlErr("KVM_SET_CPUID2", e)
	}
	return nil
}

// GetCPUID2 is KVM_GET_CPUID2: the CPUID leaves set with SetCPUID2.
func (v *VCPU) GetCPUID2() ([]CPUIDEntry2, error) {
	return getCPUID(v.fd, kvmGetCPUID2, "KVM_GET_CPUID2")
}

// GetXCRs is KVM_GET_XCRS: the extended control registers (XCR0).
func (v *VCPU) GetXCRs() (XCRs, error) {
	var x XCRs
	if _, e := ioctlPtr(v.fd, kvmGetXCRs, &x); e != 0 {
		return XCRs{}, ioctlErr("KVM_GET_XCRS", e)
	}
	return x, nil
}

// SetXCRs is KVM_SET_XCRS: set the extended control registers.
func (v *VCPU) SetXCRs(x *XCRs) error {
	if _, e := ioctlPtr(v.fd, kvmSetXCRs, x); e != 0 {
		return ioctlErr("KVM_SET_XCRS", e)
	}
	return nil
}

// XSAVESize is the size in bytes of this vCPU's XSAVE area: 4096, or the
// larger KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) answer when dynamic features
// such as AMX are enabled.
func (v *VCPU) XSAVESize() int { return v.xsaveSize }

// GetXSAVE is KVM_GET_XSAVE, or KVM_GET_XSAVE2 when XSAVESize exceeds
// 4096: the XSAVE area (struct kvm_xsave region[] plus extra[]) as
// XSAVESize/4 words.
func (v *VCPU) GetXSAVE() ([]uint32, error) {
	req, name := kvmGetXSAVE, "KVM_GET_XSAVE"
	if v.xsave2 {
		req, name = kvmGetXSAVE2, "KVM_GET_XSAVE2"
	}
	buf := make([]uint32, (v.xsaveSize+3)/4)
	if _, e := ioctlBuf(v.fd, req, buf, uintptr(v.xsaveSize)); e != 0 {
		return nil, ioctlErr(name, e)
	}
	return buf, nil
}

// SetXSAVE is KVM_SET_XSAVE: restore the XSAVE area. region needs at least
// the 1024 legacy words; a shorter area than XSAVESize is zero-extended
// because KVM reads XSAVESize bytes.
func (v *VCPU) SetXSAVE(region []uint32) error {
	if len(region) < XSAVELegacySize/4 {
		return fmt.Errorf("KVM_SET_XSAVE: %d words, need at least %d", len(region), XSAVELegacySize/4)
	}
	if len(region)*4 < v.xsaveSize {
		ext := make([]uint32, (v.xsaveSize+3)/4)
		copy(ext, region)
		region = ext
	}
	if _, e := ioctlBuf(v.fd, kvmSetXSAVE, region, uintptr(v.xsaveSize)); e != 0 {
		return ioctlErr("KVM_SET_XSAVE", e)
	}
	return nil
}

// GetVcpuEvents is KVM_GET_VCPU_EVENTS: pending and injected exceptions,
// interrupts, NMIs and SMIs.
func (v *VCPU) GetVcpuEvents() (VcpuEvents, error) {
	var ev VcpuEvents
	if _, e := ioctlPtr(v.fd, kvmGetVCPUEvents, &ev); e != 0 {
		return VcpuEvents{}, ioctlErr("KVM_GET_VCPU_EVENTS", e)
	}
	return ev, nil
}

// SetVcpuEvents is KVM_SET_VCPU_EVENTS: restore pending events; Flags
// (VcpuEventValid*) select the optional fields to apply.
func (v *VCPU) SetVcpuEvents(ev *VcpuEvents) error {
	if _, e := ioctlPtr(v.fd, kvmSetVCPUEvents, ev); e != 0 {
		return ioctlErr("KVM_SET_VCPU_EVENTS", e)
	}
	return nil
}

// GetMPState is KVM_GET_MP_STATE: the vCPU's multiprocessing state (an
// MPState* constant).
func (v *VCPU) GetMPState() (uint32, error) {
	var s mpState
	if _, e := ioctlPtr(v.fd, kvmGetMPState, &s); e != 0 {
		return 0, ioctlErr("KVM_GET_MP_STATE", e)
	}
	return s.MPState, nil
}

// SetMPState is KVM_SET_MP_STATE: set the multiprocessing state.
func (v *VCPU) SetMPState(state uint32) error {
	s := mpState{MPState: state}
	if _, e := ioctlPtr(v.fd, kvmSetMPState, &s); e != 0 {
		return ioctlErr("KVM_SET_MP_STATE", e)
	}
	return nil
}

// GetDebugRegs is KVM_GET_DEBUGREGS: DR0-3, DR6 and DR7.
func (v *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	if _, e := ioctlPtr(v.fd, kvmGetDebugRegs, &d); e != 0 {
		return DebugRegs{}, ioctlErr("KVM_GET_DEBUGREGS", e)
	}
	return d, nil
}

// SetDebugRegs is KVM_SET_DEBUGREGS: set the debug registers (Flags must
// be 0).
func (v *VCPU) SetDebugRegs(d *DebugRegs) error {
	if _, e := ioctlPtr(v.fd, kvmSetDebugRegs, d); e != 0 {
		return ioctlErr("KVM_SET_DEBUGREGS", e)
	}
	return nil
}

// KVMClockCtrl is KVM_KVMCLOCK_CTRL: tell the guest's kvmclock the vCPU was
// paused by the host, so its soft-lockup watchdog does not fire. It fails
// with EINVAL if the guest has not enabled kvmclock.
func (v *VCPU) KVMClockCtrl() error {
	if _, e := ioctlInt(v.fd, kvmKVMClockCtrl, 0); e != 0 {
		return ioctlErr("KVM_KVMCLOCK_CTRL", e)
	}
	return nil
}

// GetTSCKHz is KVM_GET_TSC_KHZ: the guest TSC frequency in kHz.
func (v *VCPU) GetTSCKHz() (uint32, error) {
	r, e := ioctlInt(v.fd, kvmGetTSCKHz, 0)
	if e != 0 {
		return 0, ioctlErr("KVM_GET_TSC_KHZ", e)
	}
	return uint32(r), nil
}

// SetTSCKHz is KVM_SET_TSC_KHZ: set the guest TSC frequency (restoring a
// snapshot on a host with a different TSC; needs KVM_CAP_TSC_CONTROL).
func (v *VCPU) SetTSCKHz(khz uint32) error {
	if _, e := ioctlInt(v.fd, kvmSetTSCKHz, uintptr(khz)); e != 0 {
		return ioctlErr("KVM_SET_TSC_KHZ", e)
	}
	return nil
}

// SetSignalMask is KVM_SET_SIGNAL_MASK: the signals blocked while the vCPU
// is inside KVM_RUN (mask.Val[0] holds signals 1-64); nil removes the mask
// so the thread's own mask applies.
func (v *VCPU) SetSignalMask(mask *unix.Sigset_t) error {
	var e unix.Errno
	if mask == nil {
		_, e = ioctlInt(v.fd, kvmSetSignalMask, 0)
	} else {
		buf := newFAM[signalMaskHeader, uint8](kernelSigsetBytes)
		buf.header().Len = kernelSigsetBytes
		binary.LittleEndian.PutUint64(buf.entries(), mask.Val[0])
		_, e = buf.ioctl(v.fd, kvmSetSignalMask)
	}
	if e != 0 {
		return ioctlErr("KVM_SET_SIGNAL_MASK", e)
	}
	return nil
}
