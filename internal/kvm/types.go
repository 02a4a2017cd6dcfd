package kvm

// Structures exchanged with KVM, laid out exactly as in <linux/kvm.h> and
// <asm/kvm.h> for x86_64 (layout_test.go checks sizes and offsets against
// the C headers).

// Regs is struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable (a GDT or IDT register).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64 // (KVM_NR_INTERRUPTS + 63) / 64
}

// FPU is struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// CPUIDEntry2 is struct kvm_cpuid_entry2.
type CPUIDEntry2 struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// LAPICState is struct kvm_lapic_state: the local APIC's 1 KiB register
// page.
type LAPICState struct {
	Regs [1024]byte
}

// XCR is struct kvm_xcr: one extended control register.
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// XCRs is struct kvm_xcrs: the vCPU's extended control registers (XCR0).
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]XCR // KVM_MAX_XCRS
	_      [16]uint64
}

// DebugRegs is struct kvm_debugregs: DR0-DR3, DR6 and DR7.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// VcpuEventsException is the exception member of struct kvm_vcpu_events.
type VcpuEventsException struct {
	Injected     uint8
	Nr           uint8
	HasErrorCode uint8
	Pending      uint8
	ErrorCode    uint32
}

// VcpuEventsInterrupt is the interrupt member of struct kvm_vcpu_events.
type VcpuEventsInterrupt struct {
	Injected uint8
	Nr       uint8
	Soft     uint8
	Shadow   uint8
}

// VcpuEventsNMI is the nmi member of struct kvm_vcpu_events.
type VcpuEventsNMI struct {
	Injected uint8
	Pending  uint8
	Masked   uint8
	_        uint8
}

// VcpuEventsSMI is the smi member of struct kvm_vcpu_events.
type VcpuEventsSMI struct {
	SMM          uint8
	Pending      uint8
	SMMInsideNMI uint8
	LatchedInit  uint8
}

// VcpuEventsTripleFault is the triple_fault member of struct
// kvm_vcpu_events.
type VcpuEventsTripleFault struct {
	Pending uint8
}

// VcpuEvents is struct kvm_vcpu_events: pending and injected exceptions,
// interrupts, NMIs and SMIs.
type VcpuEvents struct {
	Exception           VcpuEventsException
	Interrupt           VcpuEventsInterrupt
	NMI                 VcpuEventsNMI
	SIPIVector          uint32
	Flags               uint32
	SMI                 VcpuEventsSMI
	TripleFault         VcpuEventsTripleFault
	_                   [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// ClockData is struct kvm_clock_data: the VM's kvmclock value.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// IRQChip is struct kvm_irqchip: the state of one in-kernel interrupt
// controller. Chip holds struct kvm_pic_state or struct kvm_ioapic_state
// (selected by ChipID) as raw bytes, which is all snapshots need.
type IRQChip struct {
	_      [0]uint64 // the C union holds u64 fields: 8-byte alignment
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// PITChannelState is struct kvm_pit_channel_state: one i8254 channel.
type PITChannelState struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PITState2 is struct kvm_pit_state2: the in-kernel i8254 PIT.
type PITState2 struct {
	Channels [3]PITChannelState
	Flags    uint32
	_        [9]uint32
}

// Structures used only inside the package.

// userspaceMemoryRegion is struct kvm_userspace_memory_region.
type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// irqLevel is struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// pitConfig is struct kvm_pit_config.
type pitConfig struct {
	Flags uint32
	Pad   [15]uint32
}

// dirtyLog is struct kvm_dirty_log. DirtyBitmap is a real Go pointer (the
// C field is void *), so the GC keeps the bitmap alive; the kernel only
// reads this struct.
type dirtyLog struct {
	Slot        uint32
	_           uint32
	DirtyBitmap *uint64
}

// irqfd is struct kvm_irqfd.
type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	Resamplefd uint32
	Pad        [16]uint8
}

// ioeventfd is struct kvm_ioeventfd.
type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	Pad       [36]uint8
}

// mpState is struct kvm_mp_state.
type mpState struct {
	MPState uint32
}

// msrsHeader is struct kvm_msrs without its flexible entries[].
type msrsHeader struct {
	_     [0]uint64 // entries[] holds u64 fields: 8-byte alignment
	NMSRs uint32
	Pad   uint32
}

// msrListHeader is struct kvm_msr_list without its flexible indices[].
type msrListHeader struct {
	NMSRs uint32
}

// cpuid2Header is struct kvm_cpuid2 without its flexible entries[].
type cpuid2Header struct {
	Nent    uint32
	Padding uint32
}

// signalMaskHeader is struct kvm_signal_mask without its flexible sigset[].
type signalMaskHeader struct {
	Len uint32
}
