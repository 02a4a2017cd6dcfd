package logger

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func ptr[T any](v T) *T { return &v }

// testCounter stands in for the metrics counters.
type testCounter struct{ n atomic.Uint64 }

func (c *testCounter) Inc() { c.n.Add(1) }

// newFileLogger returns a logger writing to a fresh file, and the path.
func newFileLogger(t *testing.T, c Config) (*Logger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log")
	l := New("test-id")
	c.Path = &path
	if err := l.Configure(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.st.Load().sink.Close() })
	return l, path
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if s == "" {
		return nil
	}
	if !strings.HasSuffix(s, "\n") {
		t.Fatalf("log does not end in newline: %q", s)
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestParseLevel(t *testing.T) {
	cases := map[string]Level{
		"off": Off, "OFF": Off, "Error": Error, "eRrOr": Error, "Warn": Warn,
		"WARNING": Warn, "Warning": Warn, "info": Info, "Info": Info,
		"DEBUG": Debug, "trace": Trace, "TrAcE": Trace,
	}
	for in, want := range cases {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "bad", "warnings", "inf", " info"} {
		_, err := ParseLevel(bad)
		var pe *LevelParseError
		if !errors.As(err, &pe) {
			t.Fatalf("ParseLevel(%q) error = %v, want *LevelParseError", bad, err)
		}
		if want := "Failed to parse string to level filter: " + bad; err.Error() != want {
			t.Errorf("error = %q, want %q", err, want)
		}
	}
	_, err := ParseLevel("foo")
	want := "Invalid value for logger level: Failed to parse string to level filter: foo.Possible values: [Error, Warning, Info, Debug]"
	if got := err.(*LevelParseError).CLIMessage(); got != want {
		t.Errorf("CLIMessage = %q, want %q", got, want)
	}
}

func TestLevelText(t *testing.T) {
	var l Level
	if err := l.UnmarshalText([]byte("wArNiNg")); err != nil || l != Warn {
		t.Errorf("UnmarshalText(wArNiNg) = %v, %v", l, err)
	}
	if err := l.UnmarshalText([]byte("blah")); err == nil || err.Error() != "Invalid LevelFilter" {
		t.Errorf("UnmarshalText(blah) error = %v", err)
	}
	for _, lv := range []Level{Off, Error, Warn, Info, Debug, Trace} {
		b, err := lv.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Level
		if err := back.UnmarshalText(b); err != nil || back != lv {
			t.Errorf("round trip %v -> %s -> %v, %v", lv, b, back, err)
		}
	}
	if Warn.String() != "WARN" || Error.String() != "ERROR" || Trace.String() != "TRACE" {
		t.Error("Level.String does not give Firecracker's upper-case names")
	}
}

var lineRE = regexp.MustCompile(`^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}) \[([^\]]*)\] (.*)$`)

func TestLineFormat(t *testing.T) {
	l, path := newFileLogger(t, Config{})
	h := l.With("fc_api", "api")
	before := time.Now()
	h.Infof("plain %d", 1)
	l.Configure(Config{ShowLevel: ptr(true)})
	h.Warnf("with level")
	l.Configure(Config{ShowLogOrigin: ptr(true)})
	h.Errorf("with origin") // this line number is checked below
	_, _, originLine, _ := runtime.Caller(0)
	l.Configure(Config{ShowLevel: ptr(false)})
	l.With("", "api").Infof("no thread")
	after := time.Now()

	lines := readLines(t, path)
	if len(lines) != 4 {
		t.Fatalf("got %d lines: %q", len(lines), lines)
	}
	wantHdr := []string{
		"test-id:fc_api",
		"test-id:fc_api:WARN",
		fmt.Sprintf("test-id:fc_api:ERROR:internal/logger/logger_test.go:%d", originLine-1),
		fmt.Sprintf("test-id:-:internal/logger/logger_test.go:%d", originLine+2),
	}
	wantMsg := []string{"plain 1", "with level", "with origin", "no thread"}
	for i, line := range lines {
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %q does not match the Firecracker format", line)
		}
		ts, err := time.ParseInLocation("2006-01-02T15:04:05.000000000", m[1], time.Local)
		if err != nil {
			t.Fatal(err)
		}
		if ts.Before(before.Truncate(time.Second)) || ts.After(after) {
			t.Errorf("timestamp %v not local time between %v and %v", ts, before, after)
		}
		if m[2] != wantHdr[i] {
			t.Errorf("line %d header = %q, want %q", i, m[2], wantHdr[i])
		}
		if m[3] != wantMsg[i] {
			t.Errorf("line %d message = %q, want %q", i, m[3], wantMsg[i])
		}
	}
}

func TestLevelsAndReset(t *testing.T) {
	l, path := newFileLogger(t, Config{})
	h := l.With("main", "x")
	h.Debugf("hidden at default Info")
	h.Infof("info 1")
	l.Configure(Config{Level: ptr(Trace)})
	if !h.Enabled(Trace) {
		t.Fatal("Trace not enabled after setting Trace")
	}
	h.Tracef("trace 1")
	h.Debugf("debug 1")
	// An omitted level resets to Info, as PUT /logger does.
	l.Configure(Config{ShowLevel: ptr(true)})
	if l.Level() != Info {
		t.Fatalf("level after Configure without Level = %v, want Info", l.Level())
	}
	h.Debugf("hidden again")
	l.Configure(Config{Level: ptr(Error)})
	h.Warnf("hidden warn")
	h.Errorf("error 1")
	h.Logf(Error, "error %d", 2)
	l.Configure(Config{Level: ptr(Off)})
	h.Errorf("hidden error")
	h.Logf(Off, "never")
	l.Log(Error, "main", "x", "hidden too")
	l.Configure(Config{Level: ptr(Warn)})
	l.Log(Warn, "main", "x", "warn %s", "1")

	var msgs []string
	for _, line := range readLines(t, path) {
		msgs = append(msgs, lineRE.FindStringSubmatch(line)[3])
	}
	want := []string{"info 1", "trace 1", "debug 1", "error 1", "error 2", "warn 1"}
	if strings.Join(msgs, "|") != strings.Join(want, "|") {
		t.Errorf("messages = %q, want %q", msgs, want)
	}
}

func TestModuleFilter(t *testing.T) {
	l, path := newFileLogger(t, Config{Module: ptr("devices/virtio")})
	l.With("main", "devices/virtio/block").Infof("block")
	l.With("main", "devices/legacy").Infof("legacy")
	l.With("main", "vmm").Infof("vmm")
	l.With("main", "devices/virtio").Infof("virtio")
	// A Configure without Module keeps the filter.
	l.Configure(Config{ShowLevel: ptr(false)})
	l.With("main", "api").Infof("api")
	l.Configure(Config{Module: ptr("")})
	l.With("main", "api").Infof("api 2")

	var msgs []string
	for _, line := range readLines(t, path) {
		msgs = append(msgs, lineRE.FindStringSubmatch(line)[3])
	}
	if got, want := strings.Join(msgs, "|"), "block|virtio|api 2"; got != want {
		t.Errorf("messages = %q, want %q", got, want)
	}
}

func TestOpenErrors(t *testing.T) {
	l := New("x")
	bad := filepath.Join(t.TempDir(), "missing", "log")
	err := l.Configure(Config{Path: &bad, Level: ptr(Debug)})
	if err == nil {
		t.Fatal("Configure with a path in a missing directory succeeded")
	}
	if want := "Failed to open target file: No such file or directory (os error 2)"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("error does not unwrap to fs.ErrNotExist")
	}
	if l.Level() != Info {
		t.Error("a failed Configure changed the level")
	}
	dir := t.TempDir()
	if err := l.Configure(Config{Path: &dir}); err == nil || err.Error() != "Failed to open target file: Is a directory (os error 21)" {
		t.Errorf("directory error = %v", err)
	}
}

func TestNotTruncatedNotAppended(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	old := strings.Repeat("X", 200) + "\n"
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	l := New("id")
	if err := l.Configure(Config{Path: &path}); err != nil {
		t.Fatal(err)
	}
	l.With("main", "m").Infof("hi")
	b, _ := os.ReadFile(path)
	if len(b) != len(old) {
		t.Fatalf("file length %d, want %d (no truncation, no append)", len(b), len(old))
	}
	if !strings.Contains(string(b), "[id:main] hi\n") || !strings.HasSuffix(string(b), "XXX\n") {
		t.Errorf("line not written over the start of the file: %q", b)
	}
}

func TestRedirect(t *testing.T) {
	l, first := newFileLogger(t, Config{})
	h := l.With("main", "m")
	h.Infof("one")
	second := filepath.Join(t.TempDir(), "log2")
	if err := l.Configure(Config{Path: &second}); err != nil {
		t.Fatal(err)
	}
	h.Infof("two")
	if n := len(readLines(t, first)); n != 1 {
		t.Errorf("first file has %d lines", n)
	}
	if n := len(readLines(t, second)); n != 1 {
		t.Errorf("second file has %d lines", n)
	}
}

func TestInstanceID(t *testing.T) {
	l, path := newFileLogger(t, Config{})
	l.SetInstanceID("vm-42")
	if l.InstanceID() != "vm-42" {
		t.Fatal("InstanceID not set")
	}
	l.With("main", "m").Infof("x")
	if lines := readLines(t, path); !strings.Contains(lines[0], " [vm-42:main] x") {
		t.Errorf("line = %q", lines[0])
	}
	if New(DefaultInstanceID).InstanceID() != "anonymous-instance" {
		t.Error("wrong default instance ID")
	}
}

func TestFIFO(t *testing.T) {
	missed := &testCounter{}
	SetCounters(missed, nil)
	defer SetCounters(nil, nil)

	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	l := New("id")
	// Opening must not block although no reader is attached.
	if err := l.Configure(Config{Path: &path}); err != nil {
		t.Fatal(err)
	}
	defer l.st.Load().sink.Close()
	h := l.With("main", "m")
	h.Infof("first")
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || !strings.HasSuffix(line, "[id:main] first\n") {
		t.Fatalf("read %q, %v", line, err)
	}
	// Nobody reads any more: once the pipe is full, writes must fail at
	// once (counted as missed), not block.
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := strings.Repeat("y", 1000)
		for range 200 {
			h.Infof("%s", msg)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logging to a full FIFO blocked")
	}
	if missed.n.Load() == 0 {
		t.Error("missed_log_count not incremented for a full FIFO")
	}
}

func TestStdoutDefault(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	l := New("so")
	l.With("main", "m").Infof("to stdout")
	os.Stdout = saved
	w.Close()
	b := make([]byte, 512)
	n, _ := r.Read(b)
	r.Close()
	if !strings.HasSuffix(string(b[:n]), " [so:main] to stdout\n") {
		t.Errorf("stdout got %q", b[:n])
	}
}

func TestWriteFailureCounted(t *testing.T) {
	missed := &testCounter{}
	SetCounters(missed, nil)
	defer SetCounters(nil, nil)
	l, _ := newFileLogger(t, Config{})
	l.st.Load().sink.Close() // every write now fails with os.ErrClosed
	l.With("main", "m").Infof("lost")
	if missed.n.Load() != 1 {
		t.Errorf("missed = %d, want 1", missed.n.Load())
	}
}

// Lines written concurrently must never interleave: each is one write.
func TestConcurrentLines(t *testing.T) {
	l, path := newFileLogger(t, Config{ShowLevel: ptr(true), ShowLogOrigin: ptr(true)})
	const goroutines, per = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := l.With(fmt.Sprintf("fc_vcpu %d", g), "vstate")
			for i := range per {
				h.Infof("g=%d i=%d %s", g, i, strings.Repeat("z", 100))
			}
		}()
	}
	// Reconfigure concurrently: the lines must survive (no lock on the hot path).
	for range 20 {
		l.Configure(Config{Level: ptr(Info)})
	}
	wg.Wait()
	lines := readLines(t, path)
	if len(lines) != goroutines*per {
		t.Fatalf("%d lines, want %d", len(lines), goroutines*per)
	}
	re := regexp.MustCompile(`^\S+ \[test-id:fc_vcpu (\d):INFO:internal/logger/logger_test\.go:\d+\] g=(\d) i=\d+ z{100}$`)
	for _, line := range lines {
		m := re.FindStringSubmatch(line)
		if m == nil || m[1] != m[2] {
			t.Fatalf("mangled line %q", line)
		}
	}
}

func TestDevPreview(t *testing.T) {
	l, path := newFileLogger(t, Config{ShowLevel: ptr(true)})
	h := l.With("fc_api", "api")
	h.DevPreview("PCI hot-plug", "")
	h.DevPreview("Free page hinting", "more")
	lines := readLines(t, path)
	if !strings.HasSuffix(lines[0], "[test-id:fc_api:WARN] [DevPreview] PCI hot-plug is in development preview.") ||
		!strings.HasSuffix(lines[1], "[DevPreview] Free page hinting is in development preview - more") {
		t.Errorf("lines = %q", lines)
	}
}

func TestOSErrorText(t *testing.T) {
	_, openErr := os.Open("/nonexistent/squib")
	cases := []struct {
		err  error
		want string
	}{
		{syscall.ENOENT, "No such file or directory (os error 2)"},
		{openErr, "No such file or directory (os error 2)"},
		{syscall.ENOMEM, "Out of memory (os error 12)"},
		{syscall.EINVAL, "Invalid argument (os error 22)"},
		{syscall.EACCES, "Permission denied (os error 13)"},
		{syscall.EAGAIN, "Resource temporarily unavailable (os error 11)"},
		{syscall.EBUSY, "Resource busy (os error 16)"},
		{fmt.Errorf("wrapped: %w", os.NewSyscallError("mmap", syscall.ENOMEM)), "Out of memory (os error 12)"},
		{syscall.Errno(4095), "No error information (os error 4095)"},
		{errors.New("custom"), "custom"},
		{nil, ""},
	}
	for _, c := range cases {
		if got := OSErrorText(c.err); got != c.want {
			t.Errorf("OSErrorText(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestRateLimiterBurst(t *testing.T) {
	limited := &testCounter{}
	SetCounters(nil, limited)
	defer SetCounters(nil, nil)
	var rl RateLimiter
	for i := range DefaultBurst {
		if ok, _ := rl.Allow(); !ok {
			t.Fatalf("message %d of the burst denied", i)
		}
	}
	for range 3 {
		if ok, _ := rl.Allow(); ok {
			t.Fatal("message past the burst allowed")
		}
	}
	if limited.n.Load() != 3 {
		t.Errorf("rate_limited_log_count = %d, want 3", limited.n.Load())
	}
	var other RateLimiter
	if ok, _ := other.Allow(); !ok {
		t.Error("limiters are not independent")
	}
}

func TestRateLimiterRefill(t *testing.T) {
	rl := &RateLimiter{Burst: 2, Refill: 100 * time.Millisecond}
	rl.Allow()
	rl.Allow()
	if ok, _ := rl.Allow(); ok {
		t.Fatal("third message allowed")
	}
	if ok, _ := rl.Allow(); ok {
		t.Fatal("fourth message allowed")
	}
	time.Sleep(250 * time.Millisecond)
	ok, sup := rl.Allow()
	if !ok || sup != 2 {
		t.Fatalf("after refill Allow = %v, %d; want true, 2", ok, sup)
	}
	if ok, sup := rl.Allow(); !ok || sup != 0 {
		t.Errorf("suppressed count not cleared: %v, %d", ok, sup)
	}
}

func TestLimitedHandle(t *testing.T) {
	l, path := newFileLogger(t, Config{})
	rl := &RateLimiter{Burst: 1, Refill: 50 * time.Millisecond}
	h := l.With("fc_vcpu 0", "devices")
	for range 5 {
		h.RateLimited(rl).Warnf("flood")
	}
	time.Sleep(120 * time.Millisecond)
	h.RateLimited(rl).Errorf("again")
	// A disabled level takes no token.
	h.RateLimited(rl).Debugf("debug")
	// nil limiter: one limiter per call site.
	for range 15 {
		h.RateLimited(nil).Infof("site A")
	}
	for range 3 {
		h.RateLimited(nil).Infof("site B")
	}
	var msgs []string
	for _, line := range readLines(t, path) {
		msgs = append(msgs, lineRE.FindStringSubmatch(line)[3])
	}
	want := []string{"flood", "4 messages were suppressed due to rate limiting", "again"}
	for range DefaultBurst {
		want = append(want, "site A")
	}
	want = append(want, "site B", "site B", "site B")
	if strings.Join(msgs, "|") != strings.Join(want, "|") {
		t.Errorf("messages = %q\nwant %q", msgs, want)
	}
}

func BenchmarkDisabledDebug(b *testing.B) {
	h := New("b").With("fc_vcpu 0", "vstate")
	for b.Loop() {
		h.Debugf("exit")
	}
}

func BenchmarkInfoToFile(b *testing.B) {
	l := New("bench")
	p := os.DevNull
	l.Configure(Config{Path: &p, ShowLevel: ptr(true), ShowLogOrigin: ptr(true)})
	h := l.With("main", "vmm")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Infof("message %d", i)
	}
}
