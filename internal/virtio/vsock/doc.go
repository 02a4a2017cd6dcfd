// Package vsock is the virtio-vsock device (device ID 19) bridged to host
// Unix sockets, as Firecracker's devices/virtio/vsock implements it: three
// queues of 256 (rx, tx, event), VERSION_1, IN_ORDER and EVENT_IDX
// offered, a configuration space holding guest_cid (u64), host CID 2, and
// only SOCK_STREAM connections.
//
// Host-initiated connections: a client connects to the listener at
// uds_path and writes "CONNECT <port>\n" (keyword in any case; at least 10
// and at most 32 bytes are read, byte by byte past the 10th, so nothing
// after the line is consumed). The device picks a host port round-robin in
// [2^30, 2^31), sends the guest a REQUEST and, on its RESPONSE, writes
// "OK <host port>\n" to the client. An RST from the guest, or no answer
// within 2000 ms, closes the client.
//
// Guest-initiated connections: a REQUEST for host port P connects to the
// Unix socket "<uds_path>_P"; failure answers RST, success RESPONSE.
//
// Data flows as RW packets with the protocol's credit-based flow control:
// every packet to the guest carries buf_alloc (64 KiB, the size of the
// per-connection TX buffer) and fwd_cnt (bytes written to the host socket);
// the device volunteers a CREDIT_UPDATE when the guest's view of its free
// space falls below 4 KiB, answers CREDIT_REQUEST, never sends more than
// the guest's credit and asks with CREDIT_REQUEST when it has none. Guest
// data the host socket cannot take at once waits in the TX buffer; a guest
// that overflows it (ignoring our credit) gets its connection reset. EOF
// on the host socket sends SHUTDOWN (both flags) to the guest; a guest
// SHUTDOWN with both flags is answered with RST once the TX buffer has
// drained, or after 2000 ms. A guest's half shutdown does not half-close
// the host socket, as in Firecracker. Limits: 1023 connections, 64 KiB per
// packet, a muxer RX queue of 256 entries and a kill queue of 128 that are
// rebuilt from the connections when they overflow. Guest packets of
// another type get an RST, packets for a CID other than the host's are
// dropped, packets for no connection get an RST (except REQUESTs).
//
// SendTransportReset puts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event
// queue; the RX queue is then gated until the guest acknowledges it.
//
// Snapshots (virtio.Snapshotter): Suspend stops every goroutine of the
// device but keeps the host connections, with their buffered data, and
// the clients still sending their CONNECT line; Resume hands them to a
// new worker, so a plain pause loses nothing. SaveState, on a suspended
// device, does what Firecracker does for a snapshot: it writes the
// transport reset event into the guest's next event buffer, gates RX and
// closes every host connection (connections cannot be saved; the
// listener and the clients mid-handshake stay). The state is the guest
// CID, the gate and the host-port sequence; Resume, in the source VM or
// in the restored one, interrupts the guest for a reset it has not
// acknowledged yet.
//
// Concurrency: one worker goroutine per activation owns the queues, the
// muxer and every connection's state, standing in for Firecracker's VMM
// thread, and does all socket I/O itself without blocking (the sockets
// from package net are non-blocking): it reads from a host socket straight
// into the guest's RX buffers and writes guest TX buffers straight to the
// socket, as Firecracker does, so no payload is buffered on the host
// except in the bounded TX buffers. Where Firecracker registers a socket
// with epoll, the worker starts a waiter goroutine that blocks on the Go
// poller (RawConn.Read or Write) until the socket is readable or writable,
// reports once over an unbuffered channel and exits; there is at most one
// per connection and direction. The accept loop runs in its own goroutine
// and reads each client's CONNECT line in a goroutine of its own (at most
// 1023 at a time), so a slow client holds up nobody. Reset stops all of
// them, closes every host connection and leaves the listener open; Close
// also closes the listener. Suspend stops them too, but wakes the waiters
// and the handshake reads with a deadline in the past instead of closing
// the sockets.
//
// Differences from Firecracker, none visible to a well-behaved peer:
//   - Kill timers fire on time; Firecracker only checks them when a
//     connection is added, so a timed-out request or shutdown may linger
//     there.
//   - A packet to the guest carries at most 64 KiB of payload even if the
//     guest's RX buffer is larger (Firecracker would read more and then
//     drop the packet); an RX buffer with no room past the header gets a
//     CREDIT_UPDATE instead of being mistaken for EOF.
//   - rx_packets_count counts packets a connection produced; Firecracker
//     also counts calls that found nothing to send.
//   - A failed Accept counts in muxer_event_fails.
//   - A guest REQUEST that would reuse the key of a live connection is
//     refused with RST rather than replacing it.
//   - The event is written only into a device-writable event buffer, and
//     its used length is the 4 bytes written.
//   - A transport reset is acknowledged by an event-queue kick that comes
//     with more event buffers than were left after the event (Linux
//     re-posts the buffer it consumed), not by any kick: Resume and
//     activation kick every queue themselves, before the guest has seen
//     the event.
//   - Malformed descriptor chains are returned with length 0 and a corrupt
//     avail ring stops processing (counted in rx/tx_queue_event_fails);
//     Firecracker panics on the latter.
package vsock
