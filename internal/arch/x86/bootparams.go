package x86

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/memory"
)

// E820 entry types (also the PVH memmap types, which share the values).
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one entry of the guest's physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820Map is the memory map Firecracker hands a guest, in Firecracker's
// order (unsorted; the kernel sanitises it): low RAM below the EBDA, the
// reserved system memory holding the MP and ACPI tables, the PCIe ECAM
// window (reserved even without PCI), then every RAM region from 1 MiB up.
// [0xe0000, 0x100000), where the RSDP lives, is deliberately left out.
func E820Map(ram []RAMRegion) []E820Entry {
	out := []E820Entry{
		{0, SystemMemStart, E820RAM},
		{SystemMemStart, SystemMemEnd - SystemMemStart, E820Reserved},
		{PCIMMConfigStart, PCIMMConfigSize, E820Reserved},
	}
	for _, r := range ram {
		start := max(r.Start, HimemStart)
		if r.End() <= start {
			// A region entirely below 1 MiB is already described above.
			continue
		}
		out = append(out, E820Entry{start, r.End() - start, E820RAM})
	}
	return out
}

// ramOf returns cfg's RAM layout, or the guest's mapped regions when none
// was given.
func ramOf(mem *memory.Guest, ram []RAMRegion) []RAMRegion {
	if len(ram) > 0 {
		return ram
	}
	for _, r := range mem.Regions() {
		ram = append(ram, RAMRegion{r.Start, uint64(len(r.Mem))})
	}
	return ram
}

// Offsets in struct boot_params (the zero page, Linux
// arch/x86/include/uapi/asm/bootparam.h) and its embedded setup_header.
const (
	zeroPageSize = 0x1000

	bpACPIRSDPAddr = 0x070
	bpE820Entries  = 0x1e8
	bpSetupHeader  = 0x1f1
	bpE820Table    = 0x2d0
	e820EntrySize  = 20
	e820MaxEntries = 128

	hdrBootFlag        = 0x1fe
	hdrHeader          = 0x202
	hdrTypeOfLoader    = 0x210
	hdrRamdiskImage    = 0x218
	hdrRamdiskSize     = 0x21c
	hdrCmdLinePtr      = 0x228
	hdrKernelAlignment = 0x230
	hdrCmdlineSize     = 0x238
)

// SetupHeaderOffset is where a bzImage's setup header starts, both in the
// image file and in the zero page.
const SetupHeaderOffset = bpSetupHeader

// SetupHeaderSize is the size of struct setup_header (up to and including
// kernel_info_offset, boot protocol 2.15).
const SetupHeaderSize = 0x26c - bpSetupHeader

// Setup-header values Firecracker writes for every Linux boot.
const (
	bootFlagMagic      = 0xaa55
	hdrMagic           = 0x53726448 // "HdrS"
	loaderTypeOther    = 0xff       // "undefined" boot loader
	elfKernelAlignment = 0x0100_0000
)

// ZeroPageConfig describes a 64-bit Linux boot.
type ZeroPageConfig struct {
	// SetupHeader is the bzImage's own setup header, the image's bytes
	// [SetupHeaderOffset, SetupHeaderOffset+SetupHeaderSize) (a shorter
	// slice is zero-extended). Nil for an ELF vmlinux, which gets a zeroed
	// header with a 16 MiB kernel_alignment.
	SetupHeader []byte
	// CmdlineSize is the command line's length including its NUL; the
	// command line itself is at CmdlineStart (see WriteCmdline).
	CmdlineSize uint32
	// InitrdAddr and InitrdSize locate the initrd; size 0 means none.
	InitrdAddr, InitrdSize uint64
	// RAM is the guest's RAM layout (RAMRegions); nil means the regions
	// mapped in mem.
	RAM []RAMRegion
}

// WriteZeroPage writes struct boot_params at ZeroPageStart, overwriting the
// whole page, as Firecracker's configure_64bit_boot does.
func WriteZeroPage(mem *memory.Guest, cfg ZeroPageConfig) error {
	zp, err := buildZeroPage(cfg, ramOf(mem, cfg.RAM))
	if err != nil {
		return err
	}
	if err := mem.WriteAt(zp, ZeroPageStart); err != nil {
		return fmt.Errorf("writing zero page: %w", err)
	}
	return nil
}

func buildZeroPage(cfg ZeroPageConfig, ram []RAMRegion) ([]byte, error) {
	if len(cfg.SetupHeader) > SetupHeaderSize {
		return nil, fmt.Errorf("setup header is %d bytes, more than %d", len(cfg.SetupHeader), SetupHeaderSize)
	}
	// The setup header's 32-bit fields cannot point above 4 GiB.
	if cfg.InitrdSize > 0 && (cfg.InitrdAddr > 0xffff_ffff || cfg.InitrdSize > 0xffff_ffff) {
		return nil, errors.New("initrd does not fit the 32-bit setup header fields")
	}
	zp := make([]byte, zeroPageSize)
	le := binary.LittleEndian
	if cfg.SetupHeader != nil {
		copy(zp[bpSetupHeader:], cfg.SetupHeader)
	} else {
		le.PutUint32(zp[hdrKernelAlignment:], elfKernelAlignment)
	}
	zp[hdrTypeOfLoader] = loaderTypeOther
	le.PutUint16(zp[hdrBootFlag:], bootFlagMagic)
	le.PutUint32(zp[hdrHeader:], hdrMagic)
	le.PutUint32(zp[hdrCmdLinePtr:], CmdlineStart)
	le.PutUint32(zp[hdrCmdlineSize:], cfg.CmdlineSize)
	if cfg.InitrdSize > 0 {
		le.PutUint32(zp[hdrRamdiskImage:], uint32(cfg.InitrdAddr))
		le.PutUint32(zp[hdrRamdiskSize:], uint32(cfg.InitrdSize))
	}
	le.PutUint64(zp[bpACPIRSDPAddr:], RSDPAddr)

	e820 := E820Map(ram)
	if len(e820) > e820MaxEntries {
		return nil, fmt.Errorf("%d E820 entries, more than %d", len(e820), e820MaxEntries)
	}
	zp[bpE820Entries] = uint8(len(e820))
	for i, e := range e820 {
		b := zp[bpE820Table+i*e820EntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], e.Type)
	}
	return zp, nil
}

// WriteCmdline writes the NUL-terminated kernel command line at
// CmdlineStart and returns its size including the NUL, for
// ZeroPageConfig.CmdlineSize.
func WriteCmdline(mem *memory.Guest, cmdline string) (uint32, error) {
	n := len(cmdline) + 1
	if n > CmdlineMaxSize {
		return 0, fmt.Errorf("kernel command line is %d bytes with its NUL, more than %d", n, CmdlineMaxSize)
	}
	for i := 0; i < len(cmdline); i++ {
		if cmdline[i] == 0 {
			return 0, errors.New("kernel command line contains a NUL byte")
		}
	}
	b := make([]byte, n)
	copy(b, cmdline)
	if err := mem.WriteAt(b, CmdlineStart); err != nil {
		return 0, fmt.Errorf("writing kernel command line: %w", err)
	}
	return uint32(n), nil
}
