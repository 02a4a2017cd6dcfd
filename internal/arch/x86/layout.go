package x86

// Guest-physical memory layout. These values are Firecracker's
// (src/vmm/src/arch/x86_64/layout.rs and mod.rs): guest kernels, snapshots
// and the device announcements all depend on them, so they live in this one
// file.
const (
	// BootGDTStart holds the boot GDT (4 entries).
	BootGDTStart = 0x500
	// BootIDTStart holds the boot IDT (one null entry).
	BootIDTStart = 0x520
	// PVHInfoStart holds struct hvm_start_info for a PVH boot.
	PVHInfoStart = 0x6000
	// PVHModlistStart holds the PVH module list (the initrd).
	PVHModlistStart = 0x6040
	// PVHMemmapStart holds the PVH memory map; it shares its address with
	// the zero page because the two boot protocols are exclusive.
	PVHMemmapStart = 0x7000
	// ZeroPageStart holds struct boot_params for a Linux 64-bit boot.
	ZeroPageStart = 0x7000
	// BootStackPointer is the initial RSP/RBP of the boot vCPU.
	BootStackPointer = 0x8ff0
	// PML4Start, PDPTStart and PDStart hold the identity page tables.
	PML4Start = 0x9000
	PDPTStart = 0xa000
	PDStart   = 0xb000
	// CmdlineStart holds the kernel command line.
	CmdlineStart = 0x20000
	// CmdlineMaxSize is the command line limit, NUL included.
	CmdlineMaxSize = 2048
	// SystemMemStart..SystemMemEnd holds the MP table and ACPI tables
	// (from the EBDA to the RSDP).
	SystemMemStart = 0x9fc00
	SystemMemEnd   = 0xe0000
	// RSDPAddr is where the ACPI RSDP is written (guests scan 0xe0000-0xfffff).
	RSDPAddr = 0xe0000
	// HimemStart is the lowest address a kernel is loaded at.
	HimemStart = 0x100000

	// MMIO32Start..MMIO32End is the 32-bit MMIO gap: the last GiB below 4 GiB.
	MMIO32Start = 0xC000_0000
	MMIO32End   = 0x1_0000_0000
	// BootTimerAddr is the boot-timer device's MMIO page.
	BootTimerAddr = 0xC000_0000
	// VirtioMMIOStart is the first virtio-mmio device's region.
	VirtioMMIOStart = 0xC000_1000
	// VirtioMMIOSize is the size of each virtio-mmio region.
	VirtioMMIOSize = 0x1000
	// PCIMMConfigStart and PCIMMConfigSize locate the PCIe ECAM window
	// (reserved in the E820 map even without PCI).
	PCIMMConfigStart = 0xEEC0_0000
	PCIMMConfigSize  = 256 << 20
	// IOAPICAddr and LAPICAddr are the interrupt controllers' MMIO bases.
	IOAPICAddr = 0xFEC0_0000
	LAPICAddr  = 0xFEE0_0000
	// KVMTSSAddr is given to KVM_SET_TSS_ADDR (3 pages).
	KVMTSSAddr = 0xFFFB_D000

	// MMIO64Start..MMIO64Start+MMIO64Size is the 64-bit MMIO window; RAM
	// that would overlap it moves above it.
	MMIO64Start = 256 << 30
	MMIO64Size  = 256 << 30

	// IRQBase..IRQMax are the legacy GSIs handed to virtio-mmio devices in
	// attach order.
	IRQBase = 5
	IRQMax  = 23
	// SerialIRQ and I8042IRQ are the legacy devices' GSIs.
	SerialIRQ = 4
	I8042IRQ  = 1
)

// RAMRegion is one contiguous range of guest RAM: one KVM memory slot.
type RAMRegion struct {
	Start, Size uint64
}

// End is the first address after the region.
func (r RAMRegion) End() uint64 { return r.Start + r.Size }

// RAMRegions splits size bytes of guest RAM around the 32-bit MMIO gap and
// the 64-bit MMIO window, as Firecracker's arch_memory_regions does: RAM up
// to 3 GiB at 0, the rest from 4 GiB, split again at 256 GiB.
func RAMRegions(size uint64) []RAMRegion {
	var out []RAMRegion
	low := min(size, MMIO32Start)
	out = append(out, RAMRegion{0, low})
	rest := size - low
	if rest == 0 {
		return out
	}
	// From 4 GiB up to the 64-bit MMIO window.
	mid := min(rest, MMIO64Start-MMIO32End)
	out = append(out, RAMRegion{MMIO32End, mid})
	rest -= mid
	if rest > 0 {
		out = append(out, RAMRegion{MMIO64Start + MMIO64Size, rest})
	}
	return out
}
