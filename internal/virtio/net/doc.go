// Package net is the virtio network device (virtio-net, device ID 1), as
// Firecracker's devices/virtio/net implements it: one queue pair (rx = 0,
// tx = 1, 256 descriptors each, no control queue), backed by a TAP opened
// with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and a 12-byte vnet header.
//
// Offered features: CSUM, GUEST_CSUM, GUEST_TSO4/6, GUEST_UFO, HOST_TSO4/6,
// HOST_UFO, MRG_RXBUF, RING_EVENT_IDX and VERSION_1, plus MAC when a guest
// MAC is configured and MTU when an MTU is. The config space is mac[6],
// status, max_virtqueue_pairs and mtu (u16 each, the middle two always 0);
// driver writes to it are dropped and counted in cfg_fails. On activation
// the TAP gets TUNSETOFFLOAD with the checksum and segmentation offloads the
// driver acknowledged on its receive side (GUEST_*), so the kernel only hands
// the device frames the guest can take.
//
// Every frame, in guest buffers and on the TAP alike, starts with the same
// struct virtio_net_hdr_v1, so frames pass through unchanged; the device
// only sets num_buffers on receive.
//
// Transmit: each TX chain is one frame of at most MaxBufferSize bytes
// (larger chains are returned unsent and counted in tx_malformed_frames).
// The device copies it into a host buffer, offers the Ethernet frame to the
// interface's MMDS stack if there is one, and otherwise writes it to the TAP
// in one write. A source MAC other than the configured guest MAC is counted
// in tx_spoofed_mac_count but not filtered. A frame the MMDS stack takes
// does not count against the tx rate limiter, and after a batch that fed
// the stack the device runs receive at once so the answer is delivered.
//
// Receive: the device holds the RX chains the driver offers (those with a
// device-readable buffer, or smaller than needed, go back unused and count
// in rx_fails: without MRG_RXBUF a chain must hold 65562 bytes if GUEST_TSO4,
// GUEST_TSO6 or GUEST_UFO was negotiated, else 1526). It reads the next TAP
// frame only while the held chains add up to at least MaxBufferSize bytes,
// and frames from the MMDS stack go to the guest before TAP frames. With
// MRG_RXBUF a frame fills as many chains as it needs, in order; without, it
// goes into the first chain, and one too large for it is dropped and counted
// in rx_fails (Firecracker would hand the guest a truncated frame).
//
// Rate limiting: the rx and tx limiters are charged one op and the frame's
// length (vnet header included) per frame. When one refuses, the frame
// waits (a TX chain is put back on its queue) until the limiter's
// Unblocked channel fires. The limiters are never nil, so a PATCH can give
// an unlimited interface buckets later with Update.
//
// Concurrency: a worker goroutine started at activation owns both queues
// and does all the device's processing; a reader goroutine blocks in the
// backend's Read (on the Go poller, for a TAP) and hands the worker one frame
// at a time, only when the worker asks for one. Reset stops both: it sets a
// read deadline in the past to wake the reader, waits for the two to exit,
// and clears the deadline. Close does the same and closes the backend.
//
// Snapshots (virtio.Snapshotter): Suspend stops both goroutines once the
// TX frame in hand, if any, is sent and returned; the RX chains the device
// holds and a frame it took but has not delivered (held back by the rx
// limiter, or read from the TAP just as the device stopped) are kept for
// Resume and saved by SaveState, along with the MAC and MTU the guest saw
// and the limiters' state. A restored
// device takes the held chains back on activation, after checking them
// against its queue and guest memory (Firecracker instead rewinds the RX
// queue and parses the chains again).
//
// Differences from Firecracker:
//   - A frame is rate-limited before it is copied into the guest's
//     buffers rather than after, so a throttled frame waits in a host
//     buffer; the rx metrics count it when it is delivered.
//   - A frame from the TAP too big for the guest's buffer (no MRG_RXBUF) is
//     dropped, not truncated.
//   - A malformed RX chain goes back to the driver at once rather than
//     with the next frame.
//   - A corrupt avail index stops processing of that queue for the event
//     and counts in event_fails; Firecracker panics.
package net
