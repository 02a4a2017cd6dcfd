package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/memory"
)

// Control-register and EFER bits used at boot.
const (
	CR0PE   = 1 << 0
	CR0ET   = 1 << 4
	CR0PG   = 1 << 31
	CR4PAE  = 1 << 5
	EFERLME = 1 << 8
	EFERLMA = 1 << 10
)

// BootRFLAGS is the initial RFLAGS: only the always-one bit 1.
const BootRFLAGS = 0x2

// gdtEntry builds a segment descriptor from its flags (access byte in bits
// 0-7, G/DB/L/AVL in bits 12-15), base and 20-bit limit, like the kernel's
// GDT_ENTRY macro.
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return (uint64(base)&0xff00_0000)<<(56-24) |
		(uint64(flags)&0xf0ff)<<40 |
		(uint64(limit)&0x000f_0000)<<(48-16) |
		(uint64(base)&0x00ff_ffff)<<16 |
		uint64(limit)&0xffff
}

// BootGDT returns the four boot GDT entries (null, code, data, TSS): flat
// 64-bit segments for the Linux 64-bit boot protocol, flat 32-bit ones for
// PVH.
func BootGDT(pvh bool) [4]uint64 {
	if pvh {
		return [4]uint64{
			0,
			gdtEntry(0xc09b, 0, 0xffff_ffff),
			gdtEntry(0xc093, 0, 0xffff_ffff),
			gdtEntry(0x008b, 0, 0x67),
		}
	}
	return [4]uint64{
		0,
		gdtEntry(0xa09b, 0, 0xfffff),
		gdtEntry(0xc093, 0, 0xfffff),
		gdtEntry(0x808b, 0, 0xfffff),
	}
}

// segmentFromGDT decodes a descriptor into the form KVM_SET_SREGS wants.
func segmentFromGDT(e uint64, index uint16) kvm.Segment {
	bit := func(n uint) uint8 { return uint8(e>>n) & 1 }
	limit := uint32(e>>32)&0xf_0000 | uint32(e)&0xffff
	if bit(55) == 1 {
		// VMX limits are byte-granular 32-bit values: scale a
		// page-granular limit ourselves, or a PVH guest in 32-bit
		// protected mode could not reach all of its address space.
		limit = limit<<12 | 0xfff
	}
	present := bit(47)
	return kvm.Segment{
		Base:     (e&0xff00_0000_0000_0000)>>32 | (e&0x0000_00ff_0000_0000)>>16 | (e&0x0000_0000_ffff_0000)>>16,
		Limit:    limit,
		Selector: index * 8,
		Type:     uint8(e>>40) & 0xf,
		Present:  present,
		DPL:      uint8(e>>45) & 3,
		DB:       bit(54),
		S:        bit(44),
		L:        bit(53),
		G:        bit(55),
		AVL:      bit(52),
		Unusable: present ^ 1,
	}
}

// WriteBootGDT writes the boot GDT at BootGDTStart and a single null IDT
// entry at BootIDTStart.
func WriteBootGDT(mem *memory.Guest, pvh bool) error {
	gdt := BootGDT(pvh)
	b := make([]byte, 8*len(gdt))
	for i, e := range gdt {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	if err := mem.WriteAt(b, BootGDTStart); err != nil {
		return fmt.Errorf("writing boot GDT: %w", err)
	}
	if err := mem.WriteU64(BootIDTStart, 0); err != nil {
		return fmt.Errorf("writing boot IDT: %w", err)
	}
	return nil
}

// Page-table entry bits.
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	pteHuge     = 1 << 7
)

// WriteIdentityPageTables writes the Linux-boot page tables at PML4Start,
// PDPTStart and PDStart: an identity map of the first 1 GiB with 2 MiB
// pages. Everything the 64-bit entry point touches (kernel, zero page,
// command line, initrd pointers) must lie below 1 GiB. PVH boots without
// paging and needs none.
func WriteIdentityPageTables(mem *memory.Guest) error {
	le := binary.LittleEndian
	pml4 := make([]byte, 0x1000)
	le.PutUint64(pml4, PDPTStart|ptePresent|pteWritable)
	pdpt := make([]byte, 0x1000)
	le.PutUint64(pdpt, PDStart|ptePresent|pteWritable)
	pd := make([]byte, 0x1000)
	for i := range uint64(512) {
		le.PutUint64(pd[8*i:], i<<21|pteHuge|ptePresent|pteWritable)
	}
	for _, t := range []struct {
		addr uint64
		b    []byte
	}{{PML4Start, pml4}, {PDPTStart, pdpt}, {PDStart, pd}} {
		if err := mem.WriteAt(t.b, t.addr); err != nil {
			return fmt.Errorf("writing boot page tables: %w", err)
		}
	}
	return nil
}

// BootRegs returns the boot vCPU's general registers. Linux 64-bit boot:
// RIP at the entry, RSP=RBP=BootStackPointer, RSI at the zero page. PVH:
// RIP at the PVH entry and RBX at the start info.
func BootRegs(entry uint64, pvh bool) kvm.Regs {
	if pvh {
		return kvm.Regs{RIP: entry, RBX: PVHInfoStart, RFLAGS: BootRFLAGS}
	}
	return kvm.Regs{
		RIP:    entry,
		RSP:    BootStackPointer,
		RBP:    BootStackPointer,
		RSI:    ZeroPageStart,
		RFLAGS: BootRFLAGS,
	}
}

// ConfigureSregs adjusts s, as read from KVM_GET_SREGS, for boot: the boot
// GDT/IDT and flat segments, then the mode. For a Linux boot, long mode
// with paging is OR-ed into the values KVM reset (so its CR0.ET/CD/NW
// stay) and CR3 points at the identity map; for PVH, CR0 is assigned
// PE|ET (protected mode, no paging), CR4 cleared and EFER left alone.
func ConfigureSregs(s *kvm.Sregs, pvh bool) {
	gdt := BootGDT(pvh)
	s.GDT.Base = BootGDTStart
	s.GDT.Limit = uint16(8*len(gdt) - 1)
	s.IDT.Base = BootIDTStart
	s.IDT.Limit = 8 - 1

	code := segmentFromGDT(gdt[1], 1)
	data := segmentFromGDT(gdt[2], 2)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = segmentFromGDT(gdt[3], 3)

	if pvh {
		s.CR0 = CR0PE | CR0ET
		s.CR4 = 0
		return
	}
	s.CR0 |= CR0PE | CR0PG
	s.EFER |= EFERLME | EFERLMA
	s.CR3 = PML4Start
	s.CR4 |= CR4PAE
}

// BootFPU returns the FPU state for KVM_SET_FPU: the x87 and SSE reset
// control words (all exceptions masked).
func BootFPU() kvm.FPU {
	return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
}

// MSR indices written at boot.
const (
	MSRIA32TSC            = 0x10
	MSRIA32SysenterCS     = 0x174
	MSRIA32SysenterESP    = 0x175
	MSRIA32SysenterEIP    = 0x176
	MSRIA32MiscEnable     = 0x1a0
	MSRMTRRDefType        = 0x2ff
	MSRSTAR               = 0xc000_0081
	MSRLSTAR              = 0xc000_0082
	MSRCSTAR              = 0xc000_0083
	MSRSyscallMask        = 0xc000_0084
	MSRKernelGSBase       = 0xc000_0102
	MiscEnableFastStrings = 1 << 0
	// MTRRDefTypeBoot enables MTRRs (bit 11) with write-back (6) as the
	// default memory type; without it the guest runs uncached.
	MTRRDefTypeBoot = 1<<11 | 6
)

// BootMSRs returns the MSRs Firecracker sets on every vCPU at boot
// (create_boot_msr_entries), in its order. KVM_SET_MSRS must report all
// of them written, and must come after KVM_SET_CPUID2.
func BootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: MSRIA32SysenterCS},
		{Index: MSRIA32SysenterESP},
		{Index: MSRIA32SysenterEIP},
		{Index: MSRSTAR},
		{Index: MSRCSTAR},
		{Index: MSRKernelGSBase},
		{Index: MSRSyscallMask},
		{Index: MSRLSTAR},
		{Index: MSRIA32TSC},
		{Index: MSRIA32MiscEnable, Data: MiscEnableFastStrings},
		{Index: MSRMTRRDefType, Data: MTRRDefTypeBoot},
	}
}

// Local APIC register offsets and LVT delivery modes.
const (
	APICLVTLINT0     = 0x350
	APICLVTLINT1     = 0x360
	APICModeNMI      = 4
	APICModeExtINT   = 7
	apicDeliveryMask = 0x700
)

// ConfigureLAPIC adjusts l, as read from KVM_GET_LAPIC, so that LINT0
// delivers ExtINT (the PIC) and LINT1 delivers NMI, as a BIOS would.
func ConfigureLAPIC(l *kvm.LAPICState) {
	set := func(off int, mode uint32) {
		r := l.Regs[off : off+4]
		v := binary.LittleEndian.Uint32(r)
		binary.LittleEndian.PutUint32(r, v&^apicDeliveryMask|mode<<8)
	}
	set(APICLVTLINT0, APICModeExtINT)
	set(APICLVTLINT1, APICModeNMI)
}
