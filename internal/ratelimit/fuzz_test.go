package ratelimit

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/vmm"
)

// fuzzInput hands out numbers from the fuzzer's bytes, zeros once spent.
type fuzzInput []byte

func (in *fuzzInput) byte() byte {
	if len(*in) == 0 {
		return 0
	}
	b := (*in)[0]
	*in = (*in)[1:]
	return b
}

// num returns a number of 1, 2, 4 or 8 bytes, so both small values and
// extremes come up often.
func (in *fuzzInput) num() uint64 {
	var buf [8]byte
	n := 1 << (in.byte() % 4)
	for i := range n {
		buf[i] = in.byte()
	}
	return binary.LittleEndian.Uint64(buf[:])
}

func checkBucket(t *testing.T, what string, b *TokenBucket, now time.Duration) {
	t.Helper()
	if b == nil {
		return
	}
	if b.budget > b.size || b.burst > b.initialBurst || b.lastUpdate > now {
		t.Fatalf("%s: budget %d size %d burst %d/%d last %v now %v", what, b.budget, b.size, b.burst, b.initialBurst, b.lastUpdate, now)
	}
	if b.capacity == 0 || b.refillNs == 0 || b.size%b.capacity != 0 || (b.refillMs*nsPerMs)%b.refillNs != 0 || b.size/b.capacity != b.refillMs*nsPerMs/b.refillNs {
		t.Fatalf("%s: processed %d/%d for %d/%d ms", what, b.capacity, b.refillNs, b.size, b.refillMs)
	}
}

// FuzzBucket runs random sequences of consume, time, replenish, update and
// snapshot operations on a bucket and a limiter: nothing may panic, budgets
// stay within their bucket, and a blocked limiter always has a wake-up.
func FuzzBucket(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 0, 100, 0, 5, 1, 200, 0, 7, 4, 0, 9, 2, 6})
	f.Add([]byte{3, 255, 255, 255, 255, 255, 255, 255, 255, 0, 1, 0, 1, 0, 0, 0, 255, 4, 3, 255, 255, 255, 255, 255, 255, 255, 255, 7, 7})
	f.Add([]byte{1, 0, 4, 0, 0, 0, 1, 0, 3, 100, 100, 100, 100, 100, 100, 100, 100, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzInput(data)
		c := &ManualClock{now: time.Duration(in.num() >> 1)}
		newBucket := func() *TokenBucket {
			b := NewTokenBucket(in.num(), in.num(), in.num())
			if b != nil {
				b.WithClock(c)
			}
			return b
		}
		b := newBucket()
		l := New(newBucket(), newBucket()).WithClock(c)
		for steps := 0; len(in) > 0 && steps < 1000; steps++ {
			switch op := in.byte(); op % 10 {
			case 0:
				if b != nil {
					r, excess := b.Reduce(in.num())
					if r != OverConsumption && excess != 0 {
						t.Fatalf("%v with excess %d", r, excess)
					}
				}
			case 1:
				d := time.Duration(in.num() >> 1)
				if c.Now() > math.MaxInt64-d {
					d = math.MaxInt64 - c.Now()
				}
				c.Advance(d)
			case 2:
				if b != nil {
					b.ForceReplenish(in.num())
				}
			case 3:
				b = newBucket()
			case 4:
				blocked := l.IsBlocked()
				if ok := l.Consume(in.num(), TokenType(op>>7)); ok && blocked {
					t.Fatal("a blocked limiter let a request through")
				}
			case 5:
				l.ManualReplenish(in.num(), TokenType(op>>7))
			case 6:
				if b != nil {
					r, err := RestoreBucket(b.State())
					if err != nil {
						t.Fatal(err)
					}
					r.clock = c
					r.restore(b.State())
					b = r
				}
			case 7:
				if due, ok := c.NextDue(); ok && due > c.Now() {
					c.Advance(due - c.Now())
				}
			case 8:
				var bw, ops *vmm.TokenBucket
				if op&0x10 != 0 {
					bw = &vmm.TokenBucket{Size: ptr(in.num()), OneTimeBurst: ptr(in.num()), RefillTime: ptr(in.num())}
				}
				if op&0x20 != 0 {
					ops = &vmm.TokenBucket{Size: ptr(in.num()), RefillTime: ptr(in.num())}
				}
				l.Update(bw, ops)
			case 9:
				bl := NewByteLimiter(b)
				if bl != nil {
					bl.AllowBytes(int(in.num() >> 1))
				}
			}
			now := c.Now()
			checkBucket(t, "bucket", b, now)
			checkBucket(t, "bandwidth", l.bandwidth, now)
			checkBucket(t, "ops", l.ops, now)
			if l.IsBlocked() {
				if due, ok := c.NextDue(); !ok || due > l.until {
					t.Fatalf("blocked until %v, wake-up %v %v", l.until, due, ok)
				}
			}
		}
	})
}

func ptr(v uint64) *uint64 { return &v }
