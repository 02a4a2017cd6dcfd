package x86

import (
	"encoding/binary"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

// newGuest maps size bytes of anonymous guest RAM at 0.
func newGuest(t *testing.T, size uint64) *memory.Guest {
	t.Helper()
	mem, err := memory.New([]memory.Layout{{Start: 0, Size: size}}, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// read returns a copy of guest memory [gpa, gpa+n).
func read(t *testing.T, mem *memory.Guest, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := mem.ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return b
}

func u16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func u32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func u64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }

// sum8 is the byte sum of b; ACPI and MP tables sum to zero.
func sum8(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}
