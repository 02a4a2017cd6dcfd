package netstack

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/mmds"
)

// Endpoint limits and timeouts. Firecracker counts TSC cycles (40e9 for
// eviction, 1.2e9 for the RTO); the durations below are those counts at a
// 3 GHz TSC, a typical host frequency (at 4 GHz Firecracker's comment puts
// them at about 10 s and 300 ms).
const (
	// rcvBufMaxSize bounds a request: a request (head and body) that does
	// not fit gets the connection reset.
	rcvBufMaxSize = 2500
	// evictionThreshold is how long an endpoint must have received nothing
	// before a new connection may replace it.
	evictionThreshold = 40_000_000_000 * time.Nanosecond / 3
	// rtoPeriod is the retransmission timeout.
	rtoPeriod = 1_200_000_000 * time.Nanosecond / 3
	// rtoCountMax timeouts in a row without progress reset the connection.
	rtoCountMax = 15
)

// HTTP versions micro_http knows.
const (
	http10 = "HTTP/1.0"
	http11 = "HTTP/1.1"
)

// Fixed response headers: micro_http writes these on every response, and
// this is what Firecracker's MMDS sends to guests.
const (
	serverHeader     = "Server: Firecracker API\r\n"
	connectionHeader = "Connection: keep-alive\r\n"
	// defaultContentType is micro_http's default media type, used on the
	// responses to requests that do not parse (with a plain-text body).
	defaultContentType = mmds.ContentTypeJSON
)

// Texts of the responses to malformed requests (micro_http's RequestError
// and HttpHeaderError messages, as Firecracker's endpoint sends them).
const (
	msgInvalidRequest     = "Invalid request."
	msgUnsupportedMethod  = "Unsupported HTTP method."
	msgUnsupportedVersion = "Unsupported HTTP version."
	msgEmptyURI           = "Empty URI not allowed."
	msgURINotUTF8         = "Cannot parse URI as UTF-8."
)

// httpError is a request that does not parse, and its answer.
type httpError struct {
	status int
	msg    string
}

func invalidRequest() *httpError { return &httpError{http.StatusBadRequest, msgInvalidRequest} }

// httpRequest is a parsed request head.
type httpRequest struct {
	method        string
	target        string
	version       string
	headers       map[string]string
	contentLength uint32
}

// findHeadEnd returns the length of the request head at the start of b (up
// to and including the first "\n\n" or "\n\r\n"), or -1 when b holds none
// yet. This is how Firecracker's endpoint frames requests; a head that ends
// with a bare "\n\n" is then rejected by the parser.
func findHeadEnd(b []byte) int {
	if len(b) <= 2 {
		return -1
	}
	for i := 0; i < len(b)-1; i++ {
		j := bytes.IndexByte(b[i:len(b)-1], '\n')
		if j < 0 {
			return -1
		}
		i += j
		if b[i+1] == '\n' {
			return i + 2
		}
		if i+3 <= len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return -1
}

// parseHead parses a request head following micro_http's Request::try_from:
// a "METHOD SP URI SP VERSION" line ended by CRLF (at least 14 bytes),
// methods GET, PUT, PATCH and DELETE (case-sensitive), HTTP/1.0 or
// HTTP/1.1, then headers up to CRLF CRLF.
func parseHead(b []byte) (httpRequest, *httpError) {
	var r httpRequest
	rl := bytes.Index(b, []byte("\r\n"))
	if rl < 0 {
		return r, invalidRequest()
	}
	line := b[:rl]
	if len(line) < len("GET")+1+len(http10)+2 {
		return r, invalidRequest()
	}
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return r, invalidRequest()
	}
	target, version, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return r, invalidRequest()
	}
	switch string(method) {
	case http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete:
		r.method = string(method)
	default:
		return r, &httpError{http.StatusNotImplemented, msgUnsupportedMethod}
	}
	if len(target) == 0 {
		return r, &httpError{http.StatusBadRequest, msgEmptyURI}
	}
	if !utf8.Valid(target) {
		return r, &httpError{http.StatusBadRequest, msgURINotUTF8}
	}
	r.target = string(target)
	switch string(version) {
	case http10, http11:
		r.version = string(version)
	default:
		return r, &httpError{http.StatusNotImplemented, msgUnsupportedVersion}
	}

	after := b[rl:]
	end := bytes.Index(after, []byte("\r\n\r\n"))
	switch {
	case end < 0:
		return r, invalidRequest()
	case end == 0:
		return r, nil // no headers
	}
	text := after[2:end]
	if !utf8.Valid(text) {
		return r, invalidRequest()
	}
	for h := range strings.SplitSeq(string(text), "\r\n") {
		if h == "" {
			break
		}
		if e := r.parseHeader(h); e != nil {
			return r, e
		}
	}
	if r.contentLength > 0 && (r.method == http.MethodGet || r.method == http.MethodDelete) {
		return r, invalidRequest()
	}
	return r, nil
}

// parseHeader handles one header line as micro_http's
// Headers::parse_header_line: the standard headers it knows are checked
// (unsupported values are ignored, a few are errors) and not passed on, and
// every other header is kept, trimmed, the last value winning. Accept is
// passed on as the media type micro_http settles on, so the responder sees
// exactly what Firecracker's MMDS sees.
func (r *httpRequest) parseHeader(line string) *httpError {
	name, value, ok := strings.Cut(line, ":")
	if !ok {
		return &httpError{http.StatusBadRequest, "Header is incorrectly formatted. Key: " + line}
	}
	invalidValue := func(key, val string) *httpError {
		return &httpError{http.StatusBadRequest, "Invalid value. Key:" + key + "; Value:" + val}
	}
	switch asciiLower(strings.TrimSpace(name)) {
	case "content-length":
		n, ok := mmds.ParseUint32(strings.TrimSpace(value))
		if !ok {
			return invalidValue(name, value)
		}
		r.contentLength = n
	case "accept":
		switch v := strings.TrimSpace(value); v {
		case mmds.ContentTypeText, mmds.ContentTypeJSON:
			r.setHeader(mmds.HeaderAccept, v)
		}
	case "accept-encoding":
		v := strings.TrimSpace(value)
		if v == "" {
			return invalidRequest()
		}
		for enc := range strings.SplitSeq(v, ",") {
			switch strings.TrimSpace(enc) {
			case "identity;q=0":
				return invalidValue("Accept-Encoding", enc)
			case "*;q=0":
				if !strings.Contains(v, "identity") {
					return invalidValue("Accept-Encoding", enc)
				}
			}
		}
	case "content-type", "expect", "transfer-encoding", "server":
		// Values micro_http does not support are ignored, and the ones it
		// supports change nothing for MMDS requests.
	default:
		r.setHeader(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return nil
}

func (r *httpRequest) setHeader(k, v string) {
	if r.headers == nil {
		r.headers = make(map[string]string)
	}
	r.headers[k] = v
}

// asciiLower lowers ASCII letters only, as Rust's make_ascii_lowercase.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// appendResponse serializes a response the way micro_http's
// Response::write_all does: a status line without reason phrase, Server,
// Connection, Allow, the other extra headers, Content-Type, Content-Length,
// then the body. Extra headers that could break the framing (non-ASCII,
// control characters) are dropped; micro_http refuses non-ASCII ones too.
func appendResponse(dst []byte, version string, status int, contentType string, extra map[string]string, body []byte) []byte {
	dst = append(dst, version...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, " \r\n"...)
	dst = append(dst, serverHeader...)
	dst = append(dst, connectionHeader...)
	keys := make([]string, 0, len(extra))
	for k, v := range extra {
		if validHeaderName(k) && validHeaderValue(v) {
			keys = append(keys, k)
		}
	}
	// Allow comes first, as micro_http keeps it apart from custom headers;
	// the rest are sorted so the bytes do not depend on map order.
	slices.SortFunc(keys, func(a, b string) int {
		aa, ba := strings.EqualFold(a, mmds.HeaderAllow), strings.EqualFold(b, mmds.HeaderAllow)
		switch {
		case aa && !ba:
			return -1
		case ba && !aa:
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		dst = append(dst, k...)
		dst = append(dst, ": "...)
		dst = append(dst, extra[k]...)
		dst = append(dst, "\r\n"...)
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	dst = append(dst, "Content-Type: "...)
	dst = append(dst, contentType...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...)
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

// endpointCtx is what endpoints need from the stack while handling a
// segment.
type endpointCtx struct {
	responder Responder
	m         *metrics.MMDSMetrics
}

// endpoint is the MMDS HTTP server side of one TCP connection: it gathers
// request bytes in a fixed buffer, answers one request at a time (the next
// is parsed only once the previous response is fully acknowledged), keeps
// the connection open after a response (micro_http's "Connection:
// keep-alive"), and closes it once the guest has sent a FIN and every
// response is acknowledged.
type endpoint struct {
	tuple connTuple
	conn  connection

	rcv    [rcvBufMaxSize]byte
	rcvLen int

	resp    []byte // the response being sent; empty when none
	respSeq uint32 // sequence number of resp[0]

	lastRecv      time.Duration
	stopReceiving bool // a RST is queued: ignore the guest
}

func newEndpoint(s tcpSegment, t connTuple, now time.Duration) (*endpoint, error) {
	c, err := passiveOpen(s, rcvBufMaxSize, rtoPeriod, rtoCountMax)
	if err != nil {
		return nil, err
	}
	return &endpoint{tuple: t, conn: c, respSeq: c.firstNotSent, lastRecv: now}, nil
}

func (e *endpoint) evictable(now time.Duration) bool {
	return now-e.lastRecv > evictionThreshold
}

// status reports whether the endpoint has a segment to send now, or at a
// retransmission deadline.
func (e *endpoint) status() (segStatus, time.Duration) {
	c := &e.conn
	respEnd := e.respSeq + uint32(len(e.resp))
	newData := len(e.resp) > 0 && seqAfter(c.remoteRwndEdge, c.firstNotSent) && seqAfter(respEnd, c.firstNotSent)
	if newData || c.dupAck {
		return segAvailable, 0
	}
	return c.controlStatus()
}

func (e *endpoint) receive(s tcpSegment, now time.Duration, ctx *endpointCtx) {
	if e.stopReceiving {
		return
	}
	e.lastRecv = now
	n, st, err := e.conn.receive(s, e.rcv[e.rcvLen:], now)
	if err != nil {
		ctx.m.RxAcceptedErr.Inc()
		return
	}
	if st != 0 {
		ctx.m.RxAcceptedUnusual.Inc()
		if st&rsConnResetting != 0 {
			e.stopReceiving = true
			return
		}
	}
	if e.conn.has(stReset) {
		return // the guest reset us; the listener drops the endpoint
	}
	e.rcvLen += n

	if len(e.resp) > 0 && e.conn.highestAck == e.respSeq+uint32(len(e.resp)) {
		// The whole response is acknowledged.
		e.respSeq = e.conn.highestAck
		e.resp = e.resp[:0]
	}
	if len(e.resp) == 0 {
		if !e.serveRequest(ctx) {
			return
		}
	}
	if e.conn.finReceived && len(e.resp) == 0 {
		e.conn.close()
	}
}

// serveRequest answers the request at the start of the receive buffer, if
// it is complete. It returns false when it reset the connection because the
// request cannot fit the buffer.
func (e *endpoint) serveRequest(ctx *endpointCtx) bool {
	buf := e.rcv[:e.rcvLen]
	if end := findHeadEnd(buf); end >= 0 {
		req, herr := parseHead(buf[:end])
		used := end
		var body []byte
		if herr == nil && req.contentLength > 0 {
			// Firecracker hands micro_http only the head, so any request
			// with a body gets "400 Invalid request."; here a body declared
			// by Content-Length is awaited and passed on.
			total := end + int(req.contentLength)
			if total > rcvBufMaxSize {
				e.resetConn()
				return false
			}
			if total > len(buf) {
				return true // wait for the rest of the body
			}
			body = slices.Clone(buf[end:total])
			used = total
		}
		if herr != nil {
			e.resp = appendResponse(e.resp[:0], http11, herr.status, defaultContentType, nil, []byte(herr.msg))
		} else {
			r := ctx.responder.Respond(mmds.Request{
				Method:  req.method,
				Path:    req.target,
				Headers: req.headers,
				Body:    body,
			})
			e.resp = appendResponse(e.resp[:0], req.version, r.Status, r.ContentType, r.Headers, r.Body)
		}
		e.respSeq = e.conn.firstNotSent
		e.rcvLen = copy(e.rcv[:], e.rcv[used:e.rcvLen])
		e.conn.advanceLocalRwndEdge(uint32(used))
	}
	if e.rcvLen == rcvBufMaxSize {
		// Full, and still no complete request: too large.
		e.resetConn()
		return false
	}
	return true
}

func (e *endpoint) resetConn() {
	e.conn.reset()
	e.stopReceiving = true
}

// writeNext writes the endpoint's next segment (without ports and checksum)
// into b and returns its length, 0 when there is nothing to send.
func (e *endpoint) writeNext(b []byte, now time.Duration, ctx *endpointCtx) int {
	n, err := e.conn.writeNext(b, len(e.resp) > 0, e.resp, e.respSeq, now)
	if err != nil {
		ctx.m.TxErrors.Inc()
		return 0
	}
	return n
}
