package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/squib-vmm/squib/internal/memory"
)

// MaxMPTableCPUs is the MP table's vCPU limit: xAPIC IDs are 8 bits, 0xff
// is broadcast and the IOAPIC takes one.
const MaxMPTableCPUs = 254

// MP specification 1.4 structures (Linux arch/x86/include/asm/mpspec_def.h).
const (
	mpfSize        = 16
	mpcTableSize   = 44
	mpcCPUSize     = 20
	mpcBusSize     = 8
	mpcIOAPICSize  = 8
	mpcIntsrcSize  = 8
	mpcLintsrcSize = 8

	mpProcessor = 0
	mpBus       = 1
	mpIOAPIC    = 2
	mpIntsrc    = 3
	mpLintsrc   = 4

	mpIRQINT    = 0
	mpIRQNMI    = 1
	mpIRQExtINT = 3

	mpCPUEnabled = 1
	mpCPUBSP     = 2

	mpAPICVersion   = 0x14
	mpCPUStepping   = 0x600
	mpFeatureFPU    = 1 << 0
	mpFeatureAPIC   = 1 << 9
	mpIOAPICUsable  = 1
	mpLegacyGSIs    = IRQMax + 1
	mpBroadcastAPIC = 0xff
)

// MPTableSize is the size of the MP table for cpuCount vCPUs.
func MPTableSize(cpuCount int) uint64 {
	return uint64(mpfSize + mpcTableSize + mpcCPUSize*cpuCount + mpcBusSize + mpcIOAPICSize +
		mpcIntsrcSize*mpLegacyGSIs + 2*mpcLintsrcSize)
}

// checksum returns the byte that makes the sum of b plus it zero.
func checksum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return -s
}

// WriteMPTable writes the MP floating pointer and configuration table at
// SystemMemStart (the last KiB of base memory, where Linux looks for
// "_MP_") and returns the first address after it, where the ACPI tables
// go. Every vCPU is a processor entry (APIC ID = index, vCPU 0 the BSP);
// one ISA bus; the IOAPIC (ID cpuCount+1) with IRQ i wired to pin i for
// every legacy GSI; LINT0 ExtINT and LINT1 NMI.
func WriteMPTable(mem *memory.Guest, cpuCount int) (uint64, error) {
	if cpuCount < 1 || cpuCount > MaxMPTableCPUs {
		return 0, fmt.Errorf("MP table: %d vCPUs, want 1 to %d", cpuCount, MaxMPTableCPUs)
	}
	size := MPTableSize(cpuCount)
	base := uint64(SystemMemStart)
	if base+size > SystemMemEnd {
		return 0, fmt.Errorf("MP table of %d bytes does not fit system memory", size)
	}
	b := make([]byte, size)
	le := binary.LittleEndian
	ioapicID := uint8(cpuCount + 1)

	// Floating pointer.
	mpf := b[:mpfSize]
	copy(mpf, "_MP_")
	le.PutUint32(mpf[4:], uint32(base+mpfSize)) // physptr
	mpf[8] = 1                                  // length in 16-byte units
	mpf[9] = 4                                  // spec revision 1.4
	mpf[10] = checksum(mpf)

	tbl := b[mpfSize:]
	off := mpcTableSize
	// Firecracker counts the floating pointer as an entry too; kept so
	// guests see the same header.
	entries := 1
	for i := range cpuCount {
		e := tbl[off : off+mpcCPUSize]
		e[0] = mpProcessor
		e[1] = uint8(i) // APIC ID
		e[2] = mpAPICVersion
		e[3] = mpCPUEnabled
		if i == 0 {
			e[3] |= mpCPUBSP
		}
		le.PutUint32(e[4:], mpCPUStepping)
		le.PutUint32(e[8:], mpFeatureAPIC|mpFeatureFPU)
		off += mpcCPUSize
		entries++
	}
	bus := tbl[off : off+mpcBusSize]
	bus[0] = mpBus
	bus[1] = 0 // bus ID
	copy(bus[2:], "ISA   ")
	off += mpcBusSize
	entries++

	io := tbl[off : off+mpcIOAPICSize]
	io[0] = mpIOAPIC
	io[1] = ioapicID
	io[2] = mpAPICVersion
	io[3] = mpIOAPICUsable
	le.PutUint32(io[4:], IOAPICAddr)
	off += mpcIOAPICSize
	entries++

	// IRQ i -> IOAPIC pin i, matching KVM's default GSI routing.
	for i := range mpLegacyGSIs {
		e := tbl[off : off+mpcIntsrcSize]
		e[0] = mpIntsrc
		e[1] = mpIRQINT
		// irqflag 0: polarity and trigger conform to the bus.
		e[4] = 0 // source bus
		e[5] = uint8(i)
		e[6] = ioapicID
		e[7] = uint8(i)
		off += mpcIntsrcSize
		entries++
	}
	for _, l := range []struct{ typ, dest, lint uint8 }{
		{mpIRQExtINT, 0, 0},
		{mpIRQNMI, mpBroadcastAPIC, 1},
	} {
		e := tbl[off : off+mpcLintsrcSize]
		e[0] = mpLintsrc
		e[1] = l.typ
		e[6] = l.dest
		e[7] = l.lint
		off += mpcLintsrcSize
		entries++
	}

	hdr := tbl[:mpcTableSize]
	copy(hdr[0:], "PCMP")
	le.PutUint16(hdr[4:], uint16(off)) // length, header included
	hdr[6] = 4                         // spec revision 1.4
	copy(hdr[8:], "FC      ")          // OEM ID
	copy(hdr[16:], "000000000000")     // product ID
	le.PutUint16(hdr[34:], uint16(entries))
	le.PutUint32(hdr[36:], LAPICAddr)
	hdr[7] = checksum(tbl[:off])

	if err := mem.WriteAt(b, base); err != nil {
		return 0, fmt.Errorf("writing MP table: %w", err)
	}
	return base + size, nil
}
