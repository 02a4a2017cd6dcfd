package ratelimit

import (
	"testing"
	"time"
)

// TestManualClock: timers fire in due order, each seeing its own due time,
// and a stopped timer does not fire.
func TestManualClock(t *testing.T) {
	c := &ManualClock{}
	var got []time.Duration
	rec := func() { got = append(got, c.Now()) }
	c.AfterFunc(30*time.Millisecond, rec)
	c.AfterFunc(10*time.Millisecond, rec)
	stopped := c.AfterFunc(20*time.Millisecond, rec)
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop reports the wrong armed state")
	}
	if due, ok := c.NextDue(); !ok || due != 10*time.Millisecond {
		t.Fatalf("next due %v %v", due, ok)
	}
	c.Advance(25 * time.Millisecond)
	c.Advance(25 * time.Millisecond)
	if len(got) != 2 || got[0] != 10*time.Millisecond || got[1] != 30*time.Millisecond {
		t.Fatalf("fired at %v", got)
	}
	if c.Now() != 50*time.Millisecond {
		t.Fatalf("now %v", c.Now())
	}
	if _, ok := c.NextDue(); ok {
		t.Fatal("a timer still armed")
	}
}

// TestManualClockJump: the clock reads the end of the span when the due
// timers run.
func TestManualClockJump(t *testing.T) {
	c := &ManualClock{}
	var got []time.Duration
	c.AfterFunc(10*time.Millisecond, func() { got = append(got, c.Now()) })
	c.AfterFunc(20*time.Millisecond, func() { got = append(got, c.Now()) })
	c.AfterFunc(90*time.Millisecond, func() { got = append(got, c.Now()) })
	c.Jump(50 * time.Millisecond)
	if len(got) != 2 || got[0] != 50*time.Millisecond || got[1] != 50*time.Millisecond {
		t.Fatalf("fired at %v", got)
	}
}
