package netstack

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/mmds"
)

// echoResponder answers with a body built from the path, so responses of a
// few bytes to several segments occur.
type echoResponder struct{}

func (echoResponder) Respond(r mmds.Request) mmds.Response {
	body := bytes.Repeat([]byte(r.Path), min(4000/max(len(r.Path), 1), 200))
	return mmds.Response{Status: 200, ContentType: mmds.ContentTypeText, Body: body,
		Headers: map[string]string{"X-Echo": r.Method, "Bad\r\nName": "x", "X-V": "a\r\nb"}}
}

// Fuzz operations. A fuzz input is a sequence of operations; each starts
// with an opcode byte followed by its operands.
const (
	fopRaw     = iota // len16, bytes: an arbitrary frame
	fopTCP            // port, flags, seqDelta, ackDelta, win16, opt, plen, payload
	fopARP            // mode
	fopWrite          // size
	fopClock          // quarter RTOs
	fopRequest        // port, template
	fopCount
)

var fuzzRequests = []string{
	"GET /latest/meta-data HTTP/1.1\r\n\r\n",
	"PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
	"PUT /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
	"GET / HTTP/1.1\r\nAccept: application/json\r\n",
	"\r\n",
	"PATCH /a/b HTTP/1.1\r\nAccept-Encoding: *;q=0\r\n\r\n",
	"GET / HTTP/1.1\n\n",
}

// fuzzGuest drives a stack from fuzz input, keeping the sequence numbers
// a guest would use so that handshakes and requests can succeed.
type fuzzGuest struct {
	t     *testing.T
	s     *testStack
	seq   [4]uint32 // next sequence number the guest sends, per port
	ack   [4]uint32 // next sequence number expected from the stack, per port
	mem   []byte    // backing store for WriteNextFrame buffers, 64 canary bytes beyond
	stats struct{ frames, payload int }
}

func (g *fuzzGuest) port(i byte) (idx int, port uint16) {
	idx = int(i % 4)
	return idx, 50000 + uint16(idx)
}

func take(data *[]byte, n int) []byte {
	n = min(n, len(*data))
	b := (*data)[:n]
	*data = (*data)[n:]
	return b
}

func takeByte(data *[]byte) byte {
	if b := take(data, 1); len(b) == 1 {
		return b[0]
	}
	return 0
}

func (g *fuzzGuest) sendTCP(idx int, port, dstPort uint16, seq, ack uint32, flags uint8, win uint16, opts, payload []byte) {
	g.s.DetourFrame(tcpFrame(seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: port, dstPort: dstPort,
		seq: seq, ack: ack, flags: flags, window: win, opts: opts, payload: payload}))
	next := seq + uint32(len(payload))
	if flags&flagSYN != 0 {
		next++
	}
	if flags&flagFIN != 0 {
		next++
	}
	g.seq[idx] = next
}

// write offers a buffer of size bytes and checks what comes back.
func (g *fuzzGuest) write(size int) bool {
	canary := g.mem[size : size+64]
	for i := range canary {
		canary[i] = 0xa5
	}
	buf := g.mem[:size:size]
	n, ok := g.s.WriteNextFrame(buf)
	if slices.ContainsFunc(canary, func(b byte) bool { return b != 0xa5 }) {
		g.t.Fatal("write past the offered buffer")
	}
	if !ok {
		if n != 0 {
			g.t.Fatalf("n = %d without a frame", n)
		}
		return false
	}
	if n <= 0 || n > size || n > ethHeaderLen+0xffff {
		g.t.Fatalf("frame of %d bytes in a %d-byte buffer", n, size)
	}
	f, err := checkFrame(buf[:n], g.s.mac, g.s.ip)
	if err != nil {
		g.t.Fatalf("emitted frame: %v\n% x", err, buf[:n])
	}
	g.stats.frames++
	if f.etherType == etherTypeIPv4 {
		if f.tcp.dstIP != guestIP {
			g.t.Fatalf("segment to %v", f.tcp.dstIP)
		}
		if len(f.tcp.payload) > mssMax {
			g.t.Fatalf("payload of %d bytes", len(f.tcp.payload))
		}
		g.stats.payload += len(f.tcp.payload)
		if p := int(f.tcp.dstPort) - 50000; p >= 0 && p < 4 && f.tcp.flags&flagRST == 0 {
			next := f.tcp.seq + uint32(len(f.tcp.payload))
			if f.tcp.flags&(flagSYN|flagFIN) != 0 {
				next++
			}
			if seqAfter(next, g.ack[p]) || f.tcp.flags&flagSYN != 0 {
				g.ack[p] = next
			}
		}
	}
	return true
}

func (g *fuzzGuest) run(data []byte) {
	for len(data) > 0 {
		switch takeByte(&data) % fopCount {
		case fopRaw:
			l := take(&data, 2)
			n := 0
			if len(l) == 2 {
				n = int(binary.BigEndian.Uint16(l)) % 2048
			}
			g.s.DetourFrame(slices.Clone(take(&data, n)))
		case fopTCP:
			h := take(&data, 8)
			if len(h) < 8 {
				return
			}
			idx, port := g.port(h[0])
			dst := uint16(Port)
			if h[0] >= 0xf0 {
				dst = 81
			}
			seq := g.seq[idx] + uint32(int32(int8(h[2])))
			ack := g.ack[idx] + uint32(int32(int8(h[3])))
			win := binary.BigEndian.Uint16(h[4:])
			var opts []byte
			switch h[6] % 3 {
			case 1:
				opts = mssOpt(uint16(h[6]) * 8)
			case 2:
				opts = slices.Clone(take(&data, int(h[6]>>2)%11*4))
				opts = append(opts, make([]byte, (4-len(opts)%4)%4)...)
			}
			g.sendTCP(idx, port, dst, seq, ack, h[1], win, opts, slices.Clone(take(&data, int(h[7])*8)))
		case fopARP:
			m := takeByte(&data)
			tpa := mmdsIP
			if m&1 != 0 {
				tpa = [4]byte{169, 254, 169, m}
			}
			g.s.DetourFrame(arpFrame(uint16(m>>1&3), guestMAC, [4]byte{172, 16, 0, m}, [6]byte{}, tpa))
		case fopWrite:
			size := len(g.mem) - 64
			if m := takeByte(&data); m != 0 {
				size = int(m) * 4
			}
			g.write(size)
		case fopClock:
			g.s.clock.Advance(time.Duration(takeByte(&data)) * rtoPeriod / 4)
		case fopRequest:
			h := take(&data, 2)
			if len(h) < 2 {
				return
			}
			idx, port := g.port(h[0])
			req := fuzzRequests[int(h[1])%len(fuzzRequests)]
			g.sendTCP(idx, port, Port, g.seq[idx], g.ack[idx], flagACK|flagPSH, 65535, nil, []byte(req))
		}
	}
}

// Seed encoders.
func fSYN(idx byte) []byte {
	return []byte{fopTCP, idx, flagSYN, 0, 0, 0xff, 0xff, 1 + 3*60, 0} // MSS 1448
}
func fACK(idx byte) []byte    { return []byte{fopTCP, idx, flagACK, 0, 0, 0xff, 0xff, 0, 0} }
func fFIN(idx byte) []byte    { return []byte{fopTCP, idx, flagACK | flagFIN, 0, 0, 0xff, 0xff, 0, 0} }
func fWrite(size byte) []byte { return []byte{fopWrite, size} }
func fReq(idx, tmpl byte) []byte {
	return []byte{fopRequest, idx, tmpl}
}

func FuzzDetourFrame(f *testing.F) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	session := func(idx, tmpl byte) []byte {
		return cat(fSYN(idx), fWrite(0), fACK(idx), fReq(idx, tmpl), fWrite(0), fWrite(0), fACK(idx),
			fWrite(0), fFIN(idx), fWrite(0), fACK(idx), fWrite(0))
	}
	arp := []byte{fopARP, 0, fopWrite, 0}
	f.Add(arp)
	for i := range len(fuzzRequests) {
		f.Add(session(byte(i%4), byte(i)))
	}
	f.Add(cat(session(0, 0), session(1, 1), []byte{fopClock, 8}, fWrite(0), fWrite(20)))
	f.Add(cat(fSYN(2), fWrite(0), fACK(2), fReq(2, 0), fWrite(0), []byte{fopClock, 4}, fWrite(0),
		[]byte{fopClock, 4}, fWrite(15), fWrite(16), fWrite(0), []byte{fopClock, 200}, fSYN(3), fWrite(0)))
	// Raw frames: an ARP request and a SYN as bytes.
	rawARP := arpFrame(1, guestMAC, guestIP, [6]byte{}, mmdsIP)
	rawSYN := tcpFrame(seg{srcIP: guestIP, dstIP: mmdsIP, srcPort: 50000, dstPort: 80, seq: 5, flags: flagSYN,
		window: 1000, opts: []byte{1, 1, 3, 3, 7, 2, 4, 5, 0xb4, 0, 0, 0}})
	raw := func(b []byte) []byte {
		return cat([]byte{fopRaw, byte(len(b) >> 8), byte(len(b))}, b)
	}
	f.Add(cat(raw(rawARP), raw(rawSYN), fWrite(0), fWrite(0)))

	f.Fuzz(func(t *testing.T, data []byte) {
		g := &fuzzGuest{t: t, s: newTestStack(echoResponder{}), mem: make([]byte, 65562+64)}
		g.run(data)
		// Whatever happened, the stack runs dry without time passing.
		for i := 0; g.write(65562); i++ {
			if i > 10000 {
				t.Fatal("the stack never runs dry")
			}
		}
	})
}

// FuzzParseHead checks the HTTP head parser alone: no panic, and answers are
// either a request or one of the documented error statuses.
func FuzzParseHead(f *testing.F) {
	for _, r := range fuzzRequests {
		f.Add([]byte(r))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nContent-Length: +12\r\nA:b:c\r\n\r\n"))
	f.Add([]byte("\n\r\n"))
	f.Add([]byte("a\n\rb\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		end := findHeadEnd(b)
		if want := naiveHeadEnd(b); end != want {
			t.Fatalf("findHeadEnd %d, want %d", end, want)
		}
		if end < 0 {
			return
		}
		if end < 2 || end > len(b) || b[end-1] != '\n' {
			t.Fatalf("head end %d", end)
		}
		req, herr := parseHead(b[:end])
		if herr != nil {
			switch herr.status {
			case 400, 501:
			default:
				t.Fatalf("status %d", herr.status)
			}
			return
		}
		if req.version != http10 && req.version != http11 || req.target == "" {
			t.Fatalf("request %+v", req)
		}
		out := appendResponse(nil, req.version, 200, "", map[string]string{"X\r\n": "y"}, b)
		if !bytes.HasSuffix(out, b) || bytes.Contains(out[:len(out)-len(b)], []byte("X\r\n")) {
			t.Fatalf("response %q", out)
		}
	})
}

// naiveHeadEnd is the byte-by-byte scan of Firecracker's endpoint.
func naiveHeadEnd(b []byte) int {
	if len(b) <= 2 {
		return -1
	}
	for i := 0; i < len(b)-1; i++ {
		if b[i] != '\n' {
			continue
		}
		if b[i+1] == '\n' {
			return i + 2
		}
		if i+3 <= len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}
