package x86

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/memory"
)

// ACPI identification, Firecracker's (the table IDs' spelling included):
// guests and tools that look at them see the same machine.
const (
	acpiOEMID           = "FIRECK"
	acpiOEMRevision     = 0
	acpiCreatorID       = "FCAT"
	acpiCreatorRevision = 0x20240119
	acpiHypervisorID    = "FIRECKVM"

	dsdtTableID = "FCVMDSDT"
	fadtTableID = "FCVMFADT"
	madtTableID = "FCVMMADT"
	mcfgTableID = "FCMVMCFG"
	xsdtTableID = "FCMVXSDT"
)

// Table sizes and revisions.
const (
	sdtHeaderSize = 36
	rsdpSize      = 36
	fadtSize      = 276 // ACPI 6.5 FADT, hypervisor vendor ID included
	mcfgSize      = 60

	dsdtRevision = 2
	fadtRevision = 6
	fadtMinor    = 5
	madtRevision = 6
	mcfgRevision = 1
	xsdtRevision = 1
	rsdpRevision = 2
)

// FADT flags and IA-PC boot architecture flags.
const (
	fadtPwrButton     = 1 << 4 // power button is a control-method device
	fadtSlpButton     = 1 << 5 // no fixed sleep button either
	fadtHWReducedACPI = 1 << 20
	iapcVGANotPresent = 1 << 2
)

// MMIODevice is one virtio-mmio device to announce in the DSDT.
type MMIODevice struct {
	// Base and Size are the device's register window; Size 0 means
	// VirtioMMIOSize.
	Base, Size uint64
	// GSI is the device's interrupt (IRQBase..IRQMax).
	GSI uint32
}

// ACPIConfig describes the machine the ACPI tables announce.
type ACPIConfig struct {
	// CPUCount is the number of vCPUs (1..MaxMPTableCPUs).
	CPUCount int
	// VirtioMMIO lists the virtio-mmio devices in attach order.
	VirtioMMIO []MMIODevice
	// Not yet supported: VMGenID and VMClock, which Firecracker places
	// last-fit at the top of system memory (about 0xdfff0 and 0xde000)
	// before the tables are written, each with a GSI after the virtio
	// devices, and announces with _SB_.VGEN, _SB_.VCLK and a _SB_.GED_
	// whose _EVT method Notify()s them. Adding them means reserving those
	// ranges here and appending their AML after the virtio devices'.
}

// sdt assembles an ACPI table: the standard header, then body, with the
// length and checksum filled in.
func sdt(signature string, revision uint8, tableID string, body []byte) []byte {
	b := make([]byte, sdtHeaderSize, sdtHeaderSize+len(body))
	copy(b[0:4], signature)
	binary.LittleEndian.PutUint32(b[4:], uint32(sdtHeaderSize+len(body)))
	b[8] = revision
	copy(b[10:16], acpiOEMID)
	copy(b[16:24], tableID)
	binary.LittleEndian.PutUint32(b[24:], acpiOEMRevision)
	copy(b[28:32], acpiCreatorID)
	binary.LittleEndian.PutUint32(b[32:], acpiCreatorRevision)
	b = append(b, body...)
	b[9] = checksum(b)
	return b
}

// buildDSDT returns the DSDT: virtio-mmio devices first, then the legacy
// serial port and i8042, in Firecracker's order.
func buildDSDT(cfg ACPIConfig) ([]byte, error) {
	var aml []byte
	seen := map[uint32]bool{}
	for _, d := range cfg.VirtioMMIO {
		size := d.Size
		if size == 0 {
			size = VirtioMMIOSize
		}
		if d.Base > 0xffff_ffff || size > 0xffff_ffff || d.Base+size > MMIO32End {
			return nil, fmt.Errorf("virtio-mmio device at %#x+%#x is not below 4 GiB", d.Base, size)
		}
		// Firecracker numbers the devices by GSI, not by position.
		if d.GSI < IRQBase || d.GSI-IRQBase > 999 {
			return nil, fmt.Errorf("virtio-mmio device at %#x: GSI %d below %d", d.Base, d.GSI, IRQBase)
		}
		if seen[d.GSI] {
			return nil, fmt.Errorf("virtio-mmio device at %#x: GSI %d used twice", d.Base, d.GSI)
		}
		seen[d.GSI] = true
		aml = append(aml, virtioMMIOAML(d.Base, size, d.GSI)...)
	}
	aml = append(aml, legacyAML()...)
	return sdt("DSDT", dsdtRevision, dsdtTableID, aml), nil
}

// virtioMMIODeviceName is the DSDT path of the virtio-mmio device with
// the given GSI. (Firecracker's own tables name it without the _SB_
// scope, \Vnnn; squib puts it under \_SB_ like every other device, as
// the ACPI specification asks. Linux enumerates either the same way.)
func virtioMMIODeviceName(gsi uint32) string {
	return fmt.Sprintf("_SB_.V%03d", gsi-IRQBase)
}

func virtioMMIOAML(base, size uint64, gsi uint32) []byte {
	id := gsi - IRQBase
	return amlDevice(virtioMMIODeviceName(gsi),
		amlName("_HID", amlString("LNRO0005")),
		amlName("_UID", amlDWord(id)),
		amlName("_CCA", amlOne()), // DMA is cache-coherent
		amlName("_CRS", amlResourceTemplate(
			amlMemory32Fixed(true, uint32(base), uint32(size)),
			amlInterrupt(true, true, false, false, gsi),
		)),
	)
}

// Legacy port I/O devices (spec §2.1).
const (
	serialPort     = 0x3f8
	serialPortSize = 8
	i8042DataPort  = 0x60
	i8042CmdPort   = 0x64
)

func legacyAML() []byte {
	com1 := amlDevice("_SB_.COM1",
		amlName("_HID", amlEISAID("PNP0501")),
		amlName("_UID", amlByte(0)),
		amlName("_DDN", amlString("COM1")),
		amlName("_CRS", amlResourceTemplate(
			amlInterrupt(true, true, false, false, SerialIRQ),
			amlIO(serialPort, serialPort, 1, serialPortSize),
		)),
	)
	ps2 := amlDevice("_SB_.PS2_",
		amlName("_HID", amlEISAID("PNP0303")),
		amlMethod("_STA", 0, false, amlReturn(amlByte(0x0f))),
		amlName("_CRS", amlResourceTemplate(
			amlIO(i8042DataPort, i8042DataPort, 1, 1),
			// The command/status port is listed too, or Linux's i8042
			// driver complains.
			amlIO(i8042CmdPort, i8042CmdPort, 1, 1),
			amlInterrupt(true, true, false, false, I8042IRQ),
		)),
	)
	return concat(com1, ps2)
}

func buildFADT(dsdtAddr uint64) []byte {
	body := make([]byte, fadtSize-sdtHeaderSize)
	// Offsets below are from the start of the table.
	at := func(off int) []byte { return body[off-sdtHeaderSize:] }
	le := binary.LittleEndian
	le.PutUint16(at(109), iapcVGANotPresent)
	le.PutUint32(at(112), fadtHWReducedACPI|fadtPwrButton|fadtSlpButton)
	at(131)[0] = fadtMinor
	le.PutUint64(at(140), dsdtAddr) // X_DSDT; the 32-bit DSDT field stays 0
	copy(at(268), acpiHypervisorID)
	return sdt("FACP", fadtRevision, fadtTableID, body)
}

// MADT structure types.
const (
	madtLocalAPIC = 0
	madtIOAPIC    = 1
)

func buildMADT(cpuCount int) []byte {
	le := binary.LittleEndian
	body := make([]byte, 8, 8+12+8*cpuCount)
	le.PutUint32(body[0:], LAPICAddr)
	// flags 0: no PC-AT compatible dual 8259 setup announced.
	io := make([]byte, 12)
	io[0], io[1] = madtIOAPIC, 12
	io[2] = 0 // IOAPIC ID
	le.PutUint32(io[4:], IOAPICAddr)
	// GSI base 0.
	body = append(body, io...)
	for i := range cpuCount {
		body = append(body, madtLocalAPIC, 8, byte(i), byte(i), 1, 0, 0, 0) // UID, APIC ID, enabled
	}
	return sdt("APIC", madtRevision, madtTableID, body)
}

func buildMCFG() []byte {
	body := make([]byte, mcfgSize-sdtHeaderSize)
	// 8 reserved bytes, then one allocation: ECAM base, segment 0, buses 0-0.
	binary.LittleEndian.PutUint64(body[8:], PCIMMConfigStart)
	return sdt("MCFG", mcfgRevision, mcfgTableID, body)
}

func buildXSDT(tables ...uint64) []byte {
	var body []byte
	for _, t := range tables {
		body = binary.LittleEndian.AppendUint64(body, t)
	}
	return sdt("XSDT", xsdtRevision, xsdtTableID, body)
}

func buildRSDP(xsdtAddr uint64) []byte {
	b := make([]byte, rsdpSize)
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], acpiOEMID)
	b[15] = rsdpRevision
	// RsdtAddress stays 0: revision 2 guests use the XSDT.
	binary.LittleEndian.PutUint32(b[20:], rsdpSize)
	binary.LittleEndian.PutUint64(b[24:], xsdtAddr)
	b[8] = checksum(b[:20])
	b[32] = checksum(b)
	return b
}

// WriteACPITables writes the DSDT, FADT, MADT, MCFG and XSDT first-fit
// from start (the end WriteMPTable returned) up to SystemMemEnd, in that
// order, and the revision-2 RSDP at RSDPAddr. The XSDT lists the FADT,
// MADT and MCFG; the FADT points at the DSDT.
func WriteACPITables(mem *memory.Guest, start uint64, cfg ACPIConfig) error {
	if cfg.CPUCount < 1 || cfg.CPUCount > MaxMPTableCPUs {
		return fmt.Errorf("ACPI: %d vCPUs, want 1 to %d", cfg.CPUCount, MaxMPTableCPUs)
	}
	if start < SystemMemStart || start > SystemMemEnd {
		return fmt.Errorf("ACPI tables start %#x is outside system memory [%#x, %#x)", start, SystemMemStart, SystemMemEnd)
	}
	next := start
	// place allocates first-fit, alignment 1, as Firecracker's system
	// memory allocator does, and writes the table.
	place := func(t []byte) (uint64, error) {
		addr := next
		if uint64(len(t)) > SystemMemEnd-addr {
			return 0, errors.New("ACPI tables do not fit system memory")
		}
		if err := mem.WriteAt(t, addr); err != nil {
			return 0, fmt.Errorf("writing ACPI table %s: %w", t[:4], err)
		}
		next += uint64(len(t))
		return addr, nil
	}

	dsdt, err := buildDSDT(cfg)
	if err != nil {
		return err
	}
	dsdtAddr, err := place(dsdt)
	if err != nil {
		return err
	}
	fadtAddr, err := place(buildFADT(dsdtAddr))
	if err != nil {
		return err
	}
	madtAddr, err := place(buildMADT(cfg.CPUCount))
	if err != nil {
		return err
	}
	mcfgAddr, err := place(buildMCFG())
	if err != nil {
		return err
	}
	xsdtAddr, err := place(buildXSDT(fadtAddr, madtAddr, mcfgAddr))
	if err != nil {
		return err
	}
	if err := mem.WriteAt(buildRSDP(xsdtAddr), RSDPAddr); err != nil {
		return fmt.Errorf("writing ACPI RSDP: %w", err)
	}
	return nil
}
