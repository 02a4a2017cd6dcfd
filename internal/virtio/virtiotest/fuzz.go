package virtiotest

import "github.com/squib-vmm/squib/internal/virtio"

// FuzzInput reads a fuzz input as little-endian integers, yielding zeros
// once it runs out, so that a fuzz target can take as many values as it
// needs from any input.
type FuzzInput struct{ b []byte }

// NewFuzzInput reads b.
func NewFuzzInput(b []byte) *FuzzInput { return &FuzzInput{b: b} }

// Len is the number of bytes left.
func (in *FuzzInput) Len() int { return len(in.b) }

// Rest returns the bytes left, without consuming them.
func (in *FuzzInput) Rest() []byte { return in.b }

// U8 takes one byte.
func (in *FuzzInput) U8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

// U16 takes a little-endian uint16.
func (in *FuzzInput) U16() uint16 { return uint16(in.U8()) | uint16(in.U8())<<8 }

// U24 takes a little-endian 24-bit number.
func (in *FuzzInput) U24() uint32 { return uint32(in.U16()) | uint32(in.U8())<<16 }

// Bytes takes n bytes, zero-padded past the end of the input.
func (in *FuzzInput) Bytes(n int) []byte {
	out := make([]byte, n)
	k := copy(out, in.b)
	in.b = in.b[k:]
	return out
}

// FuzzTable fills r's whole descriptor table verbatim from in, then
// publishes heads: it models a driver that writes anything at all. Each
// descriptor takes a 24-bit address (masked with mask, added to base), a
// 16-bit length, a flags byte and a next index (a byte, below twice the
// ring size, so some are out of range). Flag bit 7 is not a virtio flag:
// it shifts the length up 16 bits, past any region or towards 32-bit
// overflow. The heads, taken from the rest of the input, are bytes below
// the ring size plus 4, at most twice the ring size of them (more than the
// queue holds). SeedDescriptor encodes a descriptor, for seeds.
func FuzzTable(r *Ring, in *FuzzInput, base uint64, mask uint32) {
	for i := range r.Size {
		d := virtio.Descriptor{
			Addr:  base + uint64(in.U24()&mask),
			Len:   uint32(in.U16()),
			Flags: uint16(in.U8()),
			Next:  uint16(in.U8()) % (2 * r.Size),
		}
		if d.Flags&0x80 != 0 {
			d.Len <<= 16
		}
		d.Flags &^= 0x80
		r.SetDesc(i, d)
	}
	var heads []uint16
	for in.Len() > 0 && len(heads) < 2*int(r.Size) {
		heads = append(heads, uint16(in.U8())%(r.Size+4))
	}
	r.Publish(heads...)
}

// SeedDescriptor encodes a descriptor as FuzzTable reads it.
func SeedDescriptor(addr uint32, n uint16, flags, next byte) []byte {
	return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), flags, next}
}

// FuzzChains adds chains to r the way a driver would, decoded from in
// until it runs out or the ring size plus 2 chains are added (the table
// wraps, so later chains may overwrite earlier ones). A chain is a byte
// (its buffer count, 1 to 4: the byte mod 4, plus 1), then per buffer a
// 24-bit address (masked with mask, added to base), a 16-bit length and a
// flags byte that writable maps to the buffer's direction. SeedChain and
// SeedBuffer encode chains, for seeds.
func FuzzChains(r *Ring, in *FuzzInput, base uint64, mask uint32, writable func(flags byte) bool) {
	for n := 0; in.Len() > 0 && n < int(r.Size)+2; n++ {
		bufs := make([]Buffer, in.U8()%4+1)
		for i := range bufs {
			bufs[i] = Buffer{
				Addr:     base + uint64(in.U24()&mask),
				Len:      uint32(in.U16()),
				Writable: writable(in.U8()),
			}
		}
		r.AddChain(bufs...)
	}
}

// SeedBuffer encodes a buffer as FuzzChains reads it.
func SeedBuffer(addr uint32, n uint16, flags byte) []byte {
	return []byte{byte(addr), byte(addr >> 8), byte(addr >> 16), byte(n), byte(n >> 8), flags}
}

// SeedChain encodes a chain of buffers from SeedBuffer as FuzzChains
// reads it.
func SeedChain(bufs ...[]byte) []byte {
	out := []byte{byte(len(bufs) - 1)}
	for _, b := range bufs {
		out = append(out, b...)
	}
	return out
}
