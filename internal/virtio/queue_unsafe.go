package virtio

import (
	"sync/atomic"
	"unsafe"

	"github.com/squib-vmm/squib/internal/memory"
)

// halfWord is a 16-bit ring field (avail.idx, used_event, used.idx,
// avail_event) that the guest and the device access concurrently. Go has
// no 16-bit atomics, so the field is accessed through 32-bit atomics on the
// naturally aligned word that contains it; sequentially consistent atomics
// also stand in for the fences Firecracker issues around these fields.
//
// Hosts are little-endian (x86-64, arm64), so the half at the lower address
// is the low 16 bits of the word, and both halves are little-endian as the
// ring format requires.
type halfWord struct {
	field uint64 // guest address of the field
	word  uint64 // guest address of the aligned word holding it
	shift uint32 // 0: field is the word's low half; 16: its high half
	// atomic is false when the containing word is not wholly inside one
	// RAM region, or its host address is not 4-aligned. Both need a RAM
	// region whose start or size is not a multiple of 4, which the machine
	// never creates; the field is then accessed with plain 16-bit copies.
	atomic bool
}

// locateHalf finds the word holding the 2-byte field at gpa, which
// Initialize has checked is inside guest memory.
func locateHalf(mem *memory.Guest, gpa uint64) halfWord {
	h := halfWord{field: gpa}
	s, err := mem.Slice(gpa, 2)
	if err != nil {
		return h
	}
	switch uintptr(unsafe.Pointer(unsafe.SliceData(s))) & 3 {
	case 0:
		h.word, h.shift = gpa, 0
	case 2:
		if gpa < 2 {
			return h
		}
		h.word, h.shift = gpa-2, 16
	default:
		return h
	}
	w, err := mem.Slice(h.word, 4)
	if err != nil || uintptr(unsafe.Pointer(unsafe.SliceData(w)))&3 != 0 {
		return h
	}
	h.atomic = true
	return h
}

// wordPtr returns the host word holding h.
//
// Soundness: w comes from memory.Guest.Slice, so it is 4 bytes of an mmap'd
// guest RAM region: outside the Go heap (the collector never moves or frees
// it), mapped until Guest.Close, after which no queue may be used. Its
// address was checked 4-aligned here, so the *uint32 covers exactly w and
// is valid for sync/atomic; it is used at once and never retained.
func (h halfWord) wordPtr(mem *memory.Guest) (*uint32, error) {
	w, err := mem.Slice(h.word, 4)
	if err != nil {
		return nil, err
	}
	p := unsafe.Pointer(unsafe.SliceData(w))
	if uintptr(p)&3 != 0 {
		return nil, memory.ErrOutOfBounds // the layout changed under us; cannot happen
	}
	return (*uint32)(p), nil
}

func (h halfWord) load(mem *memory.Guest) (uint16, error) {
	if !h.atomic {
		return mem.ReadU16(h.field)
	}
	p, err := h.wordPtr(mem)
	if err != nil {
		return 0, err
	}
	return uint16(atomic.LoadUint32(p) >> h.shift), nil
}

// casRetries bounds the compare-and-swap loop of store: the other half of
// the word may belong to the guest, which could keep changing it.
const casRetries = 64

// store replaces the field and leaves the other half of the word as the
// guest last wrote it: a compare-and-swap, not a 32-bit store, because
// that half may be guest-owned (avail_event's neighbour lies past the used
// ring).
func (h halfWord) store(mem *memory.Guest, v uint16) error {
	if !h.atomic {
		return mem.WriteU16(h.field, v)
	}
	p, err := h.wordPtr(mem)
	if err != nil {
		return err
	}
	mask := uint32(0xffff) << h.shift
	for range casRetries {
		old := atomic.LoadUint32(p)
		if atomic.CompareAndSwapUint32(p, old, old&^mask|uint32(v)<<h.shift) {
			return nil
		}
	}
	// A guest hammering the neighbouring half only delays its own
	// interrupts; fall back to a plain 16-bit store, then fence with an
	// atomic no-op so it is ordered like the CAS would have been.
	err = mem.WriteU16(h.field, v)
	atomic.AddUint32(p, 0)
	return err
}
