package x86

import (
	"errors"
	"reflect"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

const mib = 1 << 20

func TestE820Map(t *testing.T) {
	fixed := []E820Entry{
		{0, 0x9fc00, E820RAM},
		{0x9fc00, 0xe0000 - 0x9fc00, E820Reserved},
		{0xeec0_0000, 256 * mib, E820Reserved},
	}
	cases := []struct {
		name string
		size uint64
		ram  []E820Entry
	}{
		{"128MiB", 128 * mib, []E820Entry{{mib, 127 * mib, E820RAM}}},
		{"4GiB", 4 << 30, []E820Entry{
			{mib, 3<<30 - mib, E820RAM},
			{4 << 30, 1 << 30, E820RAM},
		}},
		{"300GiB", 300 << 30, []E820Entry{
			{mib, 3<<30 - mib, E820RAM},
			{4 << 30, 252 << 30, E820RAM},
			{512 << 30, 45 << 30, E820RAM},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := E820Map(RAMRegions(c.size))
			want := append(append([]E820Entry{}, fixed...), c.ram...)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("E820Map =\n%x\nwant\n%x", got, want)
			}
		})
	}
	// A region wholly below 1 MiB adds nothing.
	if got := E820Map([]RAMRegion{{0, 0x80000}}); len(got) != 3 {
		t.Errorf("sub-MiB RAM gave %v", got)
	}
}

// decodeE820 reads the zero page's E820 table.
func decodeE820(zp []byte) []E820Entry {
	var out []E820Entry
	for i := range int(zp[0x1e8]) {
		b := zp[0x2d0+20*i:]
		out = append(out, E820Entry{u64(b, 0), u64(b, 8), u32(b, 16)})
	}
	return out
}

func TestWriteZeroPageELF(t *testing.T) {
	mem := newGuest(t, 128*mib)
	// Stale bytes must not survive: the whole page is rewritten.
	junk := make([]byte, 0x1000)
	for i := range junk {
		junk[i] = 0xee
	}
	if err := mem.WriteAt(junk, ZeroPageStart); err != nil {
		t.Fatal(err)
	}
	err := WriteZeroPage(mem, ZeroPageConfig{CmdlineSize: 42, InitrdAddr: 0x7e00000, InitrdSize: 0x12345})
	if err != nil {
		t.Fatal(err)
	}
	zp := read(t, mem, ZeroPageStart, 0x1000)
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"acpi_rsdp_addr", u64(zp, 0x70), 0xe0000},
		{"setup_sects", uint64(zp[0x1f1]), 0},
		{"boot_flag", uint64(u16(zp, 0x1fe)), 0xaa55},
		{"header", uint64(u32(zp, 0x202)), 0x53726448},
		{"type_of_loader", uint64(zp[0x210]), 0xff},
		{"ramdisk_image", uint64(u32(zp, 0x218)), 0x7e00000},
		{"ramdisk_size", uint64(u32(zp, 0x21c)), 0x12345},
		{"cmd_line_ptr", uint64(u32(zp, 0x228)), 0x20000},
		{"kernel_alignment", uint64(u32(zp, 0x230)), 0x1000000},
		{"cmdline_size", uint64(u32(zp, 0x238)), 42},
		{"e820_entries", uint64(zp[0x1e8]), 4},
		{"page end", uint64(zp[0xfff]), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if got, want := decodeE820(zp), E820Map(RAMRegions(128*mib)); !reflect.DeepEqual(got, want) {
		t.Errorf("E820 = %x, want %x", got, want)
	}
}

func TestWriteZeroPageBzImage(t *testing.T) {
	mem := newGuest(t, 128*mib)
	// A bzImage header as found at offset 0x1f1 of the image.
	hdr := make([]byte, SetupHeaderSize)
	hdr[0] = 27                                     // setup_sects
	hdr[0x206-0x1f1], hdr[0x207-0x1f1] = 0x0f, 0x02 // version 2.15
	hdr[0x211-0x1f1] = 0x01                         // loadflags LOADED_HIGH
	hdr[0x214-0x1f1+2] = 0x10                       // code32_start 0x100000
	hdr[0x230-0x1f1+2] = 0x20                       // kernel_alignment 0x200000
	hdr[0x236-0x1f1] = 0x7f                         // xloadflags
	hdr[0x210-0x1f1] = 0x00                         // type_of_loader, replaced
	hdr[0x228-0x1f1] = 0x99                         // cmd_line_ptr, replaced
	err := WriteZeroPage(mem, ZeroPageConfig{SetupHeader: hdr, CmdlineSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	zp := read(t, mem, ZeroPageStart, 0x1000)
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"setup_sects", uint64(zp[0x1f1]), 27},
		{"version", uint64(u16(zp, 0x206)), 0x020f},
		{"loadflags", uint64(zp[0x211]), 1},
		{"code32_start", uint64(u32(zp, 0x214)), 0x100000},
		{"kernel_alignment kept", uint64(u32(zp, 0x230)), 0x200000},
		{"xloadflags", uint64(u16(zp, 0x236)), 0x7f},
		{"type_of_loader", uint64(zp[0x210]), 0xff},
		{"boot_flag", uint64(u16(zp, 0x1fe)), 0xaa55},
		{"header", uint64(u32(zp, 0x202)), 0x53726448},
		{"cmd_line_ptr", uint64(u32(zp, 0x228)), 0x20000},
		{"cmdline_size", uint64(u32(zp, 0x238)), 7},
		{"no ramdisk", uint64(u32(zp, 0x218)), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestWriteZeroPageExplicitRAM(t *testing.T) {
	// A 4 GiB layout described explicitly, written into a small guest.
	mem := newGuest(t, 16*mib)
	ram := RAMRegions(4 << 30)
	if err := WriteZeroPage(mem, ZeroPageConfig{RAM: ram}); err != nil {
		t.Fatal(err)
	}
	zp := read(t, mem, ZeroPageStart, 0x1000)
	if got, want := decodeE820(zp), E820Map(ram); !reflect.DeepEqual(got, want) {
		t.Errorf("E820 = %x, want %x", got, want)
	}
}

func TestWriteZeroPageErrors(t *testing.T) {
	mem := newGuest(t, 16*mib)
	if err := WriteZeroPage(mem, ZeroPageConfig{SetupHeader: make([]byte, SetupHeaderSize+1)}); err == nil {
		t.Error("oversized setup header accepted")
	}
	if err := WriteZeroPage(mem, ZeroPageConfig{InitrdAddr: 5 << 30, InitrdSize: 1}); err == nil {
		t.Error("initrd above 4 GiB accepted")
	}
	small := newGuest(t, 0x7800)
	if err := WriteZeroPage(small, ZeroPageConfig{}); !errors.Is(err, memory.ErrOutOfBounds) {
		t.Errorf("zero page past RAM: %v", err)
	}
}

func TestWriteCmdline(t *testing.T) {
	mem := newGuest(t, 16*mib)
	n, err := WriteCmdline(mem, "console=ttyS0 reboot=k")
	if err != nil || n != 23 {
		t.Fatalf("WriteCmdline = %d, %v", n, err)
	}
	if got := string(read(t, mem, CmdlineStart, 23)); got != "console=ttyS0 reboot=k\x00" {
		t.Errorf("cmdline = %q", got)
	}
	long := make([]byte, CmdlineMaxSize-1)
	for i := range long {
		long[i] = 'a'
	}
	if n, err := WriteCmdline(mem, string(long)); err != nil || n != CmdlineMaxSize {
		t.Errorf("max cmdline: %d, %v", n, err)
	}
	if _, err := WriteCmdline(mem, string(long)+"a"); err == nil {
		t.Error("cmdline of 2049 bytes with NUL accepted")
	}
	if _, err := WriteCmdline(mem, "a\x00b"); err == nil {
		t.Error("cmdline with NUL accepted")
	}
}
