package loader

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestLoadBzImage(t *testing.T) {
	mem := newGuest(t, 4<<20)
	o := defaultBz()
	img := buildBzImage(o)
	k, err := loadBytes(mem, img)
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatBzImage || k.Entry != 0x100200 || k.PVHEntry != 0 || k.End != 0x101000 {
		t.Fatalf("got %+v", *k)
	}
	// Relocatable, load 1 MiB aligned up to 2 MiB, above pref_address:
	// the decompressor works at [2 MiB, +init_size).
	if k.RuntimeEnd != 0x200000+0x3000 {
		t.Errorf("RuntimeEnd = %#x", k.RuntimeEnd)
	}
	if got := mustRead(t, mem, 0x100000, 0x1000); !bytes.Equal(got, o.payload) {
		t.Error("protected-mode kernel not copied to code32_start")
	}
	if got := mustRead(t, mem, 0x101000, 16); !bytes.Equal(got, make([]byte, 16)) {
		t.Error("copied past the end of the image")
	}
	// The setup header is 0x1f1 up to 0x202+jump, verbatim.
	if len(k.SetupHeader) != 0x26c-SetupHeaderOffset || !bytes.Equal(k.SetupHeader, img[SetupHeaderOffset:0x26c]) {
		t.Fatalf("SetupHeader is %d bytes, differs from the image's", len(k.SetupHeader))
	}
	if string(k.SetupHeader[0x202-SetupHeaderOffset:][:4]) != "HdrS" {
		t.Error("no HdrS in SetupHeader")
	}
}

func TestLoadBzImageVariants(t *testing.T) {
	cases := []struct {
		name            string
		mod             func(*bzOpts)
		entry, end, rte uint64
		hdrLen          int
	}{
		{"setup_sects 0 means 4", func(o *bzOpts) { o.setupSects = 0 }, 0x100200, 0x101000, 0x203000, 0x7b},
		{"many setup sectors", func(o *bzOpts) { o.setupSects = 39 }, 0x100200, 0x101000, 0x203000, 0x7b},
		{"code32_start elsewhere", func(o *bzOpts) { o.code32 = 0x200000 }, 0x200200, 0x201000, 0x203000, 0x7b},
		{"pref_address above", func(o *bzOpts) { o.pref = 0x1000000; o.initSize = 0x800000 }, 0x100200, 0x101000, 0x1800000, 0x7b},
		{"not relocatable", func(o *bzOpts) { o.reloc = 0; o.pref = 0x100000 }, 0x100200, 0x101000, 0x103000, 0x7b},
		{"odd alignment ignored", func(o *bzOpts) { o.align = 3 }, 0x100200, 0x101000, 0x103000, 0x7b},
		{"init_size below image", func(o *bzOpts) { o.initSize = 0; o.align = 0 }, 0x100200, 0x101000, 0x101000, 0x7b},
		{"short jump clamped up", func(o *bzOpts) { o.jump = 0 }, 0x100200, 0x101000, 0x203000, bzMinHeaderEnd - SetupHeaderOffset},
		{"long jump clamped down", func(o *bzOpts) { o.jump = 0xff }, 0x100200, 0x101000, 0x203000, bzMaxHeaderEnd - SetupHeaderOffset},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := defaultBz()
			c.mod(&o)
			k, err := loadBytes(newGuest(t, 4<<20), buildBzImage(o))
			if err != nil {
				t.Fatal(err)
			}
			if k.Entry != c.entry || k.End != c.end || k.RuntimeEnd != c.rte || len(k.SetupHeader) != c.hdrLen {
				t.Fatalf("got entry %#x end %#x runtime end %#x header %#x", k.Entry, k.End, k.RuntimeEnd, len(k.SetupHeader))
			}
		})
	}
}

func TestLoadBzImageErrors(t *testing.T) {
	const ram = 4 << 20
	cases := []struct {
		name string
		mod  func(*bzOpts)
		want string
	}{
		{"protocol 2.11", func(o *bzOpts) { o.version = 0x020b }, "older than 2.12"},
		{"protocol 2.0", func(o *bzOpts) { o.version = 0x0200 }, "older than 2.12"},
		{"no XLF_KERNEL_64", func(o *bzOpts) { o.xloadflags = 0x7e }, "XLF_KERNEL_64"},
		{"not loaded high", func(o *bzOpts) { o.loadflags = 0 }, "LOADED_HIGH"},
		{"code32_start below 1MiB", func(o *bzOpts) { o.code32 = 0x10000 }, "below 0x100000"},
		{"kernel past RAM", func(o *bzOpts) { o.code32 = ram - 0x800 }, "does not fit"},
		{"code32_start outside RAM", func(o *bzOpts) { o.code32 = 0xfffff000 }, "does not fit"},
		{"no payload", func(o *bzOpts) { o.payload = nil }, "no protected-mode kernel"},
		{"setup sectors past the end", func(o *bzOpts) { o.setupSects = 200 }, "no protected-mode kernel"},
		{"pref_address overflows", func(o *bzOpts) { o.pref = ^uint64(0) - 1 }, "overflows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := defaultBz()
			c.mod(&o)
			img := buildBzImage(o)
			if c.name == "setup sectors past the end" {
				img = img[:4096+512] // setup claims 201 sectors
			}
			mem := newGuest(t, ram)
			_, err := loadBytes(mem, img)
			if !errors.Is(err, ErrInvalidKernel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want ErrInvalidKernel mentioning %q", err, c.want)
			}
			if got := mustRead(t, mem, 0, ram); !bytes.Equal(got, make([]byte, ram)) {
				t.Fatal("a rejected image wrote guest memory")
			}
		})
	}
}

func TestLoadBzImageTruncated(t *testing.T) {
	mem := newGuest(t, 4<<20)
	img := buildBzImage(defaultBz())
	setup := (4 + 1) * bzSectorSize
	for n := range setup + 1 {
		if _, err := loadBytes(mem, img[:n]); !errors.Is(err, ErrInvalidKernel) {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
	}
	// One payload byte is a (tiny) kernel.
	if k, err := loadBytes(mem, img[:setup+1]); err != nil || k.End != 0x100001 {
		t.Fatalf("one-byte payload: %+v, %v", k, err)
	}
}
