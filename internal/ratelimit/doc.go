// Package ratelimit implements Firecracker's token-bucket rate limiter
// (src/vmm/src/rate_limiter): the TokenBucket with its one-time burst,
// exact integer refill and over-consumption rule, and the RateLimiter that
// pairs a bandwidth (bytes) bucket with an ops bucket and blocks its user
// for a while when a bucket runs dry.
//
// How a virtio device uses a RateLimiter:
//
//   - Before processing a request, call Consume(1, Ops) and then
//     Consume(len, Bytes). If the bytes call fails after the ops call
//     succeeded, give the op back with ManualReplenish(1, Ops). On failure,
//     leave the descriptor on the queue (un-pop it), count the throttling
//     and stop processing that queue.
//   - While blocked, every Consume fails at once (IsBlocked reports it).
//     Wait on Unblocked(); when it delivers, count the rate-limiter event
//     and process the queue again. A value may arrive while the limiter is
//     still, or no longer, blocked: treat it only as "retry now".
//   - Consume can also succeed and still block the limiter: a request
//     larger than the whole bucket is let through (over-consumption), and
//     later requests wait until the borrowed tokens have been paid back.
//   - PATCH of the device's rate limiter goes to Update with the body as
//     received (not normalized): an absent bucket is kept, a bucket of size
//     or refill_time 0 is removed, any other replaces the old one and
//     starts full.
//
// Differences from Firecracker, all on paths where Firecracker misbehaves:
// an over-consumption whose block rounds down to 0 ms does not block
// (Firecracker arms its timerfd with 0, which disarms it, and the limiter
// stays blocked for ever); restoring a state whose budget exceeds its size
// caps the budget.
//
// The blocked state is kept as a deadline on an injectable monotonic Clock,
// so tests can drive buckets and limiters deterministically; the wake-up is
// a Clock timer that signals Unblocked.
package ratelimit
