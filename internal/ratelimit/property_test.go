package ratelimit

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestAchievedRate drives a greedy device through a limiter on a simulated
// clock for many refill periods: it consumes ops and bytes, and when
// refused waits for Unblocked exactly as a virtio device would. The rate it
// gets must be within 5 % of size/refill_time for the tighter bucket.
// Requests stay at most half a bucket: larger ones are let through as
// over-consumption, which Firecracker forgives one bucket per request.
func TestAchievedRate(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		bwSize, bwRefill, burst uint64
		opsSize, opsRefill      uint64
		maxReq                  uint64
		thinkMax                time.Duration
	}{
		{"bandwidth 1MB/s", 1 << 20, 1000, 0, 0, 0, 64 << 10, 0},
		{"bandwidth with burst", 100_000, 250, 1 << 20, 0, 0, 20_000, time.Millisecond},
		{"odd sizes", 999_983, 333, 0, 0, 0, 4099, 50 * time.Microsecond},
		{"ops 1000/s", 0, 0, 0, 1000, 1000, 0, 0},
		{"ops bound", 1 << 30, 1000, 0, 500, 200, 4096, 0},
		{"bytes bound", 200_000, 200, 0, 1 << 20, 100, 8192, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			c := &ManualClock{}
			l := New(NewTokenBucket(tc.bwSize, tc.burst, tc.bwRefill), NewTokenBucket(tc.opsSize, 0, tc.opsRefill)).WithClock(c)
			const periods = 400
			var bytes, ops uint64
			limit := time.Duration(max(tc.bwRefill, tc.opsRefill)) * time.Millisecond * periods
			for c.Now() < limit {
				n := uint64(1)
				if tc.maxReq > 0 {
					n = 1 + rng.Uint64N(tc.maxReq)
				}
				ok := l.Consume(1, Ops)
				if ok && !l.Consume(n, Bytes) {
					l.ManualReplenish(1, Ops)
					ok = false
				}
				if ok {
					ops++
					bytes += n
					if tc.thinkMax > 0 {
						c.Advance(time.Duration(rng.Int64N(int64(tc.thinkMax))))
					}
					continue
				}
				due, armed := c.NextDue()
				if !armed {
					t.Fatal("refused with no wake-up pending")
				}
				c.Advance(due - c.Now())
				if !woken(l) {
					t.Fatal("timer ran but did not wake the device")
				}
			}
			elapsed := c.Now().Seconds()
			check := func(what string, got, size, refillMs, burst uint64) {
				want := float64(size) / (float64(refillMs) / 1000)
				// The bucket starts full and the burst is extra.
				rate := float64(got-min(got, size+burst)) / elapsed
				t.Logf("%s: %.0f/s, want %.0f/s", what, rate, want)
				if rate < want*0.95 || rate > want*1.05 {
					t.Errorf("%s: %.0f/s, want %.0f/s ±5%%", what, rate, want)
				}
			}
			bwRate := float64(tc.bwSize) / float64(tc.bwRefill)
			opsRate := float64(tc.opsSize) / float64(tc.opsRefill)
			avgReq := float64(1+tc.maxReq) / 2
			switch {
			case tc.opsSize == 0:
				check("bytes", bytes, tc.bwSize, tc.bwRefill, tc.burst)
			case tc.bwSize == 0 || opsRate*avgReq < bwRate:
				check("ops", ops, tc.opsSize, tc.opsRefill, 0)
			default:
				check("bytes", bytes, tc.bwSize, tc.bwRefill, tc.burst)
			}
		})
	}
}

// TestAchievedRateBucket polls a bare bucket at high frequency for one token
// at a time: the carried fractions keep the rate exact.
func TestAchievedRateBucket(t *testing.T) {
	c := &ManualClock{}
	b := bucket(t, c, 3, 0, 7) // 3 tokens per 7 ms: no whole ns per token
	var got uint64
	for c.Now() < time.Second {
		if r, _ := b.Reduce(1); r == Success {
			got++
		}
		c.Advance(997 * time.Nanosecond)
	}
	// Each refill may lose under 1 ns to rounding: ~1 ms, under a token.
	want := 3 + 3*float64(time.Second)/float64(7*time.Millisecond)
	if d := float64(got) - want; d > 1 || d < -2 {
		t.Fatalf("%d tokens in 1 s, want %.1f", got, want)
	}
}
