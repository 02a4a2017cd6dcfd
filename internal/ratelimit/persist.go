package ratelimit

import (
	"errors"
	"math"
	"time"
)

// BucketState is what a snapshot keeps of a bucket, as Firecracker's
// TokenBucketState: the configuration, the one-time burst left, the budget
// and the nanoseconds since the last refill.
type BucketState struct {
	Size         uint64
	OneTimeBurst uint64
	RefillTime   uint64 // ms
	Budget       uint64
	ElapsedNs    uint64
}

// State is what a snapshot keeps of a limiter; a nil bucket is absent. The
// blocked state is not kept: a restored limiter starts unblocked.
type State struct {
	Bandwidth *BucketState
	Ops       *BucketState
}

// ErrInvalidState is returned when restoring a bucket that limits nothing.
var ErrInvalidState = errors.New("ratelimit: invalid token bucket state")

// State returns the bucket's snapshot state.
func (b *TokenBucket) State() BucketState {
	return BucketState{
		Size:         b.size,
		OneTimeBurst: b.burst,
		RefillTime:   b.refillMs,
		Budget:       b.budget,
		ElapsedNs:    since(b.lastUpdate, b.clock.Now()),
	}
}

// RestoreBucket rebuilds a bucket from its state on SystemClock. As in
// Firecracker, the burst left becomes the initial burst too (it is all that
// ForceReplenish may give back).
func RestoreBucket(s BucketState) (*TokenBucket, error) {
	b := NewTokenBucket(s.Size, s.OneTimeBurst, s.RefillTime)
	if b == nil {
		return nil, ErrInvalidState
	}
	b.restore(s)
	return b, nil
}

// restore sets budget and last update from s, relative to b's clock.
func (b *TokenBucket) restore(s BucketState) {
	b.budget = min(s.Budget, b.size)
	now := b.clock.Now()
	// now - ElapsedNs, clamped at the far past, which only means "full".
	// uint64(now)+1<<63 is the distance from MinInt64 up to now.
	if s.ElapsedNs > uint64(now)+1<<63 {
		b.lastUpdate = math.MinInt64
	} else {
		b.lastUpdate = time.Duration(uint64(now) - s.ElapsedNs)
	}
}

// State returns the limiter's snapshot state.
func (l *RateLimiter) State() State {
	var s State
	if l == nil {
		return s
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bandwidth != nil {
		bs := l.bandwidth.State()
		s.Bandwidth = &bs
	}
	if l.ops != nil {
		os := l.ops.State()
		s.Ops = &os
	}
	return s
}

// Restore rebuilds a limiter from its state on SystemClock; it is never nil,
// so that a later PATCH has something to update.
func Restore(s State) (*RateLimiter, error) {
	var bw, ops *TokenBucket
	var err error
	if s.Bandwidth != nil {
		if bw, err = RestoreBucket(*s.Bandwidth); err != nil {
			return nil, err
		}
	}
	if s.Ops != nil {
		if ops, err = RestoreBucket(*s.Ops); err != nil {
			return nil, err
		}
	}
	return New(bw, ops), nil
}
