package logger

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Level is a log verbosity. A message is written when its level is not Off
// and is at or below the logger's level.
type Level uint32

// The levels, from least to most verbose.
const (
	Off Level = iota
	Error
	Warn
	Info
	Debug
	Trace
)

// DefaultLevel is the level of a new logger, and the one PUT /logger falls
// back to when "level" is omitted (Firecracker's docs say Warning; the code
// uses Info).
const DefaultLevel = Info

// DefaultInstanceID is the instance ID printed until one is set (--id).
const DefaultInstanceID = "anonymous-instance"

// String returns the upper-case name printed by show_level ("WARN").
func (l Level) String() string {
	switch l {
	case Off:
		return "OFF"
	case Error:
		return "ERROR"
	case Warn:
		return "WARN"
	case Info:
		return "INFO"
	case Debug:
		return "DEBUG"
	case Trace:
		return "TRACE"
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}

// LevelParseError is returned by ParseLevel. Its text is Firecracker's
// LevelFilterFromStrError.
type LevelParseError struct {
	Input string // the rejected value, as given
}

// Error returns "Failed to parse string to level filter: <input>".
func (e *LevelParseError) Error() string {
	return "Failed to parse string to level filter: " + e.Input
}

// CLIMessage returns the message Firecracker prints for a bad --level before
// exiting with code 152 (FcExitCode::BadConfiguration). The missing space
// after the period, and the list that leaves out Warn, Trace and Off, are
// Firecracker's.
func (e *LevelParseError) CLIMessage() string {
	return "Invalid value for logger level: " + e.Error() + ".Possible values: [Error, Warning, Info, Debug]"
}

// ParseLevel parses a level name case-insensitively: Off, Error, Warn or
// Warning, Info, Debug, Trace. Errors are *LevelParseError.
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(s) {
	case "off":
		return Off, nil
	case "error":
		return Error, nil
	case "warn", "warning":
		return Warn, nil
	case "info":
		return Info, nil
	case "debug":
		return Debug, nil
	case "trace":
		return Trace, nil
	}
	return 0, &LevelParseError{Input: s}
}

// UnmarshalText lets a JSON decoder read the "level" of PUT /logger. The
// error text is the serde message Firecracker's API reports, "Invalid
// LevelFilter".
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return errInvalidLevelFilter
	}
	*l = v
	return nil
}

// MarshalText writes the serde variant name ("Warn", "Info", ...).
func (l Level) MarshalText() ([]byte, error) {
	switch l {
	case Off:
		return []byte("Off"), nil
	case Error:
		return []byte("Error"), nil
	case Warn:
		return []byte("Warn"), nil
	case Info:
		return []byte("Info"), nil
	case Debug:
		return []byte("Debug"), nil
	case Trace:
		return []byte("Trace"), nil
	}
	return nil, fmt.Errorf("invalid level %d", uint32(l))
}

// textError is an error that is just its text, usable as a constant.
type textError string

// Error returns the text.
func (e textError) Error() string { return string(e) }

// errInvalidLevelFilter carries serde's exact wording, capital I included.
const errInvalidLevelFilter = textError("Invalid LevelFilter")

// Config is a logger update with PUT /logger semantics: Path, ShowLevel,
// ShowLogOrigin and Module change the logger only when non-nil; a nil Level
// resets the level to DefaultLevel.
type Config struct {
	Path          *string // log file or FIFO; nil keeps the current target
	Level         *Level  // nil means DefaultLevel
	ShowLevel     *bool   // print ":LEVEL" after the thread name
	ShowLogOrigin *bool   // print ":file:line" of the caller
	Module        *string // only modules starting with this prefix are logged
}

// OpenError is returned by Configure when the log path cannot be opened.
type OpenError struct {
	Err error // the error from OpenSink
}

// Error returns "Failed to open target file: <Rust-style OS error>". The
// API adds "Logger error: " in front; the CLI adds
// "Could not initialize logger: ".
func (e *OpenError) Error() string { return "Failed to open target file: " + OSErrorText(e.Err) }

// Unwrap returns the open error, so errors.Is(err, fs.ErrNotExist) works.
func (e *OpenError) Unwrap() error { return e.Err }

// Counter is the part of a metrics counter the logger increments.
type Counter interface{ Inc() }

type counterSet struct{ missedLog, rateLimited Counter }

var counters atomic.Pointer[counterSet]

// SetCounters names the counters behind the metrics logger.missed_log_count
// (a line could not be written) and logger.rate_limited_log_count (a
// rate-limited message was dropped). The metrics package calls it from its
// init, which avoids an import cycle (metrics uses this package's Sink and
// OSErrorText). A nil counter is not incremented.
func SetCounters(missedLog, rateLimited Counter) {
	counters.Store(&counterSet{missedLog: missedLog, rateLimited: rateLimited})
}

func incMissedLog() {
	if c := counters.Load(); c != nil && c.missedLog != nil {
		c.missedLog.Inc()
	}
}

func incRateLimited() {
	if c := counters.Load(); c != nil && c.rateLimited != nil {
		c.rateLimited.Inc()
	}
}

// Logger writes Firecracker-format log lines. All methods are safe for
// concurrent use. The level is an atomic so that a disabled call costs one
// load; the rest of the configuration is an immutable snapshot swapped
// atomically, so logging never takes a lock.
type Logger struct {
	level atomic.Uint32
	st    atomic.Pointer[state]
	mu    sync.Mutex // serialises Configure and SetInstanceID
}

// state is never modified after it is published.
type state struct {
	sink       *Sink // nil: stdout
	showLevel  bool
	showOrigin bool
	hasModule  bool
	module     string
	instanceID string
}

// New returns a logger writing to stdout at DefaultLevel, without level or
// origin, and with no module filter.
func New(instanceID string) *Logger {
	l := &Logger{}
	l.level.Store(uint32(DefaultLevel))
	l.st.Store(&state{instanceID: instanceID})
	return l
}

// Default is the process-wide logger, Firecracker's global LOGGER. The
// squib binary configures it from the command line and PUT /logger; code
// deep in the device model logs through handles from For.
var Default = New(DefaultInstanceID)

// For returns a handle on Default for the given logical thread and module.
func For(thread, module string) Handle { return Default.With(thread, module) }

// Configure applies c. The new path, if any, is opened before anything
// changes, so a failed open leaves the logger exactly as it was and returns
// an *OpenError. On success the previous file, if any, is closed. It can be
// called any number of times (Firecracker's docs say once; its code and
// tests redirect the log repeatedly).
func (l *Logger) Configure(c Config) error {
	var sink *Sink
	if c.Path != nil {
		s, err := OpenSink(*c.Path)
		if err != nil {
			return &OpenError{Err: err}
		}
		sink = s
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.st.Load()
	ns := *old
	if sink != nil {
		ns.sink = sink
	}
	if c.ShowLevel != nil {
		ns.showLevel = *c.ShowLevel
	}
	if c.ShowLogOrigin != nil {
		ns.showOrigin = *c.ShowLogOrigin
	}
	if c.Module != nil {
		ns.hasModule, ns.module = true, *c.Module
	}
	level := DefaultLevel
	if c.Level != nil {
		level = *c.Level
	}
	l.level.Store(uint32(level))
	l.st.Store(&ns)
	if sink != nil {
		old.sink.Close()
	}
	return nil
}

// SetInstanceID sets the ID printed in every line (Firecracker's --id).
func (l *Logger) SetInstanceID(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ns := *l.st.Load()
	ns.instanceID = id
	l.st.Store(&ns)
}

// InstanceID returns the ID printed in every line.
func (l *Logger) InstanceID() string { return l.st.Load().instanceID }

// Level returns the current level.
func (l *Logger) Level() Level { return Level(l.level.Load()) }

// Enabled reports whether a message at level would be written (ignoring
// the module filter). Guard expensive argument construction with it:
// boxing arguments into ...any allocates even when the level is disabled.
func (l *Logger) Enabled(level Level) bool {
	return level != Off && uint32(level) <= l.level.Load()
}

// Log writes one message. Prefer a Handle from With.
func (l *Logger) Log(level Level, thread, module, format string, args ...any) {
	if l.Enabled(level) {
		l.output(2, level, thread, module, format, args)
	}
}

// With returns a handle that logs as thread and module. Use Firecracker's
// thread names: "main" for start-up and the VMM event loop (Firecracker runs
// it on the main thread), "fc_api" for the API server, "fc_vcpu <n>" for
// vCPU n. module is the Go package path below internal/, such as "vmm" or
// "devices/virtio/block"; the module filter matches on its prefix.
func (l *Logger) With(thread, module string) Handle {
	return Handle{l: l, thread: thread, module: module}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// srcRoot is the path prefix runtime.Caller reports for this module's
// files: the checkout directory, or the module path under -trimpath. It is
// cut from log origins so they read "internal/vmm/vmm.go:42", like
// Firecracker's "src/vmm/src/lib.rs:42".
var srcRoot = func() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(file, "internal/logger/logger.go")
}()

// timeLayout is Firecracker's LocalTime: local time, no zone, 9 digits.
const timeLayout = "2006-01-02T15:04:05.000000000"

// output formats and writes one line. depth is the number of frames between
// output and the code whose file:line is the origin.
func (l *Logger) output(depth int, level Level, thread, module, format string, args []any) {
	st := l.st.Load()
	if st.hasModule && !strings.HasPrefix(module, st.module) {
		return
	}
	bp := bufPool.Get().(*[]byte)
	b := time.Now().AppendFormat((*bp)[:0], timeLayout)
	b = append(b, " ["...)
	b = append(b, st.instanceID...)
	b = append(b, ':')
	if thread == "" {
		thread = "-" // what Firecracker prints for an unnamed thread
	}
	b = append(b, thread...)
	if st.showLevel {
		b = append(b, ':')
		b = append(b, level.String()...)
	}
	if st.showOrigin {
		file, line := "?", 0
		if _, f, ln, ok := runtime.Caller(depth); ok {
			file, line = strings.TrimPrefix(f, srcRoot), ln
		}
		b = append(b, ':')
		b = append(b, file...)
		b = append(b, ':')
		if line > 0 {
			b = strconv.AppendInt(b, int64(line), 10)
		} else {
			b = append(b, '?')
		}
	}
	b = append(b, "] "...)
	// Arguments are formatted with no lock held, so a String method that
	// itself logs cannot deadlock.
	b = fmt.Appendf(b, format, args...)
	b = append(b, '\n')

	err := st.sink.Write(b)
	if err != nil && isClosed(err) {
		// Configure swapped and closed the target under us; the line belongs
		// in the new one.
		if ns := l.st.Load(); ns != st {
			err = ns.sink.Write(b)
		}
	}
	if err != nil {
		incMissedLog()
	}
	if cap(b) <= 64<<10 { // keep one huge line from pinning memory in the pool
		*bp = b
		bufPool.Put(bp)
	}
}

// Handle logs as a fixed thread and module. It is a small value: store it in
// a struct field or a package variable, or make one per call.
type Handle struct {
	l      *Logger
	thread string
	module string
}

// Enabled reports whether a message at level would be written.
func (h Handle) Enabled(level Level) bool { return h.l.Enabled(level) }

// Logf writes a message at level.
func (h Handle) Logf(level Level, format string, args ...any) {
	if h.l.Enabled(level) {
		h.l.output(2, level, h.thread, h.module, format, args)
	}
}

// Errorf writes a message at Error level.
func (h Handle) Errorf(format string, args ...any) {
	if h.l.Enabled(Error) {
		h.l.output(2, Error, h.thread, h.module, format, args)
	}
}

// Warnf writes a message at Warn level.
func (h Handle) Warnf(format string, args ...any) {
	if h.l.Enabled(Warn) {
		h.l.output(2, Warn, h.thread, h.module, format, args)
	}
}

// Infof writes a message at Info level.
func (h Handle) Infof(format string, args ...any) {
	if h.l.Enabled(Info) {
		h.l.output(2, Info, h.thread, h.module, format, args)
	}
}

// Debugf writes a message at Debug level.
func (h Handle) Debugf(format string, args ...any) {
	if h.l.Enabled(Debug) {
		h.l.output(2, Debug, h.thread, h.module, format, args)
	}
}

// Tracef writes a message at Trace level.
func (h Handle) Tracef(format string, args ...any) {
	if h.l.Enabled(Trace) {
		h.l.output(2, Trace, h.thread, h.module, format, args)
	}
}

// DevPreview logs Firecracker's warning for a developer-preview feature:
// "[DevPreview] <feature> is in development preview." or, with a non-empty
// detail, "[DevPreview] <feature> is in development preview - <detail>".
func (h Handle) DevPreview(feature, detail string) {
	if !h.l.Enabled(Warn) {
		return
	}
	if detail == "" {
		h.l.output(2, Warn, h.thread, h.module, "[DevPreview] %s is in development preview.", []any{feature})
		return
	}
	h.l.output(2, Warn, h.thread, h.module, "[DevPreview] %s is in development preview - %s", []any{feature, detail})
}
