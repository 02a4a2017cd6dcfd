package netstack

import (
	"encoding/binary"
	"errors"
)

// ARP for Ethernet/IPv4 (RFC 826): the only ARP the stack speaks.
const (
	arpFrameLen   = 28
	arpHTypeEth   = 1
	arpOpRequest  = 1
	arpOpReply    = 2
	arpReplyFrame = ethHeaderLen + arpFrameLen
)

var errARP = errors.New("arp: not an Ethernet/IPv4 request")

// arpRequest is what the stack keeps from a request: who asked.
type arpRequest struct {
	sha [6]byte
	spa [4]byte
}

// parseARPRequest accepts exactly 28 bytes of Ethernet/IPv4 ARP request, as
// Firecracker does (a padded frame is not a request to it either). The target
// address is not checked here: the speculative check that detoured the frame
// already compared it with the MMDS address.
func parseARPRequest(b []byte) (arpRequest, error) {
	if len(b) != arpFrameLen ||
		binary.BigEndian.Uint16(b[0:]) != arpHTypeEth ||
		binary.BigEndian.Uint16(b[2:]) != etherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 ||
		binary.BigEndian.Uint16(b[6:]) != arpOpRequest {
		return arpRequest{}, errARP
	}
	return arpRequest{sha: [6]byte(b[8:14]), spa: [4]byte(b[14:18])}, nil
}

// writeARPReply writes a whole Ethernet frame answering "who has ip" with
// mac to (tha, tpa) and returns its length; b must hold arpReplyFrame bytes.
func writeARPReply(b []byte, mac [6]byte, ip [4]byte, tha [6]byte, tpa [4]byte) int {
	writeEthHeader(b, tha, mac, etherTypeARP)
	a := b[ethHeaderLen:arpReplyFrame]
	binary.BigEndian.PutUint16(a[0:], arpHTypeEth)
	binary.BigEndian.PutUint16(a[2:], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], arpOpReply)
	copy(a[8:14], mac[:])
	copy(a[14:18], ip[:])
	copy(a[18:24], tha[:])
	copy(a[24:28], tpa[:])
	return arpReplyFrame
}

// writeEthHeader fills the 14-byte Ethernet II header.
func writeEthHeader(b []byte, dst, src [6]byte, etherType uint16) {
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], etherType)
}

// speculativeARPTarget reports whether frame could be an ARP packet whose
// target protocol address is addr, looking only at where that field would be
// (Firecracker's test_speculative_tpa).
func speculativeARPTarget(frame []byte, addr [4]byte) bool {
	return len(frame) >= ethHeaderLen+arpFrameLen &&
		[4]byte(frame[ethHeaderLen+24:ethHeaderLen+28]) == addr
}
