package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/arch/x86"
)

func TestVirtioMMIOToken(t *testing.T) {
	cases := []struct {
		size, base uint64
		irq        uint32
		want       string
	}{
		{x86.VirtioMMIOSize, x86.VirtioMMIOStart, 5, "virtio_mmio.device=4K@0xc0001000:5"},
		{0x1000, 0xC000_2000, 23, "virtio_mmio.device=4K@0xc0002000:23"},
		{0x1800, 0xABCDEF000, 6, "virtio_mmio.device=6K@0xabcdef000:6"},
		{1 << 20, 0x1000, 7, "virtio_mmio.device=1M@0x1000:7"},
		{3 << 30, 0, 0, "virtio_mmio.device=3G@0x0:0"},
		{1536 << 20, 1, 1, "virtio_mmio.device=1536M@0x1:1"},
		{1000, 0x10, 9, "virtio_mmio.device=1000@0x10:9"},
	}
	for _, c := range cases {
		if got := VirtioMMIOToken(c.size, c.base, c.irq); got != c.want {
			t.Errorf("VirtioMMIOToken(%#x, %#x, %d) = %q, want %q", c.size, c.base, c.irq, got, c.want)
		}
	}
}

func TestCmdlineBuild(t *testing.T) {
	c, err := NewCmdline(x86.CmdlineMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.AsCString(); err != nil || string(b) != "\x00" {
		t.Fatalf("empty: %q, %v", b, err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.InsertStr("  console=ttyS0 reboot=k  "))
	must(c.Insert("panic", "1"))
	must(c.Insert("quoted", `"a b"`))
	must(c.InsertStr("   ")) // no-op, no stray space
	must(c.InsertInitArgs("init-arg"))
	must(c.AddVirtioMMIODevice(0x1000, 0xc0001000, 5))
	want := `console=ttyS0 reboot=k panic=1 quoted="a b" virtio_mmio.device=4K@0xc0001000:5 -- init-arg`
	if got := c.String(); got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	b, err := c.AsCString()
	if err != nil || string(b) != want+"\x00" || c.Size() != len(b) {
		t.Fatalf("AsCString = %q, %v, Size %d", b, err, c.Size())
	}
}

func TestParseCmdline(t *testing.T) {
	cases := []struct{ in, boot, init string }{
		{"console=ttyS0 reboot=k panic=1 pci=off", "console=ttyS0 reboot=k panic=1 pci=off", ""},
		{"console=ttyS0 -- foo bar", "console=ttyS0", "foo bar"},
		{"a -- b -- c", "a", "b -- c"},
		{`x="a -- b" y -- z`, `x="a -- b" y`, "z"},
		{"  a  --  b  ", "a", "b"},
		{"a --", "a --", ""},
		{"a -- ", "a", ""},
		{"", "", ""},
		{"\tä=ö", "ä=ö", ""}, // content is the kernel's business, as in Firecracker
	}
	for _, c := range cases {
		cl, err := ParseCmdline(c.in, x86.CmdlineMaxSize)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if cl.boot != c.boot || cl.init != c.init {
			t.Errorf("%q: boot %q init %q, want %q and %q", c.in, cl.boot, cl.init, c.boot, c.init)
		}
	}
	// Device tokens go before the init arguments.
	cl, _ := ParseCmdline("console=ttyS0 -- init=/bin/sh", x86.CmdlineMaxSize)
	if err := cl.AddVirtioMMIODevice(x86.VirtioMMIOSize, x86.VirtioMMIOStart, 5); err != nil {
		t.Fatal(err)
	}
	if err := cl.InsertStr("pci=off"); err != nil {
		t.Fatal(err)
	}
	if got, want := cl.String(), "console=ttyS0 virtio_mmio.device=4K@0xc0001000:5 pci=off -- init=/bin/sh"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	if _, err := ParseCmdline("a\x00b", 100); !errors.Is(err, ErrCmdlineInvalid) {
		t.Errorf("NUL: %v", err)
	}
	if _, err := ParseCmdline("abc", 0); !errors.Is(err, ErrCmdlineInvalid) {
		t.Errorf("capacity 0: %v", err)
	}
	// Only init arguments: accepted until something is inserted before them.
	cl, err := ParseCmdline(" -- x", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AsCString(); !errors.Is(err, ErrCmdlineInvalid) {
		t.Errorf("init args only: %v", err)
	}
	if err := cl.InsertStr("a"); err != nil {
		t.Fatal(err)
	}
	if b, err := cl.AsCString(); err != nil || string(b) != "a -- x\x00" {
		t.Errorf("got %q, %v", b, err)
	}
}

func TestCmdlineLimits(t *testing.T) {
	// Firecracker's limit: 2048 bytes including the NUL.
	long := strings.Repeat("a", x86.CmdlineMaxSize-1)
	if _, err := ParseCmdline(long, x86.CmdlineMaxSize); err != nil {
		t.Fatalf("2047 characters: %v", err)
	}
	if _, err := ParseCmdline(long+"a", x86.CmdlineMaxSize); !errors.Is(err, ErrCmdlineTooLarge) {
		t.Fatalf("2048 characters: %v", err)
	}
	if _, err := ParseCmdline("a -- "+strings.Repeat("b", x86.CmdlineMaxSize-5), x86.CmdlineMaxSize); !errors.Is(err, ErrCmdlineTooLarge) {
		t.Fatalf("init args counted: %v", err)
	}

	c, _ := NewCmdline(10)
	if err := c.InsertStr("12345678"); err != nil { // 8 + NUL = 9
		t.Fatal(err)
	}
	if err := c.InsertStr("x"); !errors.Is(err, ErrCmdlineTooLarge) { // needs a space too
		t.Fatalf("over by one: %v", err)
	}
	c, _ = NewCmdline(10)
	_ = c.InsertStr("1234")
	if err := c.InsertInitArgs("x"); err != nil { // 4 + " -- " + 1 + NUL = 10: fits
		t.Fatal(err)
	}
	if c.Size() != 10 || c.String() != "1234 -- x" {
		t.Fatalf("got %q", c.String())
	}
	if err := c.InsertInitArgs("y"); !errors.Is(err, ErrCmdlineTooLarge) {
		t.Fatalf("init args over: %v", err)
	}
	// A failed insert changes nothing.
	if c.String() != "1234 -- x" {
		t.Fatalf("failed insert modified the line: %q", c.String())
	}
	// Each device token eats into the budget: the 2048 limit is reached
	// after a few dozen devices.
	c, _ = NewCmdline(x86.CmdlineMaxSize)
	n := 0
	for ; ; n++ {
		if err := c.AddVirtioMMIODevice(0x1000, uint64(0xc0001000+0x1000*n), uint32(5+n%19)); err != nil {
			if !errors.Is(err, ErrCmdlineTooLarge) {
				t.Fatal(err)
			}
			break
		}
	}
	if n < 17 || c.Size() > x86.CmdlineMaxSize {
		t.Fatalf("%d devices, size %d", n, c.Size())
	}
	if _, err := NewCmdline(0); err == nil {
		t.Fatal("capacity 0 accepted")
	}
}

func TestCmdlineValidation(t *testing.T) {
	c, _ := NewCmdline(100)
	bad := []struct{ k, v string }{
		{"", "x"},
		{"a b", "x"},
		{"a=b", "x"},
		{"a\x00", "x"},
		{"a", "b c"},
		{"a", `"b" "c"`},
		{"a", `hello "world`},
		{"a", "x\ny"},
		{"a", "\x7f"},
		{"é", "x"},
	}
	for _, b := range bad {
		if err := c.Insert(b.k, b.v); !errors.Is(err, ErrCmdlineInvalid) {
			t.Errorf("Insert(%q, %q) = %v", b.k, b.v, err)
		}
	}
	for _, s := range []string{"a\x00b", "a\x01", "naïve"} {
		if err := c.InsertStr(s); !errors.Is(err, ErrCmdlineInvalid) {
			t.Errorf("InsertStr(%q) = %v", s, err)
		}
		if err := c.InsertInitArgs(s); !errors.Is(err, ErrCmdlineInvalid) {
			t.Errorf("InsertInitArgs(%q) = %v", s, err)
		}
	}
	if err := c.AddVirtioMMIODevice(0, 0x1000, 5); !errors.Is(err, ErrCmdlineInvalid) {
		t.Errorf("zero-sized device: %v", err)
	}
	if c.String() != "" {
		t.Fatalf("rejected inserts left %q", c.String())
	}
	for _, kv := range [][2]string{{"a", ""}, {"a", `"b c"`}, {"a", `""`}, {"a.b-c_d", "x,y:z"}} {
		if err := c.Insert(kv[0], kv[1]); err != nil {
			t.Errorf("Insert(%q, %q) = %v", kv[0], kv[1], err)
		}
	}
}

func TestLoadCmdline(t *testing.T) {
	mem := newGuest(t, 1<<20)
	c, _ := ParseCmdline("console=ttyS0 -- x", x86.CmdlineMaxSize)
	n, err := LoadCmdline(mem, x86.CmdlineStart, c)
	if err != nil || n != len("console=ttyS0 -- x")+1 {
		t.Fatalf("%d, %v", n, err)
	}
	if got := mustRead(t, mem, x86.CmdlineStart, uint64(n)); string(got) != "console=ttyS0 -- x\x00" {
		t.Fatalf("memory holds %q", got)
	}
	if _, err := LoadCmdline(mem, 1<<20-4, c); err == nil {
		t.Fatal("write past RAM accepted")
	}
}
