package kvm

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unsafe"
)

// layoutType pairs a Go struct with the C struct it mirrors.
type layoutType struct {
	t reflect.Type
	c string
	// kernelReadOnly marks structs the kernel only reads, which may hold
	// Go pointers (the kernel never overwrites them).
	kernelReadOnly bool
}

// layoutTypes is every struct the package hands to the kernel.
var layoutTypes = []layoutType{
	{t: reflect.TypeFor[Regs](), c: "struct kvm_regs"},
	{t: reflect.TypeFor[Segment](), c: "struct kvm_segment"},
	{t: reflect.TypeFor[DTable](), c: "struct kvm_dtable"},
	{t: reflect.TypeFor[Sregs](), c: "struct kvm_sregs"},
	{t: reflect.TypeFor[FPU](), c: "struct kvm_fpu"},
	{t: reflect.TypeFor[MSREntry](), c: "struct kvm_msr_entry"},
	{t: reflect.TypeFor[CPUIDEntry2](), c: "struct kvm_cpuid_entry2"},
	{t: reflect.TypeFor[LAPICState](), c: "struct kvm_lapic_state"},
	{t: reflect.TypeFor[XCR](), c: "struct kvm_xcr"},
	{t: reflect.TypeFor[XCRs](), c: "struct kvm_xcrs"},
	{t: reflect.TypeFor[DebugRegs](), c: "struct kvm_debugregs"},
	{t: reflect.TypeFor[VcpuEvents](), c: "struct kvm_vcpu_events"},
	{t: reflect.TypeFor[ClockData](), c: "struct kvm_clock_data"},
	{t: reflect.TypeFor[IRQChip](), c: "struct kvm_irqchip"},
	{t: reflect.TypeFor[PITChannelState](), c: "struct kvm_pit_channel_state"},
	{t: reflect.TypeFor[PITState2](), c: "struct kvm_pit_state2"},
	{t: reflect.TypeFor[userspaceMemoryRegion](), c: "struct kvm_userspace_memory_region", kernelReadOnly: true},
	{t: reflect.TypeFor[irqLevel](), c: "struct kvm_irq_level", kernelReadOnly: true},
	{t: reflect.TypeFor[pitConfig](), c: "struct kvm_pit_config", kernelReadOnly: true},
	{t: reflect.TypeFor[dirtyLog](), c: "struct kvm_dirty_log", kernelReadOnly: true},
	{t: reflect.TypeFor[irqfd](), c: "struct kvm_irqfd", kernelReadOnly: true},
	{t: reflect.TypeFor[ioeventfd](), c: "struct kvm_ioeventfd", kernelReadOnly: true},
	{t: reflect.TypeFor[mpState](), c: "struct kvm_mp_state"},
	{t: reflect.TypeFor[msrsHeader](), c: "struct kvm_msrs"},
	{t: reflect.TypeFor[msrListHeader](), c: "struct kvm_msr_list"},
	{t: reflect.TypeFor[cpuid2Header](), c: "struct kvm_cpuid2"},
	{t: reflect.TypeFor[signalMaskHeader](), c: "struct kvm_signal_mask"},
}

// Nested member types have no C struct tag of their own; they are checked
// through their parent (VcpuEvents).
var nestedOnly = map[string]bool{
	"VcpuEventsException": true, "VcpuEventsInterrupt": true, "VcpuEventsNMI": true,
	"VcpuEventsSMI": true, "VcpuEventsTripleFault": true,
}

// cFieldOverride maps Go field names the snake-case rule gets wrong.
var cFieldOverride = map[string]string{}

// cFieldName turns a Go field name into the C member name: APICBase ->
// apic_base, SMMInsideNMI -> smm_inside_nmi, NrXCRs -> nr_xcrs.
func cFieldName(goName string) string {
	if c, ok := cFieldOverride[goName]; ok {
		return c
	}
	r := []rune(goName)
	var b strings.Builder
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) {
			prev := r[i-1]
			// A lower-case letter after an acronym starts a new word,
			// except a final plural "s" (XCRs, NMSRs).
			nextStartsWord := i+1 < len(r) && unicode.IsLower(r[i+1]) && (r[i+1] != 's' || i+2 < len(r))
			if unicode.IsLower(prev) || unicode.IsUpper(prev) && nextStartsWord {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// check is one number the C compiler must agree with.
type check struct {
	what string // for messages
	c    string // C expression
	want uint64 // the Go value
}

// structChecks lists size, alignment, and every named field's offset and
// size (recursing into struct members) for one type.
func structChecks(lt layoutType) []check {
	cs := []check{
		{lt.t.Name() + " size", "sizeof(" + lt.c + ")", uint64(lt.t.Size())},
		{lt.t.Name() + " align", "_Alignof(" + lt.c + ")", uint64(lt.t.Align())},
	}
	var walk func(t reflect.Type, goPath, cPath string, base uintptr)
	walk = func(t reflect.Type, goPath, cPath string, base uintptr) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Name == "_" {
				continue // padding: covered by the neighbours' offsets and the size
			}
			gp, cp := goPath+f.Name, cPath+cFieldName(f.Name)
			cs = append(cs,
				check{gp + " offset", fmt.Sprintf("offsetof(%s, %s)", lt.c, cp), uint64(base + f.Offset)},
				check{gp + " size", fmt.Sprintf("sizeof(((%s *)0)->%s)", lt.c, cp), uint64(f.Type.Size())},
			)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, gp+".", cp+".", base+f.Offset)
			}
		}
	}
	walk(lt.t, lt.t.Name()+".", "", 0)
	return cs
}

// constCheck ties a Go identifier in consts.go (or a size constant in
// kvm_unsafe.go) to a C expression.
type constCheck struct {
	goName string
	c      string
	val    uint64
}

// constChecks is every kernel constant the package uses.
var constChecks = []constCheck{
	// <asm-generic/ioctl.h>
	{"iocNRBits", "_IOC_NRBITS", iocNRBits},
	{"iocTypeBits", "_IOC_TYPEBITS", iocTypeBits},
	{"iocSizeBits", "_IOC_SIZEBITS", iocSizeBits},
	{"iocNRShift", "_IOC_NRSHIFT", iocNRShift},
	{"iocTypeShift", "_IOC_TYPESHIFT", iocTypeShift},
	{"iocSizeShift", "_IOC_SIZESHIFT", iocSizeShift},
	{"iocDirShift", "_IOC_DIRSHIFT", iocDirShift},
	{"iocNone", "_IOC_NONE", iocNone},
	{"iocWrite", "_IOC_WRITE", iocWrite},
	{"iocRead", "_IOC_READ", iocRead},
	{"kvmio", "KVMIO", kvmio},

	// Ioctl numbers.
	{"kvmGetAPIVersion", "KVM_GET_API_VERSION", uint64(kvmGetAPIVersion)},
	{"kvmCreateVM", "KVM_CREATE_VM", uint64(kvmCreateVM)},
	{"kvmGetMSRIndexList", "KVM_GET_MSR_INDEX_LIST", uint64(kvmGetMSRIndexList)},
	{"kvmCheckExtension", "KVM_CHECK_EXTENSION", uint64(kvmCheckExtension)},
	{"kvmGetVCPUMmapSize", "KVM_GET_VCPU_MMAP_SIZE", uint64(kvmGetVCPUMmapSize)},
	{"kvmGetSupportedCPUID", "KVM_GET_SUPPORTED_CPUID", uint64(kvmGetSupportedCPUID)},
	{"kvmCreateVCPU", "KVM_CREATE_VCPU", uint64(kvmCreateVCPU)},
	{"kvmGetDirtyLog", "KVM_GET_DIRTY_LOG", uint64(kvmGetDirtyLog)},
	{"kvmSetUserMemRegion", "KVM_SET_USER_MEMORY_REGION", uint64(kvmSetUserMemRegion)},
	{"kvmSetTSSAddr", "KVM_SET_TSS_ADDR", uint64(kvmSetTSSAddr)},
	{"kvmSetIdentityMap", "KVM_SET_IDENTITY_MAP_ADDR", uint64(kvmSetIdentityMap)},
	{"kvmCreateIRQChip", "KVM_CREATE_IRQCHIP", uint64(kvmCreateIRQChip)},
	{"kvmIRQLine", "KVM_IRQ_LINE", uint64(kvmIRQLine)},
	{"kvmGetIRQChip", "KVM_GET_IRQCHIP", uint64(kvmGetIRQChip)},
	{"kvmSetIRQChip", "KVM_SET_IRQCHIP", uint64(kvmSetIRQChip)},
	{"kvmIRQFD", "KVM_IRQFD", uint64(kvmIRQFD)},
	{"kvmCreatePIT2", "KVM_CREATE_PIT2", uint64(kvmCreatePIT2)},
	{"kvmIOEventFD", "KVM_IOEVENTFD", uint64(kvmIOEventFD)},
	{"kvmSetClock", "KVM_SET_CLOCK", uint64(kvmSetClock)},
	{"kvmGetClock", "KVM_GET_CLOCK", uint64(kvmGetClock)},
	{"kvmGetPIT2", "KVM_GET_PIT2", uint64(kvmGetPIT2)},
	{"kvmSetPIT2", "KVM_SET_PIT2", uint64(kvmSetPIT2)},
	{"kvmRun", "KVM_RUN", uint64(kvmRun)},
	{"kvmGetRegs", "KVM_GET_REGS", uint64(kvmGetRegs)},
	{"kvmSetRegs", "KVM_SET_REGS", uint64(kvmSetRegs)},
	{"kvmGetSregs", "KVM_GET_SREGS", uint64(kvmGetSregs)},
	{"kvmSetSregs", "KVM_SET_SREGS", uint64(kvmSetSregs)},
	{"kvmGetMSRs", "KVM_GET_MSRS", uint64(kvmGetMSRs)},
	{"kvmSetMSRs", "KVM_SET_MSRS", uint64(kvmSetMSRs)},
	{"kvmSetSignalMask", "KVM_SET_SIGNAL_MASK", uint64(kvmSetSignalMask)},
	{"kvmGetFPU", "KVM_GET_FPU", uint64(kvmGetFPU)},
	{"kvmSetFPU", "KVM_SET_FPU", uint64(kvmSetFPU)},
	{"kvmGetLAPIC", "KVM_GET_LAPIC", uint64(kvmGetLAPIC)},
	{"kvmSetLAPIC", "KVM_SET_LAPIC", uint64(kvmSetLAPIC)},
	{"kvmSetCPUID2", "KVM_SET_CPUID2", uint64(kvmSetCPUID2)},
	{"kvmGetCPUID2", "KVM_GET_CPUID2", uint64(kvmGetCPUID2)},
	{"kvmGetMPState", "KVM_GET_MP_STATE", uint64(kvmGetMPState)},
	{"kvmSetMPState", "KVM_SET_MP_STATE", uint64(kvmSetMPState)},
	{"kvmGetVCPUEvents", "KVM_GET_VCPU_EVENTS", uint64(kvmGetVCPUEvents)},
	{"kvmSetVCPUEvents", "KVM_SET_VCPU_EVENTS", uint64(kvmSetVCPUEvents)},
	{"kvmGetDebugRegs", "KVM_GET_DEBUGREGS", uint64(kvmGetDebugRegs)},
	{"kvmSetDebugRegs", "KVM_SET_DEBUGREGS", uint64(kvmSetDebugRegs)},
	{"kvmGetTSCKHz", "KVM_GET_TSC_KHZ", uint64(kvmGetTSCKHz)},
	{"kvmSetTSCKHz", "KVM_SET_TSC_KHZ", uint64(kvmSetTSCKHz)},
	{"kvmGetXSAVE", "KVM_GET_XSAVE", uint64(kvmGetXSAVE)},
	{"kvmSetXSAVE", "KVM_SET_XSAVE", uint64(kvmSetXSAVE)},
	{"kvmGetXCRs", "KVM_GET_XCRS", uint64(kvmGetXCRs)},
	{"kvmSetXCRs", "KVM_SET_XCRS", uint64(kvmSetXCRs)},
	{"kvmKVMClockCtrl", "KVM_KVMCLOCK_CTRL", uint64(kvmKVMClockCtrl)},
	{"kvmGetXSAVE2", "KVM_GET_XSAVE2", uint64(kvmGetXSAVE2)},

	{"APIVersion", "KVM_API_VERSION", APIVersion},

	{"CapIRQChip", "KVM_CAP_IRQCHIP", CapIRQChip},
	{"CapHLT", "KVM_CAP_HLT", CapHLT},
	{"CapUserMemory", "KVM_CAP_USER_MEMORY", CapUserMemory},
	{"CapSetTSSAddr", "KVM_CAP_SET_TSS_ADDR", CapSetTSSAddr},
	{"CapExtCPUID", "KVM_CAP_EXT_CPUID", CapExtCPUID},
	{"CapNrVCPUs", "KVM_CAP_NR_VCPUS", CapNrVCPUs},
	{"CapNrMemslots", "KVM_CAP_NR_MEMSLOTS", CapNrMemslots},
	{"CapMPState", "KVM_CAP_MP_STATE", CapMPState},
	{"CapSyncMMU", "KVM_CAP_SYNC_MMU", CapSyncMMU},
	{"CapIRQRouting", "KVM_CAP_IRQ_ROUTING", CapIRQRouting},
	{"CapIRQFD", "KVM_CAP_IRQFD", CapIRQFD},
	{"CapPIT2", "KVM_CAP_PIT2", CapPIT2},
	{"CapPITState2", "KVM_CAP_PIT_STATE2", CapPITState2},
	{"CapIOEventFD", "KVM_CAP_IOEVENTFD", CapIOEventFD},
	{"CapSetIdentityMapAddr", "KVM_CAP_SET_IDENTITY_MAP_ADDR", CapSetIdentityMapAddr},
	{"CapAdjustClock", "KVM_CAP_ADJUST_CLOCK", CapAdjustClock},
	{"CapInternalErrorData", "KVM_CAP_INTERNAL_ERROR_DATA", CapInternalErrorData},
	{"CapVCPUEvents", "KVM_CAP_VCPU_EVENTS", CapVCPUEvents},
	{"CapDebugRegs", "KVM_CAP_DEBUGREGS", CapDebugRegs},
	{"CapXSAVE", "KVM_CAP_XSAVE", CapXSAVE},
	{"CapXCRs", "KVM_CAP_XCRS", CapXCRs},
	{"CapTSCControl", "KVM_CAP_TSC_CONTROL", CapTSCControl},
	{"CapGetTSCKHz", "KVM_CAP_GET_TSC_KHZ", CapGetTSCKHz},
	{"CapMaxVCPUs", "KVM_CAP_MAX_VCPUS", CapMaxVCPUs},
	{"CapTSCDeadlineTimer", "KVM_CAP_TSC_DEADLINE_TIMER", CapTSCDeadlineTimer},
	{"CapKVMClockCtrl", "KVM_CAP_KVMCLOCK_CTRL", CapKVMClockCtrl},
	{"CapSignalMSI", "KVM_CAP_SIGNAL_MSI", CapSignalMSI},
	{"CapReadonlyMem", "KVM_CAP_READONLY_MEM", CapReadonlyMem},
	{"CapSplitIRQChip", "KVM_CAP_SPLIT_IRQCHIP", CapSplitIRQChip},
	{"CapMaxVCPUID", "KVM_CAP_MAX_VCPU_ID", CapMaxVCPUID},
	{"CapImmediateExit", "KVM_CAP_IMMEDIATE_EXIT", CapImmediateExit},
	{"CapGetMSRFeatures", "KVM_CAP_GET_MSR_FEATURES", CapGetMSRFeatures},
	{"CapXSAVE2", "KVM_CAP_XSAVE2", CapXSAVE2},

	{"ExitUnknown", "KVM_EXIT_UNKNOWN", ExitUnknown},
	{"ExitException", "KVM_EXIT_EXCEPTION", ExitException},
	{"ExitIO", "KVM_EXIT_IO", ExitIO},
	{"ExitHypercall", "KVM_EXIT_HYPERCALL", ExitHypercall},
	{"ExitDebug", "KVM_EXIT_DEBUG", ExitDebug},
	{"ExitHLT", "KVM_EXIT_HLT", ExitHLT},
	{"ExitMMIO", "KVM_EXIT_MMIO", ExitMMIO},
	{"ExitIRQWindowOpen", "KVM_EXIT_IRQ_WINDOW_OPEN", ExitIRQWindowOpen},
	{"ExitShutdown", "KVM_EXIT_SHUTDOWN", ExitShutdown},
	{"ExitFailEntry", "KVM_EXIT_FAIL_ENTRY", ExitFailEntry},
	{"ExitIntr", "KVM_EXIT_INTR", ExitIntr},
	{"ExitSetTPR", "KVM_EXIT_SET_TPR", ExitSetTPR},
	{"ExitTPRAccess", "KVM_EXIT_TPR_ACCESS", ExitTPRAccess},
	{"ExitNMI", "KVM_EXIT_NMI", ExitNMI},
	{"ExitInternalError", "KVM_EXIT_INTERNAL_ERROR", ExitInternalError},
	{"ExitSystemEvent", "KVM_EXIT_SYSTEM_EVENT", ExitSystemEvent},
	{"ExitIOAPICEOI", "KVM_EXIT_IOAPIC_EOI", ExitIOAPICEOI},
	{"ExitHyperV", "KVM_EXIT_HYPERV", ExitHyperV},
	{"ExitX86RDMSR", "KVM_EXIT_X86_RDMSR", ExitX86RDMSR},
	{"ExitX86WRMSR", "KVM_EXIT_X86_WRMSR", ExitX86WRMSR},
	{"ExitDirtyRingFull", "KVM_EXIT_DIRTY_RING_FULL", ExitDirtyRingFull},
	{"ExitX86BusLock", "KVM_EXIT_X86_BUS_LOCK", ExitX86BusLock},
	{"ExitNotify", "KVM_EXIT_NOTIFY", ExitNotify},
	{"ExitIOIn", "KVM_EXIT_IO_IN", ExitIOIn},
	{"ExitIOOut", "KVM_EXIT_IO_OUT", ExitIOOut},

	{"InternalErrorEmulation", "KVM_INTERNAL_ERROR_EMULATION", InternalErrorEmulation},
	{"InternalErrorSimulEx", "KVM_INTERNAL_ERROR_SIMUL_EX", InternalErrorSimulEx},
	{"InternalErrorDeliveryEv", "KVM_INTERNAL_ERROR_DELIVERY_EV", InternalErrorDeliveryEv},
	{"InternalErrorUnexpectedExitReason", "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON", InternalErrorUnexpectedExitReason},

	{"SystemEventShutdown", "KVM_SYSTEM_EVENT_SHUTDOWN", SystemEventShutdown},
	{"SystemEventReset", "KVM_SYSTEM_EVENT_RESET", SystemEventReset},
	{"SystemEventCrash", "KVM_SYSTEM_EVENT_CRASH", SystemEventCrash},
	{"SystemEventWakeup", "KVM_SYSTEM_EVENT_WAKEUP", SystemEventWakeup},
	{"SystemEventSuspend", "KVM_SYSTEM_EVENT_SUSPEND", SystemEventSuspend},
	{"SystemEventSEVTerm", "KVM_SYSTEM_EVENT_SEV_TERM", SystemEventSEVTerm},

	{"MemLogDirtyPages", "KVM_MEM_LOG_DIRTY_PAGES", MemLogDirtyPages},
	{"MemReadonly", "KVM_MEM_READONLY", MemReadonly},
	{"PITSpeakerDummy", "KVM_PIT_SPEAKER_DUMMY", PITSpeakerDummy},
	{"PITFlagsHPETLegacy", "KVM_PIT_FLAGS_HPET_LEGACY", PITFlagsHPETLegacy},
	{"PITFlagsSpeakerDataOn", "KVM_PIT_FLAGS_SPEAKER_DATA_ON", PITFlagsSpeakerDataOn},
	{"IRQChipPICMaster", "KVM_IRQCHIP_PIC_MASTER", IRQChipPICMaster},
	{"IRQChipPICSlave", "KVM_IRQCHIP_PIC_SLAVE", IRQChipPICSlave},
	{"IRQChipIOAPIC", "KVM_IRQCHIP_IOAPIC", IRQChipIOAPIC},

	{"MPStateRunnable", "KVM_MP_STATE_RUNNABLE", MPStateRunnable},
	{"MPStateUninitialized", "KVM_MP_STATE_UNINITIALIZED", MPStateUninitialized},
	{"MPStateInitReceived", "KVM_MP_STATE_INIT_RECEIVED", MPStateInitReceived},
	{"MPStateHalted", "KVM_MP_STATE_HALTED", MPStateHalted},
	{"MPStateSIPIReceived", "KVM_MP_STATE_SIPI_RECEIVED", MPStateSIPIReceived},
	{"MPStateAPResetHold", "KVM_MP_STATE_AP_RESET_HOLD", MPStateAPResetHold},
	{"MPStateSuspended", "KVM_MP_STATE_SUSPENDED", MPStateSuspended},

	{"ClockTSCStable", "KVM_CLOCK_TSC_STABLE", ClockTSCStable},
	{"ClockRealtime", "KVM_CLOCK_REALTIME", ClockRealtime},
	{"ClockHostTSC", "KVM_CLOCK_HOST_TSC", ClockHostTSC},

	{"VcpuEventValidNMIPending", "KVM_VCPUEVENT_VALID_NMI_PENDING", VcpuEventValidNMIPending},
	{"VcpuEventValidSIPIVector", "KVM_VCPUEVENT_VALID_SIPI_VECTOR", VcpuEventValidSIPIVector},
	{"VcpuEventValidShadow", "KVM_VCPUEVENT_VALID_SHADOW", VcpuEventValidShadow},
	{"VcpuEventValidSMM", "KVM_VCPUEVENT_VALID_SMM", VcpuEventValidSMM},
	{"VcpuEventValidPayload", "KVM_VCPUEVENT_VALID_PAYLOAD", VcpuEventValidPayload},
	{"VcpuEventValidTripleFault", "KVM_VCPUEVENT_VALID_TRIPLE_FAULT", VcpuEventValidTripleFault},

	{"CPUIDFlagSignificantIndex", "KVM_CPUID_FLAG_SIGNIFCANT_INDEX", CPUIDFlagSignificantIndex},
	{"CPUIDFlagStatefulFunc", "KVM_CPUID_FLAG_STATEFUL_FUNC", CPUIDFlagStatefulFunc},
	{"CPUIDFlagStateReadNext", "KVM_CPUID_FLAG_STATE_READ_NEXT", CPUIDFlagStateReadNext},

	{"XSAVELegacySize", "sizeof(struct kvm_xsave)", XSAVELegacySize},
	{"kernelSigsetBytes", "sizeof(sigset_t)", kernelSigsetBytes}, // <asm/signal.h>: unsigned long
	{"irqfdFlagDeassign", "KVM_IRQFD_FLAG_DEASSIGN", irqfdFlagDeassign},
	{"ioeventfdFlagDatamatch", "KVM_IOEVENTFD_FLAG_DATAMATCH", ioeventfdFlagDatamatch},
	{"ioeventfdFlagPIO", "KVM_IOEVENTFD_FLAG_PIO", ioeventfdFlagPIO},
	{"ioeventfdFlagDeassign", "KVM_IOEVENTFD_FLAG_DEASSIGN", ioeventfdFlagDeassign},

	// struct kvm_run, read by offset.
	{"runImmediateExit", "offsetof(struct kvm_run, immediate_exit)", runImmediateExit},
	{"runExitReason", "offsetof(struct kvm_run, exit_reason)", runExitReason},
	{"runHWExitReason", "offsetof(struct kvm_run, hw.hardware_exit_reason)", runHWExitReason},
	{"runFailEntryReason", "offsetof(struct kvm_run, fail_entry.hardware_entry_failure_reason)", runFailEntryReason},
	{"runFailEntryCPU", "offsetof(struct kvm_run, fail_entry.cpu)", runFailEntryCPU},
	{"runIODirection", "offsetof(struct kvm_run, io.direction)", runIODirection},
	{"runIOSize", "offsetof(struct kvm_run, io.size)", runIOSize},
	{"runIOPort", "offsetof(struct kvm_run, io.port)", runIOPort},
	{"runIOCount", "offsetof(struct kvm_run, io.count)", runIOCount},
	{"runIODataOffset", "offsetof(struct kvm_run, io.data_offset)", runIODataOffset},
	{"runMMIOPhysAddr", "offsetof(struct kvm_run, mmio.phys_addr)", runMMIOPhysAddr},
	{"runMMIOData", "offsetof(struct kvm_run, mmio.data)", runMMIOData},
	{"runMMIODataLen", "sizeof(((struct kvm_run *)0)->mmio.data)", runMMIODataLen},
	{"runMMIOLen", "offsetof(struct kvm_run, mmio.len)", runMMIOLen},
	{"runMMIOIsWrite", "offsetof(struct kvm_run, mmio.is_write)", runMMIOIsWrite},
	{"runInternalSuberror", "offsetof(struct kvm_run, internal.suberror)", runInternalSuberror},
	{"runInternalNData", "offsetof(struct kvm_run, internal.ndata)", runInternalNData},
	{"runInternalData", "offsetof(struct kvm_run, internal.data)", runInternalData},
	{"runInternalDataLen", "sizeof(((struct kvm_run *)0)->internal.data) / sizeof(__u64)", runInternalDataLen},
	{"runSystemEventType", "offsetof(struct kvm_run, system_event.type)", runSystemEventType},
	{"runSystemEventNData", "offsetof(struct kvm_run, system_event.ndata)", runSystemEventNData},
	{"runSystemEventFlags", "offsetof(struct kvm_run, system_event.flags)", runSystemEventFlags},
	{"runSystemEventDataLen", "sizeof(((struct kvm_run *)0)->system_event.data) / sizeof(__u64)", runSystemEventDataLen},
	{"runSize", "sizeof(struct kvm_run)", runSize},

	// Size constants of kvm_unsafe.go (also implied by the struct checks).
	{"sizeofRegs", "sizeof(struct kvm_regs)", uint64(sizeofRegs)},
	{"sizeofSregs", "sizeof(struct kvm_sregs)", uint64(sizeofSregs)},
	{"sizeofFPU", "sizeof(struct kvm_fpu)", uint64(sizeofFPU)},
	{"sizeofLAPICState", "sizeof(struct kvm_lapic_state)", uint64(sizeofLAPICState)},
	{"sizeofXCRs", "sizeof(struct kvm_xcrs)", uint64(sizeofXCRs)},
	{"sizeofDebugRegs", "sizeof(struct kvm_debugregs)", uint64(sizeofDebugRegs)},
	{"sizeofVcpuEvents", "sizeof(struct kvm_vcpu_events)", uint64(sizeofVcpuEvents)},
	{"sizeofClockData", "sizeof(struct kvm_clock_data)", uint64(sizeofClockData)},
	{"sizeofIRQChip", "sizeof(struct kvm_irqchip)", uint64(sizeofIRQChip)},
	{"sizeofPITState2", "sizeof(struct kvm_pit_state2)", uint64(sizeofPITState2)},
	{"sizeofUserMemRegion", "sizeof(struct kvm_userspace_memory_region)", uint64(sizeofUserMemRegion)},
	{"sizeofIRQLevel", "sizeof(struct kvm_irq_level)", uint64(sizeofIRQLevel)},
	{"sizeofPITConfig", "sizeof(struct kvm_pit_config)", uint64(sizeofPITConfig)},
	{"sizeofDirtyLog", "sizeof(struct kvm_dirty_log)", uint64(sizeofDirtyLog)},
	{"sizeofIRQFD", "sizeof(struct kvm_irqfd)", uint64(sizeofIRQFD)},
	{"sizeofIOEventFD", "sizeof(struct kvm_ioeventfd)", uint64(sizeofIOEventFD)},
	{"sizeofMPState", "sizeof(struct kvm_mp_state)", uint64(sizeofMPState)},
	{"sizeofMSRsHeader", "sizeof(struct kvm_msrs)", uint64(sizeofMSRsHeader)},
	{"sizeofMSRListHeader", "sizeof(struct kvm_msr_list)", uint64(sizeofMSRListHeader)},
	{"sizeofCPUID2Header", "sizeof(struct kvm_cpuid2)", uint64(sizeofCPUID2Header)},
	{"sizeofSignalMaskHeader", "sizeof(struct kvm_signal_mask)", uint64(sizeofSignalMaskHeader)},
	{"sizeofU64", "sizeof(__u64)", uint64(sizeofU64)},
}

// notKernelConstants are identifiers of consts.go with no C counterpart.
var notKernelConstants = map[string]bool{"DevicePath": true}

// TestLayoutAgainstKernelHeaders compiles a C program against the installed
// <linux/kvm.h> that prints every struct size, alignment, field offset and
// field size, and every constant, and compares them with the Go values.
func TestLayoutAgainstKernelHeaders(t *testing.T) {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("layout check needs a C compiler (%s not found); install gcc and the kernel UAPI headers (linux-libc-dev)", cc)
	}

	var checks []check
	for _, lt := range layoutTypes {
		checks = append(checks, structChecks(lt)...)
	}
	for _, cc := range constChecks {
		checks = append(checks, check{cc.goName, cc.c, cc.val})
	}

	var src bytes.Buffer
	src.WriteString("#include <stddef.h>\n#include <stdio.h>\n#include <linux/kvm.h>\n#include <asm/signal.h>\n\nint main(void) {\n")
	for i, c := range checks {
		fmt.Fprintf(&src, "\tprintf(\"%d %%llu\\n\", (unsigned long long)(%s));\n", i, c.c)
	}
	src.WriteString("\treturn 0;\n}\n")

	dir := t.TempDir()
	cfile, bin := filepath.Join(dir, "layout.c"), filepath.Join(dir, "layout")
	if err := os.WriteFile(cfile, src.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-std=gnu11", "-o", bin, cfile).CombinedOutput(); err != nil {
		if bytes.Contains(out, []byte("kvm.h")) && bytes.Contains(out, []byte("No such file")) {
			t.Skipf("layout check needs the kernel UAPI headers (<linux/kvm.h>, package linux-libc-dev): %s", out)
		}
		t.Fatalf("compiling the layout program failed (a Go field or constant has no C counterpart?): %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("running the layout program: %v", err)
	}

	got := map[int]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var i int
		var v uint64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d", &i, &v); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		got[i] = v
	}
	if len(got) != len(checks) {
		t.Fatalf("layout program printed %d values, want %d", len(got), len(checks))
	}
	for i, c := range checks {
		if got[i] != c.want {
			t.Errorf("%s: Go has %d (%#x), C %s is %d (%#x)", c.what, c.want, c.want, c.c, got[i], got[i])
		}
	}
	t.Logf("checked %d sizes, offsets and constants against <linux/kvm.h>", len(checks))
}

// TestLayoutUsesUnsafeSizes cross-checks reflect's layout, which the C
// comparison uses, with unsafe.Sizeof/Offsetof on a few fields.
func TestLayoutUsesUnsafeSizes(t *testing.T) {
	var s Sregs
	var ev VcpuEvents
	field := func(t reflect.Type, name string) uintptr {
		f, _ := t.FieldByName(name)
		return f.Offset
	}
	for _, c := range []struct {
		what      string
		unsafeVal uintptr
		reflect   uintptr
	}{
		{"Sregs size", unsafe.Sizeof(s), reflect.TypeFor[Sregs]().Size()},
		{"Sregs.APICBase", unsafe.Offsetof(s.APICBase), field(reflect.TypeFor[Sregs](), "APICBase")},
		{"VcpuEvents.ExceptionPayload", unsafe.Offsetof(ev.ExceptionPayload), field(reflect.TypeFor[VcpuEvents](), "ExceptionPayload")},
	} {
		if c.unsafeVal != c.reflect {
			t.Errorf("%s: unsafe %d, reflect %d", c.what, c.unsafeVal, c.reflect)
		}
	}
}

// TestLayoutCoversEverything fails when consts.go gains a constant, or
// types.go a struct, that the C comparison does not check.
func TestLayoutCoversEverything(t *testing.T) {
	fset := token.NewFileSet()
	checked := map[string]bool{}
	for _, c := range constChecks {
		checked[c.goName] = true
	}
	f, err := parser.ParseFile(fset, "consts.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	sizes, err := parser.ParseFile(fset, "kvm_unsafe.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []*ast.File{f, sizes} {
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR) {
				continue
			}
			for _, spec := range gd.Specs {
				for _, n := range spec.(*ast.ValueSpec).Names {
					if file == sizes && !strings.HasPrefix(n.Name, "sizeof") {
						continue // derived values, not kernel constants
					}
					if !checked[n.Name] && !notKernelConstants[n.Name] {
						t.Errorf("%s: %s is not compared with the C headers in constChecks", fset.Position(n.Pos()), n.Name)
					}
				}
			}
		}
	}

	types, err := parser.ParseFile(fset, "types.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, lt := range layoutTypes {
		listed[lt.t.Name()] = true
	}
	for _, d := range types.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			name := spec.(*ast.TypeSpec).Name.Name
			if !listed[name] && !nestedOnly[name] {
				t.Errorf("types.go: %s is not in layoutTypes", name)
			}
		}
	}
}

// TestKernelWrittenTypesHoldNoPointers backs the soundness argument of
// ioctlPtr: the kernel may write any bytes into these structs, which is
// only harmless if the GC never interprets them as pointers.
func TestKernelWrittenTypesHoldNoPointers(t *testing.T) {
	var plain func(reflect.Type) bool
	plain = func(t reflect.Type) bool {
		switch t.Kind() {
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return true
		case reflect.Array:
			return plain(t.Elem())
		case reflect.Struct:
			for i := range t.NumField() {
				if !plain(t.Field(i).Type) {
					return false
				}
			}
			return true
		}
		return false // int, uintptr, pointers, slices, strings...: size or GC hazards
	}
	for _, lt := range layoutTypes {
		if !lt.kernelReadOnly && !plain(lt.t) {
			t.Errorf("%s (%s) is written by the kernel but is not plain fixed-size data", lt.t, lt.c)
		}
	}
}

func TestCFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"APICBase": "apic_base", "SMMInsideNMI": "smm_inside_nmi", "NrXCRs": "nr_xcrs",
		"XCRs": "xcrs", "NMSRs": "nmsrs", "CR0": "cr0", "RWMode": "rw_mode", "LastIP": "last_ip",
		"ExceptionHasPayload": "exception_has_payload", "MPState": "mp_state", "R8": "r8",
	} {
		if got := cFieldName(in); got != want {
			t.Errorf("cFieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
