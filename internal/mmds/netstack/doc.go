// Package netstack is the MMDS network stack ("dumbo" in Firecracker): a
// tiny ARP/IPv4/TCP/HTTP server that lives inside a virtio-net device and
// answers the guest's requests to the MMDS address without anything leaving
// the host.
//
// The net device offers every guest TX frame to Stack.DetourFrame; frames
// for the MMDS address (ARP asking for it, IPv4 sent to it) are consumed and
// never reach the TAP. Whenever the device can deliver a frame to the guest
// it first asks Stack.WriteNextFrame for one. Requests are parsed here and
// answered by a Responder (*mmds.Service).
//
// Behaviour follows Firecracker's src/vmm/src/dumbo, src/vmm/src/mmds/ns.rs
// and micro_http:
//
//   - Ethernet II only (no 802.1Q); ARP requests for the MMDS address are
//     answered with the stack's MAC, only the latest one is remembered.
//   - IPv4 without reassembly; packets must be exactly as long as the frame;
//     non-TCP packets to the MMDS address are dropped; replies have TTL 1.
//   - TCP: passive open on port 80 only (segments to other ports are dropped
//     without a RST), MSS option understood (default 536), no window
//     scaling, SACK or timestamps, no congestion control, in-order segments
//     only, pseudo-random ISN, at most 30 connections (a SYN when full
//     replaces the endpoint idle the longest, once it has been idle past the
//     eviction threshold, otherwise gets a RST), at most 100 queued RSTs.
//   - A 2500-byte receive buffer per connection: a request that does not
//     fit resets the connection. One response is outstanding at a time; the
//     next request is parsed once it is fully acknowledged.
//   - Timeouts: Firecracker counts TSC cycles; this package uses the Clock
//     with the durations those counts take at 3 GHz: retransmission after
//     400 ms, reset after 15 timeouts without progress, eviction after
//     13.3 s without a segment from the guest.
//   - Responses: "HTTP/1.x NNN " status line echoing the request's version,
//     "Server: Firecracker API", "Connection: keep-alive", Allow and extra
//     headers, Content-Type, Content-Length. Requests that do not parse get
//     micro_http's error status and message (HTTP/1.1, with micro_http's
//     default Content-Type application/json).
//
// Incoming IPv4 and TCP checksums are not verified, as in Firecracker: a
// guest using VIRTIO_NET_F_CSUM leaves them to the device. Outgoing
// checksums are always computed.
//
// Deliberate differences from Firecracker: a request body announced by
// Content-Length is awaited and passed to the Responder (Firecracker parses
// the head alone, so any body draws "400 Invalid request."); unacknowledged
// response data is actually retransmitted (Firecracker's endpoint cannot
// serve retransmissions and resets the connection after 15 timeouts); the
// connection to evict is the one idle the longest rather than an arbitrary
// evictable one.
package netstack
