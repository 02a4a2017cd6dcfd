package netstack

import (
	"encoding/binary"
	"errors"
)

// Ethernet II framing. The stack handles neither 802.1Q tags nor any
// EtherType but ARP and IPv4, as Firecracker's.
const (
	ethHeaderLen  = 14
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
)

// IPv4 header layout and the values the stack writes.
const (
	ipv4MinHeaderLen = 20
	ipv4Version      = 4
	protocolTCP      = 6
	// outgoingTTL is 1: MMDS replies must never be routed off the guest's
	// link.
	outgoingTTL = 1
)

var (
	errIPv4Short    = errors.New("ipv4: slice too short")
	errIPv4Version  = errors.New("ipv4: not version 4")
	errIPv4TotalLen = errors.New("ipv4: invalid total length")
	errIPv4Exact    = errors.New("ipv4: total length differs from the frame")
	errIPv4HdrLen   = errors.New("ipv4: header shorter than 20 bytes")
)

// ipv4Packet is a validated view of an incoming IPv4 packet.
type ipv4Packet struct {
	b   []byte // exactly total-length bytes
	ihl int    // header length in bytes
}

// parseIPv4 validates b as a whole IPv4 packet the way Firecracker's dumbo
// does: version 4, a header of at least 20 bytes, and a total length equal to
// len(b) (so Ethernet padding makes a packet invalid, and fragments are taken
// as they are: there is no reassembly). The header checksum is not verified,
// as in Firecracker: with VIRTIO_NET_F_CSUM the guest may leave checksums to
// "the device", and the MMDS must still answer it.
func parseIPv4(b []byte) (ipv4Packet, error) {
	if len(b) < ipv4MinHeaderLen {
		return ipv4Packet{}, errIPv4Short
	}
	if b[0]>>4 != ipv4Version {
		return ipv4Packet{}, errIPv4Version
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if total < ihl {
		return ipv4Packet{}, errIPv4TotalLen
	}
	if total != len(b) {
		return ipv4Packet{}, errIPv4Exact
	}
	if ihl < ipv4MinHeaderLen {
		return ipv4Packet{}, errIPv4HdrLen
	}
	return ipv4Packet{b: b, ihl: ihl}, nil
}

func (p ipv4Packet) protocol() uint8 { return p.b[9] }
func (p ipv4Packet) src() [4]byte    { return [4]byte(p.b[12:16]) }
func (p ipv4Packet) payload() []byte { return p.b[p.ihl:] }

// writeIPv4Header fills the 20-byte header at b[:20] for a packet carrying
// payloadLen bytes, checksum included. The caller guarantees len(b) >= 20 and
// 20+payloadLen <= 65535.
func writeIPv4Header(b []byte, src, dst [4]byte, payloadLen int) {
	b[0] = ipv4Version<<4 | ipv4MinHeaderLen/4
	b[1] = 0 // DSCP, ECN
	binary.BigEndian.PutUint16(b[2:], uint16(ipv4MinHeaderLen+payloadLen))
	binary.BigEndian.PutUint16(b[4:], 0) // identification
	binary.BigEndian.PutUint16(b[6:], 0) // flags, fragment offset
	b[8] = outgoingTTL
	b[9] = protocolTCP
	binary.BigEndian.PutUint16(b[10:], 0)
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[10:], ^foldSum(sum16(0, b[:ipv4MinHeaderLen])))
}

// sum16 adds b to the running one's-complement accumulator as big-endian
// 16-bit words, padding an odd trailing byte with zero (RFC 1071). Folding is
// deferred: a uint64 cannot overflow for any frame this stack handles.
func sum16(acc uint64, b []byte) uint64 {
	for len(b) >= 2 {
		acc += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// foldSum folds the accumulator into 16 bits.
func foldSum(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// tcpChecksum returns the TCP checksum of seg (whose checksum field must be
// zero, or the existing value when verifying) over the IPv4 pseudo-header.
// Verifying a correct segment yields 0.
func tcpChecksum(src, dst [4]byte, seg []byte) uint16 {
	acc := sum16(0, src[:])
	acc = sum16(acc, dst[:])
	acc += protocolTCP
	acc += uint64(len(seg))
	acc = sum16(acc, seg)
	return ^foldSum(acc)
}

// speculativeIPv4Dst reports whether frame could be an IPv4 packet for addr
// by looking only at where the destination address would be. Like
// Firecracker's test_speculative_dst_addr it has no false negatives.
func speculativeIPv4Dst(frame []byte, addr [4]byte) bool {
	return len(frame) >= ethHeaderLen+ipv4MinHeaderLen &&
		[4]byte(frame[ethHeaderLen+16:ethHeaderLen+20]) == addr
}
