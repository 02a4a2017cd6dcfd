package net

import (
	"encoding/binary"
	"errors"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
)

// rxChain is a guest RX chain popped from the queue and held until a frame
// fills it (Firecracker keeps the same in RxBuffers). It keeps the
// chain's descriptors rather than the chain, so that a suspended device
// can hand held chains to the next worker, or to a snapshot.
type rxChain struct {
	head  uint16
	descs []virtio.Descriptor // all device-writable, each inside guest RAM
	len   uint32              // their total length
}

// fill copies p into the chain's buffers in order and returns how many
// bytes landed: all of p (which the caller keeps within len) unless guest
// memory faults.
func (c rxChain) fill(mem *memory.Guest, p []byte) (int, error) {
	n := 0
	for _, d := range c.descs {
		if n == len(p) {
			break
		}
		k := min(len(p)-n, int(d.Len))
		if k == 0 {
			continue
		}
		b, err := mem.Slice(d.Addr, uint64(k))
		if err != nil {
			return n, err
		}
		n += copy(b, p[n:])
	}
	return n, nil
}

// rxChains is a FIFO of held RX chains and their total length.
type rxChains struct {
	q        []rxChain
	head     int    // q[head:] are held
	capacity uint64 // total writable length of q[head:]
}

func (r *rxChains) len() int { return len(r.q) - r.head }

func (r *rxChains) at(i int) rxChain { return r.q[r.head+i] }

func (r *rxChains) push(c rxChain) {
	if r.head > 0 && len(r.q) == cap(r.q) {
		n := copy(r.q, r.q[r.head:])
		clear(r.q[n:])
		r.q, r.head = r.q[:n], 0
	}
	r.q = append(r.q, c)
	r.capacity += uint64(c.len)
}

func (r *rxChains) popFront(n int) {
	for i := range n {
		r.capacity -= uint64(r.q[r.head+i].len)
		r.q[r.head+i] = rxChain{} // drop the chain for the collector
	}
	r.head += n
	if r.head == len(r.q) {
		r.q, r.head = r.q[:0], 0
	}
}

// parseRxChains pops every available RX chain and holds those fit to
// receive into (Firecracker's parse_rx_descriptors). A chain with a
// device-readable buffer, or shorter than the negotiated minimum, goes
// back to the driver unused. At most a queue's worth is held, so a driver
// that republishes heads cannot make the device hold more and more.
func (w *worker) parseRxChains() {
	for w.rx.len() < QueueSize {
		c := w.Pop(w.rxq, w.mem, &w.rxUsed, w.rxPopFault)
		if c == nil {
			return
		}
		switch {
		case len(c.Readable()) > 0:
			w.m.RxFails.Inc()
			log.RateLimited(&rlChain).Errorf("net: could not parse an RX descriptor: chain %d has a device-readable buffer", c.Head)
		case c.WritableLen() < w.minRx:
			w.m.RxFails.Inc()
			log.RateLimited(&rlChain).Errorf("net: could not parse an RX descriptor: chain %d holds %d bytes, less than %d", c.Head, c.WritableLen(), w.minRx)
		default:
			// Writable is the chain's own copy of its descriptors: the
			// guest cannot change it.
			w.rx.push(rxChain{head: c.Head, descs: c.Writable(), len: c.WritableLen()})
			continue
		}
		if w.addUsed(w.rxq, c.Head, 0) {
			w.rxUsed = true
		}
	}
}

// rxPopFault logs and counts a ring error met popping the RX queue.
func (w *worker) rxPopFault(f virtio.PopFault, err error) {
	switch f {
	case virtio.CorruptRing:
		log.RateLimited(&rlAvail).Errorf("net: could not pop from the RX queue: %v", err)
		w.m.EventFails.Inc()
	case virtio.MalformedChain:
		w.m.RxFails.Inc()
		log.RateLimited(&rlChain).Errorf("net: could not parse an RX descriptor: %v", err)
	}
}

// onRead takes a frame (or an error) from the reader.
func (w *worker) onRead(r readResult) {
	w.reading = false
	w.m.RxTapEventCount.Inc()
	switch {
	case errors.Is(r.err, ErrFrameTruncated):
		// Bigger than any frame the device handles: the guest could not
		// be given it whole.
		w.m.RxFails.Inc()
		log.RateLimited(&rlRxFrame).Errorf("net: dropped a frame from the TAP larger than %d bytes", MaxBufferSize)
	case r.err != nil:
		w.m.TapReadFails.Inc()
		log.RateLimited(&rlTapRead).Errorf("net: failed to read tap: %v", r.err)
	default:
		w.tapPending = r.buf
	}
	if w.rxThrottled {
		w.m.RxRateLimiterThrottled.Inc()
		return
	}
	w.processRx()
}

// deliverResult says what became of a frame offered to the guest.
type deliverResult int

const (
	delivered deliverResult = iota // in the guest's buffers, or dropped
	noRoom                         // wait for more RX buffers
	throttled                      // wait for the rx limiter
)

// processRx moves frames to the guest, MMDS frames before TAP frames, for
// as long as there are buffers and the limiter allows (Firecracker's
// resume_rx and process_rx), then asks the reader for the next TAP frame
// if the guest has room for the largest one.
func (w *worker) processRx() {
	w.parseRxChains()
	starved := false
	for !w.rxThrottled && !w.Stopping() {
		frame, fromMMDS := w.nextRxFrame()
		if frame == nil {
			break
		}
		res := w.deliver(frame)
		if res == noRoom {
			starved = true
			break
		}
		if res == throttled {
			break
		}
		if fromMMDS {
			w.mmdsPending = nil
		} else {
			w.tapPending = nil
		}
	}
	if !w.reading && w.tapPending == nil && !w.rxThrottled && !w.Stopping() {
		// Only read from the TAP when any frame it can hold fits, as
		// Firecracker does: a frame read must not wait for buffers.
		if w.rx.capacity >= MaxBufferSize {
			w.reading = true
			w.want <- w.bufs.tapRx
		} else {
			starved = true
		}
	}
	if starved {
		w.m.NoRxAvailBuffer.Inc()
	}
	w.signalRx()
}

func (w *worker) signalRx() {
	if w.rxUsed {
		w.rxUsed = false
		w.signal(w.rxq, RxIndex)
	}
}

// nextRxFrame returns the next frame for the guest, vnet header included:
// the MMDS stack's first, then the TAP's. A new MMDS frame is fetched only
// when the guest has room for any frame, as a TAP read is.
func (w *worker) nextRxFrame() (frame []byte, fromMMDS bool) {
	if w.mmdsPending != nil {
		return w.mmdsPending, true
	}
	if w.d.mmds != nil && w.rx.capacity >= MaxBufferSize {
		buf := w.bufs.mmdsRx
		if n, ok := w.d.mmds.WriteNextFrame(buf[VnetHdrLen:]); ok {
			if n < 0 || n > len(buf)-VnetHdrLen {
				log.RateLimited(&rlMMDS).Errorf("net: the MMDS stack returned a frame of %d bytes", n)
				w.m.RxFails.Inc()
			} else {
				metricsMMDS.TxFrames.Inc()
				metricsMMDS.TxBytes.Add(uint64(n))
				// The stack's frames need no offload: a zero header.
				clear(buf[:VnetHdrLen])
				w.mmdsPending = buf[:VnetHdrLen+n]
				return w.mmdsPending, true
			}
		}
	}
	if w.tapPending != nil {
		return w.tapPending, false
	}
	return nil, false
}

// deliver writes one frame (vnet header included) into the held RX chains:
// with MRG_RXBUF across as many as it needs, else into the first one, with
// num_buffers set to the number used. A frame that can never fit is
// dropped.
func (w *worker) deliver(frame []byte) deliverResult {
	n := len(frame)
	if n < VnetHdrLen {
		w.m.RxFails.Inc()
		log.RateLimited(&rlRxFrame).Errorf("net: dropped a %d-byte frame without a vnet header", n)
		return delivered
	}
	if w.rx.len() == 0 {
		return noRoom
	}
	chains := 1
	if w.mrg {
		if w.rx.capacity < uint64(n) {
			return noRoom
		}
		for left := uint64(n) - min(uint64(n), uint64(w.rx.at(0).len)); left > 0; chains++ {
			left -= min(left, uint64(w.rx.at(chains).len))
		}
	} else if uint64(w.rx.at(0).len) < uint64(n) {
		// Every chain holds the negotiated minimum, so only a frame
		// larger than the guest said it takes gets here.
		w.m.RxFails.Inc()
		log.RateLimited(&rlRxFrame).Errorf("net: dropped a %d-byte frame larger than the %d-byte RX buffer", n, w.rx.at(0).len)
		return delivered
	}
	if !w.d.rxLim.ConsumeRequest(uint64(n)) {
		w.m.RxRateLimiterThrottled.Inc()
		w.rxThrottled = true
		return throttled
	}
	binary.LittleEndian.PutUint16(frame[numBuffersOff:], uint16(chains))

	// Fill every chain first, then add them all and publish the used index
	// once: Linux drops a mergeable frame whose later buffers it does not
	// find used yet.
	var lens [QueueSize]uint32
	off := 0
	for i := range chains {
		c := w.rx.at(i)
		k := min(n-off, int(c.len))
		wrote, err := c.fill(w.mem, frame[off:off+k])
		if err != nil {
			log.RateLimited(&rlRxFrame).Errorf("net: could not write a frame to guest memory: %v", err)
			w.m.RxFails.Inc()
		}
		lens[i] = uint32(wrote)
		off += k
	}
	added := false
	for i := range chains {
		if err := w.rxq.AddUsedDeferred(w.mem, w.rx.at(i).head, lens[i]); err != nil {
			log.RateLimited(&rlUsed).Errorf("net: could not add used descriptor: %v", err)
			w.m.EventFails.Inc()
			continue
		}
		added = true
	}
	if added {
		if err := w.rxq.PublishUsed(w.mem); err != nil {
			log.RateLimited(&rlUsed).Errorf("net: could not publish used descriptors: %v", err)
			w.m.EventFails.Inc()
		} else {
			w.rxUsed = true
		}
	}
	w.rx.popFront(chains)
	w.m.RxCount.Inc()
	w.m.RxPacketsCount.Inc()
	w.m.RxBytesCount.Add(uint64(n))
	return delivered
}
