package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
)

const (
	// ID is the device's identifier in Firecracker (VSOCK_DEV_ID).
	ID = "vsock"
	// QueueSize is the size of each of the three queues.
	QueueSize = virtio.MaxQueueSize
	// EventTransportReset is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
	EventTransportReset = 0
)

// Queue indices.
const (
	rxQ = 0
	txQ = 1
	evQ = 2
)

// availFeatures: VERSION_1, IN_ORDER (the device uses buffers in the order
// it pops them) and EVENT_IDX, as Firecracker offers.
const availFeatures = 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureInOrder | 1<<virtio.FeatureEventIdx

const (
	debugLevel = logger.Debug
	pollIn     = unix.POLLIN
	pollOut    = unix.POLLOUT
)

var (
	// The worker stands in for Firecracker's VMM thread.
	log = logger.For("main", "devices/virtio/vsock")

	// Guest- or client-triggerable messages are rate-limited.
	rlQueue, rlPkt, rlConn, rlHost, rlIRQ logger.RateLimiter

	// ErrNotActivated is returned by SendTransportReset before activation
	// or after Reset.
	ErrNotActivated = errors.New("vsock: device not activated")
	// ErrClosed is returned by Activate after Close.
	ErrClosed = errors.New("vsock: device closed")
)

// Config configures a vsock device.
type Config struct {
	// GuestCID is the guest's context ID (guest_cid), exposed in the
	// configuration space.
	GuestCID uint32
	// UDSPath is the host socket path (uds_path); guest connections to
	// host port P go to the Unix socket "<UDSPath>_P".
	UDSPath string
	// Listener is bound at UDSPath (at PUT /vsock); host clients connect
	// to it. The device owns it from New on and closes it in Close.
	Listener *net.UnixListener
}

// Device is the virtio-vsock device with its Unix-socket backend. It
// implements virtio.Device and virtio.Snapshotter; a transport drives it.
type Device struct {
	// cid is the guest CID; only RestoreState changes it, on an inactive
	// device, but the configuration space is read from vCPUs.
	cid     atomic.Uint64
	udsPath string
	ln      *net.UnixListener
	m       *metrics.VsockMetrics

	// life holds the acknowledged features and the running worker, and
	// serialises Activate, Suspend, Resume, Reset, Close and the snapshot
	// methods.
	life virtio.Lifecycle[*worker]

	// What one activation keeps while no worker runs (between Suspend and
	// Resume), handed to each worker it starts and taken back when that
	// worker exits. Guarded by life's lock: the worker's start function
	// and its exit hook run under it, as do Forget and Exclusive.
	mux *muxer // the connections; nil until the first worker
	// handshakes are host clients whose CONNECT line was being read or
	// handed over when the worker stopped.
	handshakes []*handshake
	gate       resetGate
	// portLast is the host-port sequence for the next muxer (restored
	// from a snapshot, or the start of the range).
	portLast uint32
	// started: a worker of this activation has run, so the next start is
	// a Resume. mem and evq are the activation's, for SaveState.
	started bool
	mem     *memory.Guest
	evq     *virtio.Queue
}

// resetGate is the RX gate of a transport reset: while wait is set the
// device delivers nothing on the RX queue. avail is how many event
// buffers were left available once the device took the one it wrote the
// event into; the driver acknowledges by making more available (it
// re-posts that buffer) and kicking the queue.
type resetGate struct {
	wait  bool
	avail uint16
}

// New returns an inactive vsock device. It takes ownership of
// cfg.Listener, which must be set.
func New(cfg Config) (*Device, error) {
	if cfg.Listener == nil {
		return nil, errors.New("vsock: no listener")
	}
	m := &metrics.Default.Vsock
	d := &Device{
		udsPath:  cfg.UDSPath,
		ln:       cfg.Listener,
		m:        m,
		portLast: localPortFirst - 1,
	}
	d.cid.Store(uint64(cfg.GuestCID))
	d.life.Name, d.life.Queues, d.life.ActivateFails, d.life.ErrClosed = "vsock", 3, &m.ActivateFails, ErrClosed
	d.life.Forget = d.forget
	return d, nil
}

// CID returns the guest CID.
func (d *Device) CID() uint64 { return d.cid.Load() }

// UDSPath returns the host socket path.
func (d *Device) UDSPath() string { return d.udsPath }

// DeviceType implements virtio.Device: TypeVsock.
func (d *Device) DeviceType() virtio.DeviceType { return virtio.TypeVsock }

// AvailableFeatures implements virtio.Device.
func (d *Device) AvailableFeatures() uint64 { return availFeatures }

// AckFeatures implements virtio.Device.
func (d *Device) AckFeatures(features uint64) { d.life.AckFeatures(features) }

// AckedFeatures returns the features the driver acknowledged.
func (d *Device) AckedFeatures() uint64 { return d.life.AckedFeatures() }

// ReadConfig implements virtio.Device: the configuration space is
// guest_cid, a little-endian u64.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	var cfg [8]byte
	binary.LittleEndian.PutUint64(cfg[:], d.cid.Load())
	virtio.ReadConfigBytes(cfg[:], offset, data)
}

// WriteConfig implements virtio.Device: the space is read-only, so a
// write is counted as a failure and dropped, as in Firecracker.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	d.m.CfgFails.Inc()
	log.RateLimited(&rlQueue).Warnf("vsock: guest driver attempted to write device config (offset=%#x, len=%#x)", offset, len(data))
}

// QueueMaxSizes implements virtio.Device: rx, tx and event queues.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, QueueSize} }

// Activated reports whether the device is active.
func (d *Device) Activated() bool { return d.life.Active() }

// Activate implements virtio.Device: it starts the worker, which owns the
// queues and connections, and starts accepting host connections.
func (d *Device) Activate(mem *memory.Guest, queues []*virtio.Queue, interrupt virtio.Interrupt) error {
	return d.life.Activate(mem, queues, interrupt, func() (*worker, *virtio.Worker, error) {
		return d.start(mem, queues, interrupt)
	})
}

// start starts a worker for the activation, at Activate and again at each
// Resume, from what the device keeps: the connections, the host clients
// in their handshake and the RX gate. It runs under life's lock.
func (d *Device) start(mem *memory.Guest, queues []*virtio.Queue, irq virtio.Interrupt) (*worker, *virtio.Worker, error) {
	if d.ln.SetDeadline(time.Time{}) != nil {
		// The previous worker stopped Accept with a past deadline.
		return nil, nil, errors.New("vsock: listener unusable")
	}
	resume := d.started
	d.started, d.mem, d.evq = true, mem, queues[evQ]
	if d.mux == nil {
		d.mux = newMuxer(d.cid.Load(), d.udsPath, d.m)
		d.mux.lastPort = d.portLast
	}
	w := newWorker(d.mux, d.m, mem, queues, irq)
	w.eventWait, w.eventAvail = d.gate.wait, d.gate.avail
	// A reset event the guest has not acknowledged yet (a snapshot was
	// just taken, or this is the restored VM) is signalled again, as
	// Firecracker's kick does; a plain pause and resume has none.
	w.signalReset = resume && d.gate.wait
	parked := d.handshakes
	d.handshakes = nil
	// Stopping keeps every host connection, established or still sending
	// its CONNECT line: Suspend hands them to the next worker, Reset's
	// forget closes them.
	w.OnStop(func() {
		// Wake Accept; start clears the deadline again.
		d.ln.SetDeadline(time.Unix(1, 0))
		w.handshakes.interrupt()
	}, func() {
		d.gate = resetGate{wait: w.eventWait, avail: w.eventAvail}
		d.handshakes = w.handshakes.take()
	})
	w.Go(w.run)
	w.Go(func() { w.acceptLoop(d.ln) })
	for _, h := range parked {
		h.s.SetReadDeadline(time.Time{})
		w.handshakes.park(h)
		w.Go(func() { w.handshake(h) })
	}
	return w, w.Worker, nil
}

// forget is the Lifecycle's Forget (Reset, and Close through Reset): it
// closes the connections and the clients still in their handshake, and
// forgets the activation.
func (d *Device) forget() {
	if d.mux != nil {
		d.mux.closeAll()
		d.mux = nil
	}
	for _, h := range d.handshakes {
		h.s.Close()
	}
	d.handshakes = nil
	d.gate = resetGate{}
	d.portLast = localPortFirst - 1
	d.started, d.mem, d.evq = false, nil, nil
}

// QueueNotify implements virtio.Device: it records the kick and wakes the
// worker without blocking.
func (d *Device) QueueNotify(index int) { d.life.Notify(index) }

// Reset implements virtio.Device: it stops the worker and the accept loop,
// closes every host connection (established or still sending its CONNECT
// line) and waits for all the device's goroutines. The listener stays
// open for the next activation. It clears a pending transport reset.
func (d *Device) Reset() error { return d.life.Reset() }

// Close resets the device and closes the listener, which unlinks its
// socket file. The device cannot be activated again.
func (d *Device) Close() error {
	d.Reset()
	return d.life.Close(d.ln.Close)
}

// SendTransportReset places a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the
// event queue and interrupts the guest, which then drops its connections
// and re-reads the CID (done when a snapshot is taken). Until the guest
// kicks the event queue, nothing more is delivered on the RX queue.
func (d *Device) SendTransportReset() error {
	var err error
	if cerr := d.call(func(w *worker) { err = w.sendTransportReset() }); cerr != nil {
		return cerr
	}
	return err
}

// call runs f on the worker goroutine and waits for it.
func (d *Device) call(f func(*worker)) error {
	w := d.life.Current()
	if w == nil {
		return ErrNotActivated
	}
	done := make(chan struct{})
	select {
	case w.calls <- func(w *worker) { f(w); close(done) }:
	case <-w.runExited:
		return ErrNotActivated
	}
	select {
	case <-done:
		return nil
	case <-w.runExited:
		// The worker may have run f just before it stopped.
		select {
		case <-done:
			return nil
		default:
			return ErrNotActivated
		}
	}
}

// worker owns everything between Activate and Reset: the queues (not safe
// for concurrent use), the muxer and its connections. Other goroutines
// reach it through channels:
//   - waiters (one per connection and direction, at most) report socket
//     readiness on events;
//   - the accept loop and its handshake goroutines hand over host
//     connections whose CONNECT line is read on hostConns;
//   - Device methods send closures on calls.
//
// All sends select on Done as well, so nothing blocks once Reset begins,
// and every channel is unbuffered or bounded: a sender waits for the
// worker rather than queueing without limit.
type worker struct {
	*virtio.Worker
	m         *metrics.VsockMetrics
	mem       *memory.Guest
	rxq       *virtio.Queue
	txq       *virtio.Queue
	evq       *virtio.Queue
	irq       virtio.Interrupt
	mux       *muxer
	eventWait bool // a transport reset awaits the guest's ack: RX is gated
	// eventAvail is resetGate.avail while eventWait is set.
	eventAvail uint16
	// signalReset: interrupt the event queue as run starts (Resume with
	// an unacknowledged reset event).
	signalReset bool

	events    chan connEvent
	hostConns chan hostConn
	calls     chan func(*worker)
	runExited chan struct{} // closed when run returns

	timer   *time.Timer // fires at the next kill time
	timerAt time.Time   // when timer is set to fire; zero if stopped

	nconns     atomic.Int32 // connections, for the accept loop's limit
	handshakes handshakes
}

// hostConn is a host client that sent a valid CONNECT line.
type hostConn struct {
	s    *net.UnixConn
	port uint32
}

// newWorker builds a worker around mux, which it takes over: the
// connections a previous worker left are watched again.
func newWorker(mux *muxer, m *metrics.VsockMetrics, mem *memory.Guest, queues []*virtio.Queue, irq virtio.Interrupt) *worker {
	w := &worker{
		Worker: virtio.NewWorker(),
		m:      m, mem: mem, irq: irq,
		rxq: queues[rxQ], txq: queues[txQ], evq: queues[evQ],
		mux:       mux,
		events:    make(chan connEvent),
		hostConns: make(chan hostConn),
		calls:     make(chan func(*worker)),
		runExited: make(chan struct{}),
		timer:     time.NewTimer(time.Hour),
	}
	w.timer.Stop()
	mux.attach(w.events, w.Worker, func(n int) { w.nconns.Store(int32(n)) })
	return w
}

func (w *worker) run() {
	defer close(w.runExited)
	// The connections outlive the worker (see Device.start).
	defer w.mux.park()
	defer w.timer.Stop()
	if w.signalReset {
		if err := w.irq.TriggerQueue(evQ); err != nil {
			log.RateLimited(&rlIRQ).Errorf("vsock: Could not trigger device interrupt: %v", err)
		}
	}
	// Kill times may have come while no worker ran.
	w.mux.sweepKillq()
	w.armTimer()
	for {
		// Reset comes first, whatever else is ready.
		if w.Stopping() {
			return
		}
		select {
		case <-w.Done():
			return
		case <-w.Wake():
			w.handleKicks()
		case ev := <-w.events:
			w.mux.handleEvent(ev)
			w.afterBackend()
		case h := <-w.hostConns:
			w.mux.addHostConn(h.s, h.port)
			w.afterBackend()
		case f := <-w.calls:
			f(w)
		case <-w.timer.C:
			w.timerAt = time.Time{}
			w.mux.sweepKillq()
			w.afterBackend()
		}
		w.armTimer()
	}
}

// armTimer points the timer at the earliest kill time, so that request
// and shutdown timeouts fire on time (Firecracker only sweeps its kill
// queue when a connection is added).
func (w *worker) armTimer() {
	at, ok := w.mux.nextKill()
	if !ok {
		if !w.timerAt.IsZero() {
			w.timer.Stop()
			w.timerAt = time.Time{}
		}
		return
	}
	if at.Equal(w.timerAt) {
		return
	}
	w.timerAt = at
	// The queue pops strictly after the kill time.
	w.timer.Reset(time.Until(at) + time.Millisecond)
}

// handleKicks serves the queue notifications, as Firecracker's handlers
// for the event, TX and RX queue events do.
func (w *worker) handleKicks() {
	bits := w.TakeKicks()
	var irq [3]bool
	if bits&(1<<evQ) != 0 {
		// The guest's event-queue kick acknowledges a transport reset:
		// lift the RX gate.
		if w.eventWait && w.resetAcked() {
			w.eventWait, w.eventAvail = false, 0
		}
		if w.mux.hasPendingRx() {
			irq[rxQ] = w.processRx() || irq[rxQ]
		}
	}
	if bits&(1<<txQ) != 0 {
		irq[txQ] = w.processTx()
		w.m.TxQueueEventCount.Inc()
		// TX may have produced replies (RESPONSE, RST...).
		if w.mux.hasPendingRx() {
			irq[rxQ] = w.processRx() || irq[rxQ]
		}
	}
	if bits&(1<<rxQ) != 0 && w.mux.hasPendingRx() {
		irq[rxQ] = w.processRx() || irq[rxQ]
		w.m.RxQueueEventCount.Inc()
	}
	w.signal(irq)
}

// afterBackend runs after a connection or timer event, as Firecracker's
// notify_backend: pick up TX the backend may now take, then deliver RX.
func (w *worker) afterBackend() {
	var irq [3]bool
	irq[txQ] = w.processTx()
	if w.mux.hasPendingRx() {
		irq[rxQ] = w.processRx()
	}
	w.signal(irq)
}

func (w *worker) signal(irq [3]bool) {
	for i, need := range irq {
		if !need {
			continue
		}
		if err := w.irq.TriggerQueue(i); err != nil {
			log.RateLimited(&rlIRQ).Errorf("vsock: Could not trigger device interrupt: %v", err)
		}
	}
}

// popChain pops the next chain of q, returning malformed chains to the
// driver with length 0. It returns nil when there is nothing (more) to
// process; a corrupt ring counts in fails.
func (w *worker) popChain(q *virtio.Queue, fails *metrics.IncMetric, what string, used *bool) *virtio.DescriptorChain {
	return w.Pop(q, w.mem, used, func(f virtio.PopFault, err error) {
		switch f {
		case virtio.CorruptRing:
			log.RateLimited(&rlQueue).Errorf("vsock: %s queue: %v", what, err)
			fails.Inc()
		case virtio.MalformedChain:
			log.RateLimited(&rlQueue).Warnf("vsock: %s queue: %v", what, err)
		case virtio.UnreturnedChain:
			ce := err.(*virtio.ChainError)
			log.RateLimited(&rlQueue).Errorf("vsock: Failed to add used descriptor %d: %v", ce.Head, ce.Err)
		}
	})
}

// processRx fills the guest's RX buffers with what the muxer has to say
// (Firecracker's process_rx) and reports whether to interrupt.
func (w *worker) processRx() bool {
	if w.eventWait {
		return false
	}
	used := false
	for {
		c := w.popChain(w.rxq, &w.m.RxQueueEventFails, "RX", &used)
		if c == nil {
			break
		}
		var n uint32
		p, err := parseRx(c)
		if err != nil {
			log.RateLimited(&rlQueue).Warnf("vsock: RX queue error: %v. Discarding the package.", err)
		} else {
			err := w.mux.recvPkt(&p)
			if err == errNoData {
				w.rxq.UndoPop()
				break
			}
			if err != nil {
				log.RateLimited(&rlQueue).Errorf("vsock: error receiving packet from backend: %v", err)
				w.rxq.UndoPop()
				break
			}
			if err := p.commitHdr(); err != nil {
				log.RateLimited(&rlQueue).Warnf("vsock: Error writing packet header to guest memory: %v. Discarding the package.", err)
			} else {
				n = HdrSize + p.hdr.Len
			}
		}
		if err := w.rxq.AddUsed(w.mem, c.Head, n); err != nil {
			log.RateLimited(&rlQueue).Errorf("vsock: Failed to add used descriptor %d: %v", c.Head, err)
			break
		}
		used = true
	}
	return used && w.rxq.NeedsNotification(w.mem)
}

// processTx hands every packet on the TX queue to the muxer (Firecracker's
// process_tx); each chain goes back with length 0.
func (w *worker) processTx() bool {
	used := false
	for {
		c := w.popChain(w.txq, &w.m.TxQueueEventFails, "TX", &used)
		if c == nil {
			break
		}
		if p, err := parseTx(c); err != nil {
			log.RateLimited(&rlQueue).Errorf("vsock: error reading TX packet: %v", err)
		} else {
			w.mux.sendPkt(&p)
		}
		if err := w.txq.AddUsed(w.mem, c.Head, 0); err != nil {
			log.RateLimited(&rlQueue).Errorf("vsock: Failed to add used descriptor %d: %v", c.Head, err)
			break
		}
		used = true
	}
	return used && w.txq.NeedsNotification(w.mem)
}

// sendTransportReset puts the reset event in the guest's next event
// buffer, gates RX until the guest acknowledges it, and interrupts.
func (w *worker) sendTransportReset() error {
	avail, used, err := postTransportReset(w.mem, w.evq, w.m)
	if err == nil {
		w.eventWait, w.eventAvail = true, avail
	}
	if used {
		if terr := w.irq.TriggerQueue(evQ); err == nil {
			err = terr
		}
	}
	return err
}

// resetAcked reports whether an event-queue kick acknowledges the pending
// transport reset: the driver made more event buffers available than
// were left after the event was written. A kick with no new buffer is
// not an ack: Resume and activation kick every queue themselves, and the
// guest has yet to see the event then.
func (w *worker) resetAcked() bool {
	n, err := w.evq.Len(w.mem)
	if err != nil {
		// A driver that broke its event ring cannot acknowledge: do not
		// gate RX forever.
		log.RateLimited(&rlQueue).Errorf("vsock: event queue: %v", err)
		return true
	}
	return n != w.eventAvail
}

// postTransportReset writes VIRTIO_VSOCK_EVENT_TRANSPORT_RESET into the
// driver's next event buffer and returns it used; it returns how many
// event buffers are left available (resetGate.avail). used reports that a
// used entry was added (the driver is owed an interrupt), also when a
// malformed chain went back empty.
func postTransportReset(mem *memory.Guest, evq *virtio.Queue, m *metrics.VsockMetrics) (avail uint16, used bool, err error) {
	c, err := evq.Pop(mem)
	if err != nil {
		m.EvQueueEventFails.Inc()
		var ce *virtio.ChainError
		if errors.As(err, &ce) {
			used = evq.AddUsed(mem, ce.Head, 0) == nil
		}
		return 0, used, fmt.Errorf("vsock: event queue: %w", err)
	}
	if c == nil {
		m.EvQueueEventFails.Inc()
		return 0, false, errEmptyEventQueue
	}
	// Counted before the event is visible: the driver cannot have
	// re-posted this buffer yet.
	avail, _ = evq.Len(mem)
	var ev [4]byte
	binary.LittleEndian.PutUint32(ev[:], EventTransportReset)
	wr := c.Writer()
	if _, err := wr.Write(ev[:]); err != nil {
		log.Errorf("vsock: Failed to write virtio vsock reset event: %v", err)
	}
	if err := evq.AddUsed(mem, c.Head, uint32(wr.Written())); err != nil {
		log.Errorf("vsock: Failed to add used descriptor %d: %v", c.Head, err)
	}
	// The driver refills the event queue after consuming the event; make
	// sure that kick is not suppressed (EVENT_IDX), since it is the ack.
	if err := evq.EnableNotification(mem); err != nil {
		log.Errorf("vsock: event queue: %v", err)
	}
	return avail, true, nil
}

// acceptLoop accepts host clients and starts a handshake goroutine for
// each, until the worker stops.
func (w *worker) acceptLoop(ln *net.UnixListener) {
	var backoff *time.Timer
	for {
		s, err := ln.AcceptUnix()
		if w.Stopping() {
			if s != nil {
				// Kept for the next worker (Suspend) or closed by
				// forget (Reset).
				w.handshakes.park(&handshake{s: s})
			}
			return
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			w.m.MuxerEventFails.Inc()
			log.RateLimited(&rlHost).Warnf("vsock: unable to accept local connection: %v", err)
			// Out of fds, say: do not spin.
			if backoff == nil {
				backoff = time.NewTimer(10 * time.Millisecond)
			} else {
				backoff.Reset(10 * time.Millisecond)
			}
			select {
			case <-backoff.C:
			case <-w.Done():
				return
			}
			continue
		}
		if w.nconns.Load() >= MaxConnections {
			log.RateLimited(&rlHost).Warnf("vsock: connection limit reached; refusing new host connection")
			s.Close()
			continue
		}
		h := &handshake{s: s}
		if !w.handshakes.admit(h) {
			s.Close()
			continue
		}
		// Once stopping, h stays parked for the next worker: no reader
		// starts (interrupt may already have run).
		if w.Stopping() {
			return
		}
		w.Go(func() { w.handshake(h) })
	}
}

// handshake is a host client from its accept until the worker takes it
// over: the CONNECT line so far, then the port it asked for.
type handshake struct {
	s    *net.UnixConn
	line connectLine
	port uint32
	done bool // the line is read: port is set
}

// handshake reads a client's CONNECT line and hands the connection to the
// worker. If the worker stops meanwhile, the client stays parked, with
// what was read of its line, for the next worker (Suspend) or forget
// (Reset).
func (w *worker) handshake(h *handshake) {
	if !h.done {
		port, err := h.line.read(h.s)
		if err != nil && w.Stopping() {
			return // interrupted, or failed as the worker stopped: the next worker reads on
		}
		if err != nil {
			w.handshakes.remove(h)
			log.RateLimited(&rlHost).Infof("vsock: error adding local-init connection: %v", err)
			h.s.Close()
			return
		}
		h.port, h.done = port, true
	}
	// Untracked while the worker owns it, so that no later worker takes
	// it again.
	w.handshakes.remove(h)
	select {
	case w.hostConns <- hostConn{s: h.s, port: h.port}:
	case <-w.Done():
		w.handshakes.park(h)
	}
}

// maxHandshakes bounds the clients that have connected but not yet sent
// their CONNECT line (each holds a goroutine and an fd).
const maxHandshakes = MaxConnections

// handshakes tracks the clients whose CONNECT line is being read, so that
// a stopping worker can interrupt the reads and leave the clients to the
// device (Device.start).
type handshakes struct {
	mu sync.Mutex
	m  map[*handshake]struct{}
}

// admit tracks a new client; false when too many are in their handshake.
func (t *handshakes) admit(h *handshake) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= maxHandshakes {
		return false
	}
	t.parkLocked(h)
	return true
}

// park tracks h whatever the limit: a client the device already took.
func (t *handshakes) park(h *handshake) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.parkLocked(h)
}

func (t *handshakes) parkLocked(h *handshake) {
	if t.m == nil {
		t.m = make(map[*handshake]struct{})
	}
	t.m[h] = struct{}{}
}

func (t *handshakes) remove(h *handshake) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, h)
}

// interrupt ends the reads in progress, without closing the clients: a
// read deadline in the past wakes them.
func (t *handshakes) interrupt() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for h := range t.m {
		h.s.SetReadDeadline(time.Unix(1, 0))
	}
}

// take returns and forgets the clients still tracked, once the worker's
// goroutines have exited.
func (t *handshakes) take() []*handshake {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*handshake, 0, len(t.m))
	for h := range t.m {
		out = append(out, h)
	}
	clear(t.m)
	return out
}
