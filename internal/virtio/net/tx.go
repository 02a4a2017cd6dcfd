package net

import (
	"bytes"
	"io"
	"time"

	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
)

// metricsMMDS is the "mmds" group: the device counts the frames it detours
// to the stack and the stack's frames it delivers, as Firecracker's net
// device does; the stack counts the rest.
var metricsMMDS = &metrics.Default.MMDS

// ethHdrLen is an Ethernet header without 802.1Q: destination, source,
// EtherType.
const ethHdrLen = 14

// processTx sends every available TX chain (Firecracker's process_tx):
// each is one frame with its vnet header, detoured to the MMDS stack if it
// takes it and written to the backend otherwise. Every chain goes back to
// the driver with length 0. If the stack took a frame, RX runs at once so
// its answer reaches the guest without waiting for another event.
func (w *worker) processTx() {
	usedAny, toMMDS := false, false
	for {
		c := w.Pop(w.txq, w.mem, &usedAny, w.txPopFault)
		if c == nil {
			break
		}
		if left, err := w.txq.Len(w.mem); err == nil {
			w.m.TxRemainingReqsCount.Add(uint64(left))
		}
		sent, ok := w.sendChain(c)
		if !ok {
			break // throttled: the chain is back on the queue
		}
		toMMDS = toMMDS || sent
		if w.addUsed(w.txq, c.Head, 0) {
			usedAny = true
		}
	}
	if usedAny {
		w.signal(w.txq, TxIndex)
	} else {
		w.m.NoTxAvailBuffer.Inc()
	}
	if toMMDS && !w.Stopping() {
		w.processRx()
	}
}

// txPopFault logs and counts a ring error met popping the TX queue.
func (w *worker) txPopFault(f virtio.PopFault, err error) {
	switch f {
	case virtio.CorruptRing:
		log.RateLimited(&rlAvail).Errorf("net: could not pop from the TX queue: %v", err)
		w.m.EventFails.Inc()
	case virtio.MalformedChain:
		w.m.TxFails.Inc()
		log.RateLimited(&rlChain).Errorf("net: could not parse a TX descriptor: %v", err)
	}
}

// sendChain handles one well-formed TX chain. It returns ok false, with
// the chain un-popped, when the limiter refuses it, and toMMDS true when
// the MMDS stack took the frame.
func (w *worker) sendChain(c *virtio.DescriptorChain) (toMMDS, ok bool) {
	if len(c.Writable()) > 0 {
		w.m.TxFails.Inc()
		log.RateLimited(&rlChain).Errorf("net: could not parse a TX descriptor: chain %d has a device-writable buffer", c.Head)
		return false, true
	}
	n := c.ReadableLen()
	if n > MaxBufferSize {
		w.m.TxMalformedFrames.Inc()
		log.RateLimited(&rlTxFrame).Errorf("net: received too big frame from driver (%d bytes)", n)
		return false, true
	}
	if !w.d.txLim.ConsumeRequest(uint64(n)) {
		w.txq.UndoPop()
		w.m.TxRateLimiterThrottled.Inc()
		w.txThrottled = true
		return false, false
	}
	// Gather the chain into one host buffer: the backend takes a frame in
	// one write, and the checks below see the very bytes that are sent,
	// however the guest rewrites its buffers meanwhile.
	buf := w.bufs.tx[:n]
	r := c.Reader()
	if _, err := io.ReadFull(&r, buf); err != nil {
		w.m.TxFails.Inc()
		log.RateLimited(&rlTxFrame).Errorf("net: could not read a frame from guest memory: %v", err)
		return false, true
	}
	if n < VnetHdrLen {
		w.m.TxMalformedFrames.Inc()
		log.RateLimited(&rlTxFrame).Errorf("net: VNET headers missing in TX frame")
		return false, true
	}
	frame := buf[VnetHdrLen:]
	if m := w.d.mmds; m != nil && m.DetourFrame(frame) {
		metricsMMDS.RxAccepted.Inc()
		// MMDS traffic does not count against the guest's limits.
		w.d.txLim.RefundRequest(uint64(n))
		return true, true
	}
	if w.d.hasMAC && len(frame) >= ethHdrLen && !bytes.Equal(frame[6:12], w.d.mac[:]) {
		// Counted, not filtered, as in Firecracker.
		w.m.TxSpoofedMacCount.Inc()
	}
	start := time.Now()
	_, err := w.d.backend.Write(buf)
	w.m.TapWriteAgg.RecordSince(start)
	if err != nil {
		w.m.TapWriteFails.Inc()
		log.RateLimited(&rlTapWrite).Errorf("net: failed to write to tap: %v", err)
		return false, true
	}
	w.m.TxBytesCount.Add(uint64(n))
	w.m.TxPacketsCount.Inc()
	w.m.TxCount.Inc()
	return false, true
}
