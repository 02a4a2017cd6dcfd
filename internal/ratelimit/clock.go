package ratelimit

import "time"

// Clock is the time source of buckets and limiters. Now is a monotonic
// reading with an arbitrary origin; AfterFunc runs f in its own goroutine
// after d, as time.AfterFunc does.
type Clock interface {
	Now() time.Duration
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer a limiter uses to reschedule its single
// wake-up without allocating.
type Timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// epoch anchors SystemClock; time.Since uses the monotonic reading, so wall
// clock steps do not refill or drain buckets.
var epoch = time.Now()

type systemClock struct{}

func (systemClock) Now() time.Duration { return time.Since(epoch) }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// SystemClock returns the real monotonic clock, the default of every bucket
// and limiter.
func SystemClock() Clock { return systemClock{} }
