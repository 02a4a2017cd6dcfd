package ratelimit

import "github.com/squib-vmm/squib/internal/vmm"

func value(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// BucketFromConfig builds a full bucket from the API model, or returns nil
// when it limits nothing (nil, size or refill_time 0 or missing).
func BucketFromConfig(tb *vmm.TokenBucket) *TokenBucket {
	if tb == nil {
		return nil
	}
	return NewTokenBucket(value(tb.Size), value(tb.OneTimeBurst), value(tb.RefillTime))
}

// FromConfig builds a limiter from the API model, or returns nil when no
// bucket of it is enabled.
func FromConfig(rl *vmm.RateLimiter) *RateLimiter {
	if rl == nil {
		return nil
	}
	bw, ops := BucketFromConfig(rl.Bandwidth), BucketFromConfig(rl.Ops)
	if bw == nil && ops == nil {
		return nil
	}
	return New(bw, ops)
}

// updateFor maps one bucket of a PATCH body to its update: absent keeps,
// present replaces (a disabled one removes).
func updateFor(tb *vmm.TokenBucket) BucketUpdate {
	if tb == nil {
		return BucketUpdate{Keep: true}
	}
	return BucketUpdate{Bucket: BucketFromConfig(tb)}
}

// Update applies the buckets of a PATCH body as received (not normalized):
// nil keeps a bucket, a bucket with size or refill_time 0 removes it, any
// other replaces it with a full one.
func (l *RateLimiter) Update(bandwidth, ops *vmm.TokenBucket) {
	l.UpdateBuckets(updateFor(bandwidth), updateFor(ops))
}

// UpdateFromConfig is Update with both buckets of rl; a nil rl changes
// nothing.
func (l *RateLimiter) UpdateFromConfig(rl *vmm.RateLimiter) {
	if rl == nil {
		return
	}
	l.Update(rl.Bandwidth, rl.Ops)
}

// Config returns the bucket's API model, as GET reports it (a one-time
// burst of 0 as absent).
func (b *TokenBucket) Config() *vmm.TokenBucket {
	size, refill := b.size, b.refillMs
	c := &vmm.TokenBucket{Size: &size, RefillTime: &refill}
	if b.initialBurst != 0 {
		burst := b.initialBurst
		c.OneTimeBurst = &burst
	}
	return c
}

// Config returns the limiter's API model, nil when it limits nothing.
func (l *RateLimiter) Config() *vmm.RateLimiter {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bandwidth == nil && l.ops == nil {
		return nil
	}
	c := &vmm.RateLimiter{}
	if l.bandwidth != nil {
		c.Bandwidth = l.bandwidth.Config()
	}
	if l.ops != nil {
		c.Ops = l.ops.Config()
	}
	return c
}
