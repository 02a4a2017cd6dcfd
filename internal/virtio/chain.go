package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/squib-vmm/squib/internal/memory"
)

// Errors for malformed descriptor chains, wrapped in a *ChainError.
var (
	// ErrDescIndex: a head or next index is not below the queue size.
	ErrDescIndex = errors.New("descriptor index out of range")
	// ErrChainTooLong: the chain has more descriptors than the queue,
	// so it loops.
	ErrChainTooLong = errors.New("descriptor chain longer than the queue")
	// ErrDescMemory: a buffer is not wholly inside one guest RAM region.
	ErrDescMemory = errors.New("descriptor buffer outside guest memory")
	// ErrDescOrder: a device-readable descriptor follows a writable one.
	ErrDescOrder = errors.New("readable descriptor after a writable one")
	// ErrIndirect: an indirect descriptor, which is never negotiated.
	ErrIndirect = errors.New("indirect descriptors are not supported")
	// ErrChainLength: the buffers add up to more than 4 GiB - 1, which a
	// used entry's 32-bit length cannot express.
	ErrChainLength = errors.New("descriptor chain length overflows 32 bits")
	// ErrEmptyChain: every buffer of the chain is empty.
	ErrEmptyChain = errors.New("descriptor chain has no data")
)

// ChainError reports a malformed chain that Pop consumed.
type ChainError struct {
	// Head is the chain's head index as the driver published it; it may be
	// out of range (then errors.Is(Err, ErrDescIndex)).
	Head uint16
	// Err is one of the Err* chain errors, wrapped with details.
	Err error
}

// Error describes the chain and what is wrong with it.
func (e *ChainError) Error() string {
	return fmt.Sprintf("invalid descriptor chain (head %d): %v", e.Head, e.Err)
}

// Unwrap returns Err.
func (e *ChainError) Unwrap() error { return e.Err }

// Descriptor is a descriptor table entry (virtq_desc). In a chain from Pop
// it is a validated copy: its buffer [Addr, Addr+Len) lies inside one
// guest RAM region.
type Descriptor struct {
	Addr  uint64 // guest-physical address of the buffer
	Len   uint32 // buffer length in bytes
	Flags uint16 // DescFlag* bits
	Next  uint16 // next descriptor's index, with DescFlagNext
}

// IsWriteOnly reports whether the device writes (rather than reads) the
// buffer.
func (d Descriptor) IsWriteOnly() bool { return d.Flags&DescFlagWrite != 0 }

// inlineDescs covers the chains devices see most (block: header, data,
// status; net tx: one or two buffers) without a second allocation.
const inlineDescs = 4

// DescriptorChain is a chain popped from a queue, fully validated: at most
// queue-size descriptors, each buffer inside guest memory, the readable
// ones before the writable ones, at most 4 GiB - 1 bytes in all and not
// empty. The guest may still rewrite the descriptor table or the buffers;
// the chain keeps its own copy of the descriptors, and buffers are only
// ever reached through memory.Guest.
type DescriptorChain struct {
	// Head is the index of the first descriptor: give it to AddUsed.
	Head uint16

	mem               *memory.Guest
	descs             []Descriptor
	readable          int
	readLen, writeLen uint32
	inline            [inlineDescs]Descriptor
}

// walk reads and validates the chain starting at c.Head.
func (q *Queue) walk(mem *memory.Guest, c *DescriptorChain) error {
	c.descs = c.inline[:0]
	var total uint64
	writable := false
	idx := c.Head
	for n := 0; ; n++ {
		if idx >= q.size {
			return fmt.Errorf("%w: %d in a queue of %d", ErrDescIndex, idx, q.size)
		}
		// A chain that visits more descriptors than exist revisits one.
		if n == int(q.size) {
			return fmt.Errorf("%w: more than %d descriptors", ErrChainTooLong, q.size)
		}
		raw, err := mem.Slice(q.desc+descSize*uint64(idx), descSize)
		if err != nil {
			return err
		}
		// Each field is read once; the checks below apply to this copy.
		d := Descriptor{
			Addr:  binary.LittleEndian.Uint64(raw[0:8]),
			Len:   binary.LittleEndian.Uint32(raw[8:12]),
			Flags: binary.LittleEndian.Uint16(raw[12:14]),
			Next:  binary.LittleEndian.Uint16(raw[14:16]),
		}
		if d.Flags&DescFlagIndirect != 0 {
			return fmt.Errorf("%w: descriptor %d", ErrIndirect, idx)
		}
		if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
			return fmt.Errorf("%w: descriptor %d [%#x, +%#x)", ErrDescMemory, idx, d.Addr, d.Len)
		}
		if d.IsWriteOnly() {
			writable = true
			c.writeLen += d.Len // cannot wrap: total is checked below
		} else {
			if writable {
				return fmt.Errorf("%w: descriptor %d", ErrDescOrder, idx)
			}
			c.readable++
			c.readLen += d.Len
		}
		total += uint64(d.Len)
		if total > math.MaxUint32 {
			return ErrChainLength
		}
		c.descs = append(c.descs, d)
		if d.Flags&DescFlagNext == 0 {
			break
		}
		idx = d.Next
	}
	if total == 0 {
		return ErrEmptyChain
	}
	return nil
}

// Descriptors returns the chain's descriptors in order. The slice is the
// chain's own: do not modify it.
func (c *DescriptorChain) Descriptors() []Descriptor { return c.descs }

// Readable returns the device-readable descriptors (the chain's first
// part).
func (c *DescriptorChain) Readable() []Descriptor { return c.descs[:c.readable] }

// Writable returns the device-writable descriptors (the chain's last part).
func (c *DescriptorChain) Writable() []Descriptor { return c.descs[c.readable:] }

// ReadableLen is the total length of the readable buffers.
func (c *DescriptorChain) ReadableLen() uint32 { return c.readLen }

// WritableLen is the total length of the writable buffers.
func (c *DescriptorChain) WritableLen() uint32 { return c.writeLen }

// Reader returns a reader over the readable buffers.
func (c *DescriptorChain) Reader() Reader {
	return Reader{r: cursor{mem: c.mem, descs: c.Readable(), left: c.readLen}}
}

// Writer returns a writer over the writable buffers.
func (c *DescriptorChain) Writer() Writer {
	return Writer{w: cursor{mem: c.mem, descs: c.Writable(), left: c.writeLen}}
}

// ReadableBuffers returns the non-empty readable buffers as slices of guest
// memory, for vectored I/O (writev to a tap or file). They alias guest
// memory, which the guest may change at any time.
func (c *DescriptorChain) ReadableBuffers() ([][]byte, error) { return buffers(c.mem, c.Readable()) }

// WritableBuffers returns the non-empty writable buffers as slices of guest
// memory, for vectored I/O (readv). They alias guest memory.
func (c *DescriptorChain) WritableBuffers() ([][]byte, error) { return buffers(c.mem, c.Writable()) }

func buffers(mem *memory.Guest, descs []Descriptor) ([][]byte, error) {
	out := make([][]byte, 0, len(descs))
	for _, d := range descs {
		if d.Len == 0 {
			continue
		}
		b, err := mem.Slice(d.Addr, uint64(d.Len))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// cursor walks a run of descriptors' buffers.
type cursor struct {
	mem   *memory.Guest
	descs []Descriptor // descs[0] is the current buffer
	off   uint32       // position in descs[0]
	left  uint32       // bytes left in all of descs
	done  uint32       // bytes consumed so far
}

// next returns up to n bytes of guest memory at the cursor and advances.
func (c *cursor) next(n int) ([]byte, error) {
	for len(c.descs) > 0 && c.off == c.descs[0].Len {
		c.descs, c.off = c.descs[1:], 0
	}
	if len(c.descs) == 0 || n == 0 {
		return nil, nil
	}
	d := c.descs[0]
	k := uint32(min(uint64(n), uint64(d.Len-c.off)))
	// Addr+off cannot overflow: [Addr, Addr+Len) was found in RAM.
	b, err := c.mem.Slice(d.Addr+uint64(c.off), uint64(k))
	if err != nil {
		return nil, err
	}
	c.off += k
	c.left -= k
	c.done += k
	return b, nil
}

// Reader reads a chain's readable buffers in order, copying out of guest
// memory. It implements io.Reader.
type Reader struct{ r cursor }

// Read copies up to len(p) bytes; it returns io.EOF once the buffers are
// exhausted.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.r.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) {
		b, err := r.r.next(len(p) - n)
		if err != nil {
			return n, err
		}
		if b == nil {
			break
		}
		n += copy(p[n:], b)
	}
	return n, nil
}

// Discard skips up to n bytes and returns how many it skipped.
func (r *Reader) Discard(n int) int {
	k := 0
	for k < n {
		b, err := r.r.next(n - k)
		if err != nil || b == nil {
			break
		}
		k += len(b)
	}
	return k
}

// Remaining is the number of bytes left to read.
func (r *Reader) Remaining() int { return int(r.r.left) }

// Consumed is the number of bytes read (or discarded) so far.
func (r *Reader) Consumed() int { return int(r.r.done) }

// Writer writes a chain's writable buffers in order, copying into guest
// memory. It implements io.Writer.
type Writer struct{ w cursor }

// Write copies p into the buffers; if they are too small it writes what
// fits and returns io.ErrShortWrite.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		b, err := w.w.next(len(p) - n)
		if err != nil {
			return n, err
		}
		if b == nil {
			return n, io.ErrShortWrite
		}
		n += copy(b, p[n:])
	}
	return n, nil
}

// Remaining is the space left in the buffers.
func (w *Writer) Remaining() int { return int(w.w.left) }

// Written is the number of bytes written so far: the length to report in
// AddUsed.
func (w *Writer) Written() int { return int(w.w.done) }
