package virtio

import (
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
)

func TestLocateHalf(t *testing.T) {
	tests := []struct {
		start, size, gpa uint64
		atomic           bool
		word             uint64
		shift            uint32
	}{
		{0, 0x1000, 0x100, true, 0x100, 0},
		{0, 0x1000, 0x102, true, 0x100, 16},
		{2, 0x1000, 0x102, true, 0x102, 0},        // host alignment, not guest, decides
		{2, 0x1000, 0x104, true, 0x102, 16},       //
		{1, 0x1000, 0x102, false, 0, 0},           // odd host address: no aligned word
		{0, 0x1002, 0x1000, false, 0, 0},          // word would stick out of RAM
		{0, 0x1002, 0xffe, true, 0xffc, 16},       //
		{2, 0x1000, 0x2, true, 0x2, 0},            // word at the region start
		{0x1002, 0x1000, 0x1002, true, 0x1002, 0}, // host-aligned region start
	}
	for _, tc := range tests {
		mem, err := memory.New([]memory.Layout{{Start: tc.start, Size: tc.size}}, memory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		h := locateHalf(mem, tc.gpa)
		if h.atomic != tc.atomic || (h.atomic && (h.word != tc.word || h.shift != tc.shift)) {
			t.Errorf("region %#x+%#x field %#x: got %+v", tc.start, tc.size, tc.gpa, h)
		}
		// Whatever the access path, values round-trip and the neighbour
		// half is preserved.
		neighbour := mem.WriteU16(tc.gpa-2, 0x5555) == nil
		if err := h.store(mem, 0xbeef); err != nil {
			t.Errorf("store: %v", err)
		}
		if v, err := h.load(mem); v != 0xbeef || err != nil {
			t.Errorf("load = %#x, %v", v, err)
		}
		if v, _ := mem.ReadU16(tc.gpa); v != 0xbeef {
			t.Errorf("memory holds %#x", v)
		}
		if v, _ := mem.ReadU16(tc.gpa - 2); neighbour && v != 0x5555 {
			t.Errorf("neighbour clobbered: %#x", v)
		}
		mem.Close()
	}
}
