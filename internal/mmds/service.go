package mmds

import (
	"net/http"
	"strconv"
	"strings"
)

// Guest-facing message texts (Firecracker's VmmMmdsError). Guests and SDKs
// match on them.
const (
	// MsgInvalidToken answers (401) a V2 GET whose token does not validate.
	MsgInvalidToken = "MMDS token not valid."
	// MsgInvalidURI answers (400) a request target with no absolute path.
	MsgInvalidURI = "Invalid URI."
	// MsgMethodNotAllowed answers (405) any method but GET and PUT.
	MsgMethodNotAllowed = "Not allowed HTTP method."
	// MsgNoTokenProvided answers (401) a V2 GET without a token.
	MsgNoTokenProvided = "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token."
	// MsgNoTTLProvided answers (400) a token PUT without a TTL header.
	MsgNoTTLProvided = "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or `X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime."
)

// Header names the guest service uses; matching ignores ASCII case.
const (
	// HeaderToken carries a session token on GET.
	HeaderToken = "X-metadata-token"
	// HeaderAWSToken is the EC2 spelling of HeaderToken.
	HeaderAWSToken = "X-aws-ec2-metadata-token"
	// HeaderTokenTTL carries the requested lifetime on PUT /latest/api/token.
	HeaderTokenTTL = "X-metadata-token-ttl-seconds"
	// HeaderAWSTokenTTL is the EC2 spelling of HeaderTokenTTL.
	HeaderAWSTokenTTL = "X-aws-ec2-metadata-token-ttl-seconds"
	// HeaderForwardedFor makes a token PUT fail.
	HeaderForwardedFor = "X-Forwarded-For"
	// HeaderAccept selects JSON ("application/json") or IMDS text output.
	HeaderAccept = "Accept"
	// HeaderAllow lists the allowed methods on a 405.
	HeaderAllow = "Allow"
)

// Response content types.
const (
	// ContentTypeText is used for IMDS output, tokens and all errors.
	ContentTypeText = "text/plain"
	// ContentTypeJSON is used for GETs with Accept: application/json.
	ContentTypeJSON = "application/json"
)

const allowedMethods = "GET, PUT"

// Request is a guest HTTP request to the MMDS address, already parsed by the
// transport.
type Request struct {
	// Method is the request method exactly as sent ("GET", "PUT", ...).
	Method string
	// Path is the request target exactly as sent: origin form
	// ("/latest/meta-data") or absolute form ("http://169.254.169.254/...").
	// It is neither percent-decoded nor stripped of a query, as in
	// Firecracker.
	Path string
	// Headers maps header names, spelled as the guest sent them, to values.
	// Lookups ignore ASCII case and surrounding blanks. Firecracker keeps
	// only the last value of a repeated header.
	Headers map[string]string
	// Body is ignored, as Firecracker ignores it; it is here so transports
	// can pass whole requests.
	Body []byte
}

// Response is what the guest gets back. The transport adds the status line
// (echoing the request's HTTP version), Content-Length and its own fixed
// headers.
type Response struct {
	// Status is the HTTP status code.
	Status int
	// ContentType is ContentTypeText or ContentTypeJSON.
	ContentType string
	// Headers are extra response headers (Allow, or the echoed token TTL
	// header, spelled as the guest sent it); nil when there are none.
	Headers map[string]string
	// Body is the response body.
	Body []byte
}

// Hooks receive events the metrics system counts. Nil fields are ignored.
type Hooks struct {
	// InvalidToken fires when a GET carries a token that does not validate
	// (metric mmds.rx_invalid_token), in V1 as well as V2.
	InvalidToken func()
	// NoToken fires when a GET carries no token (metric mmds.rx_no_token),
	// in V1 as well as V2.
	NoToken func()
}

// Service answers guest requests from a Store, enforcing its version and
// IMDS settings and issuing tokens from a TokenAuthority.
type Service struct {
	store  *Store
	tokens *TokenAuthority
	hooks  Hooks
}

// NewService returns a service over store and tokens (both required).
func NewService(store *Store, tokens *TokenAuthority, hooks Hooks) *Service {
	if store == nil || tokens == nil {
		panic("mmds: NewService needs a store and a token authority")
	}
	return &Service{store: store, tokens: tokens, hooks: hooks}
}

func textResponse(status int, msg string) Response {
	return Response{Status: status, ContentType: ContentTypeText, Body: []byte(msg)}
}

func notFound(uri string) Response {
	return textResponse(http.StatusNotFound, "Resource not found: "+uri+".")
}

// Respond computes the answer to req, following Firecracker's
// mmds::convert_to_response.
func (s *Service) Respond(req Request) Response {
	uri := absPath(req.Path)
	if uri == "" {
		return textResponse(http.StatusBadRequest, MsgInvalidURI)
	}
	switch req.Method {
	case http.MethodGet:
		return s.get(req, uri)
	case http.MethodPut:
		return s.put(req, uri)
	default:
		r := textResponse(http.StatusMethodNotAllowed, MsgMethodNotAllowed)
		r.Headers = map[string]string{HeaderAllow: allowedMethods}
		return r
	}
}

func (s *Service) get(req Request, uri string) Response {
	_, token, hasToken := lookupHeader(req.Headers, HeaderToken, HeaderAWSToken)
	if s.store.Version() == V2 {
		if !hasToken {
			fire(s.hooks.NoToken)
			return textResponse(http.StatusUnauthorized, MsgNoTokenProvided)
		}
		if !s.tokens.Validate(token) {
			fire(s.hooks.InvalidToken)
			return textResponse(http.StatusUnauthorized, MsgInvalidToken)
		}
	} else {
		// V1 serves everyone, but still counts missing and bad tokens so
		// operators can tell when guests are ready for V2.
		if !hasToken {
			fire(s.hooks.NoToken)
		} else if !s.tokens.Validate(token) {
			fire(s.hooks.InvalidToken)
		}
	}

	format, ctype := FormatIMDS, ContentTypeText
	if _, accept, ok := lookupHeader(req.Headers, HeaderAccept); ok {
		// micro_http knows only these two media types and keeps its
		// text/plain default for anything else ("*/*", lists, ...).
		if accept == ContentTypeJSON {
			format, ctype = FormatJSON, ContentTypeJSON
		}
	}
	body, err := s.store.Query(sanitizeURI(uri), format)
	switch err {
	case nil:
		// Content-Type follows Accept even when imds_compat forced text,
		// as in Firecracker.
		return Response{Status: http.StatusOK, ContentType: ctype, Body: body}
	case ErrNotFound:
		return notFound(uri)
	default:
		return textResponse(http.StatusNotImplemented, err.Error())
	}
}

func (s *Service) put(req Request, uri string) Response {
	// A PUT relayed by a proxy inside the guest must not obtain a token
	// (the EC2 IMDSv2 rule against SSRF).
	if name, _, ok := lookupHeader(req.Headers, HeaderForwardedFor); ok {
		return textResponse(http.StatusBadRequest, "Invalid header. Reason: Unsupported header name. Key: "+name)
	}
	if sanitizeURI(uri) != TokenPath {
		return notFound(uri)
	}
	name, value, ok := lookupHeader(req.Headers, HeaderTokenTTL, HeaderAWSTokenTTL)
	if !ok {
		return textResponse(http.StatusBadRequest, MsgNoTTLProvided)
	}
	ttl, ok := ParseUint32(value)
	if !ok {
		return textResponse(http.StatusBadRequest, "Invalid header. Reason: Invalid value. Key:"+name+"; Value:"+value)
	}
	token, err := s.tokens.Generate(ttl)
	if err != nil {
		return textResponse(http.StatusBadRequest, err.Error())
	}
	return Response{
		Status:      http.StatusOK,
		ContentType: ContentTypeText,
		Headers:     map[string]string{name: strconv.FormatUint(uint64(ttl), 10)},
		Body:        []byte(token),
	}
}

// ServeHTTP adapts Respond to net/http. net/http canonicalizes header names,
// so the echoed TTL header is spelled canonically rather than as sent.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	headers := make(map[string]string, len(r.Header))
	for k, vs := range r.Header {
		if len(vs) > 0 {
			headers[k] = vs[len(vs)-1]
		}
	}
	resp := s.Respond(Request{Method: r.Method, Path: target, Headers: headers})
	h := w.Header()
	for k, v := range resp.Headers {
		h[k] = []string{v}
	}
	h.Set("Content-Type", resp.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	w.Write(resp.Body)
}

func fire(f func()) {
	if f != nil {
		f()
	}
}

// absPath extracts the absolute path from a request target as micro_http's
// Uri::get_abs_path does; "" means the target is unusable.
func absPath(target string) string {
	const scheme = "http://"
	if rest, ok := strings.CutPrefix(target, scheme); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i:]
		}
		return ""
	}
	if strings.HasPrefix(target, "/") {
		return target
	}
	return ""
}

// sanitizeURI collapses runs of '/' so the path is a strict JSON pointer.
func sanitizeURI(uri string) string {
	if !strings.Contains(uri, "//") {
		return uri
	}
	var b strings.Builder
	b.Grow(len(uri))
	for i := 0; i < len(uri); i++ {
		if uri[i] == '/' && i > 0 && uri[i-1] == '/' {
			continue
		}
		b.WriteByte(uri[i])
	}
	return b.String()
}

// lookupHeader finds the first of names present in h, comparing trimmed
// names without regard to ASCII case, and returns the name as spelled in h
// and the trimmed value. When several entries match, the smallest spelling
// wins so the answer does not depend on map order.
func lookupHeader(h map[string]string, names ...string) (name, value string, ok bool) {
	for k, v := range h {
		tk := strings.TrimSpace(k)
		for _, n := range names {
			if asciiEqualFold(tk, n) && (!ok || tk < name) {
				name, value, ok = tk, strings.TrimSpace(v), true
			}
		}
	}
	return name, value, ok
}

// asciiEqualFold is Rust's eq_ignore_ascii_case; strings.EqualFold would also
// fold non-ASCII letters such as the Kelvin sign.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// ParseUint32 accepts what Rust's u32::from_str accepts: an optional '+'
// and at least one ASCII digit, without overflow. Firecracker parses
// numeric header values (the token TTL, Content-Length) this way.
func ParseUint32(s string) (uint32, bool) {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > 1<<32-1 {
			return 0, false
		}
	}
	return uint32(n), true
}
