package ratelimit

import (
	"math"
	"math/bits"
	"time"
)

const nsPerMs = uint64(time.Millisecond)

// Reduction is the outcome of TokenBucket.Reduce.
type Reduction uint8

const (
	// Failure: not enough tokens; nothing was taken.
	Failure Reduction = iota
	// Success: the tokens were taken.
	Success
	// OverConsumption: the request was larger than the whole bucket; it was
	// let through, the bucket was emptied and the excess is owed.
	OverConsumption
)

// String returns the Firecracker name of the outcome.
func (r Reduction) String() string {
	switch r {
	case Failure:
		return "Failure"
	case Success:
		return "Success"
	case OverConsumption:
		return "OverConsumption"
	}
	return "Reduction(?)"
}

// TokenBucket is Firecracker's token bucket: size tokens that refill
// linearly from empty to full in refill_time ms, plus a one-time burst that
// is spent first and never refills. It starts full. It is not safe for
// concurrent use.
type TokenBucket struct {
	size         uint64
	initialBurst uint64
	refillMs     uint64

	burst  uint64 // one-time burst left
	budget uint64 // never above size
	// lastUpdate is the clock reading up to which refill has been credited.
	// It advances only by the time the credited whole tokens cost, so the
	// fraction of a token earned so far is carried, never lost or doubled.
	lastUpdate time.Duration

	// size and refill time in ns divided by their gcd: the refill
	// elapsed*size/refillNs then stays exact in 128 bits.
	capacity uint64
	refillNs uint64

	clock Clock
}

func gcd(x, y uint64) uint64 {
	for y != 0 {
		x, y = y, x%y
	}
	return x
}

// NewTokenBucket returns a full bucket of size tokens refilled in
// refillTimeMs milliseconds with an extra oneTimeBurst, on SystemClock. It
// returns nil, meaning "no limit", when size or refillTimeMs is 0 or when
// the refill time in nanoseconds does not fit in 64 bits, as Firecracker's
// TokenBucket::new returns None.
func NewTokenBucket(size, oneTimeBurst, refillTimeMs uint64) *TokenBucket {
	if size == 0 || refillTimeMs == 0 {
		return nil
	}
	hi, refillNs := bits.Mul64(refillTimeMs, nsPerMs)
	if hi != 0 {
		return nil
	}
	g := gcd(size, refillNs)
	c := SystemClock()
	return &TokenBucket{
		size:         size,
		initialBurst: oneTimeBurst,
		refillMs:     refillTimeMs,
		burst:        oneTimeBurst,
		budget:       size,
		lastUpdate:   c.Now(),
		capacity:     size / g,
		refillNs:     refillNs / g,
		clock:        c,
	}
}

// WithClock makes the bucket use c, restarting its refill accounting from
// c's present; it returns b. Use it before the bucket's first use.
func (b *TokenBucket) WithClock(c Clock) *TokenBucket {
	b.clock = c
	b.lastUpdate = c.Now()
	return b
}

// since returns the nanoseconds from a to now, 0 if the clock went back.
func since(a, now time.Duration) uint64 {
	if now <= a {
		return 0
	}
	// Unsigned subtraction is exact even when a is far negative (restored
	// states) and the signed difference would overflow.
	return uint64(now) - uint64(a)
}

// autoReplenish credits the tokens earned since lastUpdate.
func (b *TokenBucket) autoReplenish() {
	now := b.clock.Now()
	delta := since(b.lastUpdate, now)
	// refillMs*nsPerMs cannot overflow: NewTokenBucket checked it.
	if delta >= b.refillMs*nsPerMs {
		b.budget = b.size
		b.lastUpdate = now
		return
	}
	// delta < refill time, so delta*capacity/refillNs < size: the quotient
	// fits and Div64 cannot panic.
	hi, lo := bits.Mul64(delta, b.capacity)
	tokens, _ := bits.Div64(hi, lo, b.refillNs)
	// Advance by what those tokens cost, rounded up so that no fraction of
	// a nanosecond is spent twice; the rest of delta carries over.
	hi, lo = bits.Mul64(tokens, b.refillNs)
	cost, rem := bits.Div64(hi, lo, b.capacity)
	if rem != 0 {
		cost++
	}
	// cost <= delta, so this lands between lastUpdate and now; unsigned
	// addition avoids a signed overflow on the way.
	b.lastUpdate = time.Duration(uint64(b.lastUpdate) + cost)
	b.budget = min(satAdd(b.budget, tokens), b.size)
}

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

// Reduce takes tokens: from the one-time burst first, then from the budget,
// refilling it from elapsed time only when it falls short. A request larger
// than the bucket size empties the budget and returns OverConsumption with
// the number of tokens taken beyond it (excess); it is up to the caller to
// make the user wait excess/size*refill_time. Failure takes nothing.
func (b *TokenBucket) Reduce(tokens uint64) (r Reduction, excess uint64) {
	if b.burst > 0 {
		if b.burst >= tokens {
			b.burst -= tokens
			b.lastUpdate = b.clock.Now()
			return Success, 0
		}
		tokens -= b.burst
		b.burst = 0
	}
	if tokens > b.budget {
		b.autoReplenish()
		if tokens > b.size {
			excess = tokens - b.budget
			b.budget = 0
			return OverConsumption, excess
		}
		if tokens > b.budget {
			return Failure, 0
		}
	}
	b.budget -= tokens
	return Success, 0
}

// ForceReplenish gives tokens back (to undo a Reduce): to the one-time burst
// while any of it is left, capped at its initial value, else to the budget,
// capped at size.
func (b *TokenBucket) ForceReplenish(tokens uint64) {
	if b.burst > 0 {
		b.burst = min(satAdd(b.burst, tokens), b.initialBurst)
		return
	}
	b.budget = min(satAdd(b.budget, tokens), b.size)
}

// Capacity returns the bucket size.
func (b *TokenBucket) Capacity() uint64 { return b.size }

// OneTimeBurst returns the one-time burst left.
func (b *TokenBucket) OneTimeBurst() uint64 { return b.burst }

// InitialOneTimeBurst returns the configured one-time burst.
func (b *TokenBucket) InitialOneTimeBurst() uint64 { return b.initialBurst }

// RefillTimeMs returns the time to refill an empty bucket, in ms.
func (b *TokenBucket) RefillTimeMs() uint64 { return b.refillMs }

// Budget returns the tokens in the bucket, not counting the one-time burst
// and not crediting time elapsed since the last refill.
func (b *TokenBucket) Budget() uint64 { return b.budget }
