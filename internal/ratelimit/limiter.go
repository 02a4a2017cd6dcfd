package ratelimit

import (
	"math"
	"sync"
	"time"
)

// RefillTimerDuration is how long a limiter stays blocked after a Consume
// fails for lack of tokens (Firecracker's REFILL_TIMER_DURATION).
const RefillTimerDuration = 100 * time.Millisecond

// TokenType selects the bucket of a RateLimiter.
type TokenType uint8

const (
	// Bytes is the bandwidth bucket.
	Bytes TokenType = iota
	// Ops is the operations bucket.
	Ops
)

// String returns the Firecracker name of the token type.
func (t TokenType) String() string {
	if t == Ops {
		return "Ops"
	}
	return "Bytes"
}

// RateLimiter limits bandwidth and operations with two optional buckets; a
// missing bucket does not limit. It is safe for concurrent use, so that a
// device goroutine can Consume while the API goroutine calls Update.
//
// A nil *RateLimiter limits nothing: Consume succeeds, IsBlocked is false
// and Unblocked never delivers. Update needs a non-nil limiter, so a device
// that accepts PATCH holds New(nil, nil) when FromConfig returns nil.
type RateLimiter struct {
	mu        sync.Mutex
	bandwidth *TokenBucket
	ops       *TokenBucket
	clock     Clock

	// blocked until the clock reads until. A deadline rather than
	// Firecracker's flag cleared by the timer handler, so that the state
	// does not depend on when the device gets round to the event.
	armed     bool
	until     time.Duration
	timer     Timer // created on the first block, then Reset
	unblocked chan struct{}
}

// New returns a limiter over the given buckets (either may be nil), which it
// then owns. It uses SystemClock.
func New(bandwidth, ops *TokenBucket) *RateLimiter {
	l := &RateLimiter{
		bandwidth: bandwidth,
		ops:       ops,
		clock:     SystemClock(),
		unblocked: make(chan struct{}, 1),
	}
	for _, b := range [...]*TokenBucket{bandwidth, ops} {
		if b != nil && b.clock != l.clock {
			b.WithClock(l.clock)
		}
	}
	return l
}

// WithClock makes the limiter and its buckets use c, restarting refill
// accounting from c's present; it returns l. Use it before the limiter's
// first use.
func (l *RateLimiter) WithClock(c Clock) *RateLimiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clock = c
	for _, b := range [...]*TokenBucket{l.bandwidth, l.ops} {
		if b != nil {
			b.WithClock(c)
		}
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.armed = false
	return l
}

func (l *RateLimiter) bucket(t TokenType) *TokenBucket {
	if t == Ops {
		return l.ops
	}
	return l.bandwidth
}

// blockedLocked reports whether the limiter is blocked at now, forgetting a
// deadline that has passed.
func (l *RateLimiter) blockedLocked(now time.Duration) bool {
	if l.armed && now >= l.until {
		l.armed = false
	}
	return l.armed
}

// Consume takes tokens of type t and reports whether the request may go
// ahead. It fails at once while the limiter is blocked. When the bucket is
// short, it fails and blocks the limiter for RefillTimerDuration. A request
// larger than the whole bucket succeeds but blocks the limiter for
// excess/size*refill_time (ms, rounded down) so the average rate holds.
// A type without a bucket always succeeds.
func (l *RateLimiter) Consume(tokens uint64, t TokenType) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	if l.blockedLocked(now) {
		return false
	}
	b := l.bucket(t)
	if b == nil {
		return true
	}
	switch r, excess := b.Reduce(tokens); r {
	case Failure:
		l.blockLocked(now, RefillTimerDuration)
		return false
	case OverConsumption:
		if d := overConsumptionBlock(excess, b.size, b.refillMs); d > 0 {
			l.blockLocked(now, d)
		}
	}
	return true
}

// overConsumptionBlock is Firecracker's ratio*refill_time in whole ms,
// computed in float64 as it does so the rounding agrees.
func overConsumptionBlock(excess, size, refillMs uint64) time.Duration {
	ms := float64(excess) / float64(size) * float64(refillMs)
	if ms >= float64(math.MaxInt64/int64(time.Millisecond)) {
		return math.MaxInt64
	}
	return time.Duration(uint64(ms)) * time.Millisecond
}

func (l *RateLimiter) blockLocked(now, d time.Duration) {
	l.armed = true
	l.until = now + d
	if l.until < now { // overflow: block for as long as can be said
		l.until = math.MaxInt64
	}
	if l.timer == nil {
		l.timer = l.clock.AfterFunc(d, l.fire)
	} else {
		l.timer.Reset(d)
	}
}

// fire runs when the timer expires. A timer that ran early (or was
// overtaken by a later block) is pushed to the deadline, so a blocked
// limiter always has a wake-up pending.
func (l *RateLimiter) fire() {
	l.mu.Lock()
	if l.armed {
		if now := l.clock.Now(); now < l.until && l.timer != nil {
			l.timer.Reset(l.until - now)
			l.mu.Unlock()
			return
		}
		l.armed = false
	}
	l.mu.Unlock()
	select {
	case l.unblocked <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// ManualReplenish gives back tokens of type t, to undo a Consume (say the
// op of a request whose bytes were refused). See TokenBucket.ForceReplenish.
func (l *RateLimiter) ManualReplenish(tokens uint64, t TokenType) {
	if l == nil {
		return
	}
	l.mu.Lock()
	if b := l.bucket(t); b != nil {
		b.ForceReplenish(tokens)
	}
	l.mu.Unlock()
}

// IsBlocked reports whether Consume would fail regardless of tokens because
// an earlier Consume emptied a bucket and the limiter is waiting.
func (l *RateLimiter) IsBlocked() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blockedLocked(l.clock.Now())
}

// Remaining returns how long the limiter stays blocked, 0 if it is not.
func (l *RateLimiter) Remaining() time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	if !l.blockedLocked(now) {
		return 0
	}
	return l.until - now
}

// Unblocked returns the channel that receives a value when a block ends,
// the equivalent of Firecracker's timerfd event: a device waiting to retry
// its queue selects on it. Wake-ups are coalesced (capacity 1) and may be
// spurious; the answer to one is to retry Consume. A nil limiter returns a
// nil channel, which never delivers.
func (l *RateLimiter) Unblocked() <-chan struct{} {
	if l == nil {
		return nil
	}
	return l.unblocked
}

// Stop cancels a pending wake-up, for a device being torn down.
func (l *RateLimiter) Stop() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
}

// BucketUpdate is what an Update does to one bucket.
type BucketUpdate struct {
	// Keep leaves the bucket as it is; Bucket is then ignored.
	Keep bool
	// Bucket replaces the old bucket; nil removes it.
	Bucket *TokenBucket
}

// UpdateBuckets applies Firecracker's update_buckets. Buckets given are
// owned by l from then on. A block in progress is not cut short.
func (l *RateLimiter) UpdateBuckets(bandwidth, ops BucketUpdate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range [...]struct {
		dst **TokenBucket
		upd BucketUpdate
	}{{&l.bandwidth, bandwidth}, {&l.ops, ops}} {
		if u.upd.Keep {
			continue
		}
		if u.upd.Bucket != nil {
			u.upd.Bucket.WithClock(l.clock)
		}
		*u.dst = u.upd.Bucket
	}
}
