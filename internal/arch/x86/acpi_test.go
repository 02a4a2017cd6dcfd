package x86

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

// acpiTables writes the MP table and ACPI tables as the boot path does and
// returns the table bytes found by following the RSDP, keyed by signature.
func acpiTables(t *testing.T, mem *memory.Guest, cfg ACPIConfig) (map[string][]byte, map[string]uint64) {
	t.Helper()
	end, err := WriteMPTable(mem, cfg.CPUCount)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteACPITables(mem, end, cfg); err != nil {
		t.Fatal(err)
	}
	rsdp := read(t, mem, RSDPAddr, 36)
	if string(rsdp[:8]) != "RSD PTR " || string(rsdp[9:15]) != "FIRECK" || rsdp[15] != 2 ||
		u32(rsdp, 16) != 0 || u32(rsdp, 20) != 36 {
		t.Errorf("RSDP = %x", rsdp)
	}
	if sum8(rsdp[:20]) != 0 || sum8(rsdp) != 0 {
		t.Errorf("RSDP checksums: %#x %#x", sum8(rsdp[:20]), sum8(rsdp))
	}
	table := func(addr uint64) []byte {
		hdr := read(t, mem, addr, 36)
		b := read(t, mem, addr, uint64(u32(hdr, 4)))
		if sum8(b) != 0 {
			t.Errorf("%s checksum %#x", b[:4], sum8(b))
		}
		if string(b[10:16]) != "FIRECK" || u32(b, 24) != 0 || string(b[28:32]) != "FCAT" || u32(b, 32) != 0x20240119 {
			t.Errorf("%s header = %x", b[:4], b[:36])
		}
		if addr < end || addr+uint64(len(b)) > SystemMemEnd {
			t.Errorf("%s at %#x+%d outside [%#x, %#x)", b[:4], addr, len(b), end, SystemMemEnd)
		}
		return b
	}
	tables := map[string][]byte{}
	addrs := map[string]uint64{}
	xsdtAddr := u64(rsdp, 24)
	xsdt := table(xsdtAddr)
	tables["XSDT"], addrs["XSDT"] = xsdt, xsdtAddr
	for off := 36; off < len(xsdt); off += 8 {
		a := u64(xsdt, off)
		b := table(a)
		tables[string(b[:4])], addrs[string(b[:4])] = b, a
	}
	if fadt, ok := tables["FACP"]; ok {
		a := u64(fadt, 140)
		tables["DSDT"], addrs["DSDT"] = table(a), a
	}
	return tables, addrs
}

func TestWriteACPITables(t *testing.T) {
	mem := newGuest(t, 128*mib)
	cfg := ACPIConfig{CPUCount: 3, VirtioMMIO: []MMIODevice{
		{Base: 0xc0001000, Size: 0x1000, GSI: 5},
		{Base: 0xc0002000, GSI: 6},
	}}
	tables, addrs := acpiTables(t, mem, cfg)

	// Firecracker's order, packed first-fit after the MP table.
	order := []string{"DSDT", "FACP", "APIC", "MCFG", "XSDT"}
	next := SystemMemStart + MPTableSize(3)
	for _, sig := range order {
		b, ok := tables[sig]
		if !ok {
			t.Fatalf("no %s", sig)
		}
		if addrs[sig] != next {
			t.Errorf("%s at %#x, want %#x", sig, addrs[sig], next)
		}
		next += uint64(len(b))
	}
	if got := len(tables["XSDT"]); got != 36+3*8 {
		t.Errorf("XSDT length %d", got)
	}
	ids := map[string]string{"DSDT": "FCVMDSDT", "FACP": "FCVMFADT", "APIC": "FCVMMADT", "MCFG": "FCMVMCFG", "XSDT": "FCMVXSDT"}
	revs := map[string]byte{"DSDT": 2, "FACP": 6, "APIC": 6, "MCFG": 1, "XSDT": 1}
	for sig, id := range ids {
		b := tables[sig]
		if string(b[16:24]) != id || b[8] != revs[sig] {
			t.Errorf("%s: table ID %q revision %d", sig, b[16:24], b[8])
		}
	}

	fadt := tables["FACP"]
	if len(fadt) != 276 || fadt[131] != 5 || u32(fadt, 40) != 0 || u64(fadt, 140) != addrs["DSDT"] ||
		u32(fadt, 112) != 1<<20|1<<4|1<<5 || u16(fadt, 109) != 1<<2 || string(fadt[268:276]) != "FIRECKVM" {
		t.Errorf("FADT = %x", fadt)
	}
	// Hardware-reduced: no SCI, no PM blocks.
	for _, off := range []int{46, 56, 64, 76, 80} {
		if u32(fadt, off) != 0 {
			t.Errorf("FADT field at %d = %#x", off, u32(fadt, off))
		}
	}

	madt := tables["APIC"]
	if u32(madt, 36) != 0xfee00000 || u32(madt, 40) != 0 {
		t.Errorf("MADT header = %x", madt[36:44])
	}
	wantMADT := []byte{1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0}
	for i := range 3 {
		wantMADT = append(wantMADT, 0, 8, byte(i), byte(i), 1, 0, 0, 0)
	}
	if !bytes.Equal(madt[44:], wantMADT) {
		t.Errorf("MADT structures = %x, want %x", madt[44:], wantMADT)
	}

	mcfg := tables["MCFG"]
	if len(mcfg) != 60 || u64(mcfg, 36) != 0 || u64(mcfg, 44) != 0xeec00000 || u16(mcfg, 52) != 0 || mcfg[54] != 0 || mcfg[55] != 0 {
		t.Errorf("MCFG = %x", mcfg)
	}

	devs := parseDSDT(t, tables["DSDT"][36:])
	want := []parsedDevice{
		{Path: `\_SB_.V000`, HID: "LNRO0005", UID: "0", CCA: "1", Resources: []string{
			"Memory32Fixed(RW, 0xc0001000, 0x1000)", "Interrupt(consumer, edge, high, exclusive, 5)"}},
		{Path: `\_SB_.V001`, HID: "LNRO0005", UID: "1", CCA: "1", Resources: []string{
			"Memory32Fixed(RW, 0xc0002000, 0x1000)", "Interrupt(consumer, edge, high, exclusive, 6)"}},
		{Path: `\_SB_.COM1`, HID: "PNP0501", UID: "0", DDN: "COM1", Resources: []string{
			"Interrupt(consumer, edge, high, exclusive, 4)", "IO(0x3f8, 0x3f8, 1, 8)"}},
		{Path: `\_SB_.PS2_`, HID: "PNP0303", Methods: []string{"_STA"}, Resources: []string{
			"IO(0x60, 0x60, 1, 1)", "IO(0x64, 0x64, 1, 1)", "Interrupt(consumer, edge, high, exclusive, 1)"}},
	}
	if !reflect.DeepEqual(devs, want) {
		t.Errorf("DSDT devices:\n%+v\nwant\n%+v", devs, want)
	}

	if _, err := exec.LookPath("iasl"); err == nil {
		disassemble(t, tables["DSDT"], []string{
			`Device (_SB.V000)`, `Name (_HID, "LNRO0005")`, `Name (_CCA, One)`,
			`Memory32Fixed (ReadWrite,`, `0xC0002000,`,
			`Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )`,
			`Device (_SB.COM1)`, `EisaId ("PNP0501")`, `IO (Decode16,`,
			`Device (_SB.PS2)`, `EisaId ("PNP0303")`, `Method (_STA, 0, NotSerialized)`,
		})
		for _, sig := range []string{"FACP", "APIC", "MCFG", "XSDT"} {
			disassemble(t, tables[sig], nil)
		}
	} else {
		t.Log("iasl not installed; DSDT checked with the built-in walker only")
	}
}

// disassemble runs iasl -d on a table and checks its output for want.
func disassemble(t *testing.T, table []byte, want []string) {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "table.dat")
	if err := os.WriteFile(f, table, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("iasl", "-d", f).CombinedOutput()
	if err != nil {
		t.Fatalf("iasl -d %s: %v\n%s", table[:4], err, out)
	}
	dsl, err := os.ReadFile(filepath.Join(dir, "table.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(dsl)
	if strings.Contains(text, "Error") || strings.Contains(string(out), "Error") {
		t.Errorf("iasl reports errors for %s:\n%s\n%s", table[:4], out, text)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("iasl output for %s lacks %q:\n%s", table[:4], w, text)
		}
	}
}

func TestWriteACPITablesNoVirtio(t *testing.T) {
	mem := newGuest(t, 128*mib)
	tables, _ := acpiTables(t, mem, ACPIConfig{CPUCount: MaxVCPUs})
	if got := len(tables["APIC"]); got != 44+12+8*MaxVCPUs {
		t.Errorf("MADT length %d", got)
	}
	devs := parseDSDT(t, tables["DSDT"][36:])
	if len(devs) != 2 || devs[0].Path != `\_SB_.COM1` || devs[1].Path != `\_SB_.PS2_` {
		t.Errorf("DSDT devices = %+v", devs)
	}
}

func TestWriteACPITablesErrors(t *testing.T) {
	mem := newGuest(t, 128*mib)
	end := uint64(SystemMemStart + 0x400)
	bad := []ACPIConfig{
		{CPUCount: 0},
		{CPUCount: MaxMPTableCPUs + 1},
		{CPUCount: 1, VirtioMMIO: []MMIODevice{{Base: 0xc0001000, GSI: 4}}},
		{CPUCount: 1, VirtioMMIO: []MMIODevice{{Base: 0xc0001000, GSI: 5}, {Base: 0xc0002000, GSI: 5}}},
		{CPUCount: 1, VirtioMMIO: []MMIODevice{{Base: 1 << 32, GSI: 5}}},
		{CPUCount: 1, VirtioMMIO: []MMIODevice{{Base: 0xfffff000, Size: 0x2000, GSI: 5}}},
	}
	for _, cfg := range bad {
		if err := WriteACPITables(mem, end, cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if err := WriteACPITables(mem, SystemMemEnd-100, ACPIConfig{CPUCount: 1}); err == nil {
		t.Error("tables past system memory accepted")
	}
	if err := WriteACPITables(mem, 0x1000, ACPIConfig{CPUCount: 1}); err == nil {
		t.Error("start below system memory accepted")
	}
	// Enough devices to need multi-byte package lengths still parse.
	var many []MMIODevice
	for i := range uint32(19) {
		many = append(many, MMIODevice{Base: VirtioMMIOStart + uint64(i)*VirtioMMIOSize, GSI: IRQBase + i})
	}
	tables, _ := acpiTables(t, newGuest(t, 128*mib), ACPIConfig{CPUCount: 2, VirtioMMIO: many})
	if devs := parseDSDT(t, tables["DSDT"][36:]); len(devs) != 21 || devs[18].Path != `\_SB_.V018` {
		t.Errorf("%d devices, last virtio %+v", len(devs), devs[18])
	}
}

// parsedDevice is what the test walker reports about one Device().
type parsedDevice struct {
	Path               string
	HID, UID, CCA, DDN string
	Methods, Resources []string
}

// amlParser is a test-only walker for the subset of AML the DSDT uses:
// Scope, Device, Name and Method (skipped), with integer, string, buffer
// and package data.
type amlParser struct {
	t    *testing.T
	b    []byte
	pos  int
	devs []parsedDevice
}

func parseDSDT(t *testing.T, aml []byte) []parsedDevice {
	t.Helper()
	p := &amlParser{t: t, b: aml}
	p.termList(`\`, len(aml), nil)
	return p.devs
}

func (p *amlParser) fail(format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("AML at %#x: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *amlParser) byte() byte {
	if p.pos >= len(p.b) {
		p.fail("truncated")
	}
	c := p.b[p.pos]
	p.pos++
	return c
}

// pkgEnd reads a PkgLength and returns where the package ends.
func (p *amlParser) pkgEnd() int {
	start := p.pos
	lead := p.byte()
	n := int(lead >> 6)
	l := int(lead & 0x3f)
	if n > 0 {
		l = int(lead & 0xf)
		for i := range n {
			l |= int(p.byte()) << (4 + 8*i)
		}
	}
	end := start + l
	if end > len(p.b) {
		p.fail("package ends at %#x past %#x", end, len(p.b))
	}
	return end
}

func (p *amlParser) nameSeg() string {
	if p.pos+4 > len(p.b) {
		p.fail("truncated name")
	}
	s := string(p.b[p.pos : p.pos+4])
	p.pos += 4
	if !validNameSeg(s) {
		p.fail("bad name segment %q", s)
	}
	return s
}

// nameString reads a name and resolves it against scope.
func (p *amlParser) nameString(scope string) string {
	var segs []string
	root := false
	if p.b[p.pos] == '\\' {
		root = true
		p.pos++
	}
	switch p.b[p.pos] {
	case 0x2e:
		p.pos++
		segs = []string{p.nameSeg(), p.nameSeg()}
	case 0x2f:
		p.pos++
		for range int(p.byte()) {
			segs = append(segs, p.nameSeg())
		}
	default:
		segs = []string{p.nameSeg()}
	}
	name := strings.Join(segs, ".")
	if root {
		return `\` + name
	}
	if scope == `\` {
		return `\` + name
	}
	return scope + "." + name
}

// value is a decoded data object.
type value struct {
	kind string // "int", "string", "buffer", "package"
	i    uint64
	s    string
	buf  []byte
}

func (p *amlParser) dataObject() value {
	op := p.byte()
	le := binary.LittleEndian
	take := func(n int) []byte {
		if p.pos+n > len(p.b) {
			p.fail("truncated data")
		}
		b := p.b[p.pos : p.pos+n]
		p.pos += n
		return b
	}
	switch op {
	case 0x00:
		return value{kind: "int", i: 0}
	case 0x01:
		return value{kind: "int", i: 1}
	case 0xff:
		return value{kind: "int", i: ^uint64(0)}
	case 0x0a:
		return value{kind: "int", i: uint64(take(1)[0])}
	case 0x0b:
		return value{kind: "int", i: uint64(le.Uint16(take(2)))}
	case 0x0c:
		return value{kind: "int", i: uint64(le.Uint32(take(4)))}
	case 0x0e:
		return value{kind: "int", i: le.Uint64(take(8))}
	case 0x0d:
		n := bytes.IndexByte(p.b[p.pos:], 0)
		if n < 0 {
			p.fail("unterminated string")
		}
		s := string(take(n))
		p.pos++
		return value{kind: "string", s: s}
	case 0x11:
		end := p.pkgEnd()
		size := p.dataObject()
		if size.kind != "int" || int(size.i) != end-p.pos {
			p.fail("buffer size %d, %d bytes left", size.i, end-p.pos)
		}
		buf := take(end - p.pos)
		return value{kind: "buffer", buf: buf}
	case 0x12:
		end := p.pkgEnd()
		n := int(p.byte())
		for range n {
			p.dataObject()
		}
		if p.pos != end {
			p.fail("package elements end at %#x, package at %#x", p.pos, end)
		}
		return value{kind: "package", i: uint64(n)}
	}
	p.fail("unexpected data opcode %#x", op)
	return value{}
}

func (p *amlParser) termList(scope string, end int, dev *parsedDevice) {
	for p.pos < end {
		switch op := p.byte(); op {
		case 0x10: // Scope
			e := p.pkgEnd()
			p.termList(p.nameString(scope), e, nil)
		case 0x5b:
			if p.byte() != 0x82 {
				p.fail("unexpected extended opcode")
			}
			e := p.pkgEnd()
			d := parsedDevice{Path: p.nameString(scope)}
			p.termList(d.Path, e, &d)
			p.devs = append(p.devs, d)
		case 0x08: // Name
			name := p.nameString(scope)
			v := p.dataObject()
			if dev == nil {
				continue
			}
			switch name[strings.LastIndexByte(name, '.')+1:] {
			case "_HID":
				if v.kind == "int" {
					dev.HID = decodeEISAID(uint32(v.i))
				} else {
					dev.HID = v.s
				}
			case "_UID":
				dev.UID = fmt.Sprint(v.i)
			case "_CCA":
				dev.CCA = fmt.Sprint(v.i)
			case "_DDN":
				dev.DDN = v.s
			case "_CRS":
				if v.kind != "buffer" {
					p.fail("_CRS is a %s", v.kind)
				}
				dev.Resources = p.resources(v.buf)
			}
		case 0x14: // Method: record the name, skip the body
			e := p.pkgEnd()
			name := p.nameString(scope)
			if dev != nil {
				dev.Methods = append(dev.Methods, name[strings.LastIndexByte(name, '.')+1:])
			}
			p.pos = e
		default:
			p.fail("unexpected opcode %#x", op)
		}
	}
	if p.pos != end {
		p.fail("term list overruns its package end %#x", end)
	}
}

func decodeEISAID(v uint32) string {
	v = v>>24 | v>>8&0xff00 | v<<8&0xff_0000 | v<<24
	return fmt.Sprintf("%c%c%c%04X", '@'+byte(v>>26&0x1f), '@'+byte(v>>21&0x1f), '@'+byte(v>>16&0x1f), v&0xffff)
}

// resources decodes a resource template, which must end with an end tag.
func (p *amlParser) resources(b []byte) []string {
	var out []string
	le := binary.LittleEndian
	for i := 0; i < len(b); {
		tag := b[i]
		if tag&0x80 == 0 { // small item
			n := int(tag & 7)
			body := b[i+1 : i+1+n]
			switch tag >> 3 {
			case 0x8:
				out = append(out, fmt.Sprintf("IO(%#x, %#x, %d, %d)", le.Uint16(body[1:]), le.Uint16(body[3:]), body[5], body[6]))
			case 0xf:
				if i+2 != len(b) {
					p.fail("end tag before the end of the template")
				}
				return out
			default:
				p.fail("unexpected small resource %#x", tag)
			}
			i += 1 + n
			continue
		}
		n := int(le.Uint16(b[i+1:]))
		body := b[i+3 : i+3+n]
		switch tag {
		case 0x86:
			rw := map[byte]string{0: "RO", 1: "RW"}[body[0]]
			out = append(out, fmt.Sprintf("Memory32Fixed(%s, %#x, %#x)", rw, le.Uint32(body[1:]), le.Uint32(body[5:])))
		case 0x89:
			f := body[0]
			pick := func(bit int, no, yes string) string {
				if f>>bit&1 == 1 {
					return yes
				}
				return no
			}
			for k := range int(body[1]) {
				out = append(out, fmt.Sprintf("Interrupt(%s, %s, %s, %s, %d)",
					pick(0, "producer", "consumer"), pick(1, "level", "edge"),
					pick(2, "high", "low"), pick(3, "exclusive", "shared"), le.Uint32(body[2+4*k:])))
			}
		default:
			p.fail("unexpected large resource %#x", tag)
		}
		i += 3 + n
	}
	p.fail("resource template without end tag")
	return nil
}
