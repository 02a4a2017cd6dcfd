package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/squib-vmm/squib/internal/memory"
)

// PVH boot structures (Xen public/arch-x86/hvm/start_info.h).
const (
	pvhStartMagic       = 0x336e_c578
	pvhStartInfoSize    = 56
	pvhModlistEntrySize = 32
	pvhMemmapEntrySize  = 24
)

// PVHConfig describes a PVH boot.
type PVHConfig struct {
	// InitrdAddr and InitrdSize locate the initrd; size 0 means none.
	InitrdAddr, InitrdSize uint64
	// RAM is the guest's RAM layout (RAMRegions); nil means the regions
	// mapped in mem.
	RAM []RAMRegion
}

// WritePVHInfo writes struct hvm_start_info at PVHInfoStart, the memory map
// (the same entries as the E820 table) at PVHMemmapStart and, with an
// initrd, a one-entry module list at PVHModlistStart. The command line is
// taken to be at CmdlineStart. rsdp_paddr stays 0: the guest finds the RSDP
// by scanning 0xe0000-0xfffff, as under Firecracker.
func WritePVHInfo(mem *memory.Guest, cfg PVHConfig) error {
	le := binary.LittleEndian
	memmap := E820Map(ramOf(mem, cfg.RAM))
	mm := make([]byte, len(memmap)*pvhMemmapEntrySize)
	for i, e := range memmap {
		b := mm[i*pvhMemmapEntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], e.Type)
	}
	// The memmap must not run into the boot stack and page tables.
	if PVHMemmapStart+uint64(len(mm)) > BootStackPointer {
		return fmt.Errorf("PVH memmap of %d entries is too large", len(memmap))
	}

	si := make([]byte, pvhStartInfoSize)
	le.PutUint32(si[0:], pvhStartMagic)
	le.PutUint32(si[4:], 1) // version
	le.PutUint64(si[24:], CmdlineStart)
	le.PutUint64(si[40:], PVHMemmapStart)
	le.PutUint32(si[48:], uint32(len(memmap)))

	if cfg.InitrdSize > 0 {
		le.PutUint32(si[12:], 1) // nr_modules
		le.PutUint64(si[16:], PVHModlistStart)
		mod := make([]byte, pvhModlistEntrySize)
		le.PutUint64(mod[0:], cfg.InitrdAddr)
		le.PutUint64(mod[8:], cfg.InitrdSize)
		if err := mem.WriteAt(mod, PVHModlistStart); err != nil {
			return fmt.Errorf("writing PVH module list: %w", err)
		}
	}
	if err := mem.WriteAt(mm, PVHMemmapStart); err != nil {
		return fmt.Errorf("writing PVH memmap: %w", err)
	}
	if err := mem.WriteAt(si, PVHInfoStart); err != nil {
		return fmt.Errorf("writing PVH start info: %w", err)
	}
	return nil
}
