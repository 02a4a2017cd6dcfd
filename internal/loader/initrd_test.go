package loader

import (
	"bytes"
	"errors"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

func TestLoadInitrd(t *testing.T) {
	const ram = 16 << 20
	mem := newGuest(t, ram)
	if got := LowRAMEnd(mem); got != ram {
		t.Fatalf("LowRAMEnd = %#x", got)
	}
	data := pattern(5000, 4)
	addr, err := LoadInitrd(mem, bytes.NewReader(data), int64(len(data)), ram, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Top of RAM minus the size, aligned down to a page.
	if want := uint64(ram-5000) &^ 0xfff; addr != want {
		t.Fatalf("addr %#x, want %#x", addr, want)
	}
	if got := mustRead(t, mem, addr, 5000); !bytes.Equal(got, data) {
		t.Fatal("initrd not copied")
	}

	// Exactly fills the space above the kernel.
	data = pattern(ram-(2<<20), 5)
	if addr, err := LoadInitrd(mem, bytes.NewReader(data), int64(len(data)), ram, 2<<20); err != nil || addr != 2<<20 {
		t.Fatalf("exact fit: %#x, %v", addr, err)
	}
	// Empty initrd: placed at the top, nothing copied.
	if addr, err := LoadInitrd(mem, bytes.NewReader(nil), 0, ram, 2<<20); err != nil || addr != ram {
		t.Fatalf("empty: %#x, %v", addr, err)
	}
}

func TestLoadInitrdErrors(t *testing.T) {
	const ram = 16 << 20
	mem := newGuest(t, ram)
	big := make([]byte, ram-(2<<20)+1)
	cases := []struct {
		name          string
		size          int64
		low, kernEnd  uint64
		wantPlacement bool
	}{
		{"overlaps kernel", int64(len(big)), ram, 2 << 20, true},
		{"larger than low RAM", ram + 1, ram, 0, true},
		{"negative size", -1, ram, 0, true},
		{"low RAM end beyond memory", 4096, ram + 8192, 0, true},
		{"above 4 GiB", 4096, 1<<32 + 8192, 0, true},
		{"short reader", 8192, ram, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bytes.NewReader(big)
			if c.name == "short reader" {
				r = bytes.NewReader(make([]byte, 100))
			}
			_, err := LoadInitrd(mem, r, c.size, c.low, c.kernEnd)
			if err == nil || errors.Is(err, ErrInitrdPlacement) != c.wantPlacement {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestLowRAMEnd(t *testing.T) {
	mem := newGuestLayout(t, memory.Layout{Start: 1 << 20, Size: 1 << 20})
	if got := LowRAMEnd(mem); got != 0 {
		t.Fatalf("no region at 0: %#x", got)
	}
	mem = newGuestLayout(t, memory.Layout{Start: 0, Size: 3 << 20}, memory.Layout{Start: 1 << 32, Size: 1 << 20})
	if got := LowRAMEnd(mem); got != 3<<20 {
		t.Fatalf("two regions: %#x", got)
	}
}
