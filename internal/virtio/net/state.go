package net

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
)

// kept is what a stopped worker leaves for the next one of the same
// activation (after Suspend, or a restore): the RX chains it held and the
// frames it had taken but not delivered, so that nothing is lost across a
// pause.
type kept struct {
	rx          []rxChain
	tapPending  []byte
	mmdsPending []byte
}

// keep moves what w leaves undone to the device. It runs once w's
// goroutines have exited, under life's lock; the frames stay in the host
// buffers, which pass to the next worker.
func (d *Device) keep(w *worker) {
	d.kept = kept{tapPending: w.tapPending, mmdsPending: w.mmdsPending}
	select {
	case r := <-w.got:
		// Read as the worker stopped (then tapPending was nil: the
		// reader only reads when the worker has no TAP frame). A read
		// error is dropped, as onRead would after counting it.
		if r.err == nil {
			d.kept.tapPending = r.buf
		}
	default:
	}
	for i := range w.rx.len() {
		d.kept.rx = append(d.kept.rx, w.rx.at(i))
	}
}

// resumeKept hands the kept chains and frames to w, a new worker, after
// checking the chains against its queue and memory: they may come from a
// snapshot.
func (d *Device) resumeKept(w *worker) error {
	if err := checkChains(d.kept.rx, w.mem, w.rxq.Size, w.minRx); err != nil {
		return fmt.Errorf("net: held RX buffers: %w", err)
	}
	for _, c := range d.kept.rx {
		w.rx.push(c)
	}
	// copy is a memmove: the frames may already sit in these buffers.
	if f := d.kept.tapPending; f != nil {
		w.tapPending = w.bufs.tapRx[:copy(w.bufs.tapRx, f)]
	}
	if f := d.kept.mmdsPending; f != nil {
		w.mmdsPending = w.bufs.mmdsRx[:copy(w.bufs.mmdsRx, f)]
	}
	d.kept = kept{}
	return nil
}

// checkChains checks held RX chains as Pop and parseRxChains did when
// they were popped: at most a queue's worth, distinct heads in the queue,
// each chain no longer than the queue with its buffers in guest RAM, and
// at least min bytes and at most 4 GiB - 1 in all.
func checkChains(chains []rxChain, mem *memory.Guest, size uint16, min uint32) error {
	if len(chains) > int(size) {
		return fmt.Errorf("%d chains in a queue of %d", len(chains), size)
	}
	seen := make(map[uint16]bool, len(chains))
	for _, c := range chains {
		if c.head >= size || seen[c.head] {
			return fmt.Errorf("chain head %d: out of range or repeated", c.head)
		}
		seen[c.head] = true
		if len(c.descs) == 0 || len(c.descs) > int(size) {
			return fmt.Errorf("chain %d: %d descriptors", c.head, len(c.descs))
		}
		var total uint64
		for _, d := range c.descs {
			if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
				return fmt.Errorf("chain %d: buffer [%#x, +%#x) outside guest memory", c.head, d.Addr, d.Len)
			}
			total += uint64(d.Len)
		}
		if total != uint64(c.len) || total > math.MaxUint32 || total < uint64(min) {
			return fmt.Errorf("chain %d: %d bytes", c.head, total)
		}
	}
	return nil
}

// state is the device's own snapshot state (virtio.Snapshotter). The
// backend, MMDS and metrics come from the configuration the machine
// rebuilds the device from; the queues are the transport's.
type state struct {
	// GuestMAC and MTU are the configuration space as the guest read it
	// (nil and 0 when not configured).
	GuestMAC *macAddr `json:"guest_mac"`
	MTU      uint16   `json:"mtu"`
	// The limiters' buckets and what the guest has spent of them.
	RxRateLimiter *ratelimit.State `json:"rx_rate_limiter"`
	TxRateLimiter *ratelimit.State `json:"tx_rate_limiter"`
	// RxChains are the RX chains the device held, waiting for frames.
	RxChains []chainState `json:"rx_chains"`
	// TapFrame and MMDSFrame are frames taken for the guest and not yet
	// delivered (vnet header included), or null.
	TapFrame  []byte `json:"tap_frame"`
	MMDSFrame []byte `json:"mmds_frame"`
}

// chainState is a held RX chain: its head and device-writable buffers.
type chainState struct {
	Head    uint16        `json:"head"`
	Buffers []bufferState `json:"buffers"`
}

// macAddr is a MAC address, in JSON as "06:00:ac:10:00:02".
type macAddr [6]byte

// MarshalText writes the address as six colon-separated hex bytes.
func (m macAddr) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]), nil
}

// UnmarshalText reads what MarshalText writes (either case), nothing
// else.
func (m *macAddr) UnmarshalText(b []byte) error {
	var a macAddr
	if len(b) != 17 {
		return fmt.Errorf("MAC address %q", b)
	}
	for i := range a {
		if i > 0 && b[3*i-1] != ':' {
			return fmt.Errorf("MAC address %q", b)
		}
		v, err := strconv.ParseUint(string(b[3*i:3*i+2]), 16, 8)
		if err != nil {
			return fmt.Errorf("MAC address %q", b)
		}
		a[i] = byte(v)
	}
	*m = a
	return nil
}

// bufferState is one buffer of a held RX chain.
type bufferState struct {
	Addr uint64 `json:"addr"`
	Len  uint32 `json:"len"`
}

// Suspend implements virtio.Snapshotter: it stops the worker and the TAP
// reader. The TX chain in hand, if any, is sent and returned first; RX
// chains the device holds, and a frame it took from the TAP or the MMDS
// stack but has not delivered (one the reader was reading as the device
// stopped included), are kept for Resume and in SaveState. Frames still
// in the TAP stay there. A TAP read that fails as the device stops is
// dropped unseen; the network may drop any frame.
func (d *Device) Suspend() { d.life.Suspend() }

// Resume implements virtio.Snapshotter: it restarts the worker with what
// Suspend kept, and looks at both queues.
func (d *Device) Resume() error { return d.life.Resume() }

// SaveState implements virtio.Snapshotter. It fails while the device
// runs: the held RX chains are only the device's between Suspend and
// Resume.
func (d *Device) SaveState() ([]byte, error) {
	var s state
	var err error
	if xerr := d.life.Exclusive(func(*worker) {
		if d.life.Active() && !d.life.Suspended() {
			err = errors.New("net: saving the state of a running device")
			return
		}
		rx, tx := d.rxLim.State(), d.txLim.State()
		s = state{MTU: d.mtu, RxRateLimiter: &rx, TxRateLimiter: &tx,
			TapFrame: d.kept.tapPending, MMDSFrame: d.kept.mmdsPending, RxChains: []chainState{}}
		if d.hasMAC {
			mac := macAddr(d.mac)
			s.GuestMAC = &mac
		}
		for _, c := range d.kept.rx {
			cs := chainState{Head: c.head, Buffers: make([]bufferState, len(c.descs))}
			for i, b := range c.descs {
				cs.Buffers[i] = bufferState{Addr: b.Addr, Len: b.Len}
			}
			s.RxChains = append(s.RxChains, cs)
		}
	}); xerr != nil {
		return nil, xerr
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// RestoreState implements virtio.Snapshotter on a new, inactive device.
// The MAC and MTU the guest saw replace the configured ones (and what the
// device offers follows them); the saved limiters, rebuilt by
// ratelimit.Restore, replace the configured ones (RxLimiter and TxLimiter
// return them from then on). Held RX chains are checked against the
// queue and guest memory when the transport activates the device.
func (d *Device) RestoreState(data []byte) error {
	s, err := virtio.DecodeState[state](data)
	if err != nil {
		return fmt.Errorf("net: invalid saved state: %w", err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("net: invalid saved state: "+format, a...)
	}
	switch {
	case s.MTU != 0 && s.MTU < MinMTU:
		return bad("MTU %d", s.MTU)
	case s.RxRateLimiter == nil || s.TxRateLimiter == nil:
		return bad("no rate limiter")
	case len(s.RxChains) > QueueSize:
		return bad("%d held RX chains", len(s.RxChains))
	case len(s.TapFrame) > MaxBufferSize || len(s.MMDSFrame) > MaxBufferSize:
		return bad("pending frame larger than %d bytes", MaxBufferSize)
	}
	rxLim, err := ratelimit.Restore(*s.RxRateLimiter)
	if err != nil {
		return bad("rx: %w", err)
	}
	txLim, err := ratelimit.Restore(*s.TxRateLimiter)
	if err != nil {
		return bad("tx: %w", err)
	}
	k := kept{tapPending: s.TapFrame, mmdsPending: s.MMDSFrame}
	for _, cs := range s.RxChains {
		if len(cs.Buffers) == 0 || len(cs.Buffers) > QueueSize {
			return bad("RX chain %d with %d buffers", cs.Head, len(cs.Buffers))
		}
		c := rxChain{head: cs.Head, descs: make([]virtio.Descriptor, len(cs.Buffers))}
		var total uint64
		for i, b := range cs.Buffers {
			c.descs[i] = virtio.Descriptor{Addr: b.Addr, Len: b.Len, Flags: virtio.DescFlagWrite}
			total += uint64(b.Len)
		}
		if total > math.MaxUint32 {
			return bad("RX chain %d of %d bytes", cs.Head, total)
		}
		c.len = uint32(total)
		k.rx = append(k.rx, c)
	}
	if xerr := d.life.Exclusive(func(*worker) {
		if d.life.Active() {
			err = errors.New("net: restoring the state of an active device")
			return
		}
		d.rxLim.Stop()
		d.txLim.Stop()
		d.rxLim, d.txLim = rxLim, txLim
		d.setConfig((*[6]byte)(s.GuestMAC), s.MTU)
		d.kept = k
	}); xerr != nil {
		return xerr
	}
	return err
}
