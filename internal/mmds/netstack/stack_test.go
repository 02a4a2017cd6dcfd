package netstack

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/mmds"
)

var (
	guestMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	guestIP  = [4]byte{172, 16, 0, 2}
	mmdsIP   = [4]byte{169, 254, 169, 254}
)

// fakeClock is a manual monotonic clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Duration
}

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	c.mu.Unlock()
}

// recorder is a Responder that records requests and answers with a fixed
// response.
type recorder struct {
	mu   sync.Mutex
	reqs []mmds.Request
	resp mmds.Response
}

func (r *recorder) Respond(req mmds.Request) mmds.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	if r.resp.Status == 0 {
		return mmds.Response{Status: 200, ContentType: mmds.ContentTypeText, Body: []byte("ami-id\nhostname")}
	}
	return r.resp
}

func (r *recorder) requests() []mmds.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mmds.Request(nil), r.reqs...)
}

type testStack struct {
	*Stack
	clock *fakeClock
	m     *metrics.MMDSMetrics
}

func newTestStack(r Responder) *testStack {
	c := &fakeClock{now: time.Hour}
	m := new(metrics.MMDSMetrics)
	s := New(Config{IPv4: netip.AddrFrom4(mmdsIP), Clock: c.Now, Metrics: m}, r)
	return &testStack{Stack: s, clock: c, m: m}
}

// Frame builders: what a guest kernel would put on the wire.

func ethFrame(dst, src [6]byte, etherType uint16, payload []byte) []byte {
	b := make([]byte, ethHeaderLen, ethHeaderLen+len(payload))
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

func arpFrame(op uint16, sha [6]byte, spa [4]byte, tha [6]byte, tpa [4]byte) []byte {
	a := make([]byte, arpFrameLen)
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	copy(a[8:], sha[:])
	copy(a[14:], spa[:])
	copy(a[18:], tha[:])
	copy(a[24:], tpa[:])
	return ethFrame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, sha, etherTypeARP, a)
}

// seg describes a TCP segment in either direction.
type seg struct {
	srcIP, dstIP     [4]byte
	srcPort, dstPort uint16
	seq, ack         uint32
	flags            uint8
	window           uint16
	opts             []byte
	payload          []byte
}

func ipv4Packet4(src, dst [4]byte, proto uint8, payload []byte) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(payload)))
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = proto
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	binary.BigEndian.PutUint16(p[10:], ^foldSum(sum16(0, p)))
	return append(p, payload...)
}

func tcpBytes(s seg) []byte {
	hl := 20 + len(s.opts)
	b := make([]byte, hl, hl+len(s.payload))
	binary.BigEndian.PutUint16(b[0:], s.srcPort)
	binary.BigEndian.PutUint16(b[2:], s.dstPort)
	binary.BigEndian.PutUint32(b[4:], s.seq)
	binary.BigEndian.PutUint32(b[8:], s.ack)
	b[12] = byte(hl/4) << 4
	b[13] = s.flags
	binary.BigEndian.PutUint16(b[14:], s.window)
	copy(b[20:], s.opts)
	b = append(b, s.payload...)
	binary.BigEndian.PutUint16(b[16:], tcpChecksum(s.srcIP, s.dstIP, b))
	return b
}

func tcpFrame(s seg) []byte {
	return ethFrame(DefaultMAC, guestMAC, etherTypeIPv4, ipv4Packet4(s.srcIP, s.dstIP, protocolTCP, tcpBytes(s)))
}

func mssOpt(mss uint16) []byte { return []byte{2, 4, byte(mss >> 8), byte(mss)} }

// outFrame is a frame the stack emitted, decoded and checked.
type outFrame struct {
	ethDst, ethSrc [6]byte
	etherType      uint16
	arp            []byte // the ARP payload, for ARP frames
	tcp            seg    // for IPv4 frames
	mss            uint16 // MSS option, 0 if none
}

// checkFrame decodes an emitted frame and verifies that it is well formed:
// Ethernet II from the stack's MAC, an ARP reply, or an IPv4 packet with TTL 1,
// exact length and valid header checksum carrying a TCP segment from port 80
// with a valid checksum.
func checkFrame(b []byte, stackMAC [6]byte, stackIP [4]byte) (outFrame, error) {
	var f outFrame
	if len(b) < ethHeaderLen {
		return f, fmt.Errorf("frame of %d bytes", len(b))
	}
	f.ethDst, f.ethSrc = [6]byte(b[0:6]), [6]byte(b[6:12])
	f.etherType = binary.BigEndian.Uint16(b[12:])
	if f.ethSrc != stackMAC {
		return f, fmt.Errorf("source MAC %x", f.ethSrc)
	}
	p := b[ethHeaderLen:]
	switch f.etherType {
	case etherTypeARP:
		if len(p) != arpFrameLen {
			return f, fmt.Errorf("ARP payload of %d bytes", len(p))
		}
		want := []byte{0, 1, 8, 0, 6, 4, 0, 2}
		if !bytes.Equal(p[:8], want) {
			return f, fmt.Errorf("ARP header % x", p[:8])
		}
		if [6]byte(p[8:14]) != stackMAC || [4]byte(p[14:18]) != stackIP || [6]byte(p[18:24]) != f.ethDst {
			return f, fmt.Errorf("ARP addresses % x", p)
		}
		f.arp = p
		return f, nil
	case etherTypeIPv4:
	default:
		return f, fmt.Errorf("ethertype %#x", f.etherType)
	}
	if len(p) < 20 || p[0] != 0x45 {
		return f, fmt.Errorf("IPv4 header % x", p[:min(len(p), 20)])
	}
	if int(binary.BigEndian.Uint16(p[2:])) != len(p) {
		return f, fmt.Errorf("IPv4 total length %d, packet %d", binary.BigEndian.Uint16(p[2:]), len(p))
	}
	if foldSum(sum16(0, p[:20])) != 0xffff {
		return f, fmt.Errorf("bad IPv4 header checksum")
	}
	if p[8] != 1 || p[9] != protocolTCP || binary.BigEndian.Uint16(p[6:]) != 0 {
		return f, fmt.Errorf("IPv4 TTL %d protocol %d flags %#x", p[8], p[9], binary.BigEndian.Uint16(p[6:]))
	}
	src, dst := [4]byte(p[12:16]), [4]byte(p[16:20])
	if src != stackIP {
		return f, fmt.Errorf("IPv4 source %v", src)
	}
	t := p[20:]
	if len(t) < 20 {
		return f, fmt.Errorf("TCP segment of %d bytes", len(t))
	}
	if tcpChecksum(src, dst, t) != 0 {
		return f, fmt.Errorf("bad TCP checksum")
	}
	hl := int(t[12]>>4) * 4
	if hl < 20 || hl > len(t) || t[12]&0x0f != 0 {
		return f, fmt.Errorf("TCP header length byte %#x", t[12])
	}
	f.tcp = seg{
		srcIP: src, dstIP: dst,
		srcPort: binary.BigEndian.Uint16(t[0:]), dstPort: binary.BigEndian.Uint16(t[2:]),
		seq: binary.BigEndian.Uint32(t[4:]), ack: binary.BigEndian.Uint32(t[8:]),
		flags: t[13], window: binary.BigEndian.Uint16(t[14:]),
		opts: t[20:hl], payload: t[hl:],
	}
	if f.tcp.srcPort != Port {
		return f, fmt.Errorf("TCP source port %d", f.tcp.srcPort)
	}
	switch {
	case hl == 24 && t[20] == 2 && t[21] == 4:
		f.mss = binary.BigEndian.Uint16(t[22:])
		if f.tcp.flags != flagSYN|flagACK {
			return f, fmt.Errorf("MSS option on flags %#x", f.tcp.flags)
		}
	case hl != 20:
		return f, fmt.Errorf("TCP options % x", t[20:hl])
	}
	return f, nil
}

// drain collects and checks every frame the stack has for the guest.
func (s *testStack) drain(t testing.TB) []outFrame {
	t.Helper()
	var out []outFrame
	buf := make([]byte, 65562)
	for range 1000 {
		n, ok := s.WriteNextFrame(buf)
		if !ok {
			return out
		}
		// Copy: the decoded frame refers to its bytes.
		f, err := checkFrame(slices.Clone(buf[:n]), s.mac, s.ip)
		if err != nil {
			t.Fatalf("emitted frame: %v\n% x", err, buf[:n])
		}
		out = append(out, f)
	}
	t.Fatal("the stack never runs dry")
	return nil
}

func (s *testStack) detour(t testing.TB, frame []byte) {
	t.Helper()
	if !s.DetourFrame(frame) {
		t.Fatalf("frame not detoured: % x", frame)
	}
}

// tconn is the guest end of a TCP connection to the MMDS.
type tconn struct {
	s        *testStack
	port     uint16
	seq, ack uint32 // next sequence number to send / expected from the stack
	window   uint16
}

func (c *tconn) seg(flags uint8, payload []byte) seg {
	return seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: c.port, dstPort: Port,
		seq: c.seq, ack: c.ack, flags: flags, window: c.window, payload: payload}
}

// dial performs the three-way handshake, advertising mss.
func dial(t testing.TB, s *testStack, port uint16, mss uint16) *tconn {
	t.Helper()
	return dialWindow(t, s, port, mss, 64240)
}

func dialWindow(t testing.TB, s *testStack, port uint16, mss, window uint16) *tconn {
	t.Helper()
	c := &tconn{s: s, port: port, seq: 1000 * uint32(port), window: window}
	syn := c.seg(flagSYN, nil)
	syn.opts = mssOpt(mss)
	s.detour(t, tcpFrame(syn))
	fs := s.drain(t)
	if len(fs) != 1 {
		t.Fatalf("port %d: %d frames after SYN, want a SYN-ACK", port, len(fs))
	}
	sa := fs[0]
	if sa.tcp.flags != flagSYN|flagACK || sa.tcp.ack != c.seq+1 || sa.mss != mss ||
		sa.tcp.dstPort != port || sa.tcp.dstIP != guestIP || sa.ethDst != guestMAC {
		t.Fatalf("bad SYN-ACK %+v", sa)
	}
	if sa.tcp.window != rcvBufMaxSize {
		t.Fatalf("SYN-ACK window %d", sa.tcp.window)
	}
	c.seq++
	c.ack = sa.tcp.seq + 1
	s.detour(t, tcpFrame(c.seg(flagACK, nil)))
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("frames after the handshake ACK: %+v", fs)
	}
	return c
}

func (c *tconn) send(t testing.TB, flags uint8, payload []byte) {
	t.Helper()
	c.s.detour(t, tcpFrame(c.seg(flags, payload)))
	c.seq += uint32(len(payload))
	if flags&flagFIN != 0 {
		c.seq++
	}
}

// readResponse drains the stack, ACKing in-order data for this connection,
// until a complete HTTP response has arrived; it returns the raw bytes.
func (c *tconn) readResponse(t testing.TB) []byte {
	t.Helper()
	return c.readResponseAfter(t, nil)
}

// readResponseAfter is readResponse when the response starts with data,
// already received and acknowledged.
func (c *tconn) readResponseAfter(t testing.TB, data []byte) []byte {
	t.Helper()
	for range 100 {
		fs := c.s.drain(t)
		if len(fs) == 0 {
			break
		}
		for _, f := range fs {
			if f.tcp.dstPort != c.port {
				continue
			}
			if f.tcp.flags&flagRST != 0 {
				t.Fatalf("RST while reading the response")
			}
			if len(f.tcp.payload) > 0 && f.tcp.seq == c.ack {
				data = append(data, f.tcp.payload...)
				c.ack += uint32(len(f.tcp.payload))
			}
		}
		c.s.detour(t, tcpFrame(c.seg(flagACK, nil)))
		if _, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil); err == nil && completeResponse(data) {
			return data
		}
	}
	t.Fatalf("incomplete response %q", data)
	return nil
}

func completeResponse(b []byte) bool {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return false
	}
	_, err = io.ReadAll(resp.Body)
	return err == nil
}

func parseResponse(t testing.TB, b []byte) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("response %q: %v", b, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body of %q: %v", b, err)
	}
	return resp, string(body)
}

func TestARPReply(t *testing.T) {
	s := newTestStack(&recorder{})
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("frames before anything happened: %+v", fs)
	}
	// Two requests: only the latest is answered.
	other := [4]byte{172, 16, 0, 9}
	s.detour(t, arpFrame(1, guestMAC, other, [6]byte{}, mmdsIP))
	s.detour(t, arpFrame(1, guestMAC, guestIP, [6]byte{}, mmdsIP))
	// A short buffer fails without losing the reply.
	if _, ok := s.WriteNextFrame(make([]byte, 41)); ok {
		t.Fatal("ARP reply written into 41 bytes")
	}
	fs := s.drain(t)
	if len(fs) != 1 {
		t.Fatalf("got %d frames, want one ARP reply", len(fs))
	}
	f := fs[0]
	if f.etherType != etherTypeARP || f.ethDst != guestMAC || f.ethSrc != DefaultMAC {
		t.Fatalf("ARP reply Ethernet header %+v", f)
	}
	if [6]byte(f.arp[18:24]) != guestMAC || [4]byte(f.arp[24:28]) != guestIP {
		t.Fatalf("ARP reply target % x", f.arp[18:28])
	}
	if [6]byte(f.arp[8:14]) != DefaultMAC || [4]byte(f.arp[14:18]) != mmdsIP {
		t.Fatalf("ARP reply sender % x", f.arp[8:18])
	}
	if got := s.m.TxCount.Count(); got != 1 {
		t.Errorf("tx_count %d", got)
	}
	if got := s.m.TxErrors.Count(); got != 1 {
		t.Errorf("tx_errors %d", got)
	}

	// An ARP reply (not a request) for the MMDS address is consumed and
	// ignored.
	s.detour(t, arpFrame(2, guestMAC, guestIP, [6]byte{}, mmdsIP))
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("answered an ARP reply: %+v", fs)
	}
}

func TestConfigDefaults(t *testing.T) {
	s := New(Config{}, &recorder{})
	if s.ip != mmds.DefaultIPv4Address.As4() || s.mac != DefaultMAC {
		t.Fatalf("defaults: ip %v mac %x", s.ip, s.mac)
	}
	mac := [6]byte{2, 0, 0, 0, 0, 1}
	ip := netip.MustParseAddr("169.254.170.2")
	s = New(Config{IPv4: ip, MAC: mac}, &recorder{})
	if s.ip != ip.As4() || s.mac != mac {
		t.Fatalf("custom: ip %v mac %x", s.ip, s.mac)
	}
	// The ARP reply carries the configured addresses.
	ts := &testStack{Stack: s, clock: &fakeClock{}, m: new(metrics.MMDSMetrics)}
	ts.detour(t, arpFrame(1, guestMAC, guestIP, [6]byte{}, ip.As4()))
	if fs := ts.drain(t); len(fs) != 1 {
		t.Fatalf("%d frames", len(fs))
	}
}

func TestNotDetoured(t *testing.T) {
	s := newTestStack(&recorder{})
	other := [4]byte{10, 0, 0, 1}
	syn := seg{srcIP: guestIP, dstIP: other, srcPort: 4000, dstPort: 80, seq: 1, flags: flagSYN, window: 1000}
	vlan := tcpFrame(seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 4000, dstPort: 80, seq: 1, flags: flagSYN})
	vlan = append(append(append([]byte{}, vlan[:12]...), 0x81, 0x00, 0x00, 0x01), vlan[12:]...)
	for name, f := range map[string][]byte{
		"empty":          nil,
		"short":          {1, 2, 3},
		"ARP other IP":   arpFrame(1, guestMAC, guestIP, [6]byte{}, other),
		"TCP other IP":   tcpFrame(syn),
		"IPv6":           ethFrame(DefaultMAC, guestMAC, 0x86dd, make([]byte, 60)),
		"802.1Q":         vlan,
		"ARP truncated":  arpFrame(1, guestMAC, guestIP, [6]byte{}, mmdsIP)[:40],
		"IPv4 truncated": tcpFrame(seg{srcIP: guestIP, dstIP: mmdsIP, dstPort: 80, flags: flagSYN})[:33],
	} {
		if s.DetourFrame(f) {
			t.Errorf("%s: detoured", name)
		}
	}
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("frames: %+v", fs)
	}
}

func TestMalformedMMDSFramesConsumed(t *testing.T) {
	s := newTestStack(&recorder{})
	good := tcpFrame(seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 4000, dstPort: 80, seq: 1, flags: flagSYN, window: 1000})
	padded := append(append([]byte{}, good...), 0, 0, 0, 0)
	badVersion := append([]byte{}, good...)
	badVersion[14] = 0x65
	udp := ethFrame(DefaultMAC, guestMAC, etherTypeIPv4, ipv4Packet4(guestIP, mmdsIP, 17, make([]byte, 8)))
	shortTCP := ethFrame(DefaultMAC, guestMAC, etherTypeIPv4, ipv4Packet4(guestIP, mmdsIP, protocolTCP, make([]byte, 10)))
	for name, f := range map[string][]byte{
		"padded":        padded,
		"version 6":     badVersion,
		"UDP":           udp,
		"TCP too short": shortTCP,
	} {
		if !s.DetourFrame(f) {
			t.Errorf("%s: not detoured", name)
		}
	}
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("frames: %+v", fs)
	}
	if got := s.m.RxAcceptedUnusual.Count(); got != 1 {
		t.Errorf("rx_accepted_unusual %d, want 1 (the UDP packet)", got)
	}
	if got := s.m.RxAcceptedErr.Count(); got != 1 {
		t.Errorf("rx_accepted_err %d, want 1 (the short TCP segment)", got)
	}
}

func TestGETSplitAcrossSegments(t *testing.T) {
	r := &recorder{}
	s := newTestStack(r)
	c := dial(t, s, 40000, 1460)
	if got := s.m.ConnectionsCreated.Count(); got != 1 {
		t.Fatalf("connections_created %d", got)
	}

	c.send(t, flagACK|flagPSH, []byte("GET /latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nX-metadata-token:  tok \r\n"))
	fs := s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagACK || len(fs[0].tcp.payload) != 0 || fs[0].tcp.ack != c.seq {
		t.Fatalf("want a pure ACK of the first half, got %+v", fs)
	}
	if len(r.requests()) != 0 {
		t.Fatal("request answered before it was complete")
	}
	c.send(t, flagACK|flagPSH, []byte("Accept: application/json\r\n\r\n"))
	raw := c.readResponse(t)

	want := "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 15\r\n\r\nami-id\nhostname"
	if string(raw) != want {
		t.Fatalf("response\n%q\nwant\n%q", raw, want)
	}
	reqs := r.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	got := reqs[0]
	if got.Method != "GET" || got.Path != "/latest/meta-data" || len(got.Body) != 0 {
		t.Fatalf("request %+v", got)
	}
	wantHeaders := map[string]string{"Host": "169.254.169.254", "X-metadata-token": "tok", "Accept": "application/json"}
	if fmt.Sprint(got.Headers) != fmt.Sprint(wantHeaders) {
		t.Fatalf("headers %v, want %v", got.Headers, wantHeaders)
	}

	// Keep-alive: a second request on the same connection, in HTTP/1.0.
	c.send(t, flagACK|flagPSH, []byte("GET /a HTTP/1.0\r\n\r\n"))
	resp, _ := parseResponse(t, c.readResponse(t))
	if resp.Proto != "HTTP/1.0" || resp.StatusCode != 200 {
		t.Fatalf("second response %s %d", resp.Proto, resp.StatusCode)
	}

	// The guest closes: the stack ACKs the FIN and sends its own.
	c.send(t, flagACK|flagFIN, nil)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagACK|flagFIN || fs[0].tcp.ack != c.seq || fs[0].tcp.seq != c.ack {
		t.Fatalf("want FIN-ACK, got %+v", fs)
	}
	if got := s.m.ConnectionsDestroyed.Count(); got != 1 {
		t.Fatalf("connections_destroyed %d", got)
	}
	// The connection is gone: the guest's last ACK draws a RST, as in
	// Firecracker (which has no TIME_WAIT).
	c.ack++
	c.send(t, flagACK, nil)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST || fs[0].tcp.seq != c.ack {
		t.Fatalf("want RST, got %+v", fs)
	}
}

func TestMMDSServiceV2(t *testing.T) {
	store := mmds.NewStore(51200)
	if err := store.Put([]byte(`{"latest":{"meta-data":{"ami-id":"ami-12345678","hostname":"vm1"}}}`)); err != nil {
		t.Fatal(err)
	}
	store.SetVersion(mmds.V2)
	svc := mmds.NewService(store, mmds.NewTokenAuthority("vm1"), mmds.Hooks{})
	s := newTestStack(svc)
	c := dial(t, s, 40001, 1460)

	c.send(t, flagACK|flagPSH, []byte("GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n"))
	resp, body := parseResponse(t, c.readResponse(t))
	if resp.StatusCode != 401 || body != mmds.MsgNoTokenProvided {
		t.Fatalf("GET without token: %d %q", resp.StatusCode, body)
	}

	c.send(t, flagACK|flagPSH, []byte("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n"))
	raw := c.readResponse(t)
	resp, token := parseResponse(t, raw)
	if resp.StatusCode != 200 || len(token) != 48 {
		t.Fatalf("token PUT: %q", raw)
	}
	if !bytes.Contains(raw, []byte("\r\nX-metadata-token-ttl-seconds: 60\r\n")) {
		t.Fatalf("TTL header not echoed: %q", raw)
	}

	c.send(t, flagACK|flagPSH, []byte("GET /latest/meta-data/ HTTP/1.1\r\nX-metadata-token: "+token+"\r\n\r\n"))
	resp, body = parseResponse(t, c.readResponse(t))
	if resp.StatusCode != 200 || body != "ami-id\nhostname" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("GET with token: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	c.send(t, flagACK|flagPSH, []byte("GET /latest/meta-data HTTP/1.1\r\nAccept: application/json\r\nX-aws-ec2-metadata-token: "+token+"\r\n\r\n"))
	resp, body = parseResponse(t, c.readResponse(t))
	if resp.StatusCode != 200 || body != `{"ami-id":"ami-12345678","hostname":"vm1"}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// A 405 carries "Allow" right after the fixed headers.
	c.send(t, flagACK|flagPSH, []byte("PATCH /latest HTTP/1.1\r\n\r\n"))
	raw = c.readResponse(t)
	want := "HTTP/1.1 405 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nAllow: GET, PUT\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 24\r\n\r\nNot allowed HTTP method."
	if string(raw) != want {
		t.Fatalf("405:\n%q\nwant\n%q", raw, want)
	}
}

func TestMalformedRequests(t *testing.T) {
	for _, tc := range []struct {
		req    string
		status int
		body   string
	}{
		{"GET / HTTP/2.0\r\n\r\n", 501, msgUnsupportedVersion},
		{"POST / HTTP/1.1\r\n\r\n", 501, msgUnsupportedMethod},
		{"get / HTTP/1.1\r\n\r\n", 501, msgUnsupportedMethod},
		{"GET  HTTP/1.1x\r\n\r\n", 400, msgEmptyURI},
		{"GET / HTTP/1.1\n\n", 400, msgInvalidRequest},
		{"GET /\r\n\r\n", 400, msgInvalidRequest},
		{"GET /latest/meta-data\r\n\r\n", 400, msgInvalidRequest},
		{"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "Header is incorrectly formatted. Key: NoColon"},
		{"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Invalid value. Key:Content-Length; Value: x"},
		{"GET / HTTP/1.1\r\nContent-Length: 1\r\n\r\n", 400, msgInvalidRequest},
		{"GET / HTTP/1.1\r\nAccept-Encoding: gzip, identity;q=0\r\n\r\n", 400, "Invalid value. Key:Accept-Encoding; Value: identity;q=0"},
		{"GET / HTTP/1.1\r\nAccept-Encoding:  \r\n\r\n", 400, msgInvalidRequest},
		{"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", 400, msgInvalidRequest},
		{"GET /\xff HTTP/1.1\r\n\r\n", 400, msgURINotUTF8},
	} {
		t.Run(strings.ReplaceAll(tc.req, "\r\n", "|"), func(t *testing.T) {
			r := &recorder{}
			s := newTestStack(r)
			c := dial(t, s, 40002, 1460)
			c.send(t, flagACK|flagPSH, []byte(tc.req))
			raw := c.readResponse(t)
			want := fmt.Sprintf("HTTP/1.1 %d \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n"+
				"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", tc.status, len(tc.body), tc.body)
			if string(raw) != want {
				t.Fatalf("got\n%q\nwant\n%q", raw, want)
			}
			if n := len(r.requests()); n != 0 {
				t.Fatalf("responder called %d times", n)
			}
		})
	}
}

func TestAcceptedOddities(t *testing.T) {
	// Unsupported values of known headers are ignored, as micro_http does,
	// and the last valid Accept wins.
	r := &recorder{}
	s := newTestStack(r)
	c := dial(t, s, 40003, 1460)
	c.send(t, flagACK|flagPSH, []byte("DELETE http://169.254.169.254/x HTTP/1.1\r\nAccept: application/json\r\n"+
		"Accept: */*\r\nContent-Type: foo\r\nExpect: bar\r\nX-A: 1\r\nX-A: 2\r\n\r\n"))
	c.readResponse(t)
	req := r.requests()[0]
	if req.Method != "DELETE" || req.Path != "http://169.254.169.254/x" {
		t.Fatalf("request %+v", req)
	}
	if fmt.Sprint(req.Headers) != fmt.Sprint(map[string]string{"Accept": "application/json", "X-A": "2"}) {
		t.Fatalf("headers %v", req.Headers)
	}
}

func TestPUTWithBody(t *testing.T) {
	r := &recorder{}
	s := newTestStack(r)
	c := dial(t, s, 40004, 1460)
	c.send(t, flagACK|flagPSH, []byte("PUT /latest/api/token HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"))
	if fs := s.drain(t); len(fs) != 1 || len(fs[0].tcp.payload) != 0 {
		t.Fatalf("want a pure ACK while the body is incomplete, got %+v", fs)
	}
	c.send(t, flagACK|flagPSH, []byte("cdeGET / HTTP/1.1\r\n\r\n"))
	c.readResponse(t)
	reqs := r.requests()
	if len(reqs) == 0 || reqs[0].Method != "PUT" || string(reqs[0].Body) != "abcde" {
		t.Fatalf("requests %+v", reqs)
	}
	// The pipelined GET is served once the first response is ACKed.
	c.readResponse(t)
	if reqs := r.requests(); len(reqs) != 2 || reqs[1].Method != "GET" {
		t.Fatalf("requests %+v", reqs)
	}
}

func TestSYNToOtherPortDropped(t *testing.T) {
	s := newTestStack(&recorder{})
	syn := seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 5000, dstPort: 81, seq: 7, flags: flagSYN, window: 1000}
	s.detour(t, tcpFrame(syn))
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("answered a SYN to port 81: %+v", fs)
	}
	if got := s.m.RxAcceptedErr.Count(); got != 1 {
		t.Errorf("rx_accepted_err %d", got)
	}
}

func TestRSTForUnknownConnection(t *testing.T) {
	s := newTestStack(&recorder{})
	base := seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 5001, dstPort: 80, seq: 100, ack: 555, window: 1000}

	// With an ACK: the RST takes its sequence number from it.
	a := base
	a.flags = flagACK
	a.payload = []byte("xyz")
	s.detour(t, tcpFrame(a))
	fs := s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST || fs[0].tcp.seq != 555 || fs[0].tcp.dstPort != 5001 {
		t.Fatalf("want RST seq 555, got %+v", fs)
	}
	// Without: the RST ACKs what was sent.
	b := base
	b.flags = flagPSH
	b.payload = []byte("xyz")
	s.detour(t, tcpFrame(b))
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST|flagACK || fs[0].tcp.ack != 103 || fs[0].tcp.seq != 0 {
		t.Fatalf("want RST-ACK 103, got %+v", fs)
	}
	// A RST draws nothing.
	r := base
	r.flags = flagRST
	s.detour(t, tcpFrame(r))
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("answered a RST: %+v", fs)
	}
	// The queue holds at most MaxPendingResets.
	for range MaxPendingResets + 10 {
		s.detour(t, tcpFrame(a))
	}
	if fs := s.drain(t); len(fs) != MaxPendingResets {
		t.Fatalf("%d RSTs, want %d", len(fs), MaxPendingResets)
	}
}

func TestSYNRetransmissionAndBadSYN(t *testing.T) {
	s := newTestStack(&recorder{})
	syn := seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 5002, dstPort: 80, seq: 9, flags: flagSYN, window: 1000}
	s.detour(t, tcpFrame(syn))
	first := s.drain(t)
	if len(first) != 1 || first[0].mss != mssDefault {
		t.Fatalf("SYN-ACK %+v (want MSS %d echoed)", first, mssDefault)
	}
	// The SYN again: the SYN-ACK again, same ISN.
	s.detour(t, tcpFrame(syn))
	again := s.drain(t)
	if len(again) != 1 || again[0].tcp.seq != first[0].tcp.seq {
		t.Fatalf("SYN-ACK retransmission %+v", again)
	}
	// And after the RTO, without any SYN.
	s.clock.Advance(rtoPeriod)
	if fs := s.drain(t); len(fs) != 1 || fs[0].tcp.flags != flagSYN|flagACK {
		t.Fatalf("timed SYN-ACK retransmission %+v", fs)
	}

	// A SYN with payload, or with an unusable MSS, opens nothing.
	bad := syn
	bad.srcPort = 5003
	bad.payload = []byte("x")
	s.detour(t, tcpFrame(bad))
	bad.payload = nil
	bad.opts = mssOpt(50)
	s.detour(t, tcpFrame(bad))
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("answered bad SYNs: %+v", fs)
	}
	if got := s.m.ConnectionsCreated.Count(); got != 1 {
		t.Errorf("connections_created %d", got)
	}
}

func TestOversizedRequestReset(t *testing.T) {
	r := &recorder{}
	s := newTestStack(r)
	c := dial(t, s, 40005, 1460)
	c.send(t, flagACK, bytes.Repeat([]byte("a"), 1460))
	fs := s.drain(t)
	if len(fs) != 1 || fs[0].tcp.window != rcvBufMaxSize-1460 {
		t.Fatalf("want an ACK with window %d, got %+v", rcvBufMaxSize-1460, fs)
	}
	c.send(t, flagACK, bytes.Repeat([]byte("a"), rcvBufMaxSize-1460))
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST || fs[0].tcp.seq != c.ack {
		t.Fatalf("want RST, got %+v", fs)
	}
	if len(r.requests()) != 0 {
		t.Fatal("responder called")
	}
	if got := s.m.ConnectionsDestroyed.Count(); got != 1 {
		t.Errorf("connections_destroyed %d", got)
	}

	// A request whose declared body cannot fit is reset at once.
	c = dial(t, s, 40006, 1460)
	c.send(t, flagACK, []byte("PUT / HTTP/1.1\r\nContent-Length: 2500\r\n\r\n"))
	if fs := s.drain(t); len(fs) != 1 || fs[0].tcp.flags != flagRST {
		t.Fatalf("want RST, got %+v", fs)
	}
}

func TestLargeResponseFlowControl(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	r := &recorder{resp: mmds.Response{Status: 200, ContentType: mmds.ContentTypeText, Body: body}}
	s := newTestStack(r)
	// The guest's MSS and window bound what the stack sends.
	c := dialWindow(t, s, 40007, 536, 2000)
	c.send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	fs := s.drain(t)
	total := 0
	for _, f := range fs {
		if len(f.tcp.payload) > 536 {
			t.Fatalf("segment of %d bytes over MSS 536", len(f.tcp.payload))
		}
		total += len(f.tcp.payload)
	}
	if total != 2000 {
		t.Fatalf("%d bytes in flight, want the window of 2000", total)
	}
	_, got := parseResponse(t, append(concatPayloads(fs), c.readRest(t, fs)...))
	if got != string(body) {
		t.Fatalf("body of %d bytes, want %d", len(got), len(body))
	}
}

func concatPayloads(fs []outFrame) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f.tcp.payload...)
	}
	return b
}

// readRest ACKs the frames already drained and reads the rest of the
// response.
func (c *tconn) readRest(t testing.TB, fs []outFrame) []byte {
	for _, f := range fs {
		if f.tcp.seq == c.ack {
			c.ack += uint32(len(f.tcp.payload))
		}
	}
	c.send(t, flagACK, nil)
	var data []byte
	for range 1000 {
		fs := c.s.drain(t)
		if len(fs) == 0 {
			return data
		}
		for _, f := range fs {
			if f.tcp.seq == c.ack && len(f.tcp.payload) > 0 {
				data = append(data, f.tcp.payload...)
				c.ack += uint32(len(f.tcp.payload))
			}
		}
		c.send(t, flagACK, nil)
	}
	t.Fatal("response never ends")
	return nil
}

func TestRetransmission(t *testing.T) {
	s := newTestStack(&recorder{})
	c := dial(t, s, 40008, 1460)
	c.send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	fs := s.drain(t)
	if len(fs) != 1 || len(fs[0].tcp.payload) == 0 {
		t.Fatalf("want the response, got %+v", fs)
	}
	orig := fs[0].tcp
	// Not acknowledged: nothing until the RTO, then the same data again.
	s.clock.Advance(rtoPeriod - 1)
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("early retransmission %+v", fs)
	}
	s.clock.Advance(1)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.seq != orig.seq || !bytes.Equal(fs[0].tcp.payload, orig.payload) {
		t.Fatalf("want a retransmission of %+v, got %+v", orig, fs)
	}
	// A duplicate ACK retransmits at once.
	c.send(t, flagACK, nil)
	c.send(t, flagACK, nil)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.seq != orig.seq || !bytes.Equal(fs[0].tcp.payload, orig.payload) {
		t.Fatalf("want a fast retransmission, got %+v", fs)
	}
	// Acknowledged: no more retransmissions.
	c.ack += uint32(len(orig.payload))
	c.send(t, flagACK, nil)
	s.clock.Advance(10 * rtoPeriod)
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("retransmission after the ACK: %+v", fs)
	}

	// Never acknowledged: after rtoCountMax timeouts the connection resets.
	c.send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	if fs := s.drain(t); len(fs) != 1 {
		t.Fatalf("second response %+v", fs)
	}
	for i := 1; i < rtoCountMax; i++ {
		s.clock.Advance(rtoPeriod)
		if fs := s.drain(t); len(fs) != 1 || len(fs[0].tcp.payload) == 0 {
			t.Fatalf("retransmission %d: %+v", i, fs)
		}
	}
	s.clock.Advance(rtoPeriod)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST {
		t.Fatalf("want RST after %d timeouts, got %+v", rtoCountMax, fs)
	}
	if got := s.m.ConnectionsDestroyed.Count(); got != 1 {
		t.Errorf("connections_destroyed %d", got)
	}
}

func TestConnectionLimit(t *testing.T) {
	s := newTestStack(&recorder{})
	conns := make([]*tconn, MaxConnections)
	for i := range conns {
		conns[i] = dial(t, s, uint16(41000+i), 1460)
		s.clock.Advance(time.Millisecond)
	}
	// Keep the first one busy so the second is the one idle the longest.
	conns[0].send(t, flagACK, nil)

	syn := seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 42000, dstPort: 80, seq: 77, flags: flagSYN, window: 1000}
	s.detour(t, tcpFrame(syn))
	fs := s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST|flagACK || fs[0].tcp.dstPort != 42000 || fs[0].tcp.ack != 77 {
		t.Fatalf("full: want a RST for the SYN, got %+v", fs)
	}
	if got := len(s.tcp.conns); got != MaxConnections {
		t.Fatalf("%d connections", got)
	}

	s.clock.Advance(evictionThreshold)
	conns[0].send(t, flagACK, nil)
	s.detour(t, tcpFrame(syn))
	fs = s.drain(t)
	if len(fs) != 2 {
		t.Fatalf("want a RST and a SYN-ACK, got %+v", fs)
	}
	if fs[0].tcp.flags != flagRST || fs[0].tcp.dstPort != conns[1].port || fs[0].tcp.seq != conns[1].ack {
		t.Fatalf("want RST to port %d seq %d, got %+v", conns[1].port, conns[1].ack, fs[0])
	}
	if fs[1].tcp.flags != flagSYN|flagACK || fs[1].tcp.dstPort != 42000 {
		t.Fatalf("want SYN-ACK to 42000, got %+v", fs[1])
	}
	if got := s.m.ConnectionsCreated.Count(); got != MaxConnections+1 {
		t.Errorf("connections_created %d", got)
	}
	if got := s.m.ConnectionsDestroyed.Count(); got != 1 {
		t.Errorf("connections_destroyed %d", got)
	}
	// The evicted connection is gone; the others still serve.
	conns[1].send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	if fs := s.drain(t); len(fs) != 1 || fs[0].tcp.flags != flagRST {
		t.Fatalf("evicted connection: %+v", fs)
	}
	conns[2].send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	if resp, _ := parseResponse(t, conns[2].readResponse(t)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestGuestReset(t *testing.T) {
	s := newTestStack(&recorder{})
	c := dial(t, s, 40009, 1460)
	// Out of window: ignored.
	r := c.seg(flagRST, nil)
	r.seq += 100000
	s.detour(t, tcpFrame(r))
	if len(s.tcp.conns) != 1 {
		t.Fatal("out-of-window RST accepted")
	}
	c.send(t, flagRST, nil)
	if len(s.tcp.conns) != 0 {
		t.Fatal("RST did not close the connection")
	}
	if fs := s.drain(t); len(fs) != 0 {
		t.Fatalf("frames after RST: %+v", fs)
	}
	if got := s.m.ConnectionsDestroyed.Count(); got != 1 {
		t.Errorf("connections_destroyed %d", got)
	}
}

func TestSmallBuffers(t *testing.T) {
	s := newTestStack(&recorder{})
	c := dial(t, s, 40010, 1460)
	c.send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	// Too small for anything: nothing written, nothing lost.
	for _, n := range []int{0, 13, 33, 53, 54} {
		if got, ok := s.WriteNextFrame(make([]byte, n)); ok {
			t.Fatalf("wrote %d bytes into %d", got, n)
		}
	}
	// A small buffer gets a short segment.
	buf := make([]byte, 60)
	n, ok := s.WriteNextFrame(buf)
	if !ok || n != 60 {
		t.Fatalf("wrote %d bytes (ok %v) into 60", n, ok)
	}
	f, err := checkFrame(buf[:n], s.mac, s.ip)
	if err != nil || len(f.tcp.payload) != 6 {
		t.Fatalf("frame %+v: %v", f, err)
	}
	c.ack += 6
	c.send(t, flagACK, nil)
	if resp, _ := parseResponse(t, c.readResponseAfter(t, f.tcp.payload)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestConcurrent(t *testing.T) {
	store := mmds.NewStore(51200)
	if err := store.Put([]byte(`{"latest":{"meta-data":{"x":"y"}}}`)); err != nil {
		t.Fatal(err)
	}
	s := New(Config{}, mmds.NewService(store, mmds.NewTokenAuthority("vm"), mmds.Hooks{}))
	ip := mmds.DefaultIPv4Address.As4()

	const guests = 8
	inbox := make([]chan outFrame, guests)
	for i := range inbox {
		inbox[i] = make(chan outFrame, 1024)
	}
	stop := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 65562)
		for {
			select {
			case <-stop:
				readerErr <- nil
				return
			default:
			}
			n, ok := s.WriteNextFrame(buf)
			if !ok {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			f, err := checkFrame(slices.Clone(buf[:n]), DefaultMAC, ip)
			if err != nil {
				readerErr <- err
				return
			}
			if p := int(f.tcp.dstPort) - 43000; p >= 0 && p < guests {
				inbox[p] <- f
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, guests)
	for g := range guests {
		wg.Go(func() {
			errs <- concurrentGuest(s, ip, uint16(43000+g), inbox[g])
		})
	}
	wg.Wait()
	close(stop)
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// concurrentGuest runs one connection with three requests from its own
// goroutine, receiving the stack's frames from in.
func concurrentGuest(s *Stack, ip [4]byte, port uint16, in <-chan outFrame) error {
	recv := func() (outFrame, error) {
		select {
		case f := <-in:
			return f, nil
		case <-time.After(10 * time.Second):
			return outFrame{}, fmt.Errorf("port %d: timed out", port)
		}
	}
	seq, ack := uint32(1), uint32(0)
	send := func(flags uint8, payload []byte, opts []byte) {
		s.DetourFrame(tcpFrame(seg{srcIP: guestIP, dstIP: ip, srcPort: port, dstPort: Port,
			seq: seq, ack: ack, flags: flags, window: 65535, opts: opts, payload: payload}))
		seq += uint32(len(payload))
	}
	send(flagSYN, nil, mssOpt(1460))
	f, err := recv()
	if err != nil {
		return err
	}
	if f.tcp.flags != flagSYN|flagACK {
		return fmt.Errorf("port %d: want SYN-ACK, got %+v", port, f)
	}
	seq++
	ack = f.tcp.seq + 1
	send(flagACK, nil, nil)
	for range 3 {
		send(flagACK|flagPSH, []byte("GET /latest/meta-data/x HTTP/1.1\r\n\r\n"), nil)
		var data []byte
		for !completeResponse(data) {
			f, err := recv()
			if err != nil {
				return err
			}
			if f.tcp.seq == ack && len(f.tcp.payload) > 0 {
				data = append(data, f.tcp.payload...)
				ack += uint32(len(f.tcp.payload))
				send(flagACK, nil, nil)
			}
		}
		if !bytes.HasSuffix(data, []byte("\r\n\r\ny")) {
			return fmt.Errorf("port %d: response %q", port, data)
		}
	}
	return nil
}

func TestInvalidSegmentsReset(t *testing.T) {
	s := newTestStack(&recorder{})
	// Anything but the same SYN before the SYN-ACK went out resets.
	c := &tconn{s: s, port: 40020, seq: 500, window: 1000}
	s.detour(t, tcpFrame(c.seg(flagSYN, nil)))
	c.seq++
	c.ack = 4242
	c.send(t, flagACK, nil)
	fs := s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST || fs[0].tcp.seq != 4242 {
		t.Fatalf("want RST seq 4242, got %+v", fs)
	}
	if len(s.tcp.conns) != 0 {
		t.Fatal("connection survived")
	}

	// After the SYN-ACK, an ACK of something never sent resets.
	c = &tconn{s: s, port: 40021, seq: 500, window: 1000}
	s.detour(t, tcpFrame(c.seg(flagSYN, nil)))
	sa := s.drain(t)[0]
	c.seq++
	c.ack = sa.tcp.seq + 7
	c.send(t, flagACK, nil)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST || fs[0].tcp.seq != c.ack {
		t.Fatalf("want RST, got %+v", fs)
	}

	// Established: a SYN resets.
	c = dial(t, s, 40022, 1460)
	c.send(t, flagSYN, nil)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagRST|flagACK {
		t.Fatalf("want RST-ACK, got %+v", fs)
	}
	if len(s.tcp.conns) != 0 {
		t.Fatalf("%d connections left", len(s.tcp.conns))
	}
}

func TestOutOfOrderData(t *testing.T) {
	r := &recorder{}
	s := newTestStack(r)
	c := dial(t, s, 40023, 1460)
	// A segment from the future is not accepted but draws an ACK of what
	// is expected.
	c.seq += 10
	c.send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	fs := s.drain(t)
	if len(fs) != 1 || fs[0].tcp.ack != c.seq-10-18 || len(fs[0].tcp.payload) != 0 {
		t.Fatalf("want a duplicate ACK, got %+v", fs)
	}
	if len(r.requests()) != 0 {
		t.Fatal("out-of-order request served")
	}
	c.seq -= 10 + 18
	c.send(t, flagACK|flagPSH, []byte("GET / HTTP/1.1\r\n\r\n"))
	if resp, _ := parseResponse(t, c.readResponse(t)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestRequestWithFIN(t *testing.T) {
	s := newTestStack(&recorder{})
	c := dial(t, s, 40024, 1460)
	// The request and the FIN in one segment: the response comes first,
	// the stack's FIN only once the response is acknowledged.
	c.send(t, flagACK|flagPSH|flagFIN, []byte("GET / HTTP/1.1\r\n\r\n"))
	fs := s.drain(t)
	if len(fs) != 1 || len(fs[0].tcp.payload) == 0 || fs[0].tcp.flags&flagFIN != 0 || fs[0].tcp.ack != c.seq {
		t.Fatalf("want the response ACKing the FIN, got %+v", fs)
	}
	c.ack += uint32(len(fs[0].tcp.payload))
	c.send(t, flagACK, nil)
	fs = s.drain(t)
	if len(fs) != 1 || fs[0].tcp.flags != flagACK|flagFIN || fs[0].tcp.seq != c.ack {
		t.Fatalf("want FIN, got %+v", fs)
	}
	if len(s.tcp.conns) != 0 {
		t.Fatal("connection not finished")
	}
}
