package rng

import (
	"crypto/rand"
	"io"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
)

const (
	// ID is the device's identifier in Firecracker (ENTROPY_DEV_ID), used
	// for its snapshot state and in logs.
	ID = "rng"
	// QueueSize is the size of the one request queue.
	QueueSize = virtio.MaxQueueSize
	// MaxRequestBytes caps the entropy served per request
	// (MAX_ENTROPY_BYTES): the descriptors of one chain may overlap, so
	// their total length says nothing about how much distinct guest memory
	// backs them, and the host buffer must stay bounded.
	MaxRequestBytes = 64 << 10
)

// Limiter rate-limits the device's requests; nil means unlimited. It is
// the part of a Firecracker RateLimiter the device needs, kept as an
// interface so the device does not depend on a limiter implementation.
//
// For each request the device calls ConsumeOps(1) and then, if that
// succeeded, ConsumeBytes(n) with the chain's whole writable length n (not
// capped at MaxRequestBytes, as in Firecracker). The calls come from the
// device's worker goroutine, which also receives from Retry's channel
// whenever it is idle, for as long as the device is active.
//
// Adapting a ratelimit.RateLimiter: ConsumeOps(n) is Consume(n, Ops),
// ConsumeBytes(n) is Consume(n, Bytes), Retry is Unblocked, and
// ManualReplenish gives the Refunder methods.
type Limiter interface {
	// ConsumeBytes takes n bandwidth tokens and reports whether the
	// request may go ahead. It fails at once while the limiter is
	// blocked.
	ConsumeBytes(n uint64) bool
	// ConsumeOps takes n operation tokens, like ConsumeBytes.
	ConsumeOps(n uint64) bool
	// Retry delivers a value when a refused request may be tried again
	// (the limiter's refill timer fired). It must return the same channel
	// every time, and that channel must hold a value sent while nobody
	// receives (capacity 1, sent without blocking): a refused device
	// ignores notifications until it receives from it, so a lost value
	// would stall the queue. A value is only a hint: the device retries,
	// and if the limiter still refuses, waits for the next one. Each value
	// counts in entropy.rate_limiter_event_count, as Firecracker counts
	// each expiry of its timerfd.
	Retry() <-chan struct{}
}

// Refunder is optionally implemented by a Limiter that can give tokens
// back (Firecracker's manual_replenish). The device refunds the op of a
// request whose bytes were refused, so that a throttled request is not
// charged twice, and both tokens of a request it served but could not
// return to the driver.
type Refunder interface {
	RefundOps(n uint64)
	RefundBytes(n uint64)
}

var (
	// Request processing runs on the device's worker, which stands in for
	// Firecracker's VMM thread.
	log = logger.For("main", "devices/virtio/rng")

	// A driver can trigger these at will, so each is rate-limited.
	rlChain, rlAvail, rlUsed, rlRandom, rlIRQ logger.RateLimiter
)

// Device is the virtio-rng device. It implements virtio.Device; a
// transport (virtio/mmio) drives it.
type Device struct {
	limiter  Limiter
	refunder Refunder  // limiter as a Refunder, or nil
	rand     io.Reader // the host CSPRNG; tests replace it
	m        *metrics.EntropyMetrics

	// life holds the acknowledged features and the running worker.
	life virtio.Lifecycle[*worker]
}

// New returns an inactive entropy device limited by limiter (nil for no
// limit).
func New(limiter Limiter) *Device {
	m := &metrics.Default.Entropy
	d := &Device{
		limiter: limiter, rand: rand.Reader, m: m,
		life: virtio.Lifecycle[*worker]{Name: "entropy", Queues: 1, ActivateFails: &m.ActivateFails},
	}
	if r, ok := limiter.(Refunder); ok {
		d.refunder = r
	}
	return d
}

// DeviceType implements virtio.Device: TypeRNG.
func (d *Device) DeviceType() virtio.DeviceType { return virtio.TypeRNG }

// AvailableFeatures implements virtio.Device: VIRTIO_F_VERSION_1 only.
func (d *Device) AvailableFeatures() uint64 { return 1 << virtio.FeatureVersion1 }

// AckFeatures implements virtio.Device.
func (d *Device) AckFeatures(features uint64) { d.life.AckFeatures(features) }

// AckedFeatures returns the features the driver acknowledged (for a
// snapshot).
func (d *Device) AckedFeatures() uint64 { return d.life.AckedFeatures() }

// ReadConfig implements virtio.Device: there is no configuration space,
// so everything reads as zero.
func (d *Device) ReadConfig(offset uint64, data []byte) { virtio.ReadConfigBytes(nil, offset, data) }

// WriteConfig implements virtio.Device; writes are dropped silently, as
// in Firecracker.
func (d *Device) WriteConfig(uint64, []byte) {}

// QueueMaxSizes implements virtio.Device: one queue of QueueSize.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// Activated reports whether the device is active (its worker runs).
func (d *Device) Activated() bool { return d.life.Active() }

// Activate implements virtio.Device: it starts the worker that serves the
// queue.
func (d *Device) Activate(mem *memory.Guest, queues []*virtio.Queue, interrupt virtio.Interrupt) error {
	return d.life.Activate(mem, queues, interrupt, func() (*worker, *virtio.Worker, error) {
		w := d.newWorker(mem, queues[0], interrupt)
		w.Go(w.run)
		return w, w.Worker, nil
	})
}

// QueueNotify implements virtio.Device: it wakes the worker and never
// blocks. Before activation and after Reset it does nothing. One pending
// wake-up is enough: the worker drains the whole queue each time it wakes.
func (d *Device) QueueNotify(index int) { d.life.Notify(index) }

// Reset implements virtio.Device: it stops the worker, waits for it to
// exit, and forgets the queue, memory, interrupt and acknowledged
// features. It never fails.
func (d *Device) Reset() error { return d.life.Reset() }

// worker owns the queue between Activate and Reset: a virtio.Queue is not
// safe for concurrent use, so only this goroutine touches it.
type worker struct {
	*virtio.Worker
	mem       *memory.Guest
	q         *virtio.Queue
	irq       virtio.Interrupt
	limiter   Limiter
	refunder  Refunder
	rand      io.Reader
	m         *metrics.EntropyMetrics
	retry     <-chan struct{}
	throttled bool   // the limiter refused; wait for retry
	buf       []byte // host buffer for one request, grown on demand
}

func (d *Device) newWorker(mem *memory.Guest, q *virtio.Queue, irq virtio.Interrupt) *worker {
	w := &worker{
		Worker: virtio.NewWorker(),
		mem:    mem, q: q, irq: irq,
		limiter: d.limiter, refunder: d.refunder, rand: d.rand, m: d.m,
	}
	if d.limiter != nil {
		w.retry = d.limiter.Retry() // a nil channel never fires: no limit
	}
	return w
}

func (w *worker) run() {
	for {
		select {
		case <-w.Done():
			return
		case <-w.Wake():
			if w.throttled {
				// As Firecracker does for a queue event while its limiter
				// is blocked: count it and leave the queue for the retry.
				w.m.RateLimiterEventCount.Inc()
				continue
			}
			w.process()
		case <-w.retry:
			w.m.RateLimiterEventCount.Inc()
			w.throttled = false
			w.process()
		}
	}
}

// process serves every available request (Firecracker's
// process_entropy_queue), until the queue is empty, the limiter refuses or
// the device is being reset, then interrupts the driver if it returned
// anything.
func (w *worker) process() {
	usedAny := false
	for {
		c := w.Pop(w.q, w.mem, &usedAny, w.popFault)
		if c == nil {
			break
		}
		// Counted per pop, as in Firecracker: a throttled chain counts
		// again when it is retried.
		w.m.EntropyEventCount.Inc()
		n, ok := w.serve(c)
		if !ok {
			break // throttled: the chain is back on the queue
		}
		if err := w.q.AddUsed(w.mem, c.Head, n); err != nil {
			log.RateLimited(&rlUsed).Errorf("entropy: Could not add used descriptor to queue: %v", err)
			w.m.EntropyEventFails.Inc()
			if w.refunder != nil && len(c.Readable()) == 0 {
				w.refunder.RefundOps(1)
				w.refunder.RefundBytes(uint64(c.WritableLen()))
			}
			// The used ring was validated at activation, so this is
			// beyond a guest mistake: stop, as Firecracker does.
			break
		}
		usedAny = true
		w.m.EntropyBytes.Add(uint64(n))
	}
	if err := w.q.Signal(w.mem, w.irq, 0, usedAny); err != nil {
		log.RateLimited(&rlIRQ).Errorf("entropy: %v", err)
		w.m.EntropyEventFails.Inc()
	}
}

// popFault logs and counts a ring error met by Pop.
func (w *worker) popFault(f virtio.PopFault, err error) {
	switch f {
	case virtio.CorruptRing:
		log.RateLimited(&rlAvail).Errorf("entropy: Could not pop from the entropy queue: %v", err)
		w.m.EntropyEventFails.Inc()
	case virtio.MalformedChain:
		w.m.EntropyEventCount.Inc()
		w.m.EntropyEventFails.Inc()
		log.RateLimited(&rlChain).Errorf("entropy: Could not parse descriptor chain: %v", err)
	}
}

// serve handles one well-formed chain and returns the used length. It
// returns ok false, with the chain un-popped, when the limiter refuses it.
func (w *worker) serve(c *virtio.DescriptorChain) (n uint32, ok bool) {
	if len(c.Readable()) > 0 {
		// A request holds only buffers for the device to fill.
		log.RateLimited(&rlChain).Errorf("entropy: Could not parse descriptor chain: descriptor %d is read-only", c.Head)
		w.m.EntropyEventFails.Inc()
		return 0, true
	}
	want := c.WritableLen()
	if log.Enabled(logger.Debug) {
		log.Debugf("entropy: guest request for %d bytes of entropy", want)
	}
	if !w.consume(uint64(want)) {
		log.Debugf("entropy: throttling entropy queue")
		w.m.EntropyRateLimiterThrottled.Inc()
		w.q.UndoPop()
		w.throttled = true
		return 0, false
	}
	k := min(want, MaxRequestBytes)
	if cap(w.buf) < int(k) {
		// Grow once to the cap rather than step by step.
		w.buf = make([]byte, MaxRequestBytes)
	}
	buf := w.buf[:k]
	if _, err := io.ReadFull(w.rand, buf); err != nil {
		w.m.HostRngFails.Inc()
		log.RateLimited(&rlRandom).Errorf("entropy: Could not get random bytes: %v", err)
		w.m.EntropyEventFails.Inc()
		return 0, true
	}
	// Writes from the start of the first buffer on, as Firecracker's
	// write_all_volatile_at(.., 0); k fits, so only a memory fault can
	// cut it short, and then the driver is told what did land.
	wr := c.Writer()
	if _, err := wr.Write(buf); err != nil {
		log.RateLimited(&rlChain).Errorf("entropy: Could not write to guest memory: %v", err)
		w.m.EntropyEventFails.Inc()
	}
	return uint32(wr.Written()), true
}

// consume charges one request of n bytes to the limiter: ops first, and
// the op back if the bytes are refused (Firecracker's rate_limit_request).
func (w *worker) consume(n uint64) bool {
	if w.limiter == nil {
		return true
	}
	if !w.limiter.ConsumeOps(1) {
		return false
	}
	if !w.limiter.ConsumeBytes(n) {
		if w.refunder != nil {
			w.refunder.RefundOps(1)
		}
		return false
	}
	return true
}
