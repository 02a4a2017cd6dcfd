package ratelimit

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/vmm"
)

// newLimiter is Firecracker's RateLimiter::new on a fake clock.
func newLimiter(c *ManualClock, bwSize, bwBurst, bwRefill, opsSize, opsBurst, opsRefill uint64) *RateLimiter {
	return New(NewTokenBucket(bwSize, bwBurst, bwRefill), NewTokenBucket(opsSize, opsBurst, opsRefill)).WithClock(c)
}

// woken reports whether a wake-up is pending, consuming it.
func woken(l *RateLimiter) bool {
	select {
	case <-l.Unblocked():
		return true
	default:
		return false
	}
}

func TestLimiterDefault(t *testing.T) {
	for _, l := range []*RateLimiter{nil, New(nil, nil), FromConfig(nil)} {
		if l.IsBlocked() || l.Remaining() != 0 {
			t.Fatal("a limiter without buckets is blocked")
		}
		if !l.Consume(math.MaxUint64, Ops) || !l.Consume(math.MaxUint64, Bytes) {
			t.Fatal("a limiter without buckets refused")
		}
		l.ManualReplenish(1, Bytes)
		l.Stop()
		if l.IsBlocked() || l.Config() != nil {
			t.Fatal("a limiter without buckets is blocked or configured")
		}
	}
	var l *RateLimiter
	if l.Unblocked() != nil || l.State() != (State{}) {
		t.Fatal("nil limiter has a channel or state")
	}
}

func TestLimiterNew(t *testing.T) {
	l := newLimiter(&ManualClock{}, 1000, 1001, 1002, 1003, 1004, 1005)
	for _, tc := range []struct {
		b                           *TokenBucket
		size, burst, refill, budget uint64
	}{{l.bandwidth, 1000, 1001, 1002, 1000}, {l.ops, 1003, 1004, 1005, 1003}} {
		if tc.b.Capacity() != tc.size || tc.b.OneTimeBurst() != tc.burst || tc.b.RefillTimeMs() != tc.refill || tc.b.Budget() != tc.budget {
			t.Errorf("bucket %+v", tc.b)
		}
	}
}

func TestLimiterManualReplenish(t *testing.T) {
	l := newLimiter(&ManualClock{}, 1000, 0, 1000, 1000, 0, 1000)
	for _, tt := range []TokenType{Bytes, Ops} {
		if !l.Consume(123, tt) {
			t.Fatal("Consume failed")
		}
		l.ManualReplenish(23, tt)
		if b := l.bucket(tt).Budget(); b != 900 {
			t.Errorf("%v budget %d, want 900", tt, b)
		}
	}
}

// Firecracker's test_rate_limiter_bandwidth, _ops and _full.
func TestLimiterBlocksAndUnblocks(t *testing.T) {
	for _, tc := range []struct {
		name        string
		bw, ops     uint64
		limited     []TokenType
		unlimited   []TokenType
		wantBlocked bool
	}{
		{"bandwidth", 1000, 0, []TokenType{Bytes}, []TokenType{Ops}, true},
		{"ops", 0, 1000, []TokenType{Ops}, []TokenType{Bytes}, true},
		{"full", 1000, 1000, []TokenType{Ops, Bytes}, nil, true},
	} {
		c := &ManualClock{}
		l := newLimiter(c, tc.bw, 0, 1000, tc.ops, 0, 1000)
		if l.IsBlocked() {
			t.Fatalf("%s: blocked at start", tc.name)
		}
		for _, tt := range tc.unlimited {
			if !l.Consume(math.MaxUint64, tt) {
				t.Fatalf("%s: unlimited %v refused", tc.name, tt)
			}
		}
		for _, tt := range tc.limited {
			if !l.Consume(1000, tt) {
				t.Fatalf("%s: full bucket of %v refused", tc.name, tt)
			}
		}
		for _, tt := range tc.limited {
			if l.Consume(100, tt) {
				t.Fatalf("%s: empty bucket of %v gave 100", tc.name, tt)
			}
		}
		if !l.IsBlocked() || l.Remaining() != RefillTimerDuration {
			t.Fatalf("%s: blocked %v for %v", tc.name, l.IsBlocked(), l.Remaining())
		}
		if l.Consume(0, tc.limited[0]) {
			t.Fatalf("%s: a blocked limiter let a request through", tc.name)
		}
		c.Advance(RefillTimerDuration / 2)
		if !l.IsBlocked() || woken(l) {
			t.Fatalf("%s: unblocked after half the timer", tc.name)
		}
		c.Advance(RefillTimerDuration / 2)
		if !woken(l) || l.IsBlocked() {
			t.Fatalf("%s: not unblocked after the timer", tc.name)
		}
		for _, tt := range tc.limited {
			if !l.Consume(100, tt) {
				t.Fatalf("%s: %v refused after the timer", tc.name, tt)
			}
		}
	}
}

// Firecracker's test_rate_limiter_overconsumption.
func TestLimiterOverConsumption(t *testing.T) {
	c := &ManualClock{}
	l := newLimiter(c, 1000, 0, 1000, 1000, 0, 1000)
	if !l.Consume(2500, Bytes) { // borrows 1.5 buckets
		t.Fatal("over-consumption refused")
	}
	c.Advance(1000 * time.Millisecond)
	if !l.IsBlocked() || woken(l) {
		t.Fatal("unblocked after 1 s of a 1.5 s debt")
	}
	c.Advance(500 * time.Millisecond)
	if !woken(l) || l.IsBlocked() {
		t.Fatal("still blocked after 1.5 s")
	}

	l = newLimiter(c, 1000, 0, 1000, 1000, 0, 1000)
	if !l.Consume(1500, Bytes) { // 0.5 s of debt
		t.Fatal("over-consumption refused")
	}
	c.Advance(200 * time.Millisecond)
	if !l.IsBlocked() || l.Consume(100, Bytes) {
		t.Fatal("not blocked during the debt")
	}
	// The failed Consume must not have re-armed the timer for 100 ms.
	c.Advance(100 * time.Millisecond)
	if !l.IsBlocked() || l.Consume(100, Bytes) || woken(l) {
		t.Fatal("not blocked during the debt")
	}
	c.Advance(200 * time.Millisecond)
	if !woken(l) || l.IsBlocked() || !l.Consume(100, Bytes) {
		t.Fatal("still blocked after the debt")
	}
}

// Firecracker arms a 0 ms timer here, which disarms it and leaves the
// limiter blocked for ever; squib does not block.
func TestLimiterTinyOverConsumption(t *testing.T) {
	c := &ManualClock{}
	l := newLimiter(c, 1000, 0, 1, 0, 0, 0)
	if !l.Consume(1001, Bytes) || l.IsBlocked() {
		t.Fatal("a sub-millisecond debt blocked")
	}
	l = newLimiter(c, 1, 0, math.MaxUint64/nsPerMs, 0, 0, 0)
	if !l.Consume(math.MaxUint64, Bytes) || !l.IsBlocked() || l.Remaining() <= 0 {
		t.Fatal("a huge debt did not block")
	}
}

// A timer that runs before the deadline (or after a newer block) re-arms
// instead of waking the device while it is still blocked.
func TestLimiterEarlyTimer(t *testing.T) {
	c := &ManualClock{}
	l := newLimiter(c, 10, 0, 1000, 0, 0, 0)
	l.Consume(10, Bytes)
	l.Consume(10, Bytes)
	l.fire() // early
	if woken(l) || !l.IsBlocked() {
		t.Fatal("an early timer woke the device")
	}
	if due, ok := c.NextDue(); !ok || due != RefillTimerDuration {
		t.Fatalf("timer due %v %v", due, ok)
	}
	c.Advance(RefillTimerDuration)
	if !woken(l) {
		t.Fatal("no wake-up at the deadline")
	}
}

// Firecracker's test_update_buckets, through the API model as PATCH sends it.
func TestLimiterUpdate(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	c := &ManualClock{}
	l := newLimiter(c, 1000, 2000, 1000, 10, 20, 1000)
	l.Consume(2500, Bytes)
	bw, ops := l.bandwidth, l.ops

	l.Update(nil, nil)
	l.UpdateFromConfig(nil)
	if l.bandwidth != bw || l.ops != ops || l.bandwidth.OneTimeBurst() != 0 {
		t.Fatal("an empty update changed the buckets")
	}

	l.Update(&vmm.TokenBucket{Size: u(123), RefillTime: u(57)}, nil)
	if b := l.bandwidth; b.Capacity() != 123 || b.RefillTimeMs() != 57 || b.Budget() != 123 || b.OneTimeBurst() != 0 || l.ops != ops {
		t.Fatalf("bandwidth %+v", l.bandwidth)
	}
	l.UpdateFromConfig(&vmm.RateLimiter{Ops: &vmm.TokenBucket{Size: u(321), OneTimeBurst: u(12346), RefillTime: u(89)}})
	if b := l.ops; b.Capacity() != 321 || b.RefillTimeMs() != 89 || b.OneTimeBurst() != 12346 || l.bandwidth.Capacity() != 123 {
		t.Fatalf("ops %+v", l.ops)
	}
	if b := l.ops; b.clock != Clock(c) {
		t.Fatal("an updated bucket does not use the limiter's clock")
	}
	got := l.Config()
	if *got.Bandwidth.Size != 123 || got.Bandwidth.OneTimeBurst != nil || *got.Ops.OneTimeBurst != 12346 {
		t.Fatalf("Config() = %+v", got)
	}

	l.Update(&vmm.TokenBucket{Size: u(0), RefillTime: u(10)}, &vmm.TokenBucket{Size: u(10), RefillTime: u(0)})
	if l.bandwidth != nil || l.ops != nil || l.Config() != nil {
		t.Fatal("disabled buckets kept")
	}
	if !l.Consume(math.MaxUint64, Bytes) {
		t.Fatal("a limiter with its buckets removed refused")
	}
	l.UpdateBuckets(BucketUpdate{Bucket: NewTokenBucket(1, 0, 1)}, BucketUpdate{Keep: true})
	if l.bandwidth == nil || l.ops != nil {
		t.Fatal("UpdateBuckets")
	}
}

func TestFromConfig(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	if FromConfig(&vmm.RateLimiter{}) != nil {
		t.Error("empty config gave a limiter")
	}
	if FromConfig(&vmm.RateLimiter{Bandwidth: &vmm.TokenBucket{Size: u(0), RefillTime: u(1)}}) != nil {
		t.Error("disabled config gave a limiter")
	}
	l := FromConfig(&vmm.RateLimiter{Ops: &vmm.TokenBucket{Size: u(5), RefillTime: u(1)}})
	if l == nil || l.bandwidth != nil || l.ops.Capacity() != 5 {
		t.Fatalf("FromConfig = %+v", l)
	}
}

func TestLimiterPersist(t *testing.T) {
	l := New(NewTokenBucket(1000, 100, 1000), nil)
	l.Consume(300, Bytes)
	s := l.State()
	if s.Ops != nil || s.Bandwidth == nil || s.Bandwidth.Budget != 800 || s.Bandwidth.OneTimeBurst != 0 {
		t.Fatalf("State() = %+v %+v", s, s.Bandwidth)
	}
	r, err := Restore(s)
	if err != nil || r.ops != nil || r.bandwidth.Budget() != 800 || r.bandwidth.Capacity() != 1000 || r.IsBlocked() {
		t.Fatalf("Restore = %+v, %v", r, err)
	}
	s.Ops = &BucketState{}
	if _, err := Restore(s); err == nil {
		t.Fatal("restored a disabled bucket")
	}
	s = State{Bandwidth: &BucketState{}}
	if _, err := Restore(s); err == nil {
		t.Fatal("restored a disabled bucket")
	}
}

// TestLimiterSystemClock runs one block on the real clock, to check that
// Unblocked fires with the default timer.
func TestLimiterSystemClock(t *testing.T) {
	l := New(NewTokenBucket(10, 0, 100_000), nil)
	if !l.Consume(10, Bytes) || l.Consume(1, Bytes) {
		t.Fatal("bucket not limiting")
	}
	start := time.Now()
	select {
	case <-l.Unblocked():
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up")
	}
	if d := time.Since(start); d < RefillTimerDuration*9/10 || l.IsBlocked() {
		t.Fatalf("woken after %v, blocked %v", d, l.IsBlocked())
	}
	l.Consume(1, Bytes) // blocks again; Stop cancels the wake-up
	l.Stop()
}

// TestLimiterConcurrent is for the race detector: a device consuming while
// the API updates and a timer fires.
func TestLimiterConcurrent(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	l := New(NewTokenBucket(1000, 0, 10), NewTokenBucket(10, 0, 10))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			if !l.Consume(1, Ops) {
				continue
			}
			if !l.Consume(100, Bytes) {
				l.ManualReplenish(1, Ops)
			}
		}
		close(stop)
	}()
	go func() {
		defer wg.Done()
		for i := uint64(1); ; i++ {
			select {
			case <-stop:
				return
			case <-l.Unblocked():
			default:
			}
			l.Update(&vmm.TokenBucket{Size: u(1000 + i), RefillTime: u(10)}, nil)
			_, _ = l.IsBlocked(), l.State()
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	l.Stop()
}

func TestByteLimiter(t *testing.T) {
	if NewByteLimiter(nil) != nil {
		t.Fatal("a nil bucket gave a limiter")
	}
	c := &ManualClock{}
	bl := NewByteLimiter(bucket(t, c, 4, 0, 1000))
	if !bl.AllowBytes(4) || bl.AllowBytes(1024) || !bl.AllowBytes(0) {
		t.Fatal("Firecracker's test_serial_out_write_over_budget")
	}
	if bl.Bucket().Budget() != 0 {
		t.Fatal("an over-consumption did not empty the bucket")
	}
	c.Advance(500 * time.Millisecond)
	n := 0
	for bl.AllowBytes(1) {
		n++
	}
	if n != 2 {
		t.Fatalf("%d bytes after half a refill of 4, want 2", n)
	}
}

// TestNoAllocs: the hot path must not allocate, failing and blocking
// included once the timer exists.
func TestNoAllocs(t *testing.T) {
	c := &ManualClock{}
	l := newLimiter(c, 1<<20, 0, 1000, 1000, 0, 1000)
	l.Consume(2<<20, Bytes) // create the timer
	c.Advance(time.Hour)
	bl := NewByteLimiter(NewTokenBucket(1<<30, 0, 1))
	if n := testing.AllocsPerRun(1000, func() {
		l.Consume(1, Ops)
		l.Consume(4096, Bytes)
		l.ManualReplenish(1, Ops)
		l.IsBlocked()
		bl.AllowBytes(1)
	}); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
	l = New(NewTokenBucket(1, 0, 1000), nil)
	l.Consume(1, Bytes)
	l.Consume(1, Bytes) // creates the timer
	l.Stop()
	if n := testing.AllocsPerRun(100, func() {
		l.armed = false
		l.Consume(1, Bytes) // fails and re-arms
	}); n != 0 {
		t.Fatalf("%v allocations per failing Consume", n)
	}
	l.Stop()
}

func BenchmarkConsume(b *testing.B) {
	l := New(NewTokenBucket(1<<40, 0, 1), NewTokenBucket(1<<40, 0, 1))
	b.ReportAllocs()
	for b.Loop() {
		l.Consume(1, Ops)
		l.Consume(1500, Bytes)
	}
}

func BenchmarkReduce(b *testing.B) {
	tb := NewTokenBucket(1<<20, 0, 1)
	b.ReportAllocs()
	for b.Loop() {
		tb.Reduce(1500) // mostly refilling: exercises the 128-bit path
	}
}
