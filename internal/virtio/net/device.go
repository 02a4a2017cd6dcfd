package net

import (
	"errors"
	"fmt"
	"time"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/tap"
	"github.com/squib-vmm/squib/internal/virtio"
)

const (
	// QueueSize is the size of each of the two queues.
	QueueSize = virtio.MaxQueueSize
	// RxIndex and TxIndex are the queue indices (no control queue, one
	// queue pair).
	RxIndex = 0
	TxIndex = 1
	// VnetHdrLen is the size of struct virtio_net_hdr_v1, which precedes
	// every frame in the guest's buffers and on the TAP (one constant, as
	// the TAP is opened with that header size).
	VnetHdrLen = tap.VnetHdrLen
	// MaxBufferSize is the largest frame the device handles, vnet header
	// included: 64 KiB of payload plus the vnet and Ethernet headers
	// (Firecracker's MAX_BUFFER_SIZE).
	MaxBufferSize = 65562
	// MinMTU is the smallest MTU New accepts (Firecracker's range is
	// 68..65535).
	MinMTU = 68

	// minRxBufferSmall is the smallest RX chain without MRG_RXBUF or
	// receive offloads: a vnet header and a 1514-byte frame.
	minRxBufferSmall = 1526
	// numBuffersOff is the offset of num_buffers in virtio_net_hdr_v1.
	numBuffersOff = 10
	// configSize is the config space: mac[6], status, max_virtqueue_pairs
	// and mtu (u16 each).
	configSize = 12
)

// virtio-net feature bits (linux/virtio_net.h), as bit numbers.
const (
	FeatureCsum      = 0  // VIRTIO_NET_F_CSUM: the guest may send partial checksums
	FeatureGuestCsum = 1  // VIRTIO_NET_F_GUEST_CSUM: the guest accepts partial checksums
	FeatureMTU       = 3  // VIRTIO_NET_F_MTU: config mtu is valid
	FeatureMAC       = 5  // VIRTIO_NET_F_MAC: config mac is valid
	FeatureGuestTSO4 = 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureGuestTSO6 = 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestUFO  = 10 // VIRTIO_NET_F_GUEST_UFO
	FeatureHostTSO4  = 11 // VIRTIO_NET_F_HOST_TSO4
	FeatureHostTSO6  = 12 // VIRTIO_NET_F_HOST_TSO6
	FeatureHostUFO   = 14 // VIRTIO_NET_F_HOST_UFO
	FeatureMrgRxbuf  = 15 // VIRTIO_NET_F_MRG_RXBUF: a frame may span RX chains
)

// baseFeatures is what every net device offers (Firecracker's
// Net::new_with_tap); MAC and MTU are added when configured.
const baseFeatures = 1<<FeatureCsum | 1<<FeatureGuestCsum |
	1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestUFO |
	1<<FeatureHostTSO4 | 1<<FeatureHostTSO6 | 1<<FeatureHostUFO |
	1<<FeatureMrgRxbuf | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureVersion1

// Backend is the host side: a TAP (with the 12-byte vnet header on every
// frame) or, in tests, a fake.
type Backend interface {
	Read(p []byte) (int, error)        // one frame (header included); blocks until one arrives; honours SetReadDeadline
	Write(p []byte) (int, error)       // one frame (header included)
	SetReadDeadline(t time.Time) error // a time in the past wakes a blocked Read
	SetOffload(flags uint) error       // TUNSETOFFLOAD; a fake may ignore it
	Close() error
}

// MMDS is the MMDS network stack for this interface (nil when MMDS is not
// enabled on it). Safe for concurrent use.
type MMDS interface {
	// DetourFrame is offered each guest TX Ethernet frame (without the
	// virtio-net header); true means the stack consumed it. frame is the
	// device's buffer, valid only during the call.
	DetourFrame(frame []byte) bool
	// WriteNextFrame writes the next Ethernet frame for the guest into
	// buf (no virtio-net header) and returns its length; ok=false when it
	// has none.
	WriteNextFrame(buf []byte) (n int, ok bool)
}

// Config describes a network interface.
type Config struct {
	ID        string   // iface_id (metrics group net_<id>)
	Backend   Backend  // owned by the device from New on
	GuestMAC  *[6]byte // nil when not configured
	MTU       *uint16  // nil when not configured; else MinMTU..65535
	RxLimiter *ratelimit.RateLimiter
	TxLimiter *ratelimit.RateLimiter // nil = unlimited
	MMDS      MMDS                   // nil = none
}

// ErrFrameTruncated is returned by a TAP backend's Read when the frame did
// not fit the buffer (the kernel reports the frame's full length).
var ErrFrameTruncated = errors.New("frame larger than the read buffer")

var (
	// The device's goroutines stand in for Firecracker's VMM thread.
	log = logger.For("main", "devices/virtio/net")

	// A driver (or the host network) can trigger these at will, so each
	// is rate-limited.
	rlConfig, rlChain, rlAvail, rlUsed, rlIRQ, rlRxFrame, rlTapRead, rlTapWrite, rlTxFrame, rlMMDS logger.RateLimiter
)

// Device is the virtio-net device. It implements virtio.Device; a
// transport (virtio/mmio) drives it.
type Device struct {
	id      string
	backend Backend
	hasMAC  bool
	mac     [6]byte
	mtu     uint16 // 0 when not configured
	avail   uint64
	config  [configSize]byte
	rxLim   *ratelimit.RateLimiter
	txLim   *ratelimit.RateLimiter
	mmds    MMDS
	m       *metrics.NetMetrics

	// life holds the acknowledged features and the running worker, and
	// serialises Activate, Reset and Close.
	life virtio.Lifecycle[*worker]
	// bufs is allocated at the first activation, then handed from one
	// worker to the next (under life's lock).
	bufs *hostBuffers
	// kept is what a suspended worker left for the next (under life's
	// lock); Reset forgets it.
	kept kept
}

// hostBuffers are the frame buffers a worker uses; each holds a whole
// frame with its vnet header.
type hostBuffers struct {
	tapRx  []byte // the reader's buffer
	mmdsRx []byte // frames from the MMDS stack
	tx     []byte // a gathered TX chain
}

// New returns an inactive device for cfg. On error the backend is closed,
// since the device owned it.
func New(cfg Config) (*Device, error) {
	if cfg.Backend == nil {
		return nil, errors.New("net: no backend")
	}
	d := &Device{
		id:      cfg.ID,
		backend: cfg.Backend,
		avail:   baseFeatures,
		rxLim:   cfg.RxLimiter,
		txLim:   cfg.TxLimiter,
		mmds:    cfg.MMDS,
	}
	var mtu uint16
	if cfg.MTU != nil {
		if *cfg.MTU < MinMTU {
			cfg.Backend.Close()
			return nil, fmt.Errorf("MTU %d is out of range [68, 65535]", *cfg.MTU)
		}
		mtu = *cfg.MTU
	}
	d.setConfig(cfg.GuestMAC, mtu)
	// Never nil, so that a PATCH can add buckets to an unlimited device.
	if d.rxLim == nil {
		d.rxLim = ratelimit.New(nil, nil)
	}
	if d.txLim == nil {
		d.txLim = ratelimit.New(nil, nil)
	}
	d.m = metrics.Default.Net(cfg.ID)
	d.life.Name, d.life.Queues, d.life.ActivateFails = "net", 2, &d.m.ActivateFails
	d.life.Forget = func() { d.kept = kept{} }
	return d, nil
}

// setConfig sets the guest MAC (nil: none) and MTU (0: none), the
// configuration space that shows them and the features that announce
// them.
func (d *Device) setConfig(mac *[6]byte, mtu uint16) {
	d.avail = baseFeatures
	d.config = [configSize]byte{}
	d.hasMAC, d.mac, d.mtu = false, [6]byte{}, mtu
	if mtu != 0 {
		d.avail |= 1 << FeatureMTU
		d.config[10], d.config[11] = byte(mtu), byte(mtu>>8)
	}
	if mac != nil {
		d.hasMAC, d.mac = true, *mac
		d.avail |= 1 << FeatureMAC
		copy(d.config[:6], mac[:])
	}
}

// ID is the interface's iface_id.
func (d *Device) ID() string { return d.id }

// GuestMAC returns the configured guest MAC and whether there is one.
func (d *Device) GuestMAC() ([6]byte, bool) { return d.mac, d.hasMAC }

// MTU returns the configured MTU, 0 when none.
func (d *Device) MTU() uint16 { return d.mtu }

// RxLimiter is the receive rate limiter (never nil); a PATCH updates it in
// place, concurrently with the running device. RestoreState replaces it,
// so fetch it anew after a restore.
func (d *Device) RxLimiter() *ratelimit.RateLimiter { return d.rxLim }

// TxLimiter is the transmit rate limiter (never nil).
func (d *Device) TxLimiter() *ratelimit.RateLimiter { return d.txLim }

// DeviceType implements virtio.Device: TypeNet.
func (d *Device) DeviceType() virtio.DeviceType { return virtio.TypeNet }

// AvailableFeatures implements virtio.Device.
func (d *Device) AvailableFeatures() uint64 { return d.avail }

// AckFeatures implements virtio.Device.
func (d *Device) AckFeatures(features uint64) { d.life.AckFeatures(features) }

// AckedFeatures returns the features the driver acknowledged.
func (d *Device) AckedFeatures() uint64 { return d.life.AckedFeatures() }

// ReadConfig implements virtio.Device: mac, status (0), max_virtqueue_pairs
// (0) and mtu, as Firecracker lays them out whatever was negotiated.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	virtio.ReadConfigBytes(d.config[:], offset, data)
}

// WriteConfig implements virtio.Device: the config space is read-only, so
// a write is counted as a failure and dropped, as in Firecracker.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	d.m.CfgFails.Inc()
	log.RateLimited(&rlConfig).Warnf("virtio-net: guest driver attempted to write device config (offset=%#x, len=%#x)", offset, len(data))
}

// QueueMaxSizes implements virtio.Device: rx and tx, QueueSize each.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// Activated reports whether the device is active.
func (d *Device) Activated() bool { return d.life.Active() }

// tapOffload is the TUNSETOFFLOAD flags for the acknowledged features: the
// TAP may hand us what the guest's driver accepts
// (Firecracker's build_tap_offload_features).
func tapOffload(acked uint64) uint {
	var f uint
	if virtio.HasFeature(acked, FeatureGuestCsum) {
		f |= tap.OffloadCSUM
	}
	if virtio.HasFeature(acked, FeatureGuestUFO) {
		f |= tap.OffloadUFO
	}
	if virtio.HasFeature(acked, FeatureGuestTSO4) {
		f |= tap.OffloadTSO4
	}
	if virtio.HasFeature(acked, FeatureGuestTSO6) {
		f |= tap.OffloadTSO6
	}
	return f
}

// minRxBuffer is the smallest RX chain the device accepts for the
// negotiated features (Firecracker's minimum_rx_buffer_size): without
// MRG_RXBUF a chain must hold a whole frame, a 64 KiB one if the guest
// accepts GSO frames.
func minRxBuffer(acked uint64) uint32 {
	if virtio.HasFeature(acked, FeatureMrgRxbuf) {
		return VnetHdrLen
	}
	if virtio.HasFeature(acked, FeatureGuestTSO4) || virtio.HasFeature(acked, FeatureGuestTSO6) ||
		virtio.HasFeature(acked, FeatureGuestUFO) {
		return MaxBufferSize
	}
	return minRxBufferSmall
}

// Activate implements virtio.Device: it sets the TAP's offloads and starts
// the worker and the TAP reader.
func (d *Device) Activate(mem *memory.Guest, queues []*virtio.Queue, interrupt virtio.Interrupt) error {
	return d.life.Activate(mem, queues, interrupt, func() (*worker, *virtio.Worker, error) {
		if err := d.backend.SetOffload(tapOffload(d.life.AckedFeatures())); err != nil {
			return nil, nil, fmt.Errorf("net: could not set the TAP offload flags: %w", err)
		}
		if d.bufs == nil {
			d.bufs = &hostBuffers{
				tapRx:  make([]byte, MaxBufferSize),
				mmdsRx: make([]byte, MaxBufferSize),
				tx:     make([]byte, MaxBufferSize),
			}
		}
		w := d.newWorker(mem, queues[RxIndex], queues[TxIndex], interrupt, d.bufs)
		if err := d.resumeKept(w); err != nil {
			return nil, nil, err
		}
		w.OnStop(func() {
			// Wake a reader blocked in Read; it sees Done and exits.
			if err := d.backend.SetReadDeadline(time.Unix(1, 0)); err != nil {
				log.Warnf("net: could not interrupt the TAP read: %v", err)
			}
		}, func() {
			// Reads block again for the next activation.
			if err := d.backend.SetReadDeadline(time.Time{}); err != nil {
				log.Warnf("net: could not clear the TAP read deadline: %v", err)
			}
			// For Resume (Reset forgets it).
			d.keep(w)
		})
		w.Go(w.readLoop)
		w.Go(w.run)
		return w, w.Worker, nil
	})
}

// QueueNotify implements virtio.Device: it wakes the worker and never
// blocks. Before activation and after Reset it does nothing. One pending
// kick is enough: the worker drains the queue each time.
func (d *Device) QueueNotify(index int) { d.life.Notify(index) }

// Reset implements virtio.Device: it stops the worker and the TAP reader,
// waits for both, and forgets the queues, memory, interrupt and features.
// Frames the device had read but not delivered are dropped. It never
// fails.
func (d *Device) Reset() error { return d.life.Reset() }

// Close stops the device as Reset does and closes the backend. The device
// cannot be activated again. Later calls do nothing.
func (d *Device) Close() error {
	return d.life.Close(func() error {
		d.rxLim.Stop()
		d.txLim.Stop()
		return d.backend.Close()
	})
}

// tapBackend adapts a *tap.Tap.
type tapBackend struct{ t *tap.Tap }

// NewTapBackend adapts an open *tap.Tap (its File is non-blocking, so
// reads wait on the Go poller and honour deadlines) to Backend.
func NewTapBackend(t *tap.Tap) Backend { return tapBackend{t} }

func (b tapBackend) Read(p []byte) (int, error) {
	n, err := b.t.File.Read(p)
	// tun reports a frame's whole length even when it copied only what
	// fit (tun_put_user returns the total).
	if n > len(p) {
		return len(p), ErrFrameTruncated
	}
	return n, err
}

func (b tapBackend) Write(p []byte) (int, error)       { return b.t.File.Write(p) }
func (b tapBackend) SetReadDeadline(t time.Time) error { return b.t.File.SetReadDeadline(t) }
func (b tapBackend) SetOffload(flags uint) error       { return b.t.SetOffload(flags) }
func (b tapBackend) Close() error                      { return b.t.Close() }

// worker owns both queues between Activate and Reset: a virtio.Queue is not
// safe for concurrent use, so only this goroutine touches them. A second
// goroutine (readLoop) reads frames from the backend, one at a time, when
// the worker asks for one.
type worker struct {
	*virtio.Worker
	d        *Device
	mem      *memory.Guest
	rxq, txq *virtio.Queue
	irq      virtio.Interrupt
	m        *metrics.NetMetrics
	mrg      bool   // MRG_RXBUF negotiated: a frame may span chains
	minRx    uint32 // smallest acceptable RX chain

	rxRetry, txRetry <-chan struct{}

	// want hands the reader a buffer to read one frame into; got returns
	// it. Both have capacity 1 and at most one buffer is out at a time,
	// so neither send blocks.
	want    chan []byte
	got     chan readResult
	reading bool // the reader holds bufs.tapRx

	rxThrottled bool // the rx limiter refused; wait for rxRetry
	txThrottled bool // the tx limiter refused; wait for txRetry

	rx          rxChains // RX chains popped and not yet used
	tapPending  []byte   // a TAP frame read but not yet delivered
	mmdsPending []byte   // an MMDS frame fetched but not yet delivered
	rxUsed      bool     // used entries added to rxq since the last interrupt
	bufs        *hostBuffers
}

type readResult struct {
	buf []byte // the frame (the reader's buffer, resliced)
	err error
}

func (d *Device) newWorker(mem *memory.Guest, rxq, txq *virtio.Queue, irq virtio.Interrupt, bufs *hostBuffers) *worker {
	acked := d.life.AckedFeatures()
	return &worker{
		Worker: virtio.NewWorker(),
		d:      d, mem: mem, rxq: rxq, txq: txq, irq: irq, m: d.m,
		mrg:     virtio.HasFeature(acked, FeatureMrgRxbuf),
		minRx:   minRxBuffer(acked),
		rxRetry: d.rxLim.Unblocked(),
		txRetry: d.txLim.Unblocked(),
		want:    make(chan []byte, 1),
		got:     make(chan readResult, 1),
		bufs:    bufs,
	}
}

// run is the worker's event loop, the counterpart of Firecracker's
// MutEventSubscriber::process for the net device.
func (w *worker) run() {
	for {
		select {
		case <-w.Done():
			return
		case <-w.Wake():
			kicks := w.TakeKicks()
			if kicks&(1<<RxIndex) != 0 {
				w.onRxKick()
			}
			if kicks&(1<<TxIndex) != 0 {
				w.onTxKick()
			}
		case r := <-w.got:
			w.onRead(r)
		case <-w.rxRetry:
			w.m.RxEventRateLimiterCount.Inc()
			w.rxThrottled = false
			w.processRx()
		case <-w.txRetry:
			w.m.TxRateLimiterEventCount.Inc()
			w.txThrottled = false
			w.processTx()
		}
	}
}

func (w *worker) onRxKick() {
	w.m.RxQueueEventCount.Inc()
	if w.rxThrottled {
		// Take the new buffers now; frames wait for the limiter.
		w.parseRxChains()
		w.m.RxRateLimiterThrottled.Inc()
		w.signalRx()
		return
	}
	w.processRx()
}

func (w *worker) onTxKick() {
	w.m.TxQueueEventCount.Inc()
	if w.txThrottled {
		w.m.TxRateLimiterThrottled.Inc()
		return
	}
	w.processTx()
}

// readLoop reads one frame from the backend each time the worker hands it
// a buffer, and passes it back. It blocks in Read on the Go poller; Reset
// wakes it with a read deadline in the past.
func (w *worker) readLoop() {
	var backoff time.Duration
	for {
		var buf []byte
		select {
		case <-w.Done():
			return
		case buf = <-w.want:
		}
		if backoff > 0 {
			// The last read failed: a backend that keeps failing (say the
			// TAP's interface went away) must not spin the worker.
			t := time.NewTimer(backoff)
			select {
			case <-w.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		n, err := w.d.backend.Read(buf)
		if w.Stopping() {
			// A frame read as the device stops goes to the exited hook,
			// which keeps it for Resume (Reset drops it). got has room:
			// only one buffer is ever out.
			if err == nil && n > 0 && n <= len(buf) {
				select {
				case w.got <- readResult{buf: buf[:n]}:
				default:
				}
			}
			return
		}
		if err == nil && (n < 0 || n > len(buf)) {
			n, err = len(buf), ErrFrameTruncated
		}
		if err != nil && !errors.Is(err, ErrFrameTruncated) {
			backoff = min(max(2*backoff, time.Millisecond), time.Second)
		} else {
			backoff = 0
		}
		n = min(max(n, 0), len(buf))
		select {
		case w.got <- readResult{buf: buf[:n], err: err}:
		case <-w.Done():
			return
		}
	}
}

// signal interrupts the driver for queue index if it wants to be told
// about the used entries just added.
func (w *worker) signal(q *virtio.Queue, index int) {
	if err := q.Signal(w.mem, w.irq, index, true); err != nil {
		log.RateLimited(&rlIRQ).Errorf("net: could not signal queue %d: %v", index, err)
		w.m.EventFails.Inc()
	}
}

// addUsed returns a chain to the driver, logging a failure (the used ring
// was validated at activation, so one is beyond a guest mistake).
func (w *worker) addUsed(q *virtio.Queue, head uint16, n uint32) bool {
	if err := q.AddUsed(w.mem, head, n); err != nil {
		log.RateLimited(&rlUsed).Errorf("net: could not add used descriptor: %v", err)
		w.m.EventFails.Inc()
		return false
	}
	return true
}
