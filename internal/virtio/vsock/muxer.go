package vsock

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
)

// Muxer limits (Firecracker's unix::defs).
const (
	// MaxConnections is the most connections the device keeps at once.
	MaxConnections = 1023
	// muxerRxQSize bounds the queue of connections (and RSTs) with
	// something for the guest.
	muxerRxQSize = 256
	// muxerKillQSize bounds the queue of connections with a kill timer.
	muxerKillQSize = 128
	// connectLineMax is how much of a host client's "CONNECT <port>\n"
	// is read, and connectLineMin how much at least.
	connectLineMax = 32
	connectLineMin = 10
	// localPortFirst starts host-side ports for host-initiated
	// connections; they go round-robin through [2^30, 2^31).
	localPortFirst = 1 << 30
)

var (
	errTooManyConns   = errors.New("muxer connection limit reached")
	errInvalidConnect = errors.New("the host made an invalid vsock port connection request")
	errConnExists     = errors.New("connection already exists")
)

// rxItem is a muxer RX queue entry: a connection with something to say, or
// an RST the muxer itself owes the guest (for a packet it could not
// route).
type rxItem struct {
	key connKey
	rst bool
}

// rxQueue is Firecracker's MuxerRxQ: a bounded FIFO that may fall out of
// sync with the connections when it overflows, and is then rebuilt from
// them.
type rxQueue struct {
	q      [muxerRxQSize]rxItem
	head   int
	n      int
	synced bool
}

func newRxQueue() rxQueue { return rxQueue{synced: true} }

// push queues it and reports whether it was queued. A full (or unsynced)
// queue drops connection entries (they are recovered by a rebuild) but
// makes room for an RST in place of the newest connection entry.
func (q *rxQueue) push(it rxItem) bool {
	if q.synced && q.n < muxerRxQSize {
		q.q[(q.head+q.n)%muxerRxQSize] = it
		q.n++
		return true
	}
	if it.rst {
		for i := q.n - 1; i >= 0; i-- {
			j := (q.head + i) % muxerRxQSize
			if !q.q[j].rst {
				q.q[j] = it
				q.synced = false
				return true
			}
		}
		return false
	}
	q.synced = false
	return false
}

func (q *rxQueue) peek() (rxItem, bool) {
	if q.n == 0 {
		return rxItem{}, false
	}
	return q.q[q.head], true
}

func (q *rxQueue) pop() {
	if q.n > 0 {
		q.head = (q.head + 1) % muxerRxQSize
		q.n--
	}
}

// rxQueueFromConns rebuilds the queue from the connections' pending
// packets.
func rxQueueFromConns(conns map[connKey]*conn) rxQueue {
	q := newRxQueue()
	for k, c := range conns {
		if !c.hasPendingRx() {
			continue
		}
		if q.n >= muxerRxQSize {
			q.synced = false
			break
		}
		q.q[q.n] = rxItem{key: k}
		q.n++
	}
	return q
}

// killItem is a connection due to be killed at when.
type killItem struct {
	key  connKey
	when time.Time
}

// killQueue is Firecracker's MuxerKillQ: connections with a kill timer, in
// timer order, bounded, rebuilt from the connections when it overflowed.
type killQueue struct {
	q      []killItem
	synced bool
}

func newKillQueue() killQueue { return killQueue{synced: true} }

func (q *killQueue) push(key connKey, when time.Time) {
	if !q.synced || len(q.q) >= muxerKillQSize {
		q.synced = false
		return
	}
	q.q = append(q.q, killItem{key, when})
}

// pop returns the front connection if its time has passed.
func (q *killQueue) pop(now time.Time) (connKey, bool) {
	if len(q.q) == 0 || !now.After(q.q[0].when) {
		return connKey{}, false
	}
	k := q.q[0].key
	q.q = q.q[1:]
	return k, true
}

// next is the earliest kill time queued.
func (q *killQueue) next() (time.Time, bool) {
	if len(q.q) == 0 {
		return time.Time{}, false
	}
	return q.q[0].when, true
}

func killQueueFromConns(conns map[connKey]*conn, now time.Time) killQueue {
	q := killQueue{synced: true}
	for k, c := range conns {
		if !c.willExpire(now) {
			continue
		}
		if len(q.q) >= muxerKillQSize {
			q.synced = false
			break
		}
		q.q = append(q.q, killItem{k, c.expiry})
	}
	slices.SortFunc(q.q, func(a, b killItem) int { return a.when.Compare(b.when) })
	return q
}

// connEvent is a waiter's report that c's socket became readable (out
// false) or writable (out true); err is set if the wait itself failed.
type connEvent struct {
	c   *conn
	out bool
	err error
}

// muxer is the Unix-socket backend, Firecracker's VsockMuxer: it owns the
// connections, routes guest packets to them, and picks what goes to the
// guest next. Only the worker goroutine calls it.
type muxer struct {
	cid     uint64
	udsPath string
	m       *metrics.VsockMetrics

	conns     map[connKey]*conn
	rxq       rxQueue
	killq     killQueue
	usedPorts map[uint32]struct{}
	lastPort  uint32

	// Readiness waiters: each reports once on events, or gives up when
	// the worker stops; they run as goroutines of run, so that Reset and
	// Suspend wait for them. Both belong to the worker the muxer is
	// attached to: the muxer outlives a worker stopped by Suspend.
	events chan<- connEvent
	run    *virtio.Worker
	// nconns mirrors len(conns) for the accept loop.
	nconns func(int)
}

func newMuxer(cid uint64, udsPath string, m *metrics.VsockMetrics) *muxer {
	return &muxer{
		cid: cid, udsPath: udsPath, m: m,
		conns:     make(map[connKey]*conn),
		rxq:       newRxQueue(),
		killq:     newKillQueue(),
		usedPorts: make(map[uint32]struct{}),
		lastPort:  localPortFirst - 1,
		nconns:    func(int) {},
	}
}

// attach hands the muxer to a new worker, before that worker's goroutines
// run: its connections, kept open by park while no worker ran, are
// watched again by waiters of the new worker. Readiness that came
// meanwhile is not lost: a waiter looks at the socket's state first.
func (m *muxer) attach(events chan<- connEvent, run *virtio.Worker, nconns func(int)) {
	m.events, m.run, m.nconns = events, run, nconns
	nconns(len(m.conns))
	for _, c := range m.conns {
		// park's waiters have all returned.
		c.readArmed, c.writeArmed = false, false
		c.stream.SetDeadline(time.Time{})
		m.watch(c)
	}
}

// park wakes the readiness waiters of a stopping worker without closing
// the connections: a deadline in the past ends their wait, and the
// connections stay for the next worker (Resume) or for forget (Reset).
// The worker calls it as it exits, after its last watch.
func (m *muxer) park() {
	for _, c := range m.conns {
		c.stream.SetDeadline(time.Unix(1, 0))
	}
}

// hasPendingRx reports whether recvPkt may have a packet.
func (m *muxer) hasPendingRx() bool { return m.rxq.n > 0 || !m.rxq.synced }

// recvPkt fills p with the next packet for the guest, or returns
// errNoData.
func (m *muxer) recvPkt(p *rxPacket) error {
	if m.rxq.n == 0 && !m.rxq.synced {
		m.rxq = rxQueueFromConns(m.conns)
	}
	for {
		it, ok := m.rxq.peek()
		if !ok {
			return errNoData
		}
		if it.rst {
			p.hdr = header{
				SrcCID: HostCID, DstCID: m.cid,
				SrcPort: it.key.local, DstPort: it.key.peer,
				Type: typeStream, Op: opRst,
			}
			m.rxq.pop()
			return nil
		}
		err := errNoData
		pop := true
		if c := m.conns[it.key]; c != nil {
			m.mutate(c, func(c *conn) {
				err = c.recvPkt(p)
				pop = !c.hasPendingRx()
			})
		}
		if pop {
			m.rxq.pop()
		}
		switch {
		case err == nil:
			m.m.RxPacketsCount.Inc()
			if p.hdr.Op == opRst {
				// The guest is told the connection is gone: drop it.
				m.removeConn(connKey{local: p.hdr.SrcPort, peer: p.hdr.DstPort})
			}
			if log.Enabled(debugLevel) {
				log.Debugf("vsock muxer: RX pkt: %v", &p.hdr)
			}
			return nil
		case err != errNoData:
			return err
		}
	}
}

// sendPkt delivers a guest packet: it answers what it cannot route with an
// RST (or drops it, for another CID), handles connection requests and
// resets, and passes the rest to the connection. The packet is always
// consumed.
func (m *muxer) sendPkt(p *txPacket) {
	h := &p.hdr
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	if log.Enabled(debugLevel) {
		log.Debugf("vsock: muxer.send[rxq.len=%d]: %v", m.rxq.n, h)
	}
	if h.Type != typeStream {
		m.enqRst(h.DstPort, h.SrcPort)
		return
	}
	if h.DstCID != HostCID {
		log.RateLimited(&rlPkt).Infof("vsock: dropping guest packet for unknown CID: %v", h)
		return
	}
	c := m.conns[key]
	if c == nil {
		if h.Op == opRequest {
			m.handlePeerRequest(p)
		} else {
			m.enqRst(h.DstPort, h.SrcPort)
		}
		return
	}
	if h.Op == opRst {
		m.removeConn(key)
		return
	}
	m.mutate(c, func(c *conn) { c.sendPkt(p) })
}

// handlePeerRequest connects a guest request for host port P to the Unix
// socket "<uds_path>_P"; failure is an RST.
func (m *muxer) handlePeerRequest(p *txPacket) {
	h := &p.hdr
	path := m.udsPath + "_" + strconv.FormatUint(uint64(h.DstPort), 10)
	// Connecting a non-blocking Unix socket never waits: it succeeds, or
	// fails at once (no listener, full backlog).
	s, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err == nil {
		var c *conn
		key := connKey{local: h.DstPort, peer: h.SrcPort}
		if c, err = newConn(s, key, m.cid, statePeerInit, m.m); err == nil {
			c.peerBufAlloc = h.BufAlloc
			err = m.addConn(c)
		}
		if err != nil {
			s.Close()
		}
	}
	if err != nil {
		log.RateLimited(&rlPkt).Debugf("vsock: guest connection to port %d refused: %v", h.DstPort, err)
		m.enqRst(h.DstPort, h.SrcPort)
	}
}

// addHostConn adds a host-initiated connection to guest port peerPort,
// taking over s (it is closed on failure).
func (m *muxer) addHostConn(s *net.UnixConn, peerPort uint32) {
	local := m.allocLocalPort()
	c, err := newConn(s, connKey{local: local, peer: peerPort}, m.cid, stateLocalInit, m.m)
	if err == nil {
		err = m.addConn(c)
	}
	if err != nil {
		log.RateLimited(&rlHost).Infof("vsock: error adding local-init connection: %v", err)
		delete(m.usedPorts, local)
		s.Close()
	}
}

// allocLocalPort picks the next free host port, round-robin in
// [2^30, 2^31).
func (m *muxer) allocLocalPort() uint32 {
	for {
		m.lastPort = (m.lastPort+1)&^(1<<31) | localPortFirst
		if _, used := m.usedPorts[m.lastPort]; !used {
			m.usedPorts[m.lastPort] = struct{}{}
			return m.lastPort
		}
	}
}

func (m *muxer) addConn(c *conn) error {
	// Room may come from connections whose time is up.
	m.sweepKillq()
	if len(m.conns) >= MaxConnections {
		log.RateLimited(&rlHost).Infof("vsock: muxer connection limit reached (%d)", MaxConnections)
		return errTooManyConns
	}
	if m.conns[c.key] != nil {
		// Only a guest that reuses a host port of a live connection gets
		// here; Firecracker would replace (and leak) the old one.
		return errConnExists
	}
	m.conns[c.key] = c
	m.nconns(len(m.conns))
	if c.hasPendingRx() {
		m.rxq.push(rxItem{key: c.key})
	}
	m.m.ConnsAdded.Inc()
	m.watch(c)
	return nil
}

// removeConn closes and forgets the connection at key, and frees its host
// port.
func (m *muxer) removeConn(key connKey) {
	if c := m.conns[key]; c != nil {
		delete(m.conns, key)
		m.nconns(len(m.conns))
		c.closed = true
		c.stream.Close()
		m.m.ConnsRemoved.Inc()
	}
	delete(m.usedPorts, key.local)
}

// killConn schedules an RST for the connection at key.
func (m *muxer) killConn(key connKey) {
	m.m.ConnsKilled.Inc()
	c := m.conns[key]
	if c == nil {
		return
	}
	hadRx := c.hasPendingRx()
	c.kill()
	if !hadRx {
		m.rxq.push(rxItem{key: key})
	}
}

// mutate runs f on c and then does the bookkeeping every state change
// needs (Firecracker's apply_conn_mutation): the "OK <port>" reply when a
// host-initiated connection is accepted, the RX and kill queues, and the
// readiness c waits for.
func (m *muxer) mutate(c *conn, f func(*conn)) {
	now := time.Now()
	hadRx := c.hasPendingRx()
	wasExpiring := c.willExpire(now)
	prev := c.state

	f(c)

	if prev == stateLocalInit && c.state == stateEstablished {
		msg := fmt.Sprintf("OK %d\n", c.key.local)
		n, err := c.write([]byte(msg))
		switch {
		case err != nil:
			c.kill()
			log.RateLimited(&rlHost).Warnf("vsock: unable to ack host connection: %v", err)
		case n != len(msg):
			c.kill()
			log.RateLimited(&rlHost).Warnf("vsock: unable to fully write connection ack msg.")
		}
	}
	if !hadRx && c.hasPendingRx() {
		m.rxq.push(rxItem{key: c.key})
	}
	if !wasExpiring && c.willExpire(now) {
		m.killq.push(c.key, c.expiry)
	}
	m.watch(c)
}

// watch starts a waiter for each readiness c wants and is not yet
// watching.
func (m *muxer) watch(c *conn) {
	if c.closed {
		return
	}
	ev := c.wants()
	if ev&evIn != 0 && !c.readArmed {
		c.readArmed = true
		m.spawnWaiter(c, false)
	}
	if ev&evOut != 0 && !c.writeArmed {
		c.writeArmed = true
		m.spawnWaiter(c, true)
	}
}

// spawnWaiter starts a goroutine that blocks on the Go poller until c's
// socket is readable (or writable) and reports it once. Closing the socket
// wakes it.
func (m *muxer) spawnWaiter(c *conn, out bool) {
	// The waiter reports to the worker that started it, even once the
	// muxer has moved on to another.
	events, run := m.events, m.run
	run.Go(func() {
		var err error
		if out {
			err = c.raw.Write(func(fd uintptr) bool { return pollReady(fd, pollOut) })
		} else {
			err = c.raw.Read(func(fd uintptr) bool { return pollReady(fd, pollIn) })
		}
		select {
		case events <- connEvent{c: c, out: out, err: err}:
		case <-run.Done():
		}
	})
}

// handleEvent takes a waiter's report.
func (m *muxer) handleEvent(ev connEvent) {
	c := ev.c
	if ev.out {
		c.writeArmed = false
	} else {
		c.readArmed = false
	}
	if c.closed || m.conns[c.key] != c {
		return
	}
	m.mutate(c, func(c *conn) {
		if ev.err != nil {
			// Only closing the socket should end a wait; anything else
			// leaves the connection unusable.
			m.m.ConnEventFails.Inc()
			log.RateLimited(&rlConn).Errorf("vsock: waiting on connection (lp=%d, pp=%d): %v", c.key.local, c.key.peer, ev.err)
			c.kill()
			return
		}
		want := c.wants()
		if ev.out && want&evOut != 0 {
			c.notifyOut()
		}
		if !ev.out && want&evIn != 0 {
			c.notifyIn()
		}
	})
}

// sweepKillq kills the connections whose timers ran out.
func (m *muxer) sweepKillq() {
	now := time.Now()
	for {
		for {
			key, ok := m.killq.pop(now)
			if !ok {
				break
			}
			// A disarmed timer stays queued: check it is still due.
			if c := m.conns[key]; c != nil && c.hasExpired(now) {
				m.killConn(key)
			}
		}
		if len(m.killq.q) > 0 || m.killq.synced {
			return
		}
		m.killq = killQueueFromConns(m.conns, now)
		m.m.KillqResync.Inc()
	}
}

// nextKill is when sweepKillq next has work, if ever.
func (m *muxer) nextKill() (time.Time, bool) { return m.killq.next() }

// enqRst queues an RST from host port local to guest port peer.
func (m *muxer) enqRst(local, peer uint32) {
	if !m.rxq.push(rxItem{key: connKey{local: local, peer: peer}, rst: true}) {
		log.RateLimited(&rlPkt).Warnf("vsock: muxer.rxq full; dropping RST packet for lp=%d, pp=%d", local, peer)
	}
}

// dropConns closes every connection and forgets what was queued for the
// guest (a snapshot: the guest is told to drop its side with a transport
// reset). The host-port sequence carries on.
func (m *muxer) dropConns() {
	for k := range m.conns {
		m.removeConn(k)
	}
	m.rxq = newRxQueue()
	m.killq = newKillQueue()
	clear(m.usedPorts)
}

// closeAll drops every connection and starts the host ports over (device
// reset).
func (m *muxer) closeAll() {
	m.dropConns()
	m.lastPort = localPortFirst - 1
}

// readConnectPort reads a host client's "CONNECT <port>\n" as Firecracker
// does: at least connectLineMin bytes, then one at a time up to a newline
// or connectLineMax bytes, so nothing after the line is consumed. The
// keyword is case-insensitive.
func readConnectPort(r io.Reader) (uint32, error) {
	var l connectLine
	return l.read(r)
}

// connectLine is a CONNECT line read so far, so that a read interrupted
// by Suspend goes on where it stopped once the device resumes.
type connectLine struct {
	buf [connectLineMax]byte
	n   int
}

// read reads the rest of the line, as readConnectPort does, and parses
// it. After an error it may be called again: what was read stays.
func (l *connectLine) read(r io.Reader) (uint32, error) {
	if l.n < connectLineMin {
		k, err := io.ReadFull(r, l.buf[l.n:connectLineMin])
		l.n += k
		if err != nil {
			return 0, err
		}
	}
	for l.buf[l.n-1] != '\n' && l.n < len(l.buf) {
		k, err := io.ReadFull(r, l.buf[l.n:l.n+1])
		l.n += k
		if err != nil {
			return 0, err
		}
	}
	return parseConnectLine(l.buf[:l.n])
}

func parseConnectLine(b []byte) (uint32, error) {
	if !utf8.Valid(b) {
		return 0, errInvalidConnect
	}
	words := strings.Fields(string(b))
	if len(words) < 2 || strings.ToLower(words[0]) != "connect" {
		return 0, errInvalidConnect
	}
	// Rust's u32 parsing, which Firecracker uses, takes one leading '+'.
	num := strings.TrimPrefix(words[1], "+")
	if num == "" || num[0] == '+' || num[0] == '-' {
		return 0, errInvalidConnect
	}
	port, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, errInvalidConnect
	}
	return uint32(port), nil
}
