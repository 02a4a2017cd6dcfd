package x86

import (
	"encoding/binary"
	"slices"

	"github.com/squib-vmm/squib/internal/kvm"
)

// MaxVCPUs is Firecracker's vCPU limit; CPUID leaf 0xB reserves APIC ID
// bits for this many.
const MaxVCPUs = 32

// CPU vendors CPUID normalisation knows (leaf 0 EBX,EDX,ECX).
const (
	VendorIntel = "GenuineIntel"
	VendorAMD   = "AuthenticAMD"
)

// Brand strings Firecracker gives guests. The Intel one gets the host's
// frequency appended ("... @ 3.00GHz") when the host brand has one.
const (
	intelBrand     = "Intel(R) Xeon(R) Processor"
	intelBrandBase = "Intel(R) Xeon(R) Processor @"
	amdBrand       = "AMD EPYC"
	brandLength    = 48
)

// cpuidSignificantIndex is KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry's
// Index selects a subleaf.
const cpuidSignificantIndex = 1 << 0

// cpuidRegs is one CPUID result: EAX, EBX, ECX, EDX.
type cpuidRegs [4]uint32

// cpuidFunc executes CPUID; the host's in production, a fake in tests.
type cpuidFunc func(leaf, subleaf uint32) cpuidRegs

func realHostCPUID(leaf, subleaf uint32) cpuidRegs {
	a, b, c, d := hostCPUID(leaf, subleaf)
	return cpuidRegs{a, b, c, d}
}

// CPUIDVendor returns the vendor string of leaf 0, or "" without one.
func CPUIDVendor(entries []kvm.CPUIDEntry2) string {
	for _, e := range entries {
		if e.Function == 0 && e.Index == 0 {
			return vendorString(cpuidRegs{e.EAX, e.EBX, e.ECX, e.EDX})
		}
	}
	return ""
}

func vendorString(r cpuidRegs) string {
	var b [12]byte
	// The vendor string is stored EBX, EDX, ECX.
	binary.LittleEndian.PutUint32(b[0:], r[1])
	binary.LittleEndian.PutUint32(b[4:], r[3])
	binary.LittleEndian.PutUint32(b[8:], r[2])
	return string(b[:])
}

// NormalizeCPUID returns the CPUID for vCPU cpuIndex of cpuCount, derived
// from KVM_GET_SUPPORTED_CPUID's entries as Firecracker's normalisation
// does (docs/cpu_templates/cpuid-normalization.md): topology with every
// vCPU in one socket (two threads per core with smt), the vCPU's APIC ID,
// the hypervisor and TSC-deadline bits, host cache information, and the
// vendor-specific fixes and brand strings for Intel and AMD. Leaves it
// does not touch, the KVM paravirtual leaves 0x40000000.. included, stay
// as KVM reported them. entries is not modified; the result is sorted by
// leaf and subleaf.
//
// Callers validate the machine first: 1 <= cpuCount <= MaxVCPUs,
// 0 <= cpuIndex < cpuCount, and with smt cpuCount is 1 or even. A leaf
// Firecracker requires but KVM did not report is skipped, not an error.
// Leaves KVM cannot report (the host brand string, AMD cache topology)
// are read from the host with the CPUID instruction.
func NormalizeCPUID(entries []kvm.CPUIDEntry2, cpuIndex, cpuCount int, smt bool) []kvm.CPUIDEntry2 {
	return normalizeCPUID(entries, cpuIndex, cpuCount, smt, realHostCPUID)
}

func normalizeCPUID(entries []kvm.CPUIDEntry2, cpuIndex, cpuCount int, smt bool, host cpuidFunc) []kvm.CPUIDEntry2 {
	t := cpuidTable{entries: slices.Clone(entries)}
	vendor := CPUIDVendor(entries)
	cpuBits := uint32(0)
	if smt && cpuCount > 1 {
		cpuBits = 1
	}
	perCore := uint32(1) << cpuBits
	idx, count := uint32(cpuIndex), uint32(cpuCount)

	t.vendorID(host)
	t.featureInfo(idx, count)
	t.extendedTopology(idx, count, cpuBits, perCore)
	t.extendedCache(host)
	switch vendor {
	case VendorIntel:
		t.intel(count, perCore, host)
	case VendorAMD:
		t.amd(idx, count, perCore, host)
	}
	slices.SortStableFunc(t.entries, func(a, b kvm.CPUIDEntry2) int {
		if a.Function != b.Function {
			return cmpU32(a.Function, b.Function)
		}
		return cmpU32(a.Index, b.Index)
	})
	return t.entries
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cpuidTable is a CPUID being normalised.
type cpuidTable struct {
	entries []kvm.CPUIDEntry2
}

// get returns the entry for leaf/subleaf, or nil.
func (t *cpuidTable) get(leaf, subleaf uint32) *kvm.CPUIDEntry2 {
	for i := range t.entries {
		if t.entries[i].Function == leaf && t.entries[i].Index == subleaf {
			return &t.entries[i]
		}
	}
	return nil
}

// put replaces or adds the entry for leaf/subleaf.
func (t *cpuidTable) put(leaf, subleaf, flags uint32, r cpuidRegs) {
	e := t.get(leaf, subleaf)
	if e == nil {
		t.entries = append(t.entries, kvm.CPUIDEntry2{Function: leaf, Index: subleaf})
		e = &t.entries[len(t.entries)-1]
	}
	e.Flags = flags
	e.EAX, e.EBX, e.ECX, e.EDX = r[0], r[1], r[2], r[3]
}

// setField stores v in bits [lo, hi] of x (v is truncated to fit).
func setField(x *uint32, lo, hi uint, v uint32) {
	mask := uint32((uint64(1)<<(hi-lo+1))-1) << lo
	*x = *x&^mask | v<<lo&mask
}

func getField(x uint32, lo, hi uint) uint32 {
	return x >> lo & uint32((uint64(1)<<(hi-lo+1))-1)
}

func setBit(x *uint32, bit uint, on bool) {
	if on {
		*x |= 1 << bit
	} else {
		*x &^= 1 << bit
	}
}

// vendorID passes the host's vendor through, as Firecracker does so that
// no CPU template can change it.
func (t *cpuidTable) vendorID(host cpuidFunc) {
	if e := t.get(0, 0); e != nil {
		r := host(0, 0)
		e.EBX, e.ECX, e.EDX = r[1], r[2], r[3]
	}
}

// featureInfo normalises leaf 1.
func (t *cpuidTable) featureInfo(idx, count uint32) {
	e := t.get(1, 0)
	if e == nil {
		return
	}
	setField(&e.EBX, 8, 15, 8)                // CLFLUSH line size, in 8-byte units
	setField(&e.EBX, 16, 23, nextPow2(count)) // addressable logical CPU IDs per package
	setField(&e.EBX, 24, 31, idx)             // initial APIC ID
	setBit(&e.ECX, 15, false)                 // PDCM: no IA32_PERF_CAPABILITIES
	setBit(&e.ECX, 24, true)                  // TSC-deadline timer
	setBit(&e.ECX, 31, true)                  // running under a hypervisor
	setBit(&e.EDX, 28, count > 1)             // HTT: EBX[23:16] is valid
}

func nextPow2(n uint32) uint32 {
	p := uint32(1)
	for p < n {
		p <<= 1
	}
	return p
}

// extendedTopology normalises leaf 0xB: one package holding every vCPU,
// perCore threads per core.
func (t *cpuidTable) extendedTopology(idx, count, cpuBits, perCore uint32) {
	// KVM stopped reporting subleaf 1 (Linux 6.2, backported to 5.10);
	// Firecracker adds it back.
	if t.get(0xb, 1) == nil {
		t.put(0xb, 1, cpuidSignificantIndex, cpuidRegs{})
	}
	for sub := uint32(0); ; sub++ {
		e := t.get(0xb, sub)
		if e == nil {
			return
		}
		e.EAX, e.EBX, e.ECX = 0, 0, 0
		e.EDX = idx // x2APIC ID
		e.Flags = cpuidSignificantIndex
		switch sub {
		case 0: // SMT level
			setField(&e.EAX, 0, 4, cpuBits)
			setField(&e.EBX, 0, 15, perCore)
			setField(&e.ECX, 8, 15, 1)
		case 1: // core level: enough APIC ID bits for MaxVCPUs
			setField(&e.EAX, 0, 4, log2(nextPow2(MaxVCPUs)))
			setField(&e.EBX, 0, 15, count)
			setField(&e.ECX, 0, 7, sub)
			setField(&e.ECX, 8, 15, 2)
		default:
			// Kernels since 5.10 report no further subleaves; keep
			// them invalid rather than failing, as Firecracker does.
			e.ECX = sub
		}
	}
}

func log2(n uint32) uint32 {
	var l uint32
	for n > 1 {
		n >>= 1
		l++
	}
	return l
}

// extendedCache passes the host's L1/L2/L3 cache and TLB leaves through,
// minus the reserved bits of 0x80000006 EDX[17:16].
func (t *cpuidTable) extendedCache(host cpuidFunc) {
	if e := t.get(0x8000_0005, 0); e != nil {
		r := host(0x8000_0005, 0)
		e.EAX, e.EBX, e.ECX, e.EDX = r[0], r[1], r[2], r[3]
	}
	if e := t.get(0x8000_0006, 0); e != nil {
		r := host(0x8000_0006, 0)
		e.EAX, e.EBX, e.ECX, e.EDX = r[0], r[1], r[2], r[3]&^0x3_0000
	}
}

// intel applies the Intel-only normalisation.
func (t *cpuidTable) intel(count, perCore uint32, host cpuidFunc) {
	// Leaf 4, deterministic cache parameters: L1/L2 shared by a core's
	// threads, L3 by every vCPU, all cores in one package.
	for sub := uint32(0); ; sub++ {
		e := t.get(4, sub)
		if e == nil || (e.EAX == 0 && e.EBX == 0 && e.ECX == 0 && e.EDX == 0) {
			break
		}
		switch getField(e.EAX, 5, 7) {
		case 1, 2:
			setField(&e.EAX, 14, 25, perCore-1)
		case 3:
			setField(&e.EAX, 14, 25, count-1)
		}
		setField(&e.EAX, 26, 31, count/perCore-1)
	}
	// Leaf 6: no turbo boost, no energy-performance bias; the guest
	// cannot select frequencies.
	if e := t.get(6, 0); e != nil {
		setBit(&e.EAX, 1, false)
		setBit(&e.ECX, 3, false)
	}
	if e := t.get(7, 0); e != nil {
		setBit(&e.EBX, 6, true)  // FDP_EXCPTN_ONLY
		setBit(&e.EBX, 13, true) // FPU CS and DS deprecated
		// WAITPKG off: UMWAIT/TPAUSE would idle the physical CPU.
		setBit(&e.ECX, 5, false)
	}
	// Leaf 0xA: no architectural PMU.
	if e := t.get(0xa, 0); e != nil {
		e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
	}
	// Leaf 0x1F, when present, mirrors 0xB: no other domains exist.
	if t.get(0x1f, 0) != nil {
		for sub := uint32(0); ; sub++ {
			e := t.get(0xb, sub)
			if e == nil {
				break
			}
			c := *e
			t.put(0x1f, sub, c.Flags, cpuidRegs{c.EAX, c.EBX, c.ECX, c.EDX})
		}
	}
	var hostBrand [brandLength]byte
	for i := range uint32(3) {
		r := host(0x8000_0002+i, 0)
		for j, v := range r {
			binary.LittleEndian.PutUint32(hostBrand[16*i+4*uint32(j):], v)
		}
	}
	t.brand(intelBrandString(hostBrand))
}

// intelBrandString is "Intel(R) Xeon(R) Processor @ <host frequency>", or
// without the frequency when the host brand string has none.
func intelBrandString(host [brandLength]byte) [brandLength]byte {
	var out [brandLength]byte
	copy(out[:], intelBrand)
	// Find the unit: the first "THz", "GHz" or "MHz".
	unit := -1
	for i := 0; i+3 <= brandLength; i++ {
		if (host[i] == 'T' || host[i] == 'G' || host[i] == 'M') && host[i+1] == 'H' && host[i+2] == 'z' {
			unit = i
			break
		}
	}
	if unit < 0 {
		return out
	}
	// The frequency is the digits and dots before the unit, with the
	// space that precedes them.
	space := -1
	for i := unit - 1; i >= 0; i-- {
		c := host[i]
		if c == ' ' {
			space = i
			break
		}
		if (c < '0' || c > '9') && c != '.' {
			break
		}
	}
	if space < 0 {
		return out
	}
	freq, rest := host[space:unit], host[unit:]
	if len(intelBrandBase)+len(freq)+len(rest) > brandLength {
		return out
	}
	out = [brandLength]byte{}
	n := copy(out[:], intelBrandBase)
	n += copy(out[n:], freq)
	copy(out[n:], rest)
	return out
}

// brand stores a brand string in leaves 0x80000002-0x80000004.
func (t *cpuidTable) brand(s [brandLength]byte) {
	for i := range uint32(3) {
		e := t.get(0x8000_0002+i, 0)
		if e == nil {
			continue
		}
		b := s[16*i:]
		e.EAX = binary.LittleEndian.Uint32(b[0:])
		e.EBX = binary.LittleEndian.Uint32(b[4:])
		e.ECX = binary.LittleEndian.Uint32(b[8:])
		e.EDX = binary.LittleEndian.Uint32(b[12:])
	}
}

// amd applies the AMD-only normalisation.
func (t *cpuidTable) amd(idx, count, perCore uint32, host cpuidFunc) {
	// KVM reports neither cache topology (0x8000001D) nor processor
	// topology (0x8000001E); take the host's, but only from an AMD host,
	// where walking 0x8000001D terminates.
	if vendorString(host(0, 0)) == VendorAMD {
		t.put(0x8000_001e, 0, 0, host(0x8000_001e, 0))
		for sub := uint32(0); sub < 64; sub++ {
			r := host(0x8000_001d, sub)
			if r[0]&0xf == 0 { // cache type 0: no more caches
				break
			}
			t.put(0x8000_001d, sub, cpuidSignificantIndex, r)
		}
	}
	// KVM sets ARCH_CAPABILITIES, an MSR AMD hardware does not have.
	if e := t.get(7, 0); e != nil {
		setBit(&e.EDX, 29, false)
	}
	// Topology extensions, which 0x8000001D/E need.
	if e := t.get(0x8000_0001, 0); e != nil {
		setBit(&e.ECX, 22, true)
	}
	if e := t.get(0x8000_0008, 0); e != nil {
		setField(&e.ECX, 12, 15, 7)     // APIC ID size: up to 128 threads per package
		setField(&e.ECX, 0, 7, count-1) // threads in the package, minus one
	}
	for sub := uint32(0); ; sub++ {
		e := t.get(0x8000_001d, sub)
		if e == nil {
			break
		}
		switch getField(e.EAX, 5, 7) {
		case 1, 2:
			setField(&e.EAX, 14, 25, perCore-1)
		case 3:
			setField(&e.EAX, 14, 25, count-1)
		}
	}
	if e := t.get(0x8000_001e, 0); e != nil {
		e.EAX = idx                         // extended APIC ID
		setField(&e.EBX, 0, 7, idx/perCore) // compute unit (core) ID
		setField(&e.EBX, 8, 15, perCore-1)  // threads per compute unit, minus one
		setField(&e.ECX, 8, 10, 0)          // one node per processor
		setField(&e.ECX, 0, 7, 0)           // node ID
	}
	var b [brandLength]byte
	copy(b[:], amdBrand)
	t.brand(b)
}
