package mmds

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The document of Firecracker's mmds/mod.rs tests.
const testData = `{
	"name": {"first": "John", "second": "Doe"},
	"age": 43,
	"phones": {"home": {"RO": "+401234567", "UK": "+441234567"}, "mobile": "+442345678"}
}`

const testJSON = `{"age":43,"name":{"first":"John","second":"Doe"},"phones":{"home":{"RO":"+401234567","UK":"+441234567"},"mobile":"+442345678"}}`

type counters struct{ invalid, none atomic.Int64 }

type fixture struct {
	svc    *Service
	store  *Store
	tokens *TokenAuthority
	clock  *fakeClock
	n      *counters
}

func newFixture(t testing.TB, v Version, data string) *fixture {
	t.Helper()
	st := NewStore(DefaultSizeLimit)
	if data != "" {
		if err := st.Put([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	st.SetVersion(v)
	ta, fc := newTestAuthority("test-vm")
	n := &counters{}
	svc := NewService(st, ta, Hooks{
		InvalidToken: func() { n.invalid.Add(1) },
		NoToken:      func() { n.none.Add(1) },
	})
	return &fixture{svc: svc, store: st, tokens: ta, clock: fc, n: n}
}

func (f *fixture) token(t testing.TB, ttl int) string {
	t.Helper()
	r := f.svc.Respond(Request{Method: "PUT", Path: "/latest/api/token", Headers: map[string]string{
		"X-metadata-token-ttl-seconds": strconv.Itoa(ttl),
	}})
	if r.Status != 200 || r.ContentType != ContentTypeText {
		t.Fatalf("token PUT: %d %s", r.Status, r.Body)
	}
	return string(r.Body)
}

func (f *fixture) counts() (invalid, none int64) {
	return f.n.invalid.Swap(0), f.n.none.Swap(0)
}

func expect(t *testing.T, what string, got Response, status int, ctype, body string) {
	t.Helper()
	if got.Status != status || got.ContentType != ctype || string(got.Body) != body {
		t.Errorf("%s: got %d %s %q; want %d %s %q", what, got.Status, got.ContentType, got.Body, status, ctype, body)
	}
}

func get(path string, headers ...string) Request {
	h := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return Request{Method: "GET", Path: path, Headers: h}
}

func TestAcceptHeader(t *testing.T) {
	f := newFixture(t, V1, testData)
	text := "age\nname/\nphones/"
	cases := []struct {
		accept      []string
		ctype, body string
	}{
		{nil, ContentTypeText, text},
		{[]string{"Accept", ""}, ContentTypeText, text},
		{[]string{"Accept", "*/*"}, ContentTypeText, text},
		{[]string{"Accept", "text/plain"}, ContentTypeText, text},
		{[]string{"Accept", "application/json, text/plain"}, ContentTypeText, text},
		{[]string{"Accept", "application/json"}, ContentTypeJSON, testJSON},
		{[]string{"accept", " application/json "}, ContentTypeJSON, testJSON},
	}
	for _, c := range cases {
		for _, target := range []string{"/", "http://169.254.169.254/", "//"} {
			expect(t, target+" "+strings.Join(c.accept, ":"), f.svc.Respond(get(target, c.accept...)), 200, c.ctype, c.body)
		}
	}
}

func TestRespondNegative(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		f := newFixture(t, v, testData)
		for _, target := range []string{"http://", "http://169.254.169.254", "", "latest", "*"} {
			expect(t, "uri "+target, f.svc.Respond(Request{Method: "GET", Path: target}), 400, ContentTypeText, MsgInvalidURI)
		}
		for _, m := range []string{"PATCH", "DELETE", "POST", "HEAD", "get", ""} {
			r := f.svc.Respond(Request{Method: m, Path: "http://169.254.169.255/"})
			expect(t, "method "+m, r, 405, ContentTypeText, MsgMethodNotAllowed)
			if r.Headers[HeaderAllow] != "GET, PUT" {
				t.Errorf("Allow = %q", r.Headers[HeaderAllow])
			}
		}
		// The URI is checked before the method, as in Firecracker.
		expect(t, "bad uri and method", f.svc.Respond(Request{Method: "PATCH", Path: "http://"}), 400, ContentTypeText, MsgInvalidURI)
	}
}

func TestRespondV1(t *testing.T) {
	f := newFixture(t, V1, testData)
	req := get("/", "Accept", "application/json")
	expect(t, "no token", f.svc.Respond(req), 200, ContentTypeJSON, testJSON)
	if inv, none := f.counts(); inv != 0 || none != 1 {
		t.Errorf("no token: invalid=%d none=%d", inv, none)
	}

	tok := f.token(t, 60)
	req = get("/", "Accept", "application/json", "X-metadata-token", tok)
	expect(t, "valid token", f.svc.Respond(req), 200, ContentTypeJSON, testJSON)
	if inv, none := f.counts(); inv != 0 || none != 0 {
		t.Errorf("valid token: invalid=%d none=%d", inv, none)
	}

	req = get("/", "Accept", "application/json", "X-aws-ec2-metadata-token", "INVALID_TOKEN")
	expect(t, "invalid token", f.svc.Respond(req), 200, ContentTypeJSON, testJSON)
	if inv, none := f.counts(); inv != 1 || none != 0 {
		t.Errorf("invalid token: invalid=%d none=%d", inv, none)
	}
}

func TestRespondV2(t *testing.T) {
	f := newFixture(t, V2, testData)
	tok := f.token(t, 60)
	for _, h := range []string{"X-metadata-token", "x-aws-ec2-metadata-token", "X-METADATA-TOKEN"} {
		expect(t, "valid "+h, f.svc.Respond(get("/", "Accept", "application/json", h, tok)), 200, ContentTypeJSON, testJSON)
	}
	if inv, none := f.counts(); inv != 0 || none != 0 {
		t.Errorf("valid: invalid=%d none=%d", inv, none)
	}

	expect(t, "no token", f.svc.Respond(get("/")), 401, ContentTypeText, MsgNoTokenProvided)
	if inv, none := f.counts(); inv != 0 || none != 1 {
		t.Errorf("no token: invalid=%d none=%d", inv, none)
	}
	// Token-like headers with other names do not count.
	expect(t, "wrong header", f.svc.Respond(get("/", "X-metadata-token-ttl-seconds", tok)), 401, ContentTypeText, MsgNoTokenProvided)
	f.counts()

	expired := f.token(t, 1)
	f.clock.advance(time.Second)
	for _, bad := range []string{"INVALID_TOKEN", expired, ""} {
		expect(t, "bad token "+bad, f.svc.Respond(get("/", "X-metadata-token", bad)), 401, ContentTypeText, MsgInvalidToken)
		if inv, none := f.counts(); inv != 1 || none != 0 {
			t.Errorf("bad token: invalid=%d none=%d", inv, none)
		}
	}
	// The other token still works.
	expect(t, "still valid", f.svc.Respond(get("/age", "X-metadata-token", tok, "Accept", "application/json")), 200, ContentTypeJSON, "43")
}

func TestRespondGet(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		f := newFixture(t, v, testData)
		tok := f.token(t, 60)
		expect(t, "invalid path", f.svc.Respond(get("http://169.254.169.254/invalid", "X-metadata-token", tok)),
			404, ContentTypeText, "Resource not found: /invalid.")
		// The message quotes the URI as sent, before '/' runs are collapsed.
		expect(t, "invalid path //", f.svc.Respond(get("//invalid//x", "X-metadata-token", tok)),
			404, ContentTypeText, "Resource not found: //invalid//x.")
		expect(t, "unsupported type", f.svc.Respond(get("/age", "X-metadata-token", tok)),
			501, ContentTypeText, "Cannot retrieve value. The value has an unsupported type.")
		// A TTL header on a GET is ignored, whatever its value.
		expect(t, "ttl on GET", f.svc.Respond(get("/", "X-metadata-token", tok, "X-metadata-token-ttl-seconds", "application/json")),
			200, ContentTypeText, "age\nname/\nphones/")
		expect(t, "leaf", f.svc.Respond(get("/phones//home/UK/", "X-metadata-token", tok)), 200, ContentTypeText, "+441234567")
		expect(t, "query string is part of the key", f.svc.Respond(get("/name?x=1", "X-metadata-token", tok)),
			404, ContentTypeText, "Resource not found: /name?x=1.")
	}
}

func TestRespondPut(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		f := newFixture(t, v, testData)
		for _, h := range []string{"X-metadata-token-ttl-seconds", "x-aws-ec2-metadata-token-ttl-seconds", "X-Metadata-Token-Ttl-Seconds"} {
			r := f.svc.Respond(Request{Method: "PUT", Path: "http://169.254.169.254/latest/api/token", Headers: map[string]string{h: "60"}})
			if r.Status != 200 || r.ContentType != ContentTypeText || len(r.Body) != 48 {
				t.Fatalf("PUT %s: %d %q", h, r.Status, r.Body)
			}
			// The TTL header is echoed with the guest's spelling.
			if len(r.Headers) != 1 || r.Headers[h] != "60" {
				t.Errorf("echo: %v", r.Headers)
			}
			if !f.tokens.Validate(string(r.Body)) {
				t.Error("issued token invalid")
			}
		}
		put := func(path string, headers ...string) Response {
			req := get(path, headers...)
			req.Method = "PUT"
			return f.svc.Respond(req)
		}
		for _, h := range []string{"X-Forwarded-For", "x-forwarded-for", "X-fOrWaRdEd-FoR"} {
			expect(t, h, put("/latest/api/token", h, "203.0.113.195", "X-metadata-token-ttl-seconds", "60"),
				400, ContentTypeText, "Invalid header. Reason: Unsupported header name. Key: "+h)
		}
		// X-Forwarded-For is refused even before the path is checked.
		expect(t, "xff any path", put("/", "X-Forwarded-For", "foo"), 400, ContentTypeText,
			"Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For")
		expect(t, "bad path", put("http://169.254.169.254/token", "X-metadata-token-ttl-seconds", "60"),
			404, ContentTypeText, "Resource not found: /token.")
		expect(t, "bad path 2", put("/latest/api/toke", "X-metadata-token-ttl-seconds", "60"),
			404, ContentTypeText, "Resource not found: /latest/api/toke.")
		expect(t, "trailing slash", put("/latest/api/token/", "X-metadata-token-ttl-seconds", "60"),
			404, ContentTypeText, "Resource not found: /latest/api/token/.")
		if r := put("//latest//api/token", "X-metadata-token-ttl-seconds", "60"); r.Status != 200 {
			t.Errorf("collapsed slashes: %d %s", r.Status, r.Body)
		}
		expect(t, "non-numeric", put("/latest/api/token", "X-metadata-token-ttl-seconds", "application/json"),
			400, ContentTypeText, "Invalid header. Reason: Invalid value. Key:X-metadata-token-ttl-seconds; Value:application/json")
		for _, bad := range []string{"-1", "", "+", "4294967296", "1.5", "0x10", "６"} {
			r := put("/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", bad)
			expect(t, "invalid value "+bad, r, 400, ContentTypeText,
				"Invalid header. Reason: Invalid value. Key:X-aws-ec2-metadata-token-ttl-seconds; Value:"+bad)
		}
		for _, ttl := range []string{"0", "21601", "4294967295"} {
			expect(t, "out of range "+ttl, put("/latest/api/token", "X-metadata-token-ttl-seconds", ttl), 400, ContentTypeText,
				"Invalid time to live value provided for token: "+ttl+". Please provide a value between 1 and 21600.")
		}
		// Rust's u32 parser takes a '+' sign and leading zeros.
		if r := put("/latest/api/token", "X-metadata-token-ttl-seconds", "+0060"); r.Status != 200 || r.Headers["X-metadata-token-ttl-seconds"] != "60" {
			t.Errorf("+0060: %d %v", r.Status, r.Headers)
		}
		expect(t, "no ttl", put("/latest/api/token"), 400, ContentTypeText, MsgNoTTLProvided)
	}
}

// The document and expectations of Firecracker's test_mmds_response.
func TestIMDSAndCompat(t *testing.T) {
	data := `{"latest":{"meta-data":{"ami-id":"ami-12345678","reservation-id":"r-fea54097",
		"local-hostname":"ip-10-251-50-12.ec2.internal","public-hostname":"ec2-203-0-113-25.compute-1.amazonaws.com",
		"dummy_obj":{"res_key":"res_value"},"dummy_array":["arr_val1","arr_val2"],"dummy_empty":""},
		"Limits":{"CPU":512,"Memory":512},"Usage":{"CPU":12.12}}}`
	for _, v := range []Version{V1, V2} {
		for _, compat := range []bool{false, true} {
			for _, appJSON := range []bool{false, true} {
				f := newFixture(t, v, data)
				f.store.SetIMDSCompat(compat)
				tok := f.token(t, 60)
				hdr := []string{"X-metadata-token", tok}
				ctype := ContentTypeText
				if appJSON {
					hdr = append(hdr, "Accept", "application/json")
					ctype = ContentTypeJSON
				}
				jsonOut := appJSON && !compat
				pick := func(imds, js string) string {
					if jsonOut {
						return js
					}
					return imds
				}
				const unsupported = "Cannot retrieve value. The value has an unsupported type."
				expect(t, "branch", f.svc.Respond(get("/latest/meta-data/", hdr...)), 200, ctype, pick(
					"ami-id\ndummy_array\ndummy_empty\ndummy_obj/\nlocal-hostname\npublic-hostname\nreservation-id",
					canon(t, `{"ami-id":"ami-12345678","dummy_array":["arr_val1","arr_val2"],"dummy_empty":"","dummy_obj":{"res_key":"res_value"},"local-hostname":"ip-10-251-50-12.ec2.internal","public-hostname":"ec2-203-0-113-25.compute-1.amazonaws.com","reservation-id":"r-fea54097"}`)))
				expect(t, "string leaf", f.svc.Respond(get("/latest/meta-data/ami-id/", hdr...)), 200, ctype, pick("ami-12345678", `"ami-12345678"`))
				expect(t, "array item", f.svc.Respond(get("/latest/meta-data/dummy_array/0", hdr...)), 200, ctype, pick("arr_val1", `"arr_val1"`))
				expect(t, "empty string", f.svc.Respond(get("/latest/meta-data/dummy_empty", hdr...)), 200, ctype, pick("", `""`))
				if jsonOut {
					expect(t, "int", f.svc.Respond(get("/latest/Limits/CPU", hdr...)), 200, ctype, "512")
					expect(t, "float", f.svc.Respond(get("/latest/Usage/CPU", hdr...)), 200, ctype, "12.12")
				} else {
					expect(t, "int", f.svc.Respond(get("/latest/Limits/CPU", hdr...)), 501, ContentTypeText, unsupported)
					expect(t, "float", f.svc.Respond(get("/latest/Usage/CPU", hdr...)), 501, ContentTypeText, unsupported)
					expect(t, "array", f.svc.Respond(get("/latest/meta-data/dummy_array", hdr...)), 501, ContentTypeText, unsupported)
				}
			}
		}
	}
}

func TestRespondEmptyStore(t *testing.T) {
	f := newFixture(t, V1, "")
	// An unset store is JSON null: the root renders as "null", other paths
	// do not exist.
	expect(t, "json root", f.svc.Respond(get("/", "Accept", "application/json")), 200, ContentTypeJSON, "null")
	expect(t, "imds root", f.svc.Respond(get("/")), 501, ContentTypeText, "Cannot retrieve value. The value has an unsupported type.")
	expect(t, "path", f.svc.Respond(get("/latest/meta-data")), 404, ContentTypeText, "Resource not found: /latest/meta-data.")
}

func TestHeaderLookupDeterministic(t *testing.T) {
	h := map[string]string{"x-metadata-token": "b", "X-metadata-token": "a", "X-aws-ec2-metadata-token": "c", " X-Other ": "d"}
	for range 20 {
		name, val, ok := lookupHeader(h, HeaderToken, HeaderAWSToken)
		if !ok || name != "X-aws-ec2-metadata-token" || val != "c" {
			t.Fatalf("got %q %q %v", name, val, ok)
		}
	}
	if name, val, ok := lookupHeader(h, "x-other"); !ok || name != "X-Other" || val != "d" {
		t.Errorf("trimmed lookup: %q %q %v", name, val, ok)
	}
	// Only ASCII case folds: U+212A KELVIN SIGN is not 'k'.
	if _, _, ok := lookupHeader(map[string]string{"\u212a": "x"}, "k"); ok {
		t.Error("non-ASCII fold")
	}
}

func TestSanitizeAndAbsPath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b/c/d": "/a/b/c/d", "/a////b/c//d": "/a/b/c/d", "///////a//b///c//d": "/a/b/c/d",
		"a": "a", "a/": "a/", "aa//": "aa/", "/": "/", "": "", "////": "/", "//aa//bb///cc//d": "/aa/bb/cc/d",
	} {
		if got := sanitizeURI(in); got != want {
			t.Errorf("sanitizeURI(%q) = %q", in, got)
		}
	}
	for in, want := range map[string]string{
		"/x": "/x", "http://h/x": "/x", "http://h:80/x?y": "/x?y", "http://h": "", "http://": "",
		"https://h/x": "", "x/y": "", "": "", "HTTP://h/x": "",
	} {
		if got := absPath(in); got != want {
			t.Errorf("absPath(%q) = %q", in, got)
		}
	}
}

func TestServeHTTP(t *testing.T) {
	f := newFixture(t, V2, testData)
	srv := httptest.NewServer(f.svc)
	defer srv.Close()

	req, _ := http.NewRequest("PUT", srv.URL+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != "21600" || len(tok) != 48 {
		t.Fatalf("token: %d %v %q", resp.StatusCode, resp.Header, tok)
	}

	req, _ = http.NewRequest("GET", srv.URL+"/name/first", nil)
	req.Header.Set("X-metadata-token", string(tok))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "John" || resp.Header.Get("Content-Type") != ContentTypeText {
		t.Errorf("get: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	// Recorder path: 405 with Allow, and the absolute-form target.
	rec := httptest.NewRecorder()
	f.svc.ServeHTTP(rec, httptest.NewRequest("DELETE", "/", nil))
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, PUT" || rec.Body.String() != MsgMethodNotAllowed {
		t.Errorf("405: %d %v %q", rec.Code, rec.Header(), rec.Body)
	}
	rec = httptest.NewRecorder()
	r := httptest.NewRequest("GET", "http://169.254.169.254/name", nil)
	r.Header.Set("X-metadata-token", string(tok))
	r.Header.Set("Accept", "application/json")
	f.svc.ServeHTTP(rec, r)
	if rec.Code != 200 || rec.Body.String() != `{"first":"John","second":"Doe"}` || rec.Header().Get("Content-Type") != ContentTypeJSON {
		t.Errorf("absolute form: %d %q %v", rec.Code, rec.Body, rec.Header())
	}
}

func BenchmarkGet(b *testing.B) {
	s := NewStore(DefaultSizeLimit)
	if err := s.Put([]byte(testData)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Get()
	}
}

func BenchmarkRespond(b *testing.B) {
	f := newFixture(b, V2, testData)
	tok := f.token(b, 21600)
	req := get("/phones/home/UK", "X-metadata-token", tok, "Accept", "text/plain")
	b.ReportAllocs()
	for b.Loop() {
		if r := f.svc.Respond(req); r.Status != 200 {
			b.Fatal(r.Status)
		}
	}
}
