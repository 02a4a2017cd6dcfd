package vsock

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/metrics"
)

// Connection limits and timers (Firecracker's csm::defs).
const (
	// ConnTxBufSize is the per-connection buffer for guest data the host
	// socket cannot take yet, and the buf_alloc the device advertises.
	ConnTxBufSize = 64 << 10
	// creditUpdateThreshold: when the guest's idea of our free buffer
	// space drops below this, we volunteer a credit update.
	creditUpdateThreshold = 4 << 10
	// ConnRequestTimeout bounds the wait for the guest's answer to a
	// host-initiated connection request.
	ConnRequestTimeout = 2000 * time.Millisecond
	// ConnShutdownTimeout bounds a graceful shutdown before the device
	// resets the connection.
	ConnShutdownTimeout = 2000 * time.Millisecond
)

// connState is a connection's protocol state (Firecracker's ConnState).
type connState uint8

const (
	// stateLocalInit: the host connected; the REQUEST to the guest is
	// pending or awaiting its RESPONSE.
	stateLocalInit connState = iota
	// statePeerInit: the guest asked to connect and the host socket is
	// connected; our RESPONSE is pending.
	statePeerInit
	stateEstablished
	// stateLocalClosed: the host socket hit EOF.
	stateLocalClosed
	// statePeerClosed: the guest sent SHUTDOWN; conn.peerRcvOff and
	// conn.peerSendOff hold its flags so far.
	statePeerClosed
	// stateKilled: an RST to the guest is pending.
	stateKilled
)

// pendingRx is the set of packets a connection has to send the guest.
type pendingRx uint8

const (
	pendRequest pendingRx = 1 << iota
	pendResponse
	pendRst
	pendRW
	pendCreditUpdate
)

// take removes it from the set and reports whether it was there.
func (s *pendingRx) take(it pendingRx) bool {
	had := *s&it != 0
	*s &^= it
	return had
}

// evset is the readiness a connection wants to hear about.
type evset uint8

const (
	evIn evset = 1 << iota
	evOut
)

// connKey identifies a connection: its host-side and guest-side ports.
type connKey struct {
	local uint32 // host port
	peer  uint32 // guest port
}

// conn is one vsock connection bridged to a host Unix socket, Firecracker's
// VsockConnection. Only the device's worker goroutine touches it; the
// readiness waiters only read stream and raw, which never change.
type conn struct {
	key      connKey
	state    connState
	localCID uint64
	peerCID  uint64
	// peerRcvOff and peerSendOff are the guest's SHUTDOWN flags so far
	// (meaningful in statePeerClosed).
	peerRcvOff, peerSendOff bool

	stream *net.UnixConn
	raw    syscall.RawConn // stream's fd, for non-blocking I/O and waits

	tx txBuf
	// fwdCnt counts guest bytes written to the host socket.
	fwdCnt uint32
	// peerBufAlloc and peerFwdCnt are the guest's credit, as last seen.
	peerBufAlloc uint32
	peerFwdCnt   uint32
	// rxCnt counts bytes sent to the guest.
	rxCnt uint32
	// lastFwdCntToPeer is fwdCnt as last told to the guest.
	lastFwdCntToPeer uint32
	pending          pendingRx
	// expiry is when the connection is to be killed; zero if never.
	expiry time.Time

	// readArmed and writeArmed: a waiter goroutine is watching the socket
	// for that readiness and will report once.
	readArmed, writeArmed bool
	closed                bool

	m *metrics.VsockMetrics
}

func newConn(stream *net.UnixConn, key connKey, peerCID uint64, state connState, m *metrics.VsockMetrics) (*conn, error) {
	raw, err := stream.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &conn{key: key, state: state, localCID: HostCID, peerCID: peerCID, stream: stream, raw: raw, m: m}
	switch state {
	case stateLocalInit:
		c.pending = pendRequest
	case statePeerInit:
		c.pending = pendResponse
	}
	return c, nil
}

func (c *conn) hasPendingRx() bool { return c.pending != 0 }

func (c *conn) willExpire(now time.Time) bool { return !c.expiry.IsZero() && c.expiry.After(now) }

func (c *conn) hasExpired(now time.Time) bool { return !c.expiry.IsZero() && !c.expiry.After(now) }

// kill schedules an RST for the guest; buffered guest data is dropped.
func (c *conn) kill() {
	c.state = stateKilled
	c.pending |= pendRst
	c.tx.clear()
}

// peerAvailCredit is how many bytes the guest can still take.
func (c *conn) peerAvailCredit() uint32 { return c.peerBufAlloc - (c.rxCnt - c.peerFwdCnt) }

func (c *conn) needCreditUpdateFromPeer() bool { return c.peerAvailCredit() == 0 }

// peerNeedsCreditUpdate: the free space the guest last heard about is
// below the threshold.
func (c *conn) peerNeedsCreditUpdate() bool {
	seenFree := uint32(ConnTxBufSize) - (c.fwdCnt - c.lastFwdCntToPeer)
	return seenFree < creditUpdateThreshold
}

func (c *conn) initHdr(h *header) {
	*h = header{
		SrcCID:   c.localCID,
		DstCID:   c.peerCID,
		SrcPort:  c.key.local,
		DstPort:  c.key.peer,
		Type:     typeStream,
		BufAlloc: ConnTxBufSize,
		FwdCnt:   c.fwdCnt,
	}
}

// recvPkt fills p with the next packet for the guest, in Firecracker's
// priority order (RST, RESPONSE, REQUEST, data, credit update), or returns
// errNoData.
func (c *conn) recvPkt(p *rxPacket) error {
	c.initHdr(&p.hdr)
	if c.pending.take(pendRst) {
		p.hdr.Op = opRst
		return nil
	}
	if c.pending.take(pendResponse) {
		c.state = stateEstablished
		p.hdr.Op = opResponse
		return nil
	}
	if c.pending.take(pendRequest) {
		c.expiry = time.Now().Add(ConnRequestTimeout)
		p.hdr.Op = opRequest
		return nil
	}
	if c.pending.take(pendRW) {
		if c.state != stateEstablished && (c.state != statePeerClosed || c.peerRcvOff) {
			p.hdr.Op = opRst
			return nil
		}
		if c.needCreditUpdateFromPeer() {
			c.lastFwdCntToPeer = c.fwdCnt
			p.hdr.Op = opCreditRequest
			return nil
		}
		maxLen := min(p.bufSize, c.peerAvailCredit(), MaxPktBufSize)
		if maxLen == 0 {
			// The guest's buffer has no room past the header. Reading
			// zero bytes would look like EOF, so keep the data pending
			// and use the buffer for a credit update instead.
			c.pending |= pendRW
			c.lastFwdCntToPeer = c.fwdCnt
			p.hdr.Op = opCreditUpdate
			return nil
		}
		iovs, err := p.dataBuffers(maxLen)
		if err != nil {
			return err
		}
		n, err := c.readv(iovs)
		switch {
		case errors.Is(err, unix.EAGAIN):
			// The socket is drained: Rw stays cleared.
		case err != nil:
			c.m.RxReadFails.Inc()
			log.RateLimited(&rlConn).Errorf("vsock: error reading from backing stream: lp=%d, pp=%d, err=%v", c.key.local, c.key.peer, err)
			p.hdr.Op = opRst
			c.lastFwdCntToPeer = c.fwdCnt
			return nil
		case n == 0:
			// EOF: ask the guest to shut the connection down.
			c.state = stateLocalClosed
			c.expiry = time.Now().Add(ConnShutdownTimeout)
			p.hdr.Op = opShutdown
			p.hdr.Flags = flagShutdownRcv | flagShutdownSend
			c.lastFwdCntToPeer = c.fwdCnt
			return nil
		default:
			p.hdr.Op = opRW
			p.hdr.Len = uint32(n)
			c.m.RxBytesCount.Add(uint64(n))
			// More may be waiting: stay scheduled.
			c.pending |= pendRW
			c.rxCnt += uint32(n)
			c.lastFwdCntToPeer = c.fwdCnt
			return nil
		}
	}
	// A credit update wastes a guest buffer, so only when nothing else is
	// due.
	if c.pending.take(pendCreditUpdate) && !c.hasPendingRx() {
		p.hdr.Op = opCreditUpdate
		c.lastFwdCntToPeer = c.fwdCnt
		return nil
	}
	return errNoData
}

// sendPkt absorbs a guest packet addressed to this connection: data goes
// to the host socket (or the TX buffer), control packets move the state.
func (c *conn) sendPkt(p *txPacket) {
	c.peerBufAlloc = p.hdr.BufAlloc
	c.peerFwdCnt = p.hdr.FwdCnt
	c.m.TxPacketsCount.Inc()

	op := p.hdr.Op
	switch {
	case op == opRW && (c.state == stateEstablished || (c.state == statePeerClosed && !c.peerSendOff)):
		if p.bufSize == 0 {
			log.RateLimited(&rlConn).Infof("vsock: dropping empty data packet from guest (lp=%d, pp=%d)", c.key.local, c.key.peer)
			return
		}
		if err := c.sendBytes(p); err != nil {
			log.RateLimited(&rlConn).Warnf("vsock: error writing to local stream (lp=%d, pp=%d): %v", c.key.local, c.key.peer, err)
			c.kill()
			return
		}
		if c.peerNeedsCreditUpdate() {
			c.pending |= pendCreditUpdate
		}

	case op == opResponse && c.state == stateLocalInit:
		c.expiry = time.Time{}
		c.state = stateEstablished

	case op == opShutdown && c.state == stateEstablished:
		c.state = statePeerClosed
		c.peerRcvOff = p.hdr.Flags&flagShutdownRcv != 0
		c.peerSendOff = p.hdr.Flags&flagShutdownSend != 0
		if c.peerRcvOff && c.peerSendOff {
			if c.tx.empty() {
				c.pending |= pendRst
			} else {
				c.expiry = time.Now().Add(ConnShutdownTimeout)
			}
		}

	case op == opShutdown && c.state == statePeerClosed:
		c.peerRcvOff = c.peerRcvOff || p.hdr.Flags&flagShutdownRcv != 0
		c.peerSendOff = c.peerSendOff || p.hdr.Flags&flagShutdownSend != 0
		if c.peerRcvOff && c.peerSendOff && c.tx.empty() {
			c.pending |= pendRst
		}

	case op == opCreditUpdate && (c.state == stateEstablished || c.state == statePeerInit || (c.state == statePeerClosed && !c.peerRcvOff)):
		// The credit fields were taken above.

	case op == opCreditRequest && (c.state == stateEstablished || c.state == statePeerInit || (c.state == statePeerClosed && !c.peerSendOff)):
		c.pending |= pendCreditUpdate

	default:
		if log.Enabled(debugLevel) {
			log.Debugf("vsock: dropping invalid TX pkt for connection: state=%d, pkt.hdr=%v", c.state, &p.hdr)
		}
	}
}

// sendBytes forwards a data packet's payload to the host socket without
// blocking; what the socket does not take goes to the TX buffer, and a
// packet that does not fit there (the guest ignored our credit) is an
// error.
func (c *conn) sendBytes(p *txPacket) error {
	n := p.hdr.Len
	if !c.tx.empty() {
		// Already waiting for the socket to drain: keep the order.
		return c.tx.push(p, 0, n)
	}
	var written uint32
	if n > 0 {
		iovs, err := p.dataBuffers(0, n)
		if err != nil {
			return err
		}
		k, err := c.writev(iovs)
		switch {
		case errors.Is(err, unix.EAGAIN):
		case err != nil:
			c.m.TxWriteFails.Inc()
			return err
		default:
			written = uint32(k)
		}
	}
	c.fwdCnt += written
	c.m.TxBytesCount.Add(uint64(written))
	if written < n {
		return c.tx.push(p, written, n-written)
	}
	return nil
}

// notifyIn: the host socket is readable (or at EOF, or failed).
func (c *conn) notifyIn() { c.pending |= pendRW }

// notifyOut: the host socket can take more; flush the TX buffer.
func (c *conn) notifyOut() {
	if c.tx.empty() {
		c.m.ConnEventFails.Inc()
		log.RateLimited(&rlConn).Infof("vsock: connection received unexpected EPOLLOUT event")
		return
	}
	flushed, err := c.tx.flushTo(c)
	if err != nil {
		c.m.TxFlushFails.Inc()
		log.RateLimited(&rlConn).Warnf("vsock: error flushing TX buf for (lp=%d, pp=%d): %v", c.key.local, c.key.peer, err)
		if !errors.Is(err, unix.EAGAIN) {
			c.kill()
		}
		flushed = 0
	}
	c.fwdCnt += uint32(flushed)
	c.m.TxBytesCount.Add(uint64(flushed))
	if c.state == statePeerClosed && c.peerRcvOff && c.peerSendOff && c.tx.empty() {
		c.pending |= pendRst
	} else if c.peerNeedsCreditUpdate() {
		c.pending |= pendCreditUpdate
	}
}

// wants is the readiness the connection needs to hear about (Firecracker's
// get_polled_evset).
func (c *conn) wants() evset {
	var ev evset
	if !c.tx.empty() {
		ev |= evOut
	}
	switch {
	case c.state == stateKilled || c.state == stateLocalClosed || (c.state == statePeerClosed && c.peerRcvOff):
	case c.needCreditUpdateFromPeer():
	case c.pending&pendRW != 0:
		// Data is already waiting for a guest buffer.
	default:
		ev |= evIn
	}
	return ev
}

// The socket I/O below runs on the worker and never blocks: sockets from
// package net are non-blocking, and RawConn.Control keeps the fd open
// while f runs without taking the read or write lock that a waiter holds.

func (c *conn) readv(iovs [][]byte) (int, error)  { return c.vectored(unix.Readv, iovs) }
func (c *conn) writev(iovs [][]byte) (int, error) { return c.vectored(unix.Writev, iovs) }

// vectored runs readv or writev on the socket, retried on EINTR.
func (c *conn) vectored(op func(fd int, iovs [][]byte) (int, error), iovs [][]byte) (int, error) {
	var n int
	var err error
	if cerr := c.raw.Control(func(fd uintptr) {
		for {
			n, err = op(int(fd), iovs)
			if err != unix.EINTR {
				break
			}
		}
	}); cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (c *conn) write(b []byte) (int, error) { return c.writev([][]byte{b}) }

// pollReady reports whether fd shows any of events (or an error or hang-up)
// right now. Called from RawConn.Read/Write, whose loop waits for the next
// readiness edge when it returns false; checking the real state (rather
// than assuming) means an edge consumed before the wait is never lost.
func pollReady(fd uintptr, events int16) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		// On any other error, report ready: the worker's I/O will
		// surface it.
		return err != nil || (n > 0 && fds[0].Revents != 0)
	}
}

// txBuf is a connection's TX ring buffer (Firecracker's TxBuf), allocated
// on first use since it is only needed when the host reads slowly.
type txBuf struct {
	data       []byte
	head, tail uint32 // free-running; head-tail bytes are buffered
}

func (b *txBuf) len() uint32 { return b.head - b.tail }

func (b *txBuf) empty() bool { return b.head == b.tail }

func (b *txBuf) clear() { *b = txBuf{} }

var errTxBufFull = errors.New("attempted to push data to a full TX buffer")

// push appends payload bytes [off, off+n) of p, all or nothing.
func (b *txBuf) push(p *txPacket, off, n uint32) error {
	if uint64(b.len())+uint64(n) > ConnTxBufSize {
		return errTxBufFull
	}
	if b.data == nil {
		b.data = make([]byte, ConnTxBufSize)
	}
	h := b.head % ConnTxBufSize
	first := min(ConnTxBufSize-h, n)
	if err := p.copyData(b.data[h:h+first], off); err != nil {
		return err
	}
	if first < n {
		if err := p.copyData(b.data[:n-first], off+first); err != nil {
			return err
		}
	}
	b.head += n
	return nil
}

// flushTo writes as much as the socket takes without blocking and returns
// how many bytes left the buffer. Like Firecracker's flush_to, an error on
// the second (wrapped) part after a full first part is not reported.
func (b *txBuf) flushTo(c *conn) (int, error) {
	if b.empty() {
		return 0, nil
	}
	t := b.tail % ConnTxBufSize
	l := min(ConnTxBufSize-t, b.len())
	n, err := c.write(b.data[t : t+l])
	if err != nil {
		return 0, err
	}
	b.tail += uint32(n)
	if uint32(n) < l {
		return n, nil
	}
	more, _ := b.flushTo(c)
	return n + more, nil
}
