// Package rng is the virtio entropy device (virtio-rng, device ID 4), as
// Firecracker's devices/virtio/rng implements it: one queue of up to 256
// descriptors, only VIRTIO_F_VERSION_1 offered, no configuration space.
//
// Each request is a descriptor chain of device-writable buffers. The device
// fills them, in order, with bytes from the host CSPRNG (crypto/rand), at
// most MaxRequestBytes per request, and returns the chain with the number
// of bytes written. A chain that contains a device-readable descriptor, or
// that the queue rejects as malformed (buffer outside guest RAM, loop,
// every buffer empty...), is returned with length 0 and counted in
// entropy.entropy_event_fails; the guest gets no entropy from it but its
// ring keeps moving.
//
// An optional Limiter (Firecracker's per-device rate_limiter) is charged
// one op and the chain's whole writable length per request, before any
// byte is generated. When it refuses, the device puts the chain back on
// the queue, stops processing and waits for the limiter's Retry channel;
// queue notifications that arrive meanwhile are ignored (the pending
// chains are picked up on the retry).
//
// Snapshots (virtio.Snapshotter): Suspend waits for the request in flight
// and returns it to the driver, so the device holds nothing; its saved
// state is the limiter's, which must be nil or a ratelimit.DeviceLimiter.
//
// Differences from Firecracker, all on paths only a broken or hostile
// driver takes:
//   - A chain whose buffers are all empty is a malformed chain here (the
//     queue refuses it), so it counts as a failure; Firecracker returns a
//     chain of empty writable buffers with length 0 without counting one.
//   - A chain whose head index is out of range is dropped and the device
//     carries on with the next chain; Firecracker stops processing the
//     queue until the next notification.
//   - A corrupt avail index stops processing and is counted as a failure;
//     Firecracker panics.
package rng
