package ratelimit

import (
	"math"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/vmm"
)

func bucket(t *testing.T, c *ManualClock, size, burst, refillMs uint64) *TokenBucket {
	t.Helper()
	b := NewTokenBucket(size, burst, refillMs)
	if b == nil {
		t.Fatalf("NewTokenBucket(%d, %d, %d) = nil", size, burst, refillMs)
	}
	return b.WithClock(c)
}

// Firecracker's test_token_bucket_auto_replenish_one, on a fake clock.
func TestAutoReplenishOne(t *testing.T) {
	c := &ManualClock{}
	b := bucket(t, c, 10, 0, 1000) // one token every 100 ms
	b.Reduce(10)
	for _, step := range []struct {
		advance time.Duration
		want    uint64
	}{
		{10 * time.Millisecond, 0},
		{10 * time.Millisecond, 0},
		{80 * time.Millisecond, 1},
		{400 * time.Millisecond, 5},
		{1000 * time.Millisecond, 10},
	} {
		c.Advance(step.advance)
		b.autoReplenish()
		if b.Budget() != step.want {
			t.Fatalf("at %v: budget %d, want %d", c.Now(), b.Budget(), step.want)
		}
	}
}

// TestAutoReplenishNoDrift refills in many uneven steps, most of which
// earn no whole token on their own: the fractions must carry over. The only
// loss Firecracker allows is the round-up of each credited interval to a
// whole nanosecond, so after n refills the budget is between the exact
// curve at elapsed-n ns (less one partial token) and the curve at elapsed.
func TestAutoReplenishNoDrift(t *testing.T) {
	for _, tc := range []struct{ size, refillMs uint64 }{
		{1000, 1000}, {7, 3}, {1 << 40, 1}, {3, 1000}, {999_983, 7}, {math.MaxUint64, 1},
	} {
		c := &ManualClock{}
		b := bucket(t, c, tc.size, 0, tc.refillMs)
		b.Reduce(tc.size)
		total := time.Duration(tc.refillMs) * time.Millisecond
		curve := func(d time.Duration) float64 { return float64(tc.size) * float64(d) / float64(total) }
		steps := []time.Duration{1, 333, 7, 12345, 1}
		var elapsed time.Duration
		calls := 0
		for elapsed < total {
			if calls == 5000 && elapsed < total-1 { // skip ahead on long refill times
				c.Advance(total - elapsed - 1)
				elapsed = total - 1
			}
			d := min(steps[calls%len(steps)], total-elapsed)
			c.Advance(d)
			elapsed += d
			b.autoReplenish()
			calls++
			got, hi, lo := float64(b.Budget()), curve(elapsed), curve(elapsed-time.Duration(calls))-1
			if got > hi*(1+1e-12) || got < lo*(1-1e-12) {
				t.Fatalf("size %d refill %d ms: budget %v after %v and %d refills, want [%v, %v]", tc.size, tc.refillMs, got, elapsed, calls, lo, hi)
			}
		}
		c.Advance(time.Duration(calls))
		b.autoReplenish()
		if b.Budget() != tc.size {
			t.Errorf("size %d refill %d ms: budget %d after a full refill time", tc.size, tc.refillMs, b.Budget())
		}
	}
}

func TestNewTokenBucket(t *testing.T) {
	c := &ManualClock{now: 42}
	b := bucket(t, c, 1000, 0, 1000)
	if b.Capacity() != 1000 || b.Budget() != 1000 || b.lastUpdate != 42 {
		t.Fatalf("got capacity %d budget %d last %v", b.Capacity(), b.Budget(), b.lastUpdate)
	}
	if b.capacity != 1 || b.refillNs != 1_000_000 {
		t.Fatalf("processed %d/%d, want 1/1000000", b.capacity, b.refillNs)
	}
	const thousand = 1000
	b = NewTokenBucket(3*7*11*19*thousand, 0, 7*11*13*17)
	if b.capacity != 3*19 || b.refillNs != 13*17*(nsPerMs/thousand) {
		t.Fatalf("processed %d/%d", b.capacity, b.refillNs)
	}
	for _, tc := range [][3]uint64{{0, 1234, 1000}, {100, 1234, 0}, {0, 1234, 0}, {1, 0, math.MaxUint64/nsPerMs + 1}} {
		if NewTokenBucket(tc[0], tc[1], tc[2]) != nil {
			t.Errorf("NewTokenBucket%v is not nil", tc)
		}
	}
	if NewTokenBucket(1, 0, math.MaxUint64/nsPerMs) == nil {
		t.Error("largest refill time refused")
	}
}

// Firecracker's test_token_bucket_reduce.
func TestReduce(t *testing.T) {
	c := &ManualClock{}
	b := bucket(t, c, 1000, 0, 1000)
	if r, _ := b.Reduce(123); r != Success || b.Budget() != 877 {
		t.Fatalf("Reduce(123) = %v, budget %d", r, b.Budget())
	}
	if r, _ := b.Reduce(1000); r != Failure || b.Budget() != 877 {
		t.Fatalf("Reduce(1000) = %v, budget %d", r, b.Budget())
	}

	b = bucket(t, c, 1000, 1100, 1000)
	type step struct {
		advance   time.Duration
		tokens    uint64
		want      Reduction
		excess    uint64
		burstLeft uint64
	}
	for i, s := range []step{
		{0, 1000, Success, 0, 100},
		{0, 500, Success, 0, 0}, // 100 from the burst, 400 from the budget
		{0, 500, Success, 0, 0},
		{0, 500, Failure, 0, 0},
		{500 * time.Millisecond, 500, Success, 0, 0},
		{1000 * time.Millisecond, 2500, OverConsumption, 1500, 0},
	} {
		c.Advance(s.advance)
		r, excess := b.Reduce(s.tokens)
		if r != s.want || excess != s.excess || b.OneTimeBurst() != s.burstLeft {
			t.Fatalf("step %d: Reduce(%d) = %v, %d, burst %d; want %v, %d, %d", i, s.tokens, r, excess, b.OneTimeBurst(), s.want, s.excess, s.burstLeft)
		}
	}
	if b.Budget() != 0 {
		t.Fatalf("budget %d after over-consumption", b.Budget())
	}
	if got := overConsumptionBlock(1500, 1000, 1000); got != 1500*time.Millisecond {
		t.Fatalf("block %v, want 1.5s", got)
	}
}

// The burst is spent before the budget, and a request it covers restarts
// refill accounting.
func TestReduceBurstEdges(t *testing.T) {
	c := &ManualClock{}
	b := bucket(t, c, 100, 10, 1000)
	if r, _ := b.Reduce(110); r != Success || b.OneTimeBurst() != 0 || b.Budget() != 0 {
		t.Fatalf("Reduce(110) = %v, burst %d budget %d", r, b.OneTimeBurst(), b.Budget())
	}
	c.Advance(500 * time.Millisecond)
	if r, _ := b.Reduce(60); r != Failure || b.Budget() != 50 {
		t.Fatalf("Reduce(60) = %v, budget %d", r, b.Budget())
	}

	b = bucket(t, c, 100, 10, 1000)
	c.Advance(900 * time.Millisecond)
	b.Reduce(10) // all burst: refill now counts from here
	b.Reduce(100)
	c.Advance(100 * time.Millisecond)
	if r, _ := b.Reduce(20); r != Failure || b.Budget() != 10 {
		t.Fatalf("Reduce(20) = %v, budget %d", r, b.Budget())
	}

	b = bucket(t, c, 100, 10, 1000)
	if r, excess := b.Reduce(150); r != OverConsumption || excess != 40 || b.OneTimeBurst() != 0 || b.Budget() != 0 {
		t.Fatalf("Reduce(150) = %v, %d, burst %d budget %d", r, excess, b.OneTimeBurst(), b.Budget())
	}
}

func TestForceReplenish(t *testing.T) {
	c := &ManualClock{}
	b := bucket(t, c, 1000, 100, 1000)
	b.Reduce(50)
	b.ForceReplenish(500) // to the burst, capped at its initial value
	if b.OneTimeBurst() != 100 || b.Budget() != 1000 {
		t.Fatalf("burst %d budget %d", b.OneTimeBurst(), b.Budget())
	}
	b.Reduce(100 + 300)
	b.ForceReplenish(200)
	if b.OneTimeBurst() != 0 || b.Budget() != 900 {
		t.Fatalf("burst %d budget %d", b.OneTimeBurst(), b.Budget())
	}
	b.ForceReplenish(math.MaxUint64)
	if b.Budget() != 1000 {
		t.Fatalf("budget %d", b.Budget())
	}
}

func TestBucketConfig(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	for _, tc := range []struct {
		name string
		in   *vmm.TokenBucket
		ok   bool
	}{
		{"nil", nil, false},
		{"size 0", &vmm.TokenBucket{Size: u(0), RefillTime: u(100)}, false},
		{"refill 0", &vmm.TokenBucket{Size: u(10), RefillTime: u(0)}, false},
		{"missing size", &vmm.TokenBucket{RefillTime: u(100)}, false},
		{"refill overflow", &vmm.TokenBucket{Size: u(1), RefillTime: u(math.MaxUint64)}, false},
		{"enabled", &vmm.TokenBucket{Size: u(10), RefillTime: u(100), OneTimeBurst: u(5)}, true},
	} {
		b := BucketFromConfig(tc.in)
		if (b != nil) != tc.ok {
			t.Errorf("%s: got %v", tc.name, b)
			continue
		}
		if b != nil {
			if b.Capacity() != 10 || b.RefillTimeMs() != 100 || b.OneTimeBurst() != 5 || b.InitialOneTimeBurst() != 5 || b.Budget() != 10 {
				t.Errorf("%s: got %+v", tc.name, b)
			}
			cfg := b.Config()
			if *cfg.Size != 10 || *cfg.RefillTime != 100 || *cfg.OneTimeBurst != 5 {
				t.Errorf("%s: Config() = %+v", tc.name, cfg)
			}
		}
	}
	if NewTokenBucket(1, 0, 1).Config().OneTimeBurst != nil {
		t.Error("a one_time_burst of 0 is reported")
	}
}

func TestBucketPersist(t *testing.T) {
	c := &ManualClock{now: 5 * time.Second}
	b := bucket(t, c, 1000, 2000, 3000)
	check := func() {
		t.Helper()
		r, err := RestoreBucket(b.State())
		if err != nil {
			t.Fatal(err)
		}
		r.clock = c
		r.restore(b.State()) // relative to the fake clock
		if r.Capacity() != b.Capacity() || r.OneTimeBurst() != b.OneTimeBurst() || r.RefillTimeMs() != b.RefillTimeMs() || r.Budget() != b.Budget() || r.lastUpdate != b.lastUpdate {
			t.Fatalf("restored %+v, saved %+v", r, b)
		}
	}
	check()
	b.Reduce(2100)
	c.Advance(time.Second)
	check()
	b.ForceReplenish(100)
	check()
	if _, err := RestoreBucket(BucketState{Size: 0, RefillTime: 1}); err == nil {
		t.Error("restored a disabled bucket")
	}
	r, _ := RestoreBucket(BucketState{Size: 10, RefillTime: 1, Budget: 99, ElapsedNs: math.MaxUint64})
	if r.Budget() != 10 || r.lastUpdate != math.MinInt64 {
		t.Errorf("restored budget %d last %v", r.Budget(), r.lastUpdate)
	}
	r.Reduce(10)
	if r.Reduce(10); r.Budget() != 0 {
		t.Errorf("budget %d after a refill from the far past", r.Budget())
	}
}

func TestReductionAndTypeStrings(t *testing.T) {
	if Failure.String() != "Failure" || Success.String() != "Success" || OverConsumption.String() != "OverConsumption" || Reduction(9).String() == "" {
		t.Error("Reduction.String")
	}
	if Bytes.String() != "Bytes" || Ops.String() != "Ops" {
		t.Error("TokenType.String")
	}
}
