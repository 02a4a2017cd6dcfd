package mmds

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// canon re-serializes a JSON text the way the store does.
func canon(t testing.TB, s string) string {
	t.Helper()
	v, err := parseJSON([]byte(s))
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return string(appendJSON(nil, v))
}

// RFC 7396 appendix A, plus section 3's example.
func TestMergePatchRFC7396(t *testing.T) {
	cases := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{
			`{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}`,
			`{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}`,
			`{"author":{"givenName":"John"},"content":"This will be unchanged","phoneNumber":"+01-123-456-7890","tags":["example"],"title":"Hello!"}`,
		},
		// Arrays inside a patch are values: their nulls are kept.
		{`{}`, `{"a":[null,{"b":null}]}`, `{"a":[null,{"b":null}]}`},
	}
	for _, c := range cases {
		s := NewStore(DefaultSizeLimit)
		if err := s.Put([]byte(c.target)); err != nil {
			t.Fatal(err)
		}
		if err := s.Patch([]byte(c.patch)); err != nil {
			t.Fatalf("%s + %s: %v", c.target, c.patch, err)
		}
		got := string(s.Get())
		want := canon(t, c.want)
		if want == "null" {
			want = "{}" // GET /mmds shows a null store as {}
		}
		if got != want {
			t.Errorf("%s + %s = %s, want %s", c.target, c.patch, got, want)
		}
	}
}

func TestMergePatchDoesNotModifyInputs(t *testing.T) {
	target, _ := parseJSON([]byte(`{"a":{"b":1,"c":2},"d":[1]}`))
	patch, _ := parseJSON([]byte(`{"a":{"b":null,"x":{"y":null}},"d":null}`))
	before := string(appendJSON(nil, target))
	pBefore := string(appendJSON(nil, patch))
	got := string(appendJSON(nil, mergePatch(target, patch)))
	if got != `{"a":{"c":2,"x":{}}}` {
		t.Errorf("got %s", got)
	}
	if s := string(appendJSON(nil, target)); s != before {
		t.Errorf("target changed: %s", s)
	}
	if s := string(appendJSON(nil, patch)); s != pBefore {
		t.Errorf("patch changed: %s", s)
	}
}

func TestStoreGetEmptyAndNull(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	if got := string(s.Get()); got != "{}" {
		t.Errorf("fresh Get = %s", got)
	}
	if s.Initialized() {
		t.Error("fresh store initialized")
	}
	if err := s.Put([]byte("null")); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Get()); got != "{}" || !s.Initialized() {
		t.Errorf("null store: Get = %s, initialized %v", got, s.Initialized())
	}
	// Any JSON value may be stored.
	for _, doc := range []string{`"str"`, `[1,2]`, `true`, `12`} {
		if err := s.Put([]byte(doc)); err != nil {
			t.Fatal(err)
		}
		if got := string(s.Get()); got != doc {
			t.Errorf("Get = %s, want %s", got, doc)
		}
	}
}

func TestPatchNotInitialized(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	err := s.Patch([]byte(`{"latest":{"meta-data":{"ami-id":"dummy"}}}`))
	if !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("err = %v", err)
	}
	st, msg := FaultMessage(err)
	if st != http.StatusBadRequest || msg != "MMDS error: The MMDS data store is not initialized." {
		t.Errorf("FaultMessage = %d %q", st, msg)
	}
	// A Put that fails for size does not initialize the store.
	small := NewStore(5)
	if err := small.Put([]byte(`{"a":"bcd"}`)); !errors.Is(err, ErrLimitExceeded) {
		t.Fatal(err)
	}
	if err := small.Patch([]byte(`{}`)); !errors.Is(err, ErrNotInitialized) {
		t.Errorf("patch after failed put: %v", err)
	}
}

// Firecracker's data_store.rs test_update_data_store, byte counts included.
func TestSizeLimitPatch(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Put([]byte(`{"name":{"first":"John","second":"Doe"},"age":"43"}`)))
	must(s.Patch([]byte(`{"name":{"first":"John","second":"Doe"},"age":"100"}`)))
	must(s.Put([]byte(`{"name":{"first":"John","second":"Doe"},"age":43}`)))
	must(s.Patch([]byte(`{"name":{"first":"John","second":null},"age":"43"}`)))
	must(s.Patch([]byte(`{"new_key":"` + strings.Repeat("X", 51151) + `"}`)))
	if got := len(s.Get()); got != DefaultSizeLimit {
		t.Fatalf("store is %d bytes, want exactly the limit", got)
	}

	before := string(s.Get())
	err := s.Patch([]byte(`{"new_key2" : "smth"}`))
	if !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("err = %v", err)
	}
	st, msg := FaultMessage(err)
	if st != http.StatusRequestEntityTooLarge || msg != "MMDS limit exceeded error: The MMDS patch request doesn't fit." {
		t.Errorf("FaultMessage = %d %q", st, msg)
	}
	if string(s.Get()) != before {
		t.Error("failed patch changed the store")
	}

	must(s.Patch([]byte(`{"new_key" : "smth"}`)))
	if got := len(s.Get()); got != 53 {
		t.Errorf("len = %d, want 53: %s", got, s.Get())
	}
	must(s.Patch([]byte(`{"new_key2" : "smth2"}`)))
	if got := len(s.Get()); got != 72 {
		t.Errorf("len = %d, want 72: %s", got, s.Get())
	}
}

func TestSizeLimitPut(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	if err := s.Put([]byte(`{"latest":{"meta-data":{"ami-id":"dummy"}}}`)); err != nil {
		t.Fatal(err)
	}
	before := string(s.Get())
	big := `{"key": "` + strings.Repeat("X", 51300) + `"}`
	if err := s.Put([]byte(big)); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("err = %v", err)
	}
	if string(s.Get()) != before {
		t.Error("failed put changed the store")
	}
	// The limit is on the compact serialization, not on the request body.
	s.SetSizeLimit(11)
	if err := s.Put([]byte("{ \"a\" :\n\t\"bcd\" }")); err != nil {
		t.Errorf("11-byte document rejected: %v", err)
	}
	if s.SizeLimit() != 11 {
		t.Error("SizeLimit")
	}
}

func TestNumbersAndStringsPreserved(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	doc := `{"big":123456789012345678901234567890,"f":12.12,"e":1E400,"neg":-0,"s":"<&>\u2028é\u0001\"\\/"}`
	if err := s.Put([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	want := `{"big":123456789012345678901234567890,"e":1E400,"f":12.12,"neg":-0,"s":"<&>` + "\u2028é" + `\u0001\"\\/"}`
	if got := string(s.Get()); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestPutValue(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	m := map[string]any{"b": []any{1, "x"}, "a": map[string]any{"c": nil}}
	if err := s.PutValue(m); err != nil {
		t.Fatal(err)
	}
	m["b"] = "changed" // the store must not alias the caller's map
	if got := string(s.Get()); got != `{"a":{"c":null},"b":[1,"x"]}` {
		t.Errorf("got %s", got)
	}
	if err := s.PatchValue(map[string]any{"a": nil}); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Get()); got != `{"b":[1,"x"]}` {
		t.Errorf("got %s", got)
	}
	if err := s.PutValue(func() {}); !errors.Is(err, ErrInvalidJSON) {
		t.Errorf("unmarshalable value: %v", err)
	}
}

func TestInvalidJSON(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	for _, doc := range []string{"", "{", `{"a":1} x`, "\xff", `{"a":"\xff"}`} {
		if err := s.Put([]byte(doc)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("Put(%q) = %v", doc, err)
		}
	}
	if s.Initialized() {
		t.Error("invalid put initialized the store")
	}
}

func TestQuery(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	data := `{"name":{"first":"John","second":"Doe"},"age":43,"phones":["+401234567","+441234567"],
		"member":false,"shares_percentage":12.12,"balance":-24,"json_string":"{\n  \"hello\": \"world\"\n}",
		"a/b":{"c~d":"slash-tilde"},"empty":{}}`
	if err := s.Put([]byte(data)); err != nil {
		t.Fatal(err)
	}
	type want struct {
		body string
		err  error
	}
	for _, compat := range []bool{false, true} {
		s.SetIMDSCompat(compat)
		for _, format := range []Format{FormatIMDS, FormatJSON} {
			imds := compat || format == FormatIMDS
			pick := func(i, j want) want {
				if imds {
					return i
				}
				return j
			}
			cases := map[string]want{
				"/invalid_path":      {err: ErrNotFound},
				"/name":              pick(want{body: "first\nsecond"}, want{body: `{"first":"John","second":"Doe"}`}),
				"/name/":             pick(want{body: "first\nsecond"}, want{body: `{"first":"John","second":"Doe"}`}),
				"/age":               pick(want{err: ErrUnsupportedValueType}, want{body: "43"}),
				"/phones/":           pick(want{err: ErrUnsupportedValueType}, want{body: `["+401234567","+441234567"]`}),
				"/phones/0/":         pick(want{body: "+401234567"}, want{body: `"+401234567"`}),
				"/phones/01":         {err: ErrNotFound},
				"/phones/+1":         {err: ErrNotFound},
				"/phones/2":          {err: ErrNotFound},
				"/member":            pick(want{err: ErrUnsupportedValueType}, want{body: "false"}),
				"/shares_percentage": pick(want{err: ErrUnsupportedValueType}, want{body: "12.12"}),
				"/balance":           pick(want{err: ErrUnsupportedValueType}, want{body: "-24"}),
				"/json_string":       pick(want{body: "{\n  \"hello\": \"world\"\n}"}, want{body: `"{\n  \"hello\": \"world\"\n}"`}),
				"/a~1b/c~0d":         pick(want{body: "slash-tilde"}, want{body: `"slash-tilde"`}),
				"/empty":             pick(want{body: ""}, want{body: "{}"}),
				"/name/first/x":      {err: ErrNotFound},
				"no-slash":           {err: ErrNotFound},
				"/": pick(want{body: "a/b/\nage\nbalance\nempty/\njson_string\nmember\nname/\nphones\nshares_percentage"},
					want{body: canon(t, data)}),
			}
			for path, w := range cases {
				body, err := s.Query(path, format)
				if err != w.err || string(body) != w.body {
					t.Errorf("compat=%v format=%v %s: got %q, %v; want %q, %v", compat, format, path, body, err, w.body, w.err)
				}
			}
		}
	}
}

func TestStoreSettings(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	if s.Version() != V1 || s.IMDSCompat() {
		t.Fatal("defaults")
	}
	s.ApplyConfig(Config{Version: V2, IMDSCompat: true, NetworkInterfaces: []string{"eth0"}})
	if s.Version() != V2 || !s.IMDSCompat() {
		t.Fatal("ApplyConfig")
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := NewStore(DefaultSizeLimit)
	if err := s.Put([]byte(`{"n":0}`)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 200 {
				_ = s.Patch([]byte(`{"k` + string(rune('a'+i)) + `":` + string(rune('0'+j%10)) + `}`))
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				if _, err := parseJSON(s.Get()); err != nil {
					t.Error(err)
					return
				}
				_, _ = s.Query("/n", FormatJSON)
			}
		}()
	}
	wg.Wait()
}
