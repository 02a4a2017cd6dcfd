package ratelimit

import (
	"sync"
	"time"
)

// ManualClock is a Clock that moves only when told to, so that tests (of
// this package and of the devices using a RateLimiter) can drive blocks
// and refills deterministically. Its zero value reads 0; it is safe for
// concurrent use.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*manualTimer
}

type manualTimer struct {
	c      *ManualClock
	when   time.Duration
	active bool
	f      func()
}

// Now implements Clock.
func (c *ManualClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements Clock: f runs during the Advance that reaches
// d from now.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, when: c.now + d, active: true, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.when, t.active = t.c.now+d, true
	return was
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// Advance moves the clock forward by d. Timers that fall due run on the
// caller's goroutine, in order of their due time, each with the clock
// reading that time; a timer a callback re-arms within the span runs
// again.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now + d
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *manualTimer
		for _, t := range c.timers {
			if t.active && t.when <= end && (next == nil || t.when < next.when) {
				next = t
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if next.when > c.now {
			c.now = next.when
		}
		next.active = false
		c.mu.Unlock()
		next.f()
	}
}

// Jump moves the clock forward by d at once, then runs the timers that
// fell due on the caller's goroutine, each seeing the new time, as when a
// timer fires late. A device test uses it rather than Advance when the
// device reacts to a wake-up on its own goroutine: whenever it gets round
// to it, the clock already reads the end of the span.
func (c *ManualClock) Jump(d time.Duration) {
	c.mu.Lock()
	c.now += d
	var due []func()
	for _, t := range c.timers {
		if t.active && t.when <= c.now {
			t.active = false
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// NextDue returns when the earliest armed timer is due, and false if none
// is armed.
func (c *ManualClock) NextDue() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var due time.Duration
	ok := false
	for _, t := range c.timers {
		if t.active && (!ok || t.when < due) {
			due, ok = t.when, true
		}
	}
	return due, ok
}
