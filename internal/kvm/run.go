package kvm

import (
	"encoding/binary"
	"fmt"
)

// RunData is typed access to a vCPU's mmapped struct kvm_run, the page KVM
// fills in when KVM_RUN returns.
//
// Exit fields are read with bounds-checked byte-slice reads at the kernel's
// offsets. Read them only on the vCPU's goroutine between Run calls: KVM
// rewrites them during KVM_RUN. ImmediateExit and SetImmediateExit are the
// exception: they are atomic and meant to be used from other goroutines.
type RunData struct {
	mem []byte // the whole VcpuMmapSize mapping; len >= runSize; never reassigned
}

var le = binary.LittleEndian // x86 byte order; kvm_run is in host order

// ExitReason is kvm_run.exit_reason: why KVM_RUN returned (an Exit*
// constant).
func (r *RunData) ExitReason() uint32 {
	return le.Uint32(r.mem[runExitReason:])
}

// ImmediateExit reports kvm_run.immediate_exit.
func (r *RunData) ImmediateExit() bool { return r.immediateExit() }

// SetImmediateExit sets kvm_run.immediate_exit: while it is set, KVM_RUN
// returns EINTR at once instead of entering the guest, leaving exit_reason
// as it was (only a signal taken inside KVM_RUN sets ExitIntr). To kick a
// running vCPU, set it and then signal the vCPU's thread (see the package
// documentation); clear it before resuming.
func (r *RunData) SetImmediateExit(on bool) { r.setImmediateExit(on) }

// IO decodes kvm_run.io for ExitIO: direction (ExitIOIn or ExitIOOut),
// access size in bytes, port, repeat count (string I/O), and data, the
// size*count bytes inside the kvm_run mapping at io.data_offset. For
// ExitIOIn, write the value into data before the next Run. data is nil if
// the kernel's offset and length would not fit in the mapping.
func (r *RunData) IO() (direction, size uint8, port uint16, count uint32, data []byte) {
	direction = r.mem[runIODirection]
	size = r.mem[runIOSize]
	port = le.Uint16(r.mem[runIOPort:])
	count = le.Uint32(r.mem[runIOCount:])
	off := le.Uint64(r.mem[runIODataOffset:])
	n := uint64(size) * uint64(count) // cannot overflow: 8 + 32 bits
	if total := uint64(len(r.mem)); off <= total && n <= total-off {
		// Cap the slice so an append cannot spill into the mapping.
		data = r.mem[off : off+n : off+n]
	}
	return direction, size, port, count, data
}

// MMIO decodes kvm_run.mmio for ExitMMIO: the guest-physical address, the
// accessed bytes (len bytes of mmio.data, at most 8; for a read, write the
// value there before the next Run), and whether the guest wrote.
func (r *RunData) MMIO() (physAddr uint64, data []byte, isWrite bool) {
	physAddr = le.Uint64(r.mem[runMMIOPhysAddr:])
	n := min(le.Uint32(r.mem[runMMIOLen:]), runMMIODataLen)
	data = r.mem[runMMIOData : runMMIOData+n : runMMIOData+n]
	isWrite = r.mem[runMMIOIsWrite] != 0
	return physAddr, data, isWrite
}

// SystemEvent decodes kvm_run.system_event for ExitSystemEvent: the event
// type (a SystemEvent* constant) and flags (data[0] on newer kernels).
func (r *RunData) SystemEvent() (typ uint32, flags uint64) {
	return le.Uint32(r.mem[runSystemEventType:]), le.Uint64(r.mem[runSystemEventFlags:])
}

// InternalError decodes kvm_run.internal for ExitInternalError: the
// suberror (an InternalError* constant) and the first ndata words of
// diagnostic data (empty without KVM_CAP_INTERNAL_ERROR_DATA).
func (r *RunData) InternalError() (suberror uint32, data []uint64) {
	suberror = le.Uint32(r.mem[runInternalSuberror:])
	n := min(le.Uint32(r.mem[runInternalNData:]), runInternalDataLen)
	data = make([]uint64, n)
	for i := range data {
		data[i] = le.Uint64(r.mem[runInternalData+8*i:])
	}
	return suberror, data
}

// FailEntry decodes kvm_run.fail_entry for ExitFailEntry: the hardware VM
// entry failure reason (VMX exit qualification / SVM exit code) and the
// host CPU it happened on.
func (r *RunData) FailEntry() (reason uint64, cpu uint32) {
	return le.Uint64(r.mem[runFailEntryReason:]), le.Uint32(r.mem[runFailEntryCPU:])
}

// HardwareExitReason decodes kvm_run.hw for ExitUnknown: the raw hardware
// exit reason KVM did not handle.
func (r *RunData) HardwareExitReason() uint64 {
	return le.Uint64(r.mem[runHWExitReason:])
}

var exitNames = map[uint32]string{
	ExitUnknown:       "KVM_EXIT_UNKNOWN",
	ExitException:     "KVM_EXIT_EXCEPTION",
	ExitIO:            "KVM_EXIT_IO",
	ExitHypercall:     "KVM_EXIT_HYPERCALL",
	ExitDebug:         "KVM_EXIT_DEBUG",
	ExitHLT:           "KVM_EXIT_HLT",
	ExitMMIO:          "KVM_EXIT_MMIO",
	ExitIRQWindowOpen: "KVM_EXIT_IRQ_WINDOW_OPEN",
	ExitShutdown:      "KVM_EXIT_SHUTDOWN",
	ExitFailEntry:     "KVM_EXIT_FAIL_ENTRY",
	ExitIntr:          "KVM_EXIT_INTR",
	ExitSetTPR:        "KVM_EXIT_SET_TPR",
	ExitTPRAccess:     "KVM_EXIT_TPR_ACCESS",
	ExitNMI:           "KVM_EXIT_NMI",
	ExitInternalError: "KVM_EXIT_INTERNAL_ERROR",
	ExitSystemEvent:   "KVM_EXIT_SYSTEM_EVENT",
	ExitIOAPICEOI:     "KVM_EXIT_IOAPIC_EOI",
	ExitHyperV:        "KVM_EXIT_HYPERV",
	ExitX86RDMSR:      "KVM_EXIT_X86_RDMSR",
	ExitX86WRMSR:      "KVM_EXIT_X86_WRMSR",
	ExitDirtyRingFull: "KVM_EXIT_DIRTY_RING_FULL",
	ExitX86BusLock:    "KVM_EXIT_X86_BUS_LOCK",
	ExitNotify:        "KVM_EXIT_NOTIFY",
}

// ExitReasonName is the C name of an exit reason, for logs and errors.
func ExitReasonName(reason uint32) string {
	if s, ok := exitNames[reason]; ok {
		return s
	}
	return fmt.Sprintf("KVM_EXIT_%d", reason)
}
