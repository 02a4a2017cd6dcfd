package loader

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/squib-vmm/squib/internal/arch/x86"
)

// realKernel returns a distribution bzImage: $SQUIB_TEST_KERNEL, else the
// first /boot/vmlinuz-*. The tests using it skip when there is none.
func realKernel(t *testing.T) []byte {
	t.Helper()
	path := os.Getenv("SQUIB_TEST_KERNEL")
	if path == "" {
		m, _ := filepath.Glob("/boot/vmlinuz-*")
		if len(m) == 0 {
			t.Skip("no kernel: set SQUIB_TEST_KERNEL to a bzImage")
		}
		path = m[0]
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("kernel %s unreadable: %v", path, err)
	}
	return b
}

func TestRealKernelBzImage(t *testing.T) {
	img := realKernel(t)
	mem := newGuest(t, 256<<20)
	f := bytes.NewReader(img)
	k, err := Load(mem, f, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	code32 := uint64(le.Uint32(img[bzCode32StartOff:]))
	if k.Format != FormatBzImage || k.Entry != code32+BzImage64EntryOffset || k.PVHEntry != 0 {
		t.Fatalf("got %+v", *k)
	}
	hdrEnd := 0x202 + int(img[bzJumpOff])
	if !bytes.Equal(k.SetupHeader, img[SetupHeaderOffset:hdrEnd]) {
		t.Fatalf("setup header: %d bytes, want %d", len(k.SetupHeader), hdrEnd-SetupHeaderOffset)
	}
	initSize := uint64(le.Uint32(img[bzInitSizeOff:]))
	if k.RuntimeEnd < k.End || k.RuntimeEnd < initSize {
		t.Fatalf("RuntimeEnd %#x, End %#x, init_size %#x", k.RuntimeEnd, k.End, initSize)
	}
	t.Logf("bzImage: protocol %#x, entry %#x, end %#x, runtime end %#x", le.Uint16(img[bzVersionOff:]), k.Entry, k.End, k.RuntimeEnd)
	sects := uint64(img[bzSetupSectsOff])
	if sects == 0 {
		sects = bzDefaultSetupSect
	}
	setup := (sects + 1) * bzSectorSize
	if got := mustRead(t, mem, code32, 4096); !bytes.Equal(got, img[setup:setup+4096]) {
		t.Fatal("protected-mode kernel not at code32_start")
	}
	initrd := pattern(1<<20, 1)
	addr, err := LoadInitrd(mem, bytes.NewReader(initrd), int64(len(initrd)), LowRAMEnd(mem), k.RuntimeEnd)
	if err != nil || addr < k.RuntimeEnd {
		t.Fatalf("initrd at %#x: %v", addr, err)
	}
}

// extractVmlinux decompresses the ELF payload of a bzImage, as
// extract-vmlinux does through payload_offset and payload_length.
func extractVmlinux(t *testing.T, img []byte) []byte {
	t.Helper()
	sects := uint64(img[bzSetupSectsOff])
	if sects == 0 {
		sects = bzDefaultSetupSect
	}
	off := (sects+1)*bzSectorSize + uint64(le.Uint32(img[0x248:]))
	n := uint64(le.Uint32(img[0x24c:]))
	if off+n > uint64(len(img)) || n < 8 {
		t.Fatalf("payload [%#x, +%#x) outside the image", off, n)
	}
	payload := img[off : off+n]
	// The build appends the uncompressed size, little-endian, after the
	// compressed stream.
	want := le.Uint32(payload[n-4:])
	var out []byte
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		if out, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		out = runDecompressor(t, payload, "xz", "-dc", "--single-stream")
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		out = runDecompressor(t, payload, "zstd", "-dcq")
	default:
		t.Skipf("payload compression % x not handled", payload[:4])
	}
	if uint32(len(out)) != want {
		t.Fatalf("decompressed %d bytes, trailer says %d", len(out), want)
	}
	return out
}

func runDecompressor(t *testing.T, in []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &out, &stderr
	// The size trailer may upset some decompressors; the length check
	// after this catches a real failure.
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		t.Fatalf("%s: %v: %s", name, err, stderr.Bytes())
	}
	return out.Bytes()
}

func TestRealKernelELF(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses a whole kernel")
	}
	vmlinux := extractVmlinux(t, realKernel(t))
	ef, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	var end uint64
	var first *elf.Prog
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			end = max(end, p.Paddr+p.Memsz)
			if first == nil {
				first = p
			}
		}
	}
	mem := newGuest(t, 256<<20)
	k, err := Load(mem, bytes.NewReader(vmlinux), int64(len(vmlinux)))
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatELF || k.Entry != ef.Entry || k.End != end || k.SetupHeader != nil {
		t.Fatalf("got entry %#x end %#x, want %#x and %#x", k.Entry, k.End, ef.Entry, end)
	}
	// Debian's kernels are built with CONFIG_PVH.
	if k.PVHEntry < x86.HimemStart || k.PVHEntry >= end {
		t.Fatalf("PVH entry %#x not inside the kernel [.., %#x)", k.PVHEntry, end)
	}
	t.Logf("vmlinux: entry %#x, PVH entry %#x, end %#x", k.Entry, k.PVHEntry, k.End)
	n := min(first.Filesz, 1<<20)
	if got := mustRead(t, mem, first.Paddr, n); !bytes.Equal(got, vmlinux[first.Off:first.Off+n]) {
		t.Fatal("first segment not at its p_paddr")
	}
}
