package x86

import (
	"encoding/binary"
	"testing"

	"github.com/squib-vmm/squib/internal/kvm"
)

func TestBootGDT(t *testing.T) {
	linux := BootGDT(false)
	if want := [4]uint64{0, 0x00af9b000000ffff, 0x00cf93000000ffff, 0x008f8b000000ffff}; linux != want {
		t.Errorf("Linux GDT = %x, want %x", linux, want)
	}
	pvh := BootGDT(true)
	if want := [4]uint64{0, 0x00cf9b000000ffff, 0x00cf93000000ffff, 0x00008b0000000067}; pvh != want {
		t.Errorf("PVH GDT = %x, want %x", pvh, want)
	}
	if got := gdtEntry(0x93, 0x12345678, 0xabcde); got != 0x120a93345678bcde {
		t.Errorf("gdtEntry with base = %#x", got)
	}
	if s := segmentFromGDT(0x120a93345678bcde, 5); s.Base != 0x12345678 || s.Limit != 0xabcde || s.Selector != 40 {
		t.Errorf("segmentFromGDT = %+v", s)
	}
}

func TestWriteBootGDT(t *testing.T) {
	mem := newGuest(t, 16*mib)
	for _, pvh := range []bool{false, true} {
		if err := mem.WriteAt([]byte{1, 2, 3, 4, 5, 6, 7, 8}, BootIDTStart); err != nil {
			t.Fatal(err)
		}
		if err := WriteBootGDT(mem, pvh); err != nil {
			t.Fatal(err)
		}
		b := read(t, mem, BootGDTStart, 32)
		for i, want := range BootGDT(pvh) {
			if got := u64(b, 8*i); got != want {
				t.Errorf("pvh=%v GDT[%d] = %#x, want %#x", pvh, i, got, want)
			}
		}
		if idt := u64(read(t, mem, BootIDTStart, 8), 0); idt != 0 {
			t.Errorf("IDT entry = %#x", idt)
		}
	}
}

func TestWriteIdentityPageTables(t *testing.T) {
	mem := newGuest(t, 16*mib)
	if err := WriteIdentityPageTables(mem); err != nil {
		t.Fatal(err)
	}
	if got := u64(read(t, mem, PML4Start, 8), 0); got != 0xa003 {
		t.Errorf("PML4[0] = %#x", got)
	}
	if got := u64(read(t, mem, PDPTStart, 8), 0); got != 0xb003 {
		t.Errorf("PDPT[0] = %#x", got)
	}
	// Walk the tables for a few addresses across the first GiB.
	translate := func(va uint64) (uint64, bool) {
		entry := func(table uint64, i uint64) uint64 {
			return u64(read(t, mem, table+8*i, 8), 0)
		}
		pml4e := entry(PML4Start, va>>39&511)
		if pml4e&1 == 0 {
			return 0, false
		}
		pdpte := entry(pml4e&^0xfff, va>>30&511)
		if pdpte&1 == 0 || pdpte&0x80 != 0 {
			return 0, false
		}
		pde := entry(pdpte&^0xfff, va>>21&511)
		if pde&1 == 0 || pde&0x80 == 0 || pde&2 == 0 {
			return 0, false
		}
		return pde&^0x1fffff | va&0x1fffff, true
	}
	for va := uint64(0); va < 1<<30; va += 0x1f_f001 {
		if pa, ok := translate(va); !ok || pa != va {
			t.Fatalf("VA %#x -> %#x, %v", va, pa, ok)
		}
	}
	if pa, ok := translate(1<<30 - 1); !ok || pa != 1<<30-1 {
		t.Errorf("last byte of the GiB -> %#x, %v", pa, ok)
	}
	if _, ok := translate(1 << 30); ok {
		t.Error("second GiB is mapped")
	}
	if got := u64(read(t, mem, PDStart+8*511, 8), 0); got != 511<<21|0x83 {
		t.Errorf("PD[511] = %#x", got)
	}
}

func TestBootRegs(t *testing.T) {
	if got, want := BootRegs(0x1000000, false), (kvm.Regs{RIP: 0x1000000, RSP: 0x8ff0, RBP: 0x8ff0, RSI: 0x7000, RFLAGS: 2}); got != want {
		t.Errorf("Linux regs = %+v", got)
	}
	if got, want := BootRegs(0x1000ab0, true), (kvm.Regs{RIP: 0x1000ab0, RBX: 0x6000, RFLAGS: 2}); got != want {
		t.Errorf("PVH regs = %+v", got)
	}
}

func TestConfigureSregsLinux(t *testing.T) {
	// KVM's reset values: CR0 has ET, CD and NW; they must survive.
	s := kvm.Sregs{CR0: 0x60000010, CR4: 0x40, EFER: 0x1, APICBase: 0xfee00900}
	ConfigureSregs(&s, false)
	if s.CR0 != 0x60000010|1|1<<31 {
		t.Errorf("CR0 = %#x", s.CR0)
	}
	if s.CR4 != 0x40|0x20 || s.EFER != 0x1|0x500 || s.CR3 != 0x9000 {
		t.Errorf("CR4 = %#x EFER = %#x CR3 = %#x", s.CR4, s.EFER, s.CR3)
	}
	if s.APICBase != 0xfee00900 {
		t.Errorf("APIC base changed: %#x", s.APICBase)
	}
	if s.GDT.Base != 0x500 || s.GDT.Limit != 31 || s.IDT.Base != 0x520 || s.IDT.Limit != 7 {
		t.Errorf("GDT %+v IDT %+v", s.GDT, s.IDT)
	}
	want := kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}
	if s.CS != want {
		t.Errorf("CS = %+v, want %+v", s.CS, want)
	}
	data := kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: 1, DB: 1, S: 1, G: 1}
	for i, seg := range []kvm.Segment{s.DS, s.ES, s.FS, s.GS, s.SS} {
		if seg != data {
			t.Errorf("data segment %d = %+v", i, seg)
		}
	}
	if tr := (kvm.Segment{Limit: 0xffffffff, Selector: 0x18, Type: 0xb, Present: 1, G: 1}); s.TR != tr {
		t.Errorf("TR = %+v", s.TR)
	}
}

func TestConfigureSregsPVH(t *testing.T) {
	s := kvm.Sregs{CR0: 0x60000010, CR4: 0x40, EFER: 0x1, CR3: 0x1234}
	ConfigureSregs(&s, true)
	if s.CR0 != 0x11 || s.CR4 != 0 || s.EFER != 0x1 || s.CR3 != 0x1234 {
		t.Errorf("CR0 = %#x CR4 = %#x EFER = %#x CR3 = %#x", s.CR0, s.CR4, s.EFER, s.CR3)
	}
	if want := (kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1}); s.CS != want {
		t.Errorf("CS = %+v", s.CS)
	}
	if want := (kvm.Segment{Limit: 0x67, Selector: 0x18, Type: 0xb, Present: 1}); s.TR != want {
		t.Errorf("TR = %+v", s.TR)
	}
}

func TestBootFPU(t *testing.T) {
	f := BootFPU()
	if f.FCW != 0x37f || f.MXCSR != 0x1f80 || f.FSW != 0 || f.FTWX != 0 {
		t.Errorf("FPU = %+v", f)
	}
}

func TestBootMSRs(t *testing.T) {
	want := map[uint32]uint64{
		0x174: 0, 0x175: 0, 0x176: 0,
		0xc0000081: 0, 0xc0000083: 0, 0xc0000102: 0, 0xc0000084: 0, 0xc0000082: 0,
		0x10: 0, 0x1a0: 1, 0x2ff: 0x806,
	}
	got := BootMSRs()
	if len(got) != len(want) {
		t.Fatalf("%d MSRs, want %d", len(got), len(want))
	}
	for _, e := range got {
		if v, ok := want[e.Index]; !ok || v != e.Data {
			t.Errorf("MSR %#x = %#x (want %#x, listed %v)", e.Index, e.Data, v, ok)
		}
		delete(want, e.Index)
	}
}

func TestConfigureLAPIC(t *testing.T) {
	var l kvm.LAPICState
	// KVM's reset LVTs are masked (bit 16); other bits must survive.
	binary.LittleEndian.PutUint32(l.Regs[0x350:], 0x10000|0x300)
	binary.LittleEndian.PutUint32(l.Regs[0x360:], 0x10000)
	binary.LittleEndian.PutUint32(l.Regs[0x340:], 0xdeadbeef)
	ConfigureLAPIC(&l)
	if got := binary.LittleEndian.Uint32(l.Regs[0x350:]); got != 0x10700 {
		t.Errorf("LVT LINT0 = %#x", got)
	}
	if got := binary.LittleEndian.Uint32(l.Regs[0x360:]); got != 0x10400 {
		t.Errorf("LVT LINT1 = %#x", got)
	}
	if got := binary.LittleEndian.Uint32(l.Regs[0x340:]); got != 0xdeadbeef {
		t.Errorf("neighbour register changed: %#x", got)
	}
}
