package kvm

// Every ioctl number and kernel constant of the package, each named after
// the C macro it mirrors. layout_test.go compiles a C program against
// <linux/kvm.h> and fails if any value here differs from the kernel's.

// Ioctl request encoding from <asm-generic/ioctl.h> (x86 uses the generic
// layout: nr in bits 0-7, type 8-15, size 16-29, direction 30-31).
const (
	iocNRBits    = 8                          // _IOC_NRBITS
	iocTypeBits  = 8                          // _IOC_TYPEBITS
	iocSizeBits  = 14                         // _IOC_SIZEBITS
	iocNRShift   = 0                          // _IOC_NRSHIFT
	iocTypeShift = iocNRShift + iocNRBits     // _IOC_TYPESHIFT
	iocSizeShift = iocTypeShift + iocTypeBits // _IOC_SIZESHIFT
	iocDirShift  = iocSizeShift + iocSizeBits // _IOC_DIRSHIFT
	iocNone      = 0                          // _IOC_NONE
	iocWrite     = 1                          // _IOC_WRITE
	iocRead      = 2                          // _IOC_READ

	kvmio = 0xAE // KVMIO: the ioctl type byte of every KVM request
)

// ioc is the kernel's _IOC(dir, KVMIO, nr, size).
func ioc(dir, nr, size uintptr) uintptr {
	if size >= 1<<iocSizeBits {
		// The kernel macro would silently corrupt the direction bits.
		panic("kvm: ioctl argument too large to encode")
	}
	return dir<<iocDirShift | kvmio<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

// ioctlIO is _IO(KVMIO, nr): no argument, or an integer argument.
func ioctlIO(nr uintptr) uintptr { return ioc(iocNone, nr, 0) }

// ioctlIOW is _IOW(KVMIO, nr, type): userspace writes, the kernel reads.
func ioctlIOW(nr, size uintptr) uintptr { return ioc(iocWrite, nr, size) }

// ioctlIOR is _IOR(KVMIO, nr, type): the kernel writes, userspace reads.
func ioctlIOR(nr, size uintptr) uintptr { return ioc(iocRead, nr, size) }

// ioctlIOWR is _IOWR(KVMIO, nr, type): both directions.
func ioctlIOWR(nr, size uintptr) uintptr { return ioc(iocRead|iocWrite, nr, size) }

// Ioctl request numbers. The sizes come from the Go types (see
// kvm_unsafe.go), so a wrong struct also shows up as a wrong number.
var (
	// On the system fd (/dev/kvm).
	kvmGetAPIVersion     = ioctlIO(0x00)                        // KVM_GET_API_VERSION
	kvmCreateVM          = ioctlIO(0x01)                        // KVM_CREATE_VM
	kvmGetMSRIndexList   = ioctlIOWR(0x02, sizeofMSRListHeader) // KVM_GET_MSR_INDEX_LIST
	kvmCheckExtension    = ioctlIO(0x03)                        // KVM_CHECK_EXTENSION
	kvmGetVCPUMmapSize   = ioctlIO(0x04)                        // KVM_GET_VCPU_MMAP_SIZE
	kvmGetSupportedCPUID = ioctlIOWR(0x05, sizeofCPUID2Header)  // KVM_GET_SUPPORTED_CPUID

	// On a VM fd.
	kvmCreateVCPU       = ioctlIO(0x41)                       // KVM_CREATE_VCPU
	kvmGetDirtyLog      = ioctlIOW(0x42, sizeofDirtyLog)      // KVM_GET_DIRTY_LOG
	kvmSetUserMemRegion = ioctlIOW(0x46, sizeofUserMemRegion) // KVM_SET_USER_MEMORY_REGION
	kvmSetTSSAddr       = ioctlIO(0x47)                       // KVM_SET_TSS_ADDR
	kvmSetIdentityMap   = ioctlIOW(0x48, sizeofU64)           // KVM_SET_IDENTITY_MAP_ADDR
	kvmCreateIRQChip    = ioctlIO(0x60)                       // KVM_CREATE_IRQCHIP
	kvmIRQLine          = ioctlIOW(0x61, sizeofIRQLevel)      // KVM_IRQ_LINE
	kvmGetIRQChip       = ioctlIOWR(0x62, sizeofIRQChip)      // KVM_GET_IRQCHIP
	kvmSetIRQChip       = ioctlIOR(0x63, sizeofIRQChip)       // KVM_SET_IRQCHIP (_IOR is the kernel's historical mistake)
	kvmIRQFD            = ioctlIOW(0x76, sizeofIRQFD)         // KVM_IRQFD
	kvmCreatePIT2       = ioctlIOW(0x77, sizeofPITConfig)     // KVM_CREATE_PIT2
	kvmIOEventFD        = ioctlIOW(0x79, sizeofIOEventFD)     // KVM_IOEVENTFD
	kvmSetClock         = ioctlIOW(0x7b, sizeofClockData)     // KVM_SET_CLOCK
	kvmGetClock         = ioctlIOR(0x7c, sizeofClockData)     // KVM_GET_CLOCK
	kvmGetPIT2          = ioctlIOR(0x9f, sizeofPITState2)     // KVM_GET_PIT2
	kvmSetPIT2          = ioctlIOW(0xa0, sizeofPITState2)     // KVM_SET_PIT2

	// On a vCPU fd.
	kvmRun           = ioctlIO(0x80)                          // KVM_RUN
	kvmGetRegs       = ioctlIOR(0x81, sizeofRegs)             // KVM_GET_REGS
	kvmSetRegs       = ioctlIOW(0x82, sizeofRegs)             // KVM_SET_REGS
	kvmGetSregs      = ioctlIOR(0x83, sizeofSregs)            // KVM_GET_SREGS
	kvmSetSregs      = ioctlIOW(0x84, sizeofSregs)            // KVM_SET_SREGS
	kvmGetMSRs       = ioctlIOWR(0x88, sizeofMSRsHeader)      // KVM_GET_MSRS
	kvmSetMSRs       = ioctlIOW(0x89, sizeofMSRsHeader)       // KVM_SET_MSRS
	kvmSetSignalMask = ioctlIOW(0x8b, sizeofSignalMaskHeader) // KVM_SET_SIGNAL_MASK
	kvmGetFPU        = ioctlIOR(0x8c, sizeofFPU)              // KVM_GET_FPU
	kvmSetFPU        = ioctlIOW(0x8d, sizeofFPU)              // KVM_SET_FPU
	kvmGetLAPIC      = ioctlIOR(0x8e, sizeofLAPICState)       // KVM_GET_LAPIC
	kvmSetLAPIC      = ioctlIOW(0x8f, sizeofLAPICState)       // KVM_SET_LAPIC
	kvmSetCPUID2     = ioctlIOW(0x90, sizeofCPUID2Header)     // KVM_SET_CPUID2
	kvmGetCPUID2     = ioctlIOWR(0x91, sizeofCPUID2Header)    // KVM_GET_CPUID2
	kvmGetMPState    = ioctlIOR(0x98, sizeofMPState)          // KVM_GET_MP_STATE
	kvmSetMPState    = ioctlIOW(0x99, sizeofMPState)          // KVM_SET_MP_STATE
	kvmGetVCPUEvents = ioctlIOR(0x9f, sizeofVcpuEvents)       // KVM_GET_VCPU_EVENTS
	kvmSetVCPUEvents = ioctlIOW(0xa0, sizeofVcpuEvents)       // KVM_SET_VCPU_EVENTS
	kvmGetDebugRegs  = ioctlIOR(0xa1, sizeofDebugRegs)        // KVM_GET_DEBUGREGS
	kvmSetDebugRegs  = ioctlIOW(0xa2, sizeofDebugRegs)        // KVM_SET_DEBUGREGS
	kvmGetTSCKHz     = ioctlIO(0xa3)                          // KVM_GET_TSC_KHZ
	kvmSetTSCKHz     = ioctlIO(0xa2)                          // KVM_SET_TSC_KHZ
	kvmGetXSAVE      = ioctlIOR(0xa4, XSAVELegacySize)        // KVM_GET_XSAVE
	kvmSetXSAVE      = ioctlIOW(0xa5, XSAVELegacySize)        // KVM_SET_XSAVE
	kvmGetXCRs       = ioctlIOR(0xa6, sizeofXCRs)             // KVM_GET_XCRS
	kvmSetXCRs       = ioctlIOW(0xa7, sizeofXCRs)             // KVM_SET_XCRS
	kvmKVMClockCtrl  = ioctlIO(0xad)                          // KVM_KVMCLOCK_CTRL
	kvmGetXSAVE2     = ioctlIOR(0xcf, XSAVELegacySize)        // KVM_GET_XSAVE2
)

// APIVersion is KVM_API_VERSION: the only KVM_GET_API_VERSION answer this
// package (and every KVM user since 2.6.22) understands.
const APIVersion = 12

// DevicePath is the conventional path of the KVM system device.
const DevicePath = "/dev/kvm"

// Capabilities for CheckExtension (KVM_CAP_*).
const (
	CapIRQChip            = 0   // KVM_CAP_IRQCHIP: in-kernel PIC, IOAPIC and LAPIC
	CapHLT                = 1   // KVM_CAP_HLT: HLT exits to userspace without an irqchip
	CapUserMemory         = 3   // KVM_CAP_USER_MEMORY: KVM_SET_USER_MEMORY_REGION
	CapSetTSSAddr         = 4   // KVM_CAP_SET_TSS_ADDR: KVM_SET_TSS_ADDR
	CapExtCPUID           = 7   // KVM_CAP_EXT_CPUID: KVM_GET_SUPPORTED_CPUID and CPUID2
	CapNrVCPUs            = 9   // KVM_CAP_NR_VCPUS: recommended maximum vCPUs per VM
	CapNrMemslots         = 10  // KVM_CAP_NR_MEMSLOTS: maximum memory slots per VM
	CapMPState            = 14  // KVM_CAP_MP_STATE: KVM_GET/SET_MP_STATE
	CapSyncMMU            = 16  // KVM_CAP_SYNC_MMU: host mapping changes reach the guest
	CapIRQRouting         = 25  // KVM_CAP_IRQ_ROUTING: KVM_SET_GSI_ROUTING
	CapIRQFD              = 32  // KVM_CAP_IRQFD: KVM_IRQFD
	CapPIT2               = 33  // KVM_CAP_PIT2: KVM_CREATE_PIT2
	CapPITState2          = 35  // KVM_CAP_PIT_STATE2: KVM_GET/SET_PIT2
	CapIOEventFD          = 36  // KVM_CAP_IOEVENTFD: KVM_IOEVENTFD
	CapSetIdentityMapAddr = 37  // KVM_CAP_SET_IDENTITY_MAP_ADDR: KVM_SET_IDENTITY_MAP_ADDR
	CapAdjustClock        = 39  // KVM_CAP_ADJUST_CLOCK: KVM_GET/SET_CLOCK (answer holds flags)
	CapInternalErrorData  = 40  // KVM_CAP_INTERNAL_ERROR_DATA: internal.ndata/data are filled
	CapVCPUEvents         = 41  // KVM_CAP_VCPU_EVENTS: KVM_GET/SET_VCPU_EVENTS
	CapDebugRegs          = 50  // KVM_CAP_DEBUGREGS: KVM_GET/SET_DEBUGREGS
	CapXSAVE              = 55  // KVM_CAP_XSAVE: KVM_GET/SET_XSAVE
	CapXCRs               = 56  // KVM_CAP_XCRS: KVM_GET/SET_XCRS
	CapTSCControl         = 60  // KVM_CAP_TSC_CONTROL: KVM_SET_TSC_KHZ
	CapGetTSCKHz          = 61  // KVM_CAP_GET_TSC_KHZ: KVM_GET_TSC_KHZ
	CapMaxVCPUs           = 66  // KVM_CAP_MAX_VCPUS: maximum vCPUs per VM
	CapTSCDeadlineTimer   = 72  // KVM_CAP_TSC_DEADLINE_TIMER: LAPIC TSC-deadline mode
	CapKVMClockCtrl       = 76  // KVM_CAP_KVMCLOCK_CTRL: KVM_KVMCLOCK_CTRL
	CapSignalMSI          = 77  // KVM_CAP_SIGNAL_MSI: KVM_SIGNAL_MSI
	CapReadonlyMem        = 81  // KVM_CAP_READONLY_MEM: KVM_MEM_READONLY slots
	CapSplitIRQChip       = 121 // KVM_CAP_SPLIT_IRQCHIP: LAPIC in kernel, PIC/IOAPIC in userspace
	CapMaxVCPUID          = 128 // KVM_CAP_MAX_VCPU_ID: largest vCPU id plus one
	CapImmediateExit      = 136 // KVM_CAP_IMMEDIATE_EXIT: kvm_run.immediate_exit
	CapGetMSRFeatures     = 153 // KVM_CAP_GET_MSR_FEATURES: feature MSRs on the system fd
	CapXSAVE2             = 208 // KVM_CAP_XSAVE2: KVM_GET_XSAVE2; the answer is the xsave size
)

// Exit reasons in kvm_run.exit_reason (KVM_EXIT_*), x86 ones only.
const (
	ExitUnknown       = 0  // KVM_EXIT_UNKNOWN: unknown hardware exit; see HardwareExitReason
	ExitException     = 1  // KVM_EXIT_EXCEPTION: guest exception KVM could not handle
	ExitIO            = 2  // KVM_EXIT_IO: port I/O; see IO
	ExitHypercall     = 3  // KVM_EXIT_HYPERCALL: hypercall forwarded to userspace
	ExitDebug         = 4  // KVM_EXIT_DEBUG: debug exception with guest debugging on
	ExitHLT           = 5  // KVM_EXIT_HLT: guest HLT without an in-kernel irqchip
	ExitMMIO          = 6  // KVM_EXIT_MMIO: access outside every memory slot; see MMIO
	ExitIRQWindowOpen = 7  // KVM_EXIT_IRQ_WINDOW_OPEN: guest can take an interrupt
	ExitShutdown      = 8  // KVM_EXIT_SHUTDOWN: triple fault (guest reset)
	ExitFailEntry     = 9  // KVM_EXIT_FAIL_ENTRY: VM entry failed; see FailEntry
	ExitIntr          = 10 // KVM_EXIT_INTR: a pending signal ended KVM_RUN
	ExitSetTPR        = 11 // KVM_EXIT_SET_TPR: unused on current kernels
	ExitTPRAccess     = 12 // KVM_EXIT_TPR_ACCESS: TPR access reporting
	ExitNMI           = 16 // KVM_EXIT_NMI: unused on x86
	ExitInternalError = 17 // KVM_EXIT_INTERNAL_ERROR: KVM failed to emulate; see InternalError
	ExitSystemEvent   = 24 // KVM_EXIT_SYSTEM_EVENT: shutdown/reset/crash; see SystemEvent
	ExitIOAPICEOI     = 26 // KVM_EXIT_IOAPIC_EOI: EOI for a split-irqchip level interrupt
	ExitHyperV        = 27 // KVM_EXIT_HYPERV: Hyper-V SynIC or hypercall
	ExitX86RDMSR      = 29 // KVM_EXIT_X86_RDMSR: RDMSR forwarded to userspace
	ExitX86WRMSR      = 30 // KVM_EXIT_X86_WRMSR: WRMSR forwarded to userspace
	ExitDirtyRingFull = 31 // KVM_EXIT_DIRTY_RING_FULL: dirty ring needs harvesting
	ExitX86BusLock    = 33 // KVM_EXIT_X86_BUS_LOCK: guest took a bus lock
	ExitNotify        = 37 // KVM_EXIT_NOTIFY: VM-exit notify window elapsed
)

// Port I/O directions in kvm_run.io.direction.
const (
	ExitIOIn  = 0 // KVM_EXIT_IO_IN: the guest reads; fill data before the next Run
	ExitIOOut = 1 // KVM_EXIT_IO_OUT: the guest wrote data
)

// Suberrors of KVM_EXIT_INTERNAL_ERROR.
const (
	InternalErrorEmulation            = 1 // KVM_INTERNAL_ERROR_EMULATION: instruction emulation failed
	InternalErrorSimulEx              = 2 // KVM_INTERNAL_ERROR_SIMUL_EX: nested exceptions while delivering one
	InternalErrorDeliveryEv           = 3 // KVM_INTERNAL_ERROR_DELIVERY_EV: exit while delivering an event
	InternalErrorUnexpectedExitReason = 4 // KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: exit KVM does not know
)

// Types of KVM_EXIT_SYSTEM_EVENT.
const (
	SystemEventShutdown = 1 // KVM_SYSTEM_EVENT_SHUTDOWN: guest asked for power off
	SystemEventReset    = 2 // KVM_SYSTEM_EVENT_RESET: guest asked for a reset
	SystemEventCrash    = 3 // KVM_SYSTEM_EVENT_CRASH: guest reported a crash
	SystemEventWakeup   = 4 // KVM_SYSTEM_EVENT_WAKEUP: a suspended vCPU woke up
	SystemEventSuspend  = 5 // KVM_SYSTEM_EVENT_SUSPEND: guest asked to suspend
	SystemEventSEVTerm  = 6 // KVM_SYSTEM_EVENT_SEV_TERM: SEV guest asked to terminate
)

// Flags of SetUserMemoryRegion.
const (
	MemLogDirtyPages = 1 << 0 // KVM_MEM_LOG_DIRTY_PAGES: track writes for GetDirtyLog
	MemReadonly      = 1 << 1 // KVM_MEM_READONLY: guest writes become MMIO exits
)

// PITSpeakerDummy is KVM_PIT_SPEAKER_DUMMY: CreatePIT2 emulates a dummy
// port 0x61 speaker so guests probing it do not exit to userspace.
const PITSpeakerDummy = 1

// Flags of PITState2.Flags.
const (
	PITFlagsHPETLegacy    = 0x1 // KVM_PIT_FLAGS_HPET_LEGACY: HPET legacy mode disables the PIT
	PITFlagsSpeakerDataOn = 0x2 // KVM_PIT_FLAGS_SPEAKER_DATA_ON: speaker data bit is set
)

// Chip ids of IRQChip.ChipID.
const (
	IRQChipPICMaster = 0 // KVM_IRQCHIP_PIC_MASTER: the 8259 at ports 0x20/0x21
	IRQChipPICSlave  = 1 // KVM_IRQCHIP_PIC_SLAVE: the 8259 at ports 0xa0/0xa1
	IRQChipIOAPIC    = 2 // KVM_IRQCHIP_IOAPIC: the IOAPIC
)

// vCPU multiprocessing states of GetMPState/SetMPState (x86 subset).
const (
	MPStateRunnable      = 0  // KVM_MP_STATE_RUNNABLE: the vCPU runs
	MPStateUninitialized = 1  // KVM_MP_STATE_UNINITIALIZED: AP waiting for INIT
	MPStateInitReceived  = 2  // KVM_MP_STATE_INIT_RECEIVED: AP got INIT, waits for SIPI
	MPStateHalted        = 3  // KVM_MP_STATE_HALTED: the vCPU executed HLT
	MPStateSIPIReceived  = 4  // KVM_MP_STATE_SIPI_RECEIVED: AP got SIPI
	MPStateAPResetHold   = 9  // KVM_MP_STATE_AP_RESET_HOLD: SEV-ES AP reset hold
	MPStateSuspended     = 10 // KVM_MP_STATE_SUSPENDED: the vCPU is suspended
)

// Flags of ClockData.Flags.
const (
	ClockTSCStable = 2      // KVM_CLOCK_TSC_STABLE: kvmclock is stable across vCPUs
	ClockRealtime  = 1 << 2 // KVM_CLOCK_REALTIME: ClockData.Realtime is valid
	ClockHostTSC   = 1 << 3 // KVM_CLOCK_HOST_TSC: ClockData.HostTSC is valid
)

// Flags of VcpuEvents.Flags: which optional fields SetVcpuEvents applies.
const (
	VcpuEventValidNMIPending  = 0x01 // KVM_VCPUEVENT_VALID_NMI_PENDING: apply nmi.pending
	VcpuEventValidSIPIVector  = 0x02 // KVM_VCPUEVENT_VALID_SIPI_VECTOR: apply sipi_vector
	VcpuEventValidShadow      = 0x04 // KVM_VCPUEVENT_VALID_SHADOW: apply interrupt.shadow
	VcpuEventValidSMM         = 0x08 // KVM_VCPUEVENT_VALID_SMM: apply smi
	VcpuEventValidPayload     = 0x10 // KVM_VCPUEVENT_VALID_PAYLOAD: apply exception payload
	VcpuEventValidTripleFault = 0x20 // KVM_VCPUEVENT_VALID_TRIPLE_FAULT: apply triple_fault
)

// Flags of CPUIDEntry2.Flags.
const (
	CPUIDFlagSignificantIndex = 1 << 0 // KVM_CPUID_FLAG_SIGNIFCANT_INDEX: Index selects a subleaf
	CPUIDFlagStatefulFunc     = 1 << 1 // KVM_CPUID_FLAG_STATEFUL_FUNC: obsolete stateful leaf
	CPUIDFlagStateReadNext    = 1 << 2 // KVM_CPUID_FLAG_STATE_READ_NEXT: obsolete stateful leaf
)

// XSAVELegacySize is sizeof(struct kvm_xsave): the 4 KiB KVM_GET_XSAVE
// buffer. KVM_CAP_XSAVE2 reports a larger size when dynamic features (AMX)
// are enabled for guests.
const XSAVELegacySize = 4096

// kernelSigsetBytes is the kernel's sizeof(sigset_t) on x86_64 (_NSIG / 8);
// KVM_SET_SIGNAL_MASK rejects any other length.
const kernelSigsetBytes = 8

// Flags of struct kvm_irqfd and struct kvm_ioeventfd.
const (
	irqfdFlagDeassign      = 1 << 0 // KVM_IRQFD_FLAG_DEASSIGN
	ioeventfdFlagDatamatch = 1 << 0 // KVM_IOEVENTFD_FLAG_DATAMATCH
	ioeventfdFlagPIO       = 1 << 1 // KVM_IOEVENTFD_FLAG_PIO
	ioeventfdFlagDeassign  = 1 << 2 // KVM_IOEVENTFD_FLAG_DEASSIGN
)

// Offsets into the mmapped struct kvm_run (read with encoding/binary, so
// only the offsets need to match the C layout; x86 has no s390 psw words).
const (
	runImmediateExit      = 1    // offsetof(struct kvm_run, immediate_exit)
	runExitReason         = 8    // offsetof(struct kvm_run, exit_reason)
	runHWExitReason       = 32   // offsetof(struct kvm_run, hw.hardware_exit_reason)
	runFailEntryReason    = 32   // offsetof(struct kvm_run, fail_entry.hardware_entry_failure_reason)
	runFailEntryCPU       = 40   // offsetof(struct kvm_run, fail_entry.cpu)
	runIODirection        = 32   // offsetof(struct kvm_run, io.direction)
	runIOSize             = 33   // offsetof(struct kvm_run, io.size)
	runIOPort             = 34   // offsetof(struct kvm_run, io.port)
	runIOCount            = 36   // offsetof(struct kvm_run, io.count)
	runIODataOffset       = 40   // offsetof(struct kvm_run, io.data_offset)
	runMMIOPhysAddr       = 32   // offsetof(struct kvm_run, mmio.phys_addr)
	runMMIOData           = 40   // offsetof(struct kvm_run, mmio.data)
	runMMIODataLen        = 8    // sizeof(((struct kvm_run *)0)->mmio.data)
	runMMIOLen            = 48   // offsetof(struct kvm_run, mmio.len)
	runMMIOIsWrite        = 52   // offsetof(struct kvm_run, mmio.is_write)
	runInternalSuberror   = 32   // offsetof(struct kvm_run, internal.suberror)
	runInternalNData      = 36   // offsetof(struct kvm_run, internal.ndata)
	runInternalData       = 40   // offsetof(struct kvm_run, internal.data)
	runInternalDataLen    = 16   // ARRAY_SIZE(internal.data)
	runSystemEventType    = 32   // offsetof(struct kvm_run, system_event.type)
	runSystemEventNData   = 36   // offsetof(struct kvm_run, system_event.ndata)
	runSystemEventFlags   = 40   // offsetof(struct kvm_run, system_event.flags)
	runSystemEventDataLen = 16   // ARRAY_SIZE(system_event.data)
	runSize               = 2352 // sizeof(struct kvm_run)
)
