package ratelimit

import "testing"

// TestConsumeRequest: a request whose bytes are refused costs no op, and
// RefundRequest gives back both tokens.
func TestConsumeRequest(t *testing.T) {
	c := &ManualClock{}
	l := New(NewTokenBucket(100, 0, 1000), NewTokenBucket(2, 0, 1000)).WithClock(c)
	if !l.ConsumeRequest(60) {
		t.Fatal("first request refused")
	}
	if l.ConsumeRequest(60) {
		t.Fatal("request over the byte budget allowed")
	}
	if got := l.ops.Budget(); got != 1 {
		t.Fatalf("ops budget %d after a refused request, want 1", got)
	}
	c.Advance(RefillTimerDuration) // end the block; refill 10 bytes
	l.RefundRequest(60)
	if l.ops.Budget() != 2 || l.bandwidth.Budget() != 100 {
		t.Fatalf("budgets ops %d bytes %d after refund", l.ops.Budget(), l.bandwidth.Budget())
	}
	var none *RateLimiter
	if !none.ConsumeRequest(1 << 40) {
		t.Fatal("a nil limiter refused")
	}
	none.RefundRequest(1)
}
