package mmds

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzMergePatch(f *testing.F) {
	seeds := [][2]string{
		{`{"a":"b"}`, `{"a":null}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`},
		{`[1,2]`, `{"a":"b","c":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`},
		{`{"e":null}`, `{"a":1.50e+3}`},
		{`null`, `"x"`},
		{`{"a":[{"b":null}]}`, `{"a":{"x":[null]}}`},
		{`{"k":"\u0000\"é"}`, `{"k":{"\u2028":true}}`},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		target, err1 := parseJSON(doc)
		p, err2 := parseJSON(patch)
		if err1 != nil || err2 != nil {
			return
		}
		once := mergePatch(target, p)
		enc1 := appendJSON(nil, once)
		// Merge patches are idempotent.
		if enc2 := appendJSON(nil, mergePatch(once, p)); !bytes.Equal(enc1, enc2) {
			t.Fatalf("not idempotent:\n once %s\ntwice %s", enc1, enc2)
		}
		// The serialization is valid JSON that reads back to itself.
		back, err := parseJSON(enc1)
		if err != nil {
			t.Fatalf("re-parse %s: %v", enc1, err)
		}
		if enc3 := appendJSON(nil, back); !bytes.Equal(enc1, enc3) {
			t.Fatalf("round trip: %s != %s", enc1, enc3)
		}
		// No nulls survive as object members the patch touched; at least
		// the top-level ones the patch deleted are gone.
		if pm, ok := p.(map[string]any); ok {
			om := once.(map[string]any)
			for k, v := range pm {
				if _, present := om[k]; v == nil && present {
					t.Fatalf("key %q not deleted", k)
				}
			}
		}

		// Through the store: same result at exactly the limit, and a limit
		// one byte smaller rejects the patch and leaves the store unchanged.
		s := NewStore(1 << 30)
		if err := s.Put(doc); err != nil {
			t.Fatal(err)
		}
		before := s.Get()
		s.SetSizeLimit(len(enc1) - 1)
		if err := s.Patch(patch); !errors.Is(err, ErrLimitExceeded) {
			t.Fatalf("over-limit patch: %v", err)
		}
		if got := s.Get(); !bytes.Equal(got, before) {
			t.Fatalf("failed patch changed the store: %s -> %s", before, got)
		}
		s.SetSizeLimit(len(enc1))
		if err := s.Patch(patch); err != nil {
			t.Fatalf("patch at exactly the limit (%d bytes): %v", len(enc1), err)
		}
		want := enc1
		if once == nil {
			want = []byte("{}")
		}
		if got := s.Get(); !bytes.Equal(got, want) {
			t.Fatalf("store %s, direct %s", got, want)
		}
	})
}

func FuzzRespond(f *testing.F) {
	f.Add("GET", "/latest/meta-data/ami-id", "Accept", "application/json", "X-metadata-token", "", false, false, uint8(0))
	f.Add("PUT", "/latest/api/token", "X-metadata-token-ttl-seconds", "60", "X-Forwarded-For", "x", true, false, uint8(0))
	f.Add("PUT", "http://169.254.169.254//latest/api/token", "x-aws-ec2-metadata-token-ttl-seconds", "+21600", "", "", true, true, uint8(1))
	f.Add("GET", "//phones/0/", "X-aws-ec2-metadata-token", "AAAA", "Accept", "text/plain", true, true, uint8(2))
	f.Add("PATCH", "http://", "", "", "", "", false, false, uint8(0))
	f.Add("GET", "/a~1b/~0", "accept", "application/json", "x-metadata-token", "=", false, false, uint8(0))

	st := NewStore(DefaultSizeLimit)
	if err := st.Put([]byte(`{"latest":{"meta-data":{"ami-id":"ami-1","n":[1,"x",{"y":null}]}},"phones":["a"],"a/b":{"~":"t"},"num":1.5}`)); err != nil {
		f.Fatal(err)
	}
	ta := NewTokenAuthority("fuzz")
	svc := NewService(st, ta, Hooks{})
	valid, _ := ta.Generate(MaxTokenTTLSeconds)

	f.Fuzz(func(t *testing.T, method, path, k1, v1, k2, v2 string, isV2, compat bool, useValid uint8) {
		if isV2 {
			st.SetVersion(V2)
		} else {
			st.SetVersion(V1)
		}
		st.SetIMDSCompat(compat)
		h := map[string]string{k1: v1, k2: v2}
		if useValid%3 == 1 {
			h[HeaderToken] = valid
		}
		r := svc.Respond(Request{Method: method, Path: path, Headers: h})
		switch r.Status {
		case 200, 400, 401, 404, 405, 501:
		default:
			t.Fatalf("unexpected status %d", r.Status)
		}
		if r.ContentType != ContentTypeText && r.ContentType != ContentTypeJSON {
			t.Fatalf("content type %q", r.ContentType)
		}
		if r.Status != 200 && r.ContentType != ContentTypeText {
			t.Fatal("error with JSON content type")
		}
		if r.Status == 405 && r.Headers[HeaderAllow] != "GET, PUT" {
			t.Fatal("405 without Allow")
		}
		if method == "PUT" && r.Status == 200 && !ta.Validate(string(r.Body)) {
			t.Fatal("issued token does not validate")
		}
		if r.Status == 200 && r.ContentType == ContentTypeJSON && !compat {
			if _, err := parseJSON(r.Body); err != nil {
				t.Fatalf("JSON body %q: %v", r.Body, err)
			}
		}
	})
}
