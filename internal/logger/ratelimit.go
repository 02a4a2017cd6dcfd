package logger

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Firecracker's per-call-site log rate limiter: a burst of 10
// messages, refilled over 5 s (one token every 500 ms).
const (
	DefaultBurst  = 10
	DefaultRefill = 5 * time.Second
)

// The limiter state is one word, so Allow is a lock-free CAS:
// bits 0-39 hold the theoretical arrival time (GCRA) in ms since
// processEpoch, bits 40-63 the saturating count of suppressed messages.
const (
	tatBits       = 40
	tatMask       = 1<<tatBits - 1
	maxSuppressed = 1<<(64-tatBits) - 1
	casRetries    = 16
)

var processEpoch = time.Now()

func nowMs() uint64 { return uint64(time.Since(processEpoch).Milliseconds()) }

// RateLimiter limits one log call site, so that a guest cannot flood the
// host's log through a path it can trigger at will. It is a token bucket of
// Burst messages refilled over Refill (implemented as GCRA). The zero value
// uses DefaultBurst and DefaultRefill and is ready to use; declare one per
// call site, typically as a package variable.
type RateLimiter struct {
	state atomic.Uint64
	// Burst is the bucket size; 0 means DefaultBurst. Set before first use.
	Burst uint64
	// Refill is the time to refill the whole bucket; 0 means DefaultRefill.
	// Set before first use; Refill/Burst must be at least 1 ms.
	Refill time.Duration
}

// Allow takes a token. It returns false when the message must be dropped,
// which also increments logger.rate_limited_log_count. When it returns true
// after a run of drops, suppressed is the number dropped since the last
// allowed message, and the caller should report it (Limited does).
func (r *RateLimiter) Allow() (ok bool, suppressed uint64) {
	burst, refill := r.Burst, uint64(r.Refill/time.Millisecond)
	if burst == 0 {
		burst = DefaultBurst
	}
	if r.Refill == 0 {
		refill = uint64(DefaultRefill / time.Millisecond)
	}
	period := max(refill/burst, 1)
	now := nowMs()
	for range casRetries {
		old := r.state.Load()
		tat, sup := old&tatMask, old>>tatBits
		newTat := max(tat, now) + period
		var next uint64
		denied := newTat-now > refill
		if denied {
			next = min(sup+1, maxSuppressed)<<tatBits | tat
		} else {
			next = newTat & tatMask
		}
		if r.state.CompareAndSwap(old, next) {
			if denied {
				incRateLimited()
				return false, 0
			}
			return true, sup
		}
	}
	// Heavy contention: drop rather than spin, as Firecracker does.
	incRateLimited()
	return false, 0
}

// siteLimiters holds the limiters of Limited handles created with a nil
// limiter, keyed by the program counter of the logging call.
var siteLimiters sync.Map // uintptr -> *RateLimiter

func siteLimiter(skip int) *RateLimiter {
	var pc [1]uintptr
	runtime.Callers(skip+1, pc[:])
	if v, ok := siteLimiters.Load(pc[0]); ok {
		return v.(*RateLimiter)
	}
	v, _ := siteLimiters.LoadOrStore(pc[0], new(RateLimiter))
	return v.(*RateLimiter)
}

// Limited is a Handle whose messages pass through a RateLimiter. Use it for
// every message a guest can trigger (Firecracker's error!/warn!/info!
// macros are rate-limited; the *_unrestricted! ones are plain Handle calls).
type Limited struct {
	h  Handle
	rl *RateLimiter
}

// RateLimited returns h limited by rl. With a nil rl each calling line
// (program counter) gets its own default limiter, found through a map
// lookup; pass a package-level *RateLimiter on hot paths to avoid that.
func (h Handle) RateLimited(rl *RateLimiter) Limited { return Limited{h: h, rl: rl} }

func (r Limited) logf(level Level, format string, args []any) {
	if !r.h.l.Enabled(level) {
		return // like Firecracker, a disabled level consumes no token
	}
	rl := r.rl
	if rl == nil {
		// Frames: siteLimiter, logf, Errorf/..., caller.
		rl = siteLimiter(3)
	}
	ok, sup := rl.Allow()
	if !ok {
		return
	}
	if sup > 0 {
		// Depth: output, logf, Errorf/..., caller.
		r.h.l.output(3, Warn, r.h.thread, r.h.module, "%d messages were suppressed due to rate limiting", []any{sup})
	}
	r.h.l.output(3, level, r.h.thread, r.h.module, format, args)
}

// Errorf writes a rate-limited message at Error level.
func (r Limited) Errorf(format string, args ...any) { r.logf(Error, format, args) }

// Warnf writes a rate-limited message at Warn level.
func (r Limited) Warnf(format string, args ...any) { r.logf(Warn, format, args) }

// Infof writes a rate-limited message at Info level.
func (r Limited) Infof(format string, args ...any) { r.logf(Info, format, args) }

// Debugf writes a rate-limited message at Debug level (Firecracker does not
// limit debug!; this exists for symmetry).
func (r Limited) Debugf(format string, args ...any) { r.logf(Debug, format, args) }
