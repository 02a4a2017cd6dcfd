package ratelimit

// ConsumeRequest charges one request of n bytes, as a virtio device does
// for each chain (Firecracker's rate_limiter_consume_op and
// Request::rate_limit): an op, then the bytes, giving the op back if the
// bytes are refused so that a refused request costs nothing. It reports
// whether the request may go ahead; on false, un-pop the chain and wait
// for Unblocked.
func (l *RateLimiter) ConsumeRequest(n uint64) bool {
	if !l.Consume(1, Ops) {
		return false
	}
	if !l.Consume(n, Bytes) {
		l.ManualReplenish(1, Ops)
		return false
	}
	return true
}

// RefundRequest gives back what a successful ConsumeRequest(n) took, for a
// request that turned out not to count against the limits.
func (l *RateLimiter) RefundRequest(n uint64) {
	l.ManualReplenish(1, Ops)
	l.ManualReplenish(n, Bytes)
}
