package x86

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/kvm"
)

func entry(fn, idx, flags, a, b, c, d uint32) kvm.CPUIDEntry2 {
	return kvm.CPUIDEntry2{Function: fn, Index: idx, Flags: flags, EAX: a, EBX: b, ECX: c, EDX: d}
}

// vendorRegs returns leaf 0 for a vendor string, max basic leaf maxLeaf.
func vendorRegs(vendor string, maxLeaf uint32) cpuidRegs {
	v := []byte(vendor)
	le := binary.LittleEndian
	return cpuidRegs{maxLeaf, le.Uint32(v[0:]), le.Uint32(v[8:]), le.Uint32(v[4:])}
}

// brandRegs splits a brand string into the 0x80000002-4 registers.
func brandRegs(s string) [3]cpuidRegs {
	var b [48]byte
	copy(b[:], s)
	var out [3]cpuidRegs
	for i := range 3 {
		for j := range 4 {
			out[i][j] = binary.LittleEndian.Uint32(b[16*i+4*j:])
		}
	}
	return out
}

// fakeHost is a host CPU: leaf/subleaf to registers, zeros otherwise.
type fakeHost map[[2]uint32]cpuidRegs

func (h fakeHost) cpuid(leaf, subleaf uint32) cpuidRegs { return h[[2]uint32{leaf, subleaf}] }

const sig = cpuidSignificantIndex

// Synthetic KVM_GET_SUPPORTED_CPUID output and host CPUs.
var (
	intelHost = func() fakeHost {
		h := fakeHost{
			{0, 0}:          vendorRegs(VendorIntel, 0x1f),
			{0x80000005, 0}: {0x11, 0x22, 0x33, 0x44},
			{0x80000006, 0}: {0x55, 0x66, 0x77, 0x0003_8888},
		}
		for i, r := range brandRegs("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz") {
			h[[2]uint32{0x80000002 + uint32(i), 0}] = r
		}
		return h
	}()
	intelKVM = []kvm.CPUIDEntry2{
		entry(0, 0, 0, 0x1f, vendorRegs(VendorIntel, 0)[1], vendorRegs(VendorIntel, 0)[2], vendorRegs(VendorIntel, 0)[3]),
		entry(1, 0, 0, 0x606a6, 0x0b010800, 0xfffa3223|1<<15, 0x0f8bfbff),
		entry(4, 0, sig, 0x1c004121, 0x02c0003f, 0x3f, 0),       // L1d
		entry(4, 1, sig, 0x1c004122, 0x01c0003f, 0x3f, 0),       // L1i
		entry(4, 2, sig, 0x1c004143, 0x04c0003f, 0x3ff, 0),      // L2
		entry(4, 3, sig, 0x1c03c163, 0x02c0003f, 0xbfff, 4),     // L3
		entry(4, 4, sig, 0, 0, 0, 0),                            // end
		entry(6, 0, 0, 0x4|0x2, 0, 0x8|0x1, 0),                  // turbo, EPB
		entry(7, 0, sig, 0, 0xf1bf07ab, 0x1c405f5e|1<<5, 1<<29), // WAITPKG
		entry(0xa, 0, 0, 0x07300805, 0, 0, 0x603),
		entry(0xb, 0, sig, 1, 2, 0x100, 7),
		entry(0x1f, 0, sig, 1, 2, 0x100, 7),
		entry(0x4000_0000, 0, 0, 0x4000_0001, 0x4b4d564b, 0x564b4d56, 0x4d),
		entry(0x4000_0001, 0, 0, 0x01007afb, 0, 0, 0),
		entry(0x8000_0000, 0, 0, 0x8000_0008, 0, 0, 0),
		entry(0x8000_0001, 0, 0, 0, 0, 0x121, 0x2c100800),
		entry(0x8000_0002, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0003, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0004, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0005, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0006, 0, 0, 0, 0, 0x01006040, 0),
		entry(0x8000_0008, 0, 0, 0x3030, 0x1000000, 0, 0),
	}

	amdHost = func() fakeHost {
		h := fakeHost{
			{0, 0}:          vendorRegs(VendorAMD, 0x10),
			{0x80000005, 0}: {0xff40ff40, 0xff40ff40, 0x20080140, 0x20080140},
			{0x80000006, 0}: {0x26006400, 0x66006400, 0x02006140, 0x0101_9140},
			{0x8000001d, 0}: {0x00004121, 0x01c0003f, 0x3f, 0},   // L1d
			{0x8000001d, 1}: {0x00004122, 0x01c0003f, 0x3f, 0},   // L1i
			{0x8000001d, 2}: {0x00004143, 0x01c0003f, 0x3ff, 2},  // L2
			{0x8000001d, 3}: {0x0003c163, 0x03c0003f, 0x7fff, 1}, // L3
			{0x8000001e, 0}: {0x22, 0x0101, 0x0103, 0},
		}
		for i, r := range brandRegs("AMD EPYC 7R13 48-Core Processor") {
			h[[2]uint32{0x80000002 + uint32(i), 0}] = r
		}
		return h
	}()
	amdKVM = []kvm.CPUIDEntry2{
		entry(0, 0, 0, 0x10, vendorRegs(VendorAMD, 0)[1], vendorRegs(VendorAMD, 0)[2], vendorRegs(VendorAMD, 0)[3]),
		entry(1, 0, 0, 0xa00f11, 0x00020800, 0xf6d83203, 0x178bfbff),
		entry(6, 0, 0, 0x4, 0, 0x1, 0),
		entry(7, 0, sig, 0, 0x219c97a9, 0x40068c, 1<<29|1<<4),
		entry(0xb, 0, sig, 0, 0, 0x100, 0),
		entry(0x4000_0000, 0, 0, 0x4000_0001, 0x4b4d564b, 0x564b4d56, 0x4d),
		entry(0x4000_0001, 0, 0, 0x01007afb, 0, 0, 0),
		entry(0x8000_0000, 0, 0, 0x8000_0021, 0, 0, 0),
		entry(0x8000_0001, 0, 0, 0xa00f11, 0, 0x75c237ff, 0x2fd3fbff),
		entry(0x8000_0002, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0003, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0004, 0, 0, 0, 0, 0, 0),
		entry(0x8000_0005, 0, 0, 0xff40ff40, 0xff40ff40, 0x20080140, 0x20080140),
		entry(0x8000_0006, 0, 0, 0x26006400, 0x66006400, 0x02006140, 0x00009140),
		entry(0x8000_0008, 0, 0, 0x3030, 0x791ef257, 0x0000_b05f, 0x10000),
		entry(0x8000_001d, 0, sig, 0, 0, 0, 0),
		entry(0x8000_001e, 0, 0, 0, 0, 0, 0),
	}
)

// field names a bit range of one register of one (sub)leaf.
type field struct {
	leaf, sub uint32
	reg       int // 0 EAX, 1 EBX, 2 ECX, 3 EDX
	lo, hi    uint
}

func (f field) String() string {
	return fmt.Sprintf("CPUID.(%#x,%d).%s[%d:%d]", f.leaf, f.sub, [4]string{"EAX", "EBX", "ECX", "EDX"}[f.reg], f.hi, f.lo)
}

func lookup(entries []kvm.CPUIDEntry2, leaf, sub uint32) (kvm.CPUIDEntry2, bool) {
	for _, e := range entries {
		if e.Function == leaf && e.Index == sub {
			return e, true
		}
	}
	return kvm.CPUIDEntry2{}, false
}

func regsOf(e kvm.CPUIDEntry2) cpuidRegs { return cpuidRegs{e.EAX, e.EBX, e.ECX, e.EDX} }

func brandOf(t *testing.T, entries []kvm.CPUIDEntry2) string {
	var b []byte
	for i := range uint32(3) {
		e, ok := lookup(entries, 0x80000002+i, 0)
		if !ok {
			t.Fatalf("brand leaf %#x missing", 0x80000002+i)
		}
		for _, r := range regsOf(e) {
			b = binary.LittleEndian.AppendUint32(b, r)
		}
	}
	return strings.TrimRight(string(b), "\x00")
}

func TestNormalizeCPUID(t *testing.T) {
	type vcpu struct {
		idx, count int
		smt        bool
	}
	vcpus := []vcpu{{0, 1, false}, {0, 1, true}, {1, 2, true}, {1, 2, false}, {3, 4, false}, {5, 6, true}, {31, 32, true}, {17, 32, false}}

	// Checks common to both vendors, per vCPU.
	common := func(v vcpu) map[field]uint32 {
		bits, per := uint32(0), uint32(1)
		if v.smt && v.count > 1 {
			bits, per = 1, 2
		}
		idx, count := uint32(v.idx), uint32(v.count)
		htt := uint32(0)
		if count > 1 {
			htt = 1
		}
		return map[field]uint32{
			{1, 0, 1, 8, 15}:   8,
			{1, 0, 1, 16, 23}:  nextPow2(count),
			{1, 0, 1, 24, 31}:  idx,
			{1, 0, 2, 15, 15}:  0,
			{1, 0, 2, 24, 24}:  1,
			{1, 0, 2, 31, 31}:  1,
			{1, 0, 3, 28, 28}:  htt,
			{0xb, 0, 0, 0, 31}: bits,
			{0xb, 0, 1, 0, 31}: per,
			{0xb, 0, 2, 0, 31}: 0x100,
			{0xb, 0, 3, 0, 31}: idx,
			{0xb, 1, 0, 0, 31}: 5,
			{0xb, 1, 1, 0, 31}: count,
			{0xb, 1, 2, 0, 31}: 0x201,
			{0xb, 1, 3, 0, 31}: idx,
		}
	}
	cases := []struct {
		vendor string
		kvm    []kvm.CPUIDEntry2
		host   fakeHost
		brand  string
		want   func(v vcpu) map[field]uint32
	}{
		{
			vendor: VendorIntel, kvm: intelKVM, host: intelHost,
			brand: "Intel(R) Xeon(R) Processor @ 2.90GHz",
			want: func(v vcpu) map[field]uint32 {
				per := uint32(1)
				if v.smt && v.count > 1 {
					per = 2
				}
				count := uint32(v.count)
				m := map[field]uint32{
					{4, 0, 0, 14, 25}:           per - 1,
					{4, 1, 0, 14, 25}:           per - 1,
					{4, 2, 0, 14, 25}:           per - 1,
					{4, 3, 0, 14, 25}:           count - 1,
					{4, 0, 0, 26, 31}:           count/per - 1,
					{4, 3, 0, 26, 31}:           count/per - 1,
					{4, 3, 0, 0, 13}:            0x0163, // type and level kept
					{6, 0, 0, 0, 31}:            0x4,
					{6, 0, 2, 0, 31}:            0x1,
					{7, 0, 1, 6, 6}:             1,
					{7, 0, 1, 13, 13}:           1,
					{7, 0, 2, 5, 5}:             0,
					{7, 0, 3, 29, 29}:           1, // Intel keeps ARCH_CAPABILITIES
					{0xa, 0, 0, 0, 31}:          0,
					{0xa, 0, 3, 0, 31}:          0,
					{0x8000_0005, 0, 0, 0, 31}:  0x11,
					{0x8000_0006, 0, 3, 0, 31}:  0x8888,
					{0x8000_0001, 0, 2, 22, 22}: 0,
				}
				for k, v := range common(v) {
					m[k] = v
					if k.leaf == 0xb {
						k.leaf = 0x1f
						m[k] = v
					}
				}
				return m
			},
		},
		{
			vendor: VendorAMD, kvm: amdKVM, host: amdHost,
			brand: "AMD EPYC",
			want: func(v vcpu) map[field]uint32 {
				per := uint32(1)
				if v.smt && v.count > 1 {
					per = 2
				}
				idx, count := uint32(v.idx), uint32(v.count)
				m := map[field]uint32{
					{7, 0, 3, 29, 29}:           0,
					{7, 0, 3, 4, 4}:             1,
					{6, 0, 0, 0, 31}:            0x4, // Intel-only fix not applied
					{6, 0, 2, 0, 31}:            0x1,
					{0x8000_0001, 0, 2, 22, 22}: 1,
					{0x8000_0008, 0, 2, 12, 15}: 7,
					{0x8000_0008, 0, 2, 0, 7}:   count - 1,
					{0x8000_0008, 0, 2, 16, 31}: 0,
					{0x8000_0008, 0, 2, 8, 11}:  0,
					{0x8000_001d, 0, 0, 14, 25}: per - 1,
					{0x8000_001d, 1, 0, 14, 25}: per - 1,
					{0x8000_001d, 2, 0, 14, 25}: per - 1,
					{0x8000_001d, 3, 0, 14, 25}: count - 1,
					{0x8000_001d, 3, 0, 0, 13}:  0x0163,
					{0x8000_001d, 2, 2, 0, 31}:  0x3ff,
					{0x8000_001e, 0, 0, 0, 31}:  idx,
					{0x8000_001e, 0, 1, 0, 7}:   idx / per,
					{0x8000_001e, 0, 1, 8, 15}:  per - 1,
					{0x8000_001e, 0, 2, 0, 10}:  0,
					{0x8000_0006, 0, 3, 16, 17}: 0,
					{0x8000_0006, 0, 3, 0, 15}:  0x9140,
				}
				for k, v := range common(v) {
					m[k] = v
				}
				return m
			},
		},
	}
	for _, c := range cases {
		for _, v := range vcpus {
			t.Run(fmt.Sprintf("%s/%d-of-%d/smt=%v", c.vendor, v.idx, v.count, v.smt), func(t *testing.T) {
				in := slices.Clone(c.kvm)
				got := normalizeCPUID(in, v.idx, v.count, v.smt, c.host.cpuid)
				if !slices.Equal(in, c.kvm) {
					t.Error("input entries modified")
				}
				if CPUIDVendor(got) != c.vendor {
					t.Errorf("vendor %q", CPUIDVendor(got))
				}
				for f, want := range c.want(v) {
					e, ok := lookup(got, f.leaf, f.sub)
					if !ok {
						t.Errorf("%v: leaf missing", f)
						continue
					}
					if g := getField(regsOf(e)[f.reg], f.lo, f.hi); g != want {
						t.Errorf("%v = %#x, want %#x", f, g, want)
					}
				}
				if b := brandOf(t, got); b != c.brand {
					t.Errorf("brand %q, want %q", b, c.brand)
				}
				// 0xB subleaves are index-significant; subleaf 1 was added.
				for sub := uint32(0); sub < 2; sub++ {
					if e, _ := lookup(got, 0xb, sub); e.Flags != sig {
						t.Errorf("0xB.%d flags %#x", sub, e.Flags)
					}
				}
				// KVM's paravirtual leaves are passed through unchanged.
				for _, leaf := range []uint32{0x4000_0000, 0x4000_0001} {
					g, _ := lookup(got, leaf, 0)
					w, _ := lookup(c.kvm, leaf, 0)
					if g != w {
						t.Errorf("KVM leaf %#x = %+v, want %+v", leaf, g, w)
					}
				}
				if !slices.IsSortedFunc(got, func(a, b kvm.CPUIDEntry2) int {
					if a.Function != b.Function {
						return cmpU32(a.Function, b.Function)
					}
					return cmpU32(a.Index, b.Index)
				}) {
					t.Error("result not sorted")
				}
			})
		}
	}
}

func TestNormalizeCPUIDAMDTopologyLeaves(t *testing.T) {
	got := normalizeCPUID(amdKVM, 0, 2, true, amdHost.cpuid)
	for sub := uint32(0); sub < 4; sub++ {
		e, ok := lookup(got, 0x8000_001d, sub)
		if !ok || e.Flags != sig {
			t.Errorf("0x8000001D.%d = %+v, %v", sub, e, ok)
		}
	}
	if _, ok := lookup(got, 0x8000_001d, 4); ok {
		t.Error("0x8000001D.4 present past the last cache")
	}
	if e, _ := lookup(got, 0x8000_001e, 0); e.Flags != 0 {
		t.Errorf("0x8000001E flags %#x", e.Flags)
	}
	// On a host that is not AMD the topology is not passed through.
	notAMD := fakeHost{{0, 0}: vendorRegs(VendorIntel, 0x10)}
	got = normalizeCPUID(amdKVM, 0, 2, true, notAMD.cpuid)
	if e, _ := lookup(got, 0x8000_001d, 0); regsOf(e) != (cpuidRegs{}) {
		t.Errorf("0x8000001D.0 = %+v from a non-AMD host", e)
	}
	if _, ok := lookup(got, 0x8000_001d, 1); ok {
		t.Error("0x8000001D.1 from a non-AMD host")
	}
}

func TestNormalizeCPUIDLeafB(t *testing.T) {
	// Old kernels report 0xB subleaves beyond 1; they are kept invalid.
	in := []kvm.CPUIDEntry2{
		entry(0, 0, 0, 0xb, vendorRegs(VendorIntel, 0)[1], vendorRegs(VendorIntel, 0)[2], vendorRegs(VendorIntel, 0)[3]),
		entry(0xb, 0, sig, 1, 2, 0x100, 9),
		entry(0xb, 1, sig, 4, 8, 0x201, 9),
		entry(0xb, 2, sig, 7, 7, 0x302, 9),
	}
	got := normalizeCPUID(in, 2, 4, false, intelHost.cpuid)
	want := map[uint32]cpuidRegs{0: {0, 1, 0x100, 2}, 1: {5, 4, 0x201, 2}, 2: {0, 0, 2, 2}}
	for sub, w := range want {
		if e, _ := lookup(got, 0xb, sub); regsOf(e) != w {
			t.Errorf("0xB.%d = %x, want %x", sub, regsOf(e), w)
		}
	}
	// No leaf 0x1F reported: none is added.
	if _, ok := lookup(got, 0x1f, 0); ok {
		t.Error("leaf 0x1F added")
	}
	// An unknown vendor gets only the common normalisation.
	odd := slices.Clone(in)
	r := vendorRegs("HygonGenuine", 0xb)
	odd[0] = entry(0, 0, 0, r[0], r[1], r[2], r[3])
	oddHost := fakeHost{{0, 0}: r}
	got = normalizeCPUID(odd, 0, 1, false, oddHost.cpuid)
	if CPUIDVendor(got) != "HygonGenuine" || len(got) != len(odd) {
		t.Errorf("unknown vendor: %+v", got)
	}
}

func TestIntelBrandString(t *testing.T) {
	cases := []struct{ host, want string }{
		{"Intel(R) Xeon(R) Platinum 8275CL CPU @ 3.00GHz", "Intel(R) Xeon(R) Processor @ 3.00GHz"},
		{"Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "Intel(R) Xeon(R) Processor @ 3.20GHz"},
		{"Intel(R) Pentium(R) III Processor @ 1133MHz", "Intel(R) Xeon(R) Processor @ 1133MHz"},
		// The host's bytes from the unit on are kept, padding included,
		// so a short host string overflows, as in Firecracker.
		{"Intel(R) Pentium(R) III CPU 1133MHz", "Intel(R) Xeon(R) Processor"},
		{"Intel(R) Xeon(R) Platinum 8488C", "Intel(R) Xeon(R) Processor"}, // no frequency
		{"Intel(R) Xeon(R) CPU @3.00GHz", "Intel(R) Xeon(R) Processor"},   // no space before it
		{"", "Intel(R) Xeon(R) Processor"},
		{"GHz", "Intel(R) Xeon(R) Processor"},
		{"Intel Xeon @ 123456789012345.00GHz", "Intel(R) Xeon(R) Processor"}, // too long
	}
	for _, c := range cases {
		var h [brandLength]byte
		copy(h[:], c.host)
		got := intelBrandString(h)
		if s := strings.TrimRight(string(got[:]), "\x00"); s != c.want {
			t.Errorf("intelBrandString(%q) = %q, want %q", c.host, s, c.want)
		}
	}
}

func TestHostCPUID(t *testing.T) {
	// On x86_64 the host reports a vendor; elsewhere zeros.
	r := realHostCPUID(0, 0)
	v := vendorString(r)
	t.Logf("host vendor %q, max leaf %#x", v, r[0])
	if r[0] != 0 && strings.ContainsRune(v, 0) {
		t.Errorf("host vendor %q", v)
	}
}

func TestNormalizeCPUIDReal(t *testing.T) {
	// The exported entry point with the real host: leaf 1 is normalised
	// whatever the host is.
	in := []kvm.CPUIDEntry2{entry(1, 0, 0, 0, 0, 0, 0)}
	got := NormalizeCPUID(in, 1, 2, false)
	if e, _ := lookup(got, 1, 0); getField(e.EBX, 24, 31) != 1 || e.ECX&(1<<31) == 0 {
		t.Errorf("leaf 1 = %+v", e)
	}
}
