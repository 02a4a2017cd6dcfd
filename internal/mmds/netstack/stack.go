package netstack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/mmds"
)

// Firecracker's MMDS stack constants.
const (
	// Port is the only TCP port the MMDS listens on.
	Port = 80
	// MaxConnections is how many TCP connections the stack keeps at once.
	MaxConnections = 30
	// MaxPendingResets bounds the queue of RSTs to send.
	MaxPendingResets = 100
)

// DefaultMAC is Firecracker's MMDS MAC address, 06:01:23:45:67:01.
var DefaultMAC = [6]byte{0x06, 0x01, 0x23, 0x45, 0x67, 0x01}

// Config configures a Stack.
type Config struct {
	// IPv4 is the MMDS address (use mmds.Config.IPv4()); the zero Addr
	// means mmds.DefaultIPv4Address.
	IPv4 netip.Addr
	// MAC is the stack's MAC address; the zero value means DefaultMAC.
	MAC [6]byte
	// Clock is a monotonic clock for timeouts; nil means real time.
	Clock func() time.Duration
	// Metrics receives the "mmds" counters the stack owns; nil means
	// &metrics.Default.MMDS.
	Metrics *metrics.MMDSMetrics
}

// Responder answers parsed HTTP requests; *mmds.Service implements it. It is
// called with the stack's lock held, so it must not call back into the
// stack.
type Responder interface {
	Respond(mmds.Request) mmds.Response
}

// Stack is the MMDS network stack of one network interface. It is safe for
// concurrent use: the net device may call DetourFrame and WriteNextFrame
// from different goroutines.
type Stack struct {
	ip    [4]byte
	mac   [6]byte
	clock func() time.Duration
	ctx   endpointCtx

	mu sync.Mutex
	// remoteMAC is where replies go: the source of the latest ARP request
	// or TCP frame (each stack serves one interface, so one guest MAC).
	remoteMAC  [6]byte
	arpPending bool
	arpDest    [4]byte // who asked in the latest ARP request
	tcp        tcpListener
}

// New returns a stack answering at cfg's address with r, which must not be
// nil.
func New(cfg Config, r Responder) *Stack {
	if r == nil {
		panic("netstack: New needs a Responder")
	}
	ip := mmds.DefaultIPv4Address.As4()
	if a := cfg.IPv4.Unmap(); a.Is4() {
		ip = a.As4()
	}
	mac := cfg.MAC
	if mac == ([6]byte{}) {
		mac = DefaultMAC
	}
	clock := cfg.Clock
	if clock == nil {
		start := time.Now()
		clock = func() time.Duration { return time.Since(start) }
	}
	m := cfg.Metrics
	if m == nil {
		m = &metrics.Default.MMDS
	}
	return &Stack{
		ip:        ip,
		mac:       mac,
		clock:     clock,
		ctx:       endpointCtx{responder: r, m: m},
		remoteMAC: mac,
		tcp: tcpListener{
			addr:      ip,
			port:      Port,
			maxConns:  MaxConnections,
			maxResets: MaxPendingResets,
		},
	}
}

// DetourFrame is offered each guest TX Ethernet frame (without virtio-net
// header). It returns true when the frame is for MMDS: an ARP frame whose
// target IP is the MMDS address, or an IPv4 frame whose destination is, as
// told by Firecracker's speculative check on the bytes where those fields
// would be. It then handles the frame; such frames must never reach the
// TAP, even when they turn out malformed.
func (s *Stack) DetourFrame(frame []byte) bool {
	if len(frame) < ethHeaderLen {
		return false
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case etherTypeARP:
		if !speculativeARPTarget(frame, s.ip) {
			return false
		}
		if req, err := parseARPRequest(frame[ethHeaderLen:]); err == nil {
			s.mu.Lock()
			// Only the latest request is remembered and answered.
			s.remoteMAC = req.sha
			s.arpPending, s.arpDest = true, req.spa
			s.mu.Unlock()
		}
		return true
	case etherTypeIPv4:
		if !speculativeIPv4Dst(frame, s.ip) {
			return false
		}
		s.detourIPv4(frame)
		return true
	}
	return false
}

func (s *Stack) detourIPv4(frame []byte) {
	p, err := parseIPv4(frame[ethHeaderLen:])
	if err != nil {
		return
	}
	m := s.ctx.m
	if p.protocol() != protocolTCP {
		// Not TCP: dropped, but unusual enough to count.
		m.RxAcceptedUnusual.Inc()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remoteMAC = [6]byte(frame[6:12])
	ev, err := s.tcp.receive(p, s.clock(), &s.ctx)
	if err != nil {
		m.RxAcceptedErr.Inc()
		return
	}
	m.RxCount.Inc()
	switch ev {
	case evNewConnection:
		m.ConnectionsCreated.Inc()
	case evNewConnectionReplacing:
		m.ConnectionsCreated.Inc()
		m.ConnectionsDestroyed.Inc()
	case evEndpointDone:
		m.ConnectionsDestroyed.Inc()
	}
}

// WriteNextFrame writes the next Ethernet frame to deliver to the guest into
// buf and returns its length; ok is false when nothing is pending (or buf
// is too small for it). A pending ARP reply goes first, then queued RSTs,
// then TCP segments. Retransmissions become due with time, not with an
// event: Firecracker, too, only sends them when the device offers an RX
// opportunity.
func (s *Stack) WriteNextFrame(buf []byte) (n int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.ctx.m
	if s.arpPending {
		if len(buf) < arpReplyFrame {
			m.TxErrors.Inc()
			return 0, false
		}
		n = writeARPReply(buf, s.mac, s.ip, s.remoteMAC, s.arpDest)
		s.arpPending = false
		m.TxCount.Inc()
		return n, true
	}
	now := s.clock()
	if !s.tcp.due(now) {
		return 0, false
	}
	if len(buf) < ethHeaderLen {
		m.TxErrors.Inc()
		return 0, false
	}
	writeEthHeader(buf, s.remoteMAC, s.mac, etherTypeIPv4)
	n, done, err := s.tcp.writeNext(buf[ethHeaderLen:], now, &s.ctx)
	if done {
		m.ConnectionsDestroyed.Inc()
	}
	if err != nil {
		m.TxErrors.Inc()
		return 0, false
	}
	if n == 0 {
		return 0, false
	}
	m.TxCount.Inc()
	return ethHeaderLen + n, true
}
