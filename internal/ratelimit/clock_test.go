package ratelimit

import (
	"sync"
	"time"
)

// fakeClock is a manual Clock: time moves only by Advance, which runs the
// timers that fall due, in order, synchronously.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	when   time.Duration
	active bool
	f      func()
}

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now + d, active: true, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.when, t.active = t.c.now+d, true
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// Advance moves time forward by d, firing due timers at their due time.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now + d
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
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

// nextDue returns the earliest active timer's due time.
func (c *fakeClock) nextDue() (time.Duration, bool) {
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
