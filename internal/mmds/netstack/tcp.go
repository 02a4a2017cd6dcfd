package netstack

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"time"
)

// TCP header layout and flags.
const (
	tcpMinHeaderLen = 20
	tcpMaxHeaderLen = 60

	flagFIN = 1 << 0
	flagSYN = 1 << 1
	flagRST = 1 << 2
	flagPSH = 1 << 3
	flagACK = 1 << 4

	optEOL    = 0
	optNOP    = 1
	optMSS    = 2
	optMSSLen = 4

	// mssMin and mssMax bound the MSS option a SYN may carry; outside them
	// the SYN is refused, as in Firecracker.
	mssMin = 100
	mssMax = maxSegmentLen - tcpMinHeaderLen
	// mssDefault applies when the SYN has no MSS option (RFC 9293).
	mssDefault = 536
	// maxSegmentLen is the largest segment an IPv4 packet without options
	// can carry.
	maxSegmentLen = 0xffff - ipv4MinHeaderLen

	// maxWindowSize is the largest window TCP can express (with window
	// scaling); it bounds the sequence-space comparisons below.
	maxWindowSize = 1_073_725_440

	// rstWindow is the window advertised on RSTs from the listener;
	// Firecracker uses this arbitrary value too.
	rstWindow = 10000
)

var (
	errTCPShort     = errors.New("tcp: segment too short")
	errTCPHeaderLen = errors.New("tcp: bad header length")
	errTCPPort      = errors.New("tcp: destination port is not the MMDS port")
	errMSSOption    = errors.New("tcp: bad MSS option")
	errMSSRemaining = errors.New("tcp: MSS too small for the options")
	errEmptyPayload = errors.New("tcp: no room for payload")
	errInvalidSYN   = errors.New("tcp: not a valid SYN")
	errConnReset    = errors.New("tcp: connection is reset")
	errBufTooSmall  = errors.New("tcp: payload larger than the receive buffer")
	errMissingSeq   = errors.New("tcp: payload source lacks the sequence number to send")
	errDataAfterFIN = errors.New("tcp: data past the FIN")
	errPayloadLarge = errors.New("tcp: payload source too large")
)

// seqAfter reports whether a comes strictly after b in sequence space,
// relative to the largest possible window. It is not a total order.
func seqAfter(a, b uint32) bool { return a != b && a-b < maxWindowSize }

// seqAtOrAfter reports whether a is b or comes after it.
func seqAtOrAfter(a, b uint32) bool { return a-b < maxWindowSize }

// tcpSegment is a validated view of an incoming segment.
type tcpSegment struct {
	b  []byte
	hl int // header length in bytes
}

// parseTCP checks the header length only; the checksum is not verified, as
// in Firecracker (see parseIPv4).
func parseTCP(b []byte) (tcpSegment, error) {
	if len(b) < tcpMinHeaderLen {
		return tcpSegment{}, errTCPShort
	}
	hl := int(b[12]>>4) * 4
	if hl < tcpMinHeaderLen || hl > min(tcpMaxHeaderLen, len(b)) {
		return tcpSegment{}, errTCPHeaderLen
	}
	return tcpSegment{b: b, hl: hl}, nil
}

func (s tcpSegment) srcPort() uint16  { return binary.BigEndian.Uint16(s.b[0:]) }
func (s tcpSegment) dstPort() uint16  { return binary.BigEndian.Uint16(s.b[2:]) }
func (s tcpSegment) seq() uint32      { return binary.BigEndian.Uint32(s.b[4:]) }
func (s tcpSegment) ack() uint32      { return binary.BigEndian.Uint32(s.b[8:]) }
func (s tcpSegment) flags() uint8     { return s.b[13] }
func (s tcpSegment) window() uint16   { return binary.BigEndian.Uint16(s.b[14:]) }
func (s tcpSegment) payload() []byte  { return s.b[s.hl:] }
func (s tcpSegment) payloadLen() int  { return len(s.b) - s.hl }
func (s tcpSegment) options() []byte  { return s.b[tcpMinHeaderLen:s.hl] }
func (s tcpSegment) isValidSYN() bool { return s.flags() == flagSYN && s.payloadLen() == 0 }

// mss returns the MSS option, or mssDefault when there is none. Like
// Firecracker it scans while at least 4 option bytes remain, and only
// rejects an MSS outside [mssMin, mssMax] or an option length below 2.
func (s tcpSegment) mss() (uint16, error) {
	o := s.options()
	for i := 0; i+3 < len(o); {
		switch o[i] {
		case optEOL:
			return mssDefault, nil
		case optNOP:
			i++
		case optMSS:
			v := binary.BigEndian.Uint16(o[i+2:])
			if v < mssMin || v > mssMax {
				return 0, errMSSOption
			}
			return v, nil
		default:
			n := int(o[i+1])
			if n < 2 {
				return 0, errMSSOption
			}
			i += n
		}
	}
	return mssDefault, nil
}

// writeSegment writes a segment without ports or checksum (finalizeSegment
// adds them) into b: the header, an MSS option when mssOpt != 0, and up to
// maxPayload bytes of payload when withPayload. The payload is further
// limited by b, by the largest IPv4 payload and by mssRemaining (the MSS left
// after options). It returns the segment and payload lengths.
func writeSegment(b []byte, seq, ack uint32, flags uint8, window, mssOpt, mssRemaining uint16,
	withPayload bool, payload []byte, maxPayload int) (segLen, payloadLen int, err error) {
	segLen = tcpMinHeaderLen
	mssLeft := int(mssRemaining)
	optLen := 0
	if mssOpt != 0 {
		if mssLeft < optMSSLen {
			return 0, 0, errMSSRemaining
		}
		mssLeft -= optMSSLen
		optLen = optMSSLen
	}
	segLen += optLen
	if len(b) < segLen {
		return 0, 0, errTCPShort
	}
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = byte(segLen/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], window)
	binary.BigEndian.PutUint16(b[16:], 0)
	binary.BigEndian.PutUint16(b[18:], 0)
	if mssOpt != 0 {
		b[20], b[21] = optMSS, optMSSLen
		binary.BigEndian.PutUint16(b[22:], mssOpt)
	}
	if withPayload {
		room := min(len(b), maxSegmentLen) - segLen
		room = min(room, mssLeft, len(payload), maxPayload)
		if room <= 0 {
			return 0, 0, errEmptyPayload
		}
		copy(b[segLen:], payload[:room])
		payloadLen = room
	}
	return segLen + payloadLen, payloadLen, nil
}

// finalizeSegment adds the ports and the checksum to a written segment.
func finalizeSegment(seg []byte, srcPort, dstPort uint16, src, dst [4]byte) {
	binary.BigEndian.PutUint16(seg[0:], srcPort)
	binary.BigEndian.PutUint16(seg[2:], dstPort)
	binary.BigEndian.PutUint16(seg[16:], 0)
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(src, dst, seg))
}

// rstConfig is how a RST answers something: with a sequence number taken
// from the peer's ACK, or (when there was no ACK) with an ACK of what the
// peer sent.
type rstConfig struct {
	withACK bool
	n       uint32 // the RST's sequence number, or its ACK number if withACK
}

// rstFor answers segment s, as RFC 9293 §3.10.7.1 suggests.
func rstFor(s tcpSegment) rstConfig {
	if s.flags()&flagACK != 0 {
		return rstConfig{n: s.ack()}
	}
	return rstConfig{withACK: true, n: s.seq() + uint32(s.payloadLen())}
}

func (r rstConfig) seqAckFlags() (seq, ack uint32, flags uint8) {
	if r.withACK {
		return 0, r.n, flagRST | flagACK
	}
	return r.n, 0, flagRST
}

// connStatus flags. A set of flags rather than a state enum, as the states
// overlap (a connection can have received a FIN and still be sending data).
type connStatus uint8

const (
	stSynReceived connStatus = 1 << iota
	stSynackSent
	stEstablished
	stFinSent  // at least one FIN went out (first_not_sent counts it)
	stFinAcked // the peer ACKed our FIN
	stReset    // we sent or accepted a RST; the connection is dead
)

// recvStatus flags report unusual events while receiving a segment; any of
// them counts mmds.rx_accepted_unusual.
type recvStatus uint16

const (
	rsInvalidACK recvStatus = 1 << iota
	rsDupACK
	rsSegmentBeyondRwnd
	rsUnexpectedSeq
	rsRemoteRwndEdge
	rsDataBeyondFIN
	rsResetReceived
	rsInvalidRST
	rsInvalidSegment
	rsConnResetting // a RST is queued; the connection dies once it is sent
	rsInvalidFIN
)

// segStatus says whether something can be sent now, after a retransmission
// deadline, or not until more segments arrive.
type segStatus uint8

const (
	segNothing segStatus = iota
	segAvailable
	segTimeout
)

// connection is a minimal passive-open TCP connection with Firecracker's
// dumbo semantics: only the MSS option is understood (and echoed on the
// SYN-ACK), segments are accepted only in order, a duplicate ACK triggers an
// immediate retransmission, there is no congestion control, and a
// connection that sends a RST is finished. It has no send buffer of its own:
// the caller passes the data to send on each write.
type connection struct {
	ackToSend      uint32 // next in-order sequence number expected from the peer
	highestAck     uint32 // highest ACK received
	firstNotSent   uint32 // first sequence number not yet sent
	localRwndEdge  uint32 // right edge of our receive window
	remoteRwndEdge uint32 // right edge of the peer's receive window

	rtoStart    time.Duration // when the retransmission timer last (re)started
	rtoPeriod   time.Duration
	rtoCount    uint16 // retransmissions since the last progress
	rtoCountMax uint16

	finReceived bool
	finSeq      uint32 // sequence number of the peer's FIN
	sendFin     bool
	sendFinSeq  uint32 // sequence number of our FIN, once close() was called
	sendRst     bool
	rst         rstConfig

	mss        uint16
	pendingAck bool // send an ACK at the next opportunity
	dupAck     bool // retransmit from highestAck at the next opportunity
	status     connStatus
}

// passiveOpen creates a connection in response to SYN s, with a receive
// window of rwnd bytes.
func passiveOpen(s tcpSegment, rwnd uint32, rtoPeriod time.Duration, rtoCountMax uint16) (connection, error) {
	if !s.isValidSYN() {
		return connection{}, errInvalidSYN
	}
	mss, err := s.mss()
	if err != nil {
		return connection{}, err
	}
	ackToSend := s.seq() + 1
	// A pseudo-random ISN, as Firecracker's xorshift one: the peer is the
	// local guest, so there is no off-path attacker to defend against.
	isn := rand.Uint32()
	return connection{
		ackToSend:      ackToSend,
		highestAck:     isn,
		firstNotSent:   isn + 1,
		localRwndEdge:  ackToSend + rwnd,
		remoteRwndEdge: isn + 1 + uint32(s.window()),
		rtoPeriod:      rtoPeriod,
		rtoCountMax:    rtoCountMax,
		mss:            mss,
		status:         stSynReceived,
	}, nil
}

func (c *connection) has(f connStatus) bool { return c.status&f != 0 }
func (c *connection) established() bool     { return c.has(stEstablished) }
func (c *connection) synackPending() bool   { return c.has(stSynReceived) && !c.has(stSynackSent) }

// isDone: reset, or both FINs exchanged. There is no TIME_WAIT; the peer's
// final ACK of our FIN then draws a RST from the listener, as in Firecracker.
func (c *connection) isDone() bool {
	return c.has(stReset) || (c.finReceived && c.has(stFinSent))
}

func (c *connection) isSameSYN(s tcpSegment) bool {
	if !s.isValidSYN() || c.ackToSend != s.seq()+1 {
		return false
	}
	mss, err := s.mss()
	return err == nil && mss == c.mss
}

func (c *connection) rtoExpired(now time.Duration) bool { return now-c.rtoStart >= c.rtoPeriod }

func (c *connection) canSendFirstFIN() bool {
	return !c.has(stFinSent) && c.sendFin && c.sendFinSeq == c.highestAck
}

// localRwnd is the window to advertise (no window scaling).
func (c *connection) localRwnd() uint16 {
	return uint16(min(c.localRwndEdge-c.ackToSend, 0xffff))
}

// close ends our half: the FIN goes after every byte sent so far.
func (c *connection) close() {
	if !c.sendFin {
		c.sendFin, c.sendFinSeq = true, c.firstNotSent
	}
}

// makeRstConfig is the RST that kills this connection from our side.
func (c *connection) makeRstConfig() rstConfig {
	if c.established() {
		return rstConfig{n: c.firstNotSent}
	}
	return rstConfig{withACK: true, n: c.ackToSend}
}

// reset queues a RST; the connection is dead once it is written.
func (c *connection) reset() {
	if !c.sendRst {
		c.sendRst, c.rst = true, c.makeRstConfig()
	}
}

func (c *connection) resetFor(s tcpSegment, st recvStatus) (int, recvStatus, error) {
	if !c.sendRst {
		c.sendRst, c.rst = true, rstFor(s)
	}
	return 0, rsConnResetting | st, nil
}

// advanceLocalRwndEdge opens the receive window by n bytes once the caller
// consumed them, telling the peer if the window had been closed.
func (c *connection) advanceLocalRwndEdge(n uint32) {
	cur := c.localRwndEdge - c.ackToSend
	if cur == 0 {
		c.pendingAck = true
	}
	if n+cur > maxWindowSize {
		c.localRwndEdge = c.ackToSend + maxWindowSize
	} else {
		c.localRwndEdge += n
	}
}

// controlStatus reports whether a control segment is due now, a
// retransmission timer runs, or nothing is pending. Data is the caller's
// business.
func (c *connection) controlStatus() (segStatus, time.Duration) {
	switch {
	case c.synackPending() || c.sendRst || c.canSendFirstFIN() || c.pendingAck:
		return segAvailable, 0
	case c.highestAck != c.firstNotSent:
		return segTimeout, c.rtoStart + c.rtoPeriod
	default:
		return segNothing, 0
	}
}

// receive handles incoming segment s, copying in-order payload into buf
// (which must have room for it). It returns how many bytes were copied and
// any unusual conditions.
func (c *connection) receive(s tcpSegment, buf []byte, now time.Duration) (int, recvStatus, error) {
	if c.sendRst || c.has(stReset) {
		return 0, 0, errConnReset
	}
	flags := s.flags()
	if flags&flagRST != 0 {
		// Only an in-window RST counts (RFC 5961 lite).
		seq := s.seq()
		if seqAtOrAfter(seq, c.ackToSend) && seqAfter(c.localRwndEdge, seq) {
			c.status |= stReset
			return 0, rsResetReceived, nil
		}
		return 0, rsInvalidRST, nil
	}
	payloadLen := s.payloadLen()
	var st recvStatus

	switch {
	case !c.has(stSynackSent):
		// Before our SYN-ACK went out only a retransmitted SYN makes sense.
		if c.isSameSYN(s) {
			return 0, 0, nil
		}
		return c.resetFor(s, rsInvalidSegment)
	case !c.established():
		if c.isSameSYN(s) {
			// Our SYN-ACK may have been lost: send it again.
			c.status &^= stSynackSent
			return 0, 0, nil
		}
		if flags&flagSYN != 0 {
			return c.resetFor(s, rsInvalidSegment)
		}
	default:
		if flags&flagSYN != 0 {
			return c.resetFor(s, rsInvalidSegment)
		}
	}

	if flags&flagACK != 0 {
		ack := s.ack()
		if seqAtOrAfter(ack, c.highestAck) && seqAtOrAfter(c.firstNotSent, ack) {
			c.rtoCount = 0
			if ack == c.highestAck && ack != c.firstNotSent {
				if !c.established() {
					return c.resetFor(s, rsInvalidACK)
				}
				c.dupAck = true
				st |= rsDupACK
			} else {
				c.highestAck = ack
				c.rtoStart = now
				if !c.established() && c.has(stSynackSent) {
					c.status |= stEstablished
				}
				if c.has(stFinSent) && ack == c.firstNotSent {
					c.status |= stFinAcked
				}
			}
			if c.established() {
				edge := ack + uint32(s.window())
				if seqAfter(edge, c.remoteRwndEdge) {
					c.remoteRwndEdge = edge
				} else if edge != c.remoteRwndEdge {
					st |= rsRemoteRwndEdge
				}
			}
		} else {
			st |= rsInvalidACK
			if !c.established() {
				return c.resetFor(s, st)
			}
		}
	}

	if !c.established() {
		return 0, st, nil
	}

	seq := s.seq()
	if payloadLen > len(buf) {
		return 0, st, errBufTooSmall
	}
	enqueueAck := false
	if payloadLen > 0 {
		end := seq + uint32(payloadLen)
		if c.finReceived && !seqAtOrAfter(c.finSeq, end) {
			return 0, st | rsDataBeyondFIN, nil
		}
		if !seqAtOrAfter(c.localRwndEdge, end) {
			return 0, st | rsSegmentBeyondRwnd, nil
		}
		// Only the exact next sequence number is accepted: the guest is
		// on the same host, so loss and reordering are rare.
		if seq != c.ackToSend {
			c.pendingAck = true
			return 0, st | rsUnexpectedSeq, nil
		}
		c.ackToSend = end
		enqueueAck = true
	}
	if flags&flagFIN != 0 && !c.finReceived {
		finSeq := seq + uint32(payloadLen)
		if finSeq == c.ackToSend {
			c.finReceived, c.finSeq = true, finSeq
			c.ackToSend++ // the FIN takes one sequence number
			enqueueAck = true
		} else {
			st |= rsInvalidFIN
		}
	}
	if enqueueAck {
		c.pendingAck = true
		if payloadLen > 0 {
			return copy(buf, s.payload()), st, nil
		}
	}
	return 0, st, nil
}

// writeSeg writes one segment with this connection's window and MSS.
func (c *connection) writeSeg(b []byte, seq, ack uint32, flags uint8, withPayload bool, payload []byte, maxPayload int) (int, int, error) {
	var mssOpt uint16
	if flags == flagSYN|flagACK {
		mssOpt = c.mss
	}
	n, p, err := writeSegment(b, seq, ack, flags, c.localRwnd(), mssOpt, c.mss, withPayload, payload, maxPayload)
	if err == nil && flags&flagACK != 0 {
		c.pendingAck = false
	}
	return n, p, err
}

// writeControl writes a segment without payload: the pending RST, the
// SYN-ACK, or an ACK (carrying our FIN once all data is ACKed).
func (c *connection) writeControl(b []byte) (int, error) {
	seq, ack := c.highestAck, c.ackToSend
	var flags uint8
	switch {
	case c.sendRst:
		seq, ack, flags = c.rst.seqAckFlags()
	case !c.established():
		flags = flagSYN | flagACK
		seq = c.firstNotSent - 1
	default:
		flags = flagACK
		if c.sendFin && !c.has(stFinAcked) && seqAtOrAfter(seq, c.sendFinSeq) {
			flags |= flagFIN
			seq = c.sendFinSeq
		}
	}
	n, _, err := c.writeSeg(b, seq, ack, flags, false, nil, 0)
	return n, err
}

// writeNext writes the next segment due into b, if any (n == 0 when none).
// When withPayload, data holds the bytes to send starting at sequence
// number dataSeq; it must still hold every unacknowledged byte, so that
// retransmissions can be served from it.
//
// Firecracker hands the connection a buffer that starts at the first unsent
// byte, so its retransmissions of data fail (PayloadMissingSeq) until the
// connection resets itself after 15 timeouts; here they resend the data.
func (c *connection) writeNext(b []byte, withPayload bool, data []byte, dataSeq uint32, now time.Duration) (n int, err error) {
	if c.has(stReset) {
		return 0, errConnReset
	}
	if c.sendRst {
		if n, err = c.writeControl(b); err != nil {
			return 0, err
		}
		c.status |= stReset
		return n, nil
	}
	if c.synackPending() {
		if n, err = c.writeControl(b); err != nil {
			return 0, err
		}
		c.status |= stSynackSent
		c.rtoStart = now
		return n, nil
	}
	if !c.established() {
		if !c.rtoExpired(now) {
			return 0, nil
		}
		c.rtoCount++
		if c.rtoCount >= c.rtoCountMax {
			c.reset()
			return c.writeNext(b, withPayload, data, dataSeq, now)
		}
		if n, err = c.writeControl(b); err != nil {
			return 0, err
		}
		c.rtoStart = now
		return n, nil
	}

	if withPayload {
		if len(data) > maxWindowSize {
			return 0, errPayloadLarge
		}
		dataEnd := dataSeq + uint32(len(data))
		rtoTriggered := false
		var seqToSend uint32
		switch {
		case c.highestAck != c.firstNotSent && c.rtoExpired(now):
			c.rtoCount++
			if c.rtoCount >= c.rtoCountMax {
				c.reset()
				return c.writeNext(b, withPayload, data, dataSeq, now)
			}
			if c.sendFin && c.highestAck == c.sendFinSeq {
				// Only our FIN is unacknowledged: resend it.
				if n, err = c.writeControl(b); err != nil {
					return 0, err
				}
				c.rtoStart = now
				return n, nil
			}
			rtoTriggered = true
			seqToSend = c.highestAck
		case c.dupAck:
			seqToSend = c.highestAck
		default:
			seqToSend = c.firstNotSent
		}
		if !seqAtOrAfter(seqToSend, dataSeq) {
			return 0, errMissingSeq
		}
		end := dataEnd
		if !seqAtOrAfter(c.remoteRwndEdge, dataEnd) {
			end = c.remoteRwndEdge
		}
		if c.sendFin && seqAfter(end, c.sendFinSeq) {
			return 0, errDataAfterFIN
		}
		if seqAfter(end, seqToSend) {
			off := seqToSend - dataSeq
			if off > uint32(len(data)) {
				return 0, errMissingSeq
			}
			n, plen, err := c.writeSeg(b, seqToSend, c.ackToSend, flagACK, true, data[off:], int(end-seqToSend))
			if err != nil {
				return 0, err
			}
			c.dupAck = false
			after := seqToSend + uint32(plen)
			if c.sendFin && after == c.sendFinSeq {
				// The last data byte: the FIN rides along.
				b[13] |= flagFIN
				after++
				c.status |= stFinSent
			}
			if rtoTriggered || c.firstNotSent == c.highestAck {
				// Restart the timer on a retransmission or when this is the
				// first unacknowledged segment.
				c.rtoStart = now
			}
			if seqAfter(after, c.firstNotSent) {
				c.firstNotSent = after
			}
			return n, nil
		}
	}

	firstFin := c.canSendFirstFIN()
	if c.pendingAck || firstFin {
		if n, err = c.writeControl(b); err != nil {
			return 0, err
		}
		if firstFin {
			c.firstNotSent++
			c.status |= stFinSent
		}
		return n, nil
	}
	return 0, nil
}

// connTuple names a connection: the local address and port are fixed.
type connTuple struct {
	addr [4]byte
	port uint16
}

type rstEntry struct {
	tuple connTuple
	cfg   rstConfig
}

// recvEvent is what receiving a packet did to the connection table.
type recvEvent uint8

const (
	evNothing recvEvent = iota
	evEndpointDone
	evFailedNewConnection
	evNewConnection
	evNewConnectionDropped
	evNewConnectionReplacing
	evUnexpectedSegment
)

// tcpListener is the passive-open listener on the MMDS address and port: it
// steers segments to their endpoint, opens endpoints on SYNs, and answers
// segments of unknown connections with RSTs (from a bounded queue).
type tcpListener struct {
	addr       [4]byte
	port       uint16
	maxConns   int
	maxResets  int
	conns      []*endpoint // in creation order; at most maxConns
	rstQueue   []rstEntry  // FIFO, at most maxResets
	nextWriter int         // round-robin start for writeNext
}

func (l *tcpListener) find(t connTuple) int {
	return slices.IndexFunc(l.conns, func(e *endpoint) bool { return e.tuple == t })
}

func (l *tcpListener) remove(i int) {
	l.conns = slices.Delete(l.conns, i, i+1)
}

// enqueueRST drops the RST when the queue is full, as Firecracker does.
func (l *tcpListener) enqueueRST(t connTuple, cfg rstConfig) {
	if len(l.rstQueue) < l.maxResets {
		l.rstQueue = append(l.rstQueue, rstEntry{t, cfg})
	}
}

// receive handles one IPv4 packet carrying TCP.
func (l *tcpListener) receive(p ipv4Packet, now time.Duration, ctx *endpointCtx) (recvEvent, error) {
	s, err := parseTCP(p.payload())
	if err != nil {
		return 0, err
	}
	// Other ports get no RST: Firecracker drops such segments silently.
	if s.dstPort() != l.port {
		return 0, errTCPPort
	}
	t := connTuple{addr: p.src(), port: s.srcPort()}
	if i := l.find(t); i >= 0 {
		e := l.conns[i]
		e.receive(s, now, ctx)
		if e.conn.isDone() {
			l.remove(i)
			return evEndpointDone, nil
		}
		return evNothing, nil
	}
	if s.flags() != flagSYN {
		if s.flags()&flagRST == 0 {
			l.enqueueRST(t, rstFor(s))
		}
		return evUnexpectedSegment, nil
	}
	e, err := newEndpoint(s, t, now)
	if err != nil {
		return evFailedNewConnection, nil
	}
	if len(l.conns) < l.maxConns {
		l.conns = append(l.conns, e)
		return evNewConnection, nil
	}
	// Full: replace the endpoint idle the longest, if one is past the
	// eviction threshold; otherwise refuse the SYN with a RST.
	victim := -1
	for i, c := range l.conns {
		if c.evictable(now) && (victim < 0 || c.lastRecv < l.conns[victim].lastRecv) {
			victim = i
		}
	}
	if victim < 0 {
		l.enqueueRST(t, rstFor(s))
		return evNewConnectionDropped, nil
	}
	old := l.conns[victim]
	l.enqueueRST(old.tuple, old.conn.makeRstConfig())
	l.remove(victim)
	l.conns = append(l.conns, e)
	return evNewConnectionReplacing, nil
}

// due reports whether writeNext may produce a packet at time now.
func (l *tcpListener) due(now time.Duration) bool {
	if len(l.rstQueue) > 0 {
		return true
	}
	for _, e := range l.conns {
		switch st, at := e.status(); st {
		case segAvailable:
			return true
		case segTimeout:
			if now >= at {
				return true
			}
		}
	}
	return false
}

// writeNext writes the next IPv4 packet (header included) into b: a queued
// RST first, then a segment from an endpoint. It returns the packet length
// (0 when nothing was written) and whether an endpoint finished.
func (l *tcpListener) writeNext(b []byte, now time.Duration, ctx *endpointCtx) (n int, done bool, err error) {
	if len(b) < ipv4MinHeaderLen {
		return 0, false, errIPv4Short
	}
	seg := b[ipv4MinHeaderLen:]
	if len(l.rstQueue) > 0 {
		r := l.rstQueue[0]
		l.rstQueue = slices.Delete(l.rstQueue, 0, 1)
		seq, ack, flags := r.cfg.seqAckFlags()
		segLen, _, err := writeSegment(seg, seq, ack, flags, rstWindow, 0, 0, false, nil, 0)
		if err != nil {
			return 0, false, err
		}
		finalizeSegment(seg[:segLen], l.port, r.tuple.port, l.addr, r.tuple.addr)
		writeIPv4Header(b, l.addr, r.tuple.addr, segLen)
		return ipv4MinHeaderLen + segLen, false, nil
	}
	for k := range l.conns {
		i := (l.nextWriter + k) % len(l.conns)
		e := l.conns[i]
		st, at := e.status()
		if st == segNothing || (st == segTimeout && now < at) {
			continue
		}
		segLen := e.writeNext(seg, now, ctx)
		if segLen == 0 {
			continue
		}
		finalizeSegment(seg[:segLen], l.port, e.tuple.port, l.addr, e.tuple.addr)
		writeIPv4Header(b, l.addr, e.tuple.addr, segLen)
		l.nextWriter = i + 1
		if e.conn.isDone() {
			l.remove(i)
			done = true
		}
		return ipv4MinHeaderLen + segLen, done, nil
	}
	return 0, false, nil
}
