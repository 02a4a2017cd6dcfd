package ratelimit

// ByteLimiter drops output beyond a bucket's rate, as Firecracker's serial
// SerialOut does: it implements the serial device's OutputLimiter. It is not
// safe for concurrent use; the serial device calls it under its own lock.
type ByteLimiter struct {
	b *TokenBucket
}

// NewByteLimiter returns a limiter over b, which it then owns; nil when b is
// nil (no limit).
func NewByteLimiter(b *TokenBucket) *ByteLimiter {
	if b == nil {
		return nil
	}
	return &ByteLimiter{b: b}
}

// AllowBytes takes n byte tokens and reports whether the bytes may be
// written. Over-consumption counts as a refusal, as in Firecracker: the
// bucket is still emptied, but serial output has no way to wait, so the
// bytes are dropped rather than let through.
func (l *ByteLimiter) AllowBytes(n int) bool {
	if n <= 0 {
		return true
	}
	r, _ := l.b.Reduce(uint64(n))
	return r == Success
}

// Bucket returns the underlying bucket.
func (l *ByteLimiter) Bucket() *TokenBucket { return l.b }

// DeviceLimiter adapts a RateLimiter to the interface virtio devices take
// (ConsumeBytes/ConsumeOps/Retry, and refunds of a half-granted request).
type DeviceLimiter struct{ L *RateLimiter }

// ConsumeBytes takes n byte tokens.
func (d DeviceLimiter) ConsumeBytes(n uint64) bool { return d.L.Consume(n, Bytes) }

// ConsumeOps takes n operation tokens.
func (d DeviceLimiter) ConsumeOps(n uint64) bool { return d.L.Consume(n, Ops) }

// Retry fires when it is worth trying again.
func (d DeviceLimiter) Retry() <-chan struct{} { return d.L.Unblocked() }

// RefundOps gives back n operation tokens.
func (d DeviceLimiter) RefundOps(n uint64) { d.L.ManualReplenish(n, Ops) }

// RefundBytes gives back n byte tokens.
func (d DeviceLimiter) RefundBytes(n uint64) { d.L.ManualReplenish(n, Bytes) }
