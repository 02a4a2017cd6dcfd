package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/squib-vmm/squib/internal/virtio"
)

// Packet header layout (struct virtio_vsock_hdr, linux/virtio_vsock.h):
// all fields little-endian, packed.
const (
	// HdrSize is the size of a vsock packet header.
	HdrSize = 44
	// MaxPktBufSize caps the payload of one packet in either direction
	// (Firecracker's MAX_PKT_BUF_SIZE).
	MaxPktBufSize = 64 << 10
	// HostCID is the host's context ID (VSOCK_HOST_CID).
	HostCID = 2
)

// Packet operations (enum virtio_vsock_op).
const (
	opRequest       uint16 = 1
	opResponse      uint16 = 2
	opRst           uint16 = 3
	opShutdown      uint16 = 4
	opRW            uint16 = 5
	opCreditUpdate  uint16 = 6
	opCreditRequest uint16 = 7
)

// OP_SHUTDOWN flags (enum virtio_vsock_shutdown).
const (
	flagShutdownRcv  uint32 = 1
	flagShutdownSend uint32 = 2
)

// typeStream is VIRTIO_VSOCK_TYPE_STREAM, the only socket type supported.
const typeStream uint16 = 1

// Errors from parsing packets out of descriptor chains.
var (
	errUnreadableDesc  = errors.New("TX chain has a device-writable descriptor")
	errUnwritableDesc  = errors.New("RX chain has a device-readable descriptor")
	errShortForHeader  = errors.New("descriptor chain too short for a packet header")
	errShortForPacket  = errors.New("descriptor chain too short for the packet length")
	errInvalidPktLen   = errors.New("packet length over the maximum")
	errNoData          = errors.New("no data")
	errGuestMemoryOOB  = errors.New("access past the packet buffer")
	errEmptyEventQueue = errors.New("vsock: no buffer in the event queue")
)

// header is a decoded virtio_vsock_hdr.
type header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       uint16
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

func (h *header) decode(b *[HdrSize]byte) {
	le := binary.LittleEndian
	h.SrcCID = le.Uint64(b[0:])
	h.DstCID = le.Uint64(b[8:])
	h.SrcPort = le.Uint32(b[16:])
	h.DstPort = le.Uint32(b[20:])
	h.Len = le.Uint32(b[24:])
	h.Type = le.Uint16(b[28:])
	h.Op = le.Uint16(b[30:])
	h.Flags = le.Uint32(b[32:])
	h.BufAlloc = le.Uint32(b[36:])
	h.FwdCnt = le.Uint32(b[40:])
}

func (h *header) encode(b *[HdrSize]byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

func (h *header) String() string {
	return fmt.Sprintf("{src %d:%d dst %d:%d len %d type %d op %d flags %#x buf_alloc %d fwd_cnt %d}",
		h.SrcCID, h.SrcPort, h.DstCID, h.DstPort, h.Len, h.Type, h.Op, h.Flags, h.BufAlloc, h.FwdCnt)
}

// txPacket is a guest-to-host packet: a header copied out of the chain (so
// later guest writes cannot change what was validated) and the chain's
// readable buffers, where the payload stays until it is written to the
// host socket or copied into a TX buffer.
type txPacket struct {
	hdr   header
	chain *virtio.DescriptorChain
	// bufSize is the room after the header (Firecracker's buf_size); the
	// payload is the first hdr.Len bytes of it.
	bufSize uint32
}

// parseTx validates a TX chain as Firecracker's VsockPacketTx::parse
// does: readable buffers only, at least a header, a payload length of at
// most MaxPktBufSize that fits the chain.
func parseTx(c *virtio.DescriptorChain) (txPacket, error) {
	if len(c.Writable()) > 0 {
		return txPacket{}, errUnreadableDesc
	}
	total := c.ReadableLen()
	if total < HdrSize {
		return txPacket{}, fmt.Errorf("%w: %d bytes", errShortForHeader, total)
	}
	var raw [HdrSize]byte
	r := c.Reader()
	if n, err := io.ReadFull(&r, raw[:]); err != nil {
		return txPacket{}, fmt.Errorf("%w: read %d: %v", errShortForHeader, n, err)
	}
	p := txPacket{chain: c, bufSize: total - HdrSize}
	p.hdr.decode(&raw)
	if p.hdr.Len > MaxPktBufSize {
		return txPacket{}, fmt.Errorf("%w: %d", errInvalidPktLen, p.hdr.Len)
	}
	if p.hdr.Len > p.bufSize {
		return txPacket{}, fmt.Errorf("%w: chain %d, packet %d", errShortForPacket, total, p.hdr.Len)
	}
	return p, nil
}

// dataBuffers returns the guest memory holding payload bytes [off, off+n),
// for a vectored write to the host socket.
func (p *txPacket) dataBuffers(off, n uint32) ([][]byte, error) {
	if uint64(off)+uint64(n) > uint64(p.bufSize) {
		return nil, errGuestMemoryOOB
	}
	bufs, err := p.chain.ReadableBuffers()
	if err != nil {
		return nil, err
	}
	return subBuffers(bufs, HdrSize+uint64(off), uint64(n)), nil
}

// copyData copies payload bytes starting at off into dst, filling it.
func (p *txPacket) copyData(dst []byte, off uint32) error {
	if uint64(off)+uint64(len(dst)) > uint64(p.bufSize) {
		return errGuestMemoryOOB
	}
	r := p.chain.Reader()
	r.Discard(HdrSize + int(off))
	_, err := io.ReadFull(&r, dst)
	return err
}

// rxPacket is a host-to-guest packet being built in an RX chain: the
// header is filled in host memory and committed at the end, the payload is
// read from the host socket straight into the chain's buffers.
type rxPacket struct {
	hdr     header
	chain   *virtio.DescriptorChain
	bufSize uint32 // room after the header
}

// parseRx validates an RX chain as Firecracker's VsockPacketRx::parse
// does: writable buffers only, room for at least a header.
func parseRx(c *virtio.DescriptorChain) (rxPacket, error) {
	if len(c.Readable()) > 0 {
		return rxPacket{}, errUnwritableDesc
	}
	total := c.WritableLen()
	if total < HdrSize {
		return rxPacket{}, fmt.Errorf("%w: %d bytes", errShortForHeader, total)
	}
	return rxPacket{chain: c, bufSize: total - HdrSize}, nil
}

// dataBuffers returns the guest memory for the first n payload bytes, for a
// vectored read from the host socket.
func (p *rxPacket) dataBuffers(n uint32) ([][]byte, error) {
	if n > p.bufSize {
		return nil, errGuestMemoryOOB
	}
	bufs, err := p.chain.WritableBuffers()
	if err != nil {
		return nil, err
	}
	return subBuffers(bufs, HdrSize, uint64(n)), nil
}

// commitHdr writes the header at the start of the chain. The payload
// length was bounded when it was read; the check mirrors Firecracker's
// commit_hdr.
func (p *rxPacket) commitHdr() error {
	if p.hdr.Len > MaxPktBufSize || p.hdr.Len > p.bufSize {
		return fmt.Errorf("%w: %d", errInvalidPktLen, p.hdr.Len)
	}
	var raw [HdrSize]byte
	p.hdr.encode(&raw)
	w := p.chain.Writer()
	_, err := w.Write(raw[:])
	return err
}

// subBuffers returns the byte range [off, off+n) of the concatenation of
// bufs as sub-slices of them (no copy). It stops early if bufs run out.
func subBuffers(bufs [][]byte, off, n uint64) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n == 0 {
			break
		}
		l := uint64(len(b))
		if off >= l {
			off -= l
			continue
		}
		k := min(l-off, n)
		out = append(out, b[off:off+k])
		n -= k
		off = 0
	}
	return out
}
