package balloon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/vmm"
)

const (
	// ID is the device's identifier in Firecracker (BALLOON_DEV_ID).
	ID = "balloon"
	// QueueSize is the size of every queue.
	QueueSize = virtio.MaxQueueSize
	// ConfigSize is the configuration space: num_pages, actual and
	// free_page_hint_cmd_id, three le32 (no poison_val, as in
	// Firecracker).
	ConfigSize = 12
	// PagesPerMib converts MiB to the 4 KiB pages of num_pages.
	PagesPerMib = 256
	// PFNShift turns a balloon PFN into a guest address: PFNs count 4 KiB
	// pages whatever the guest's page size.
	PFNShift = 12
	// MaxPagesInDesc is the most PFNs one inflate buffer may hold
	// (Linux's VIRTIO_BALLOON_ARRAY_PFNS_MAX).
	MaxPagesInDesc = 256
	// MaxPageCompactBuffer is how many PFNs the device gathers before it
	// sorts them into ranges and discards them.
	MaxPageCompactBuffer = 2048
)

// Queue indices. The stats, hinting and reporting queues exist only when
// configured, in that order after the two fixed ones, so their index
// depends on the configuration (see QueueMaxSizes).
const (
	InflateIndex = 0
	DeflateIndex = 1
)

// Feature bits (VIRTIO_BALLOON_F_*).
const (
	FeatureStatsVQ           = 1
	FeatureDeflateOnOOM      = 2
	FeatureFreePageHint      = 3
	FeatureFreePageReporting = 5
)

// Config space offsets.
const (
	offNumPages = 0
	offActual   = 4
	offHintCmd  = 8
)

// Errors of the API methods. Their texts are Firecracker's BalloonError
// as its VmmError shows it ("Balloon: ..."); the API layer adds "Balloon
// update error: " or "Internal VMM error: ".
var (
	ErrNotActivated      = errors.New("Balloon: Device not activated yet.")
	ErrHintingNotEnabled = errors.New("Balloon: Attempting to use hinting when not enabled")
	ErrStatsDisabled     = errors.New("Balloon: Received stats query when stats are disabled.")
	ErrStatsStateChange  = errors.New("Balloon: Statistics cannot be enabled/disabled after activation.")
)

// TooMuchMemoryError is a target above guest memory, or one whose page
// count overflows 32 bits.
type TooMuchMemoryError struct {
	// Mib is the number Firecracker prints: the requested amount, or the
	// largest representable one on overflow.
	Mib uint32
}

func (e *TooMuchMemoryError) Error() string {
	return fmt.Sprintf("Balloon: Requested memory should be less than %dMiB", e.Mib)
}

// InterruptError is a failure to raise the config interrupt that tells
// the driver about a change.
type InterruptError struct{ Err error }

func (e *InterruptError) Error() string {
	return "Balloon: Received error while sending an interrupt: " + e.Err.Error()
}

func (e *InterruptError) Unwrap() error { return e.Err }

var (
	log = logger.For("main", "devices/virtio/balloon")

	// The driver can trigger these at will, so each is rate-limited.
	rlChain, rlAvail, rlUsed, rlIRQ, rlInflate, rlStats, rlHint, rlReport, rlConfig logger.RateLimiter
)

// Config is the balloon's configuration, as PUT /balloon gives it.
type Config struct {
	AmountMib             uint32
	DeflateOnOOM          bool
	StatsPollingIntervalS uint16
	FreePageHinting       bool
	FreePageReporting     bool
}

type queueKind int

const (
	kindInflate queueKind = iota
	kindDeflate
	kindStats
	kindHint
	kindReport
)

// Device is the virtio-balloon device. It implements virtio.Device and
// virtio.Snapshotter; a transport drives it, and the VMM calls the API
// methods from any goroutine.
type Device struct {
	features  uint64
	kinds     []queueKind // what each queue index is
	statsIdx  int         // stats queue index, -1 without statistics
	hinting   bool
	reporting bool
	m         *metrics.BalloonMetrics

	// mu guards the state below, shared by the API, the transport and the
	// worker. Nobody holds it across guest-memory work, so the API never
	// waits for the worker to finish a queue.
	mu       sync.Mutex
	config   [ConfigSize]byte
	interval uint16
	stats    guestStats
	hint     hintState
	// irq is the transport's interrupt while active, nil otherwise.
	irq virtio.Interrupt
	// refresh is the running worker's, nil while inactive: set with irq,
	// so that UpdateStatsInterval either changes the interval before the
	// worker reads it or finds the worker to tell.
	refresh chan<- struct{}

	// parked: active but suspended (irq is nil, no worker runs). What the
	// API asks of the driver meanwhile waits for Resume: a config
	// interrupt (configPending), a statistics refresh (refreshPending).
	parked         bool
	configPending  bool
	refreshPending bool
	// statsHead is the statistics buffer the driver posted, held while no
	// worker runs (the running worker holds it itself).
	statsHead uint16
	statsHeld bool
	// started: a worker of this activation has run, so the next start is
	// a Resume. restored: RestoreState ran, and the activation it is for
	// has yet to start.
	started  bool
	restored bool

	// life holds the acknowledged features and the running worker, and
	// serialises Activate and Reset.
	life virtio.Lifecycle[*worker]
}

// New returns an inactive balloon device. It fails only when the target
// overflows the 32-bit page count.
func New(cfg Config) (*Device, error) {
	pages, err := mibToPages(cfg.AmountMib)
	if err != nil {
		return nil, err
	}
	d := &Device{
		features: 1 << virtio.FeatureVersion1,
		kinds:    []queueKind{kindInflate, kindDeflate},
		statsIdx: -1,
		interval: cfg.StatsPollingIntervalS,
		m:        &metrics.Default.Balloon,
	}
	if cfg.DeflateOnOOM {
		d.features |= 1 << FeatureDeflateOnOOM
	}
	// The stats queue must not exist at all without the feature (virtio
	// 1.x §5.5.2), so later queues move up.
	if cfg.StatsPollingIntervalS > 0 {
		d.features |= 1 << FeatureStatsVQ
		d.statsIdx = len(d.kinds)
		d.kinds = append(d.kinds, kindStats)
	}
	if cfg.FreePageHinting {
		log.DevPreview("Free Page Hinting", "")
		d.features |= 1 << FeatureFreePageHint
		d.hinting = true
		d.kinds = append(d.kinds, kindHint)
	}
	if cfg.FreePageReporting {
		d.features |= 1 << FeatureFreePageReporting
		d.reporting = true
		d.kinds = append(d.kinds, kindReport)
	}
	binary.LittleEndian.PutUint32(d.config[offNumPages:], pages)
	d.life.Name, d.life.Queues, d.life.ActivateFails = "balloon", len(d.kinds), &d.m.ActivateFails
	d.life.Forget = d.forget
	return d, nil
}

func mibToPages(mib uint32) (uint32, error) {
	if mib > math.MaxUint32/PagesPerMib {
		return 0, &TooMuchMemoryError{Mib: math.MaxUint32 / PagesPerMib}
	}
	return mib * PagesPerMib, nil
}

func (d *Device) u32Locked(off int) uint32 { return binary.LittleEndian.Uint32(d.config[off:]) }

// DeviceType implements virtio.Device: TypeBalloon.
func (d *Device) DeviceType() virtio.DeviceType { return virtio.TypeBalloon }

// AvailableFeatures implements virtio.Device.
func (d *Device) AvailableFeatures() uint64 { return d.features }

// AckFeatures implements virtio.Device.
func (d *Device) AckFeatures(features uint64) { d.life.AckFeatures(features) }

// AckedFeatures returns the features the driver acknowledged.
func (d *Device) AckedFeatures() uint64 { return d.life.AckedFeatures() }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	virtio.ReadConfigBytes(d.config[:], offset, data)
}

// WriteConfig implements virtio.Device. The driver writes actual; like
// Firecracker the device takes any write that fits in the space, and
// drops (with a warning) one that does not.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	if offset > ConfigSize || uint64(len(data)) > ConfigSize-offset {
		log.RateLimited(&rlConfig).Warnf("virtio-balloon: guest driver attempted to write device config out of bounds (offset=%#x, len=%#x)", offset, len(data))
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.config[offset:], data)
}

// QueueMaxSizes implements virtio.Device: inflate, deflate, then stats,
// free page hinting and free page reporting as configured, QueueSize
// each.
func (d *Device) QueueMaxSizes() []uint16 {
	s := make([]uint16, len(d.kinds))
	for i := range s {
		s[i] = QueueSize
	}
	return s
}

// Activated reports whether the device is active (its worker runs, or is
// suspended).
func (d *Device) Activated() bool { return d.life.Active() }

// Activate implements virtio.Device: it starts the worker that serves the
// queues and, with statistics, the polling timer.
func (d *Device) Activate(mem *memory.Guest, queues []*virtio.Queue, interrupt virtio.Interrupt) error {
	return d.life.Activate(mem, queues, interrupt, func() (*worker, *virtio.Worker, error) {
		w := d.start(mem, queues, interrupt)
		return w, w.Worker, nil
	})
}

// start starts a worker for the activation, at Activate and again at each
// Resume, from the state the device keeps. The polling timer starts
// afresh with it.
func (d *Device) start(mem *memory.Guest, queues []*virtio.Queue, irq virtio.Interrupt) *worker {
	w := d.newWorker(mem, queues, irq)
	w.OnStop(func() {
		d.mu.Lock()
		// From here on the API sees a suspended device; Reset's forget
		// then makes it an inactive one.
		d.irq, d.refresh, d.parked = nil, nil, true
		d.mu.Unlock()
	}, func() {
		// The worker has exited: keep its statistics buffer for the
		// next worker or a snapshot.
		d.mu.Lock()
		d.statsHead, d.statsHeld = w.statsHead, w.statsHeld
		d.mu.Unlock()
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.restored {
		d.restored = false
		if d.hinting {
			// As Firecracker does after a restore: the run is over, and
			// the driver may reuse the pages it hinted. The driver hears
			// of it on Resume.
			d.hint.hostCmd = HintCmdDone
			binary.LittleEndian.PutUint32(d.config[offHintCmd:], HintCmdDone)
			d.configPending = true
		}
	}
	resume := d.started
	d.started = true
	w.statsHead, w.statsHeld = d.statsHead, d.statsHeld
	d.statsHeld = false
	d.irq, d.refresh, d.parked = irq, w.refresh, false
	if d.refreshPending {
		d.refreshPending = false
		w.refresh <- struct{}{}
	}
	if resume && d.configPending {
		d.configPending = false
		if err := d.triggerConfigLocked(); err != nil {
			d.m.EventFails.Inc()
			log.RateLimited(&rlIRQ).Errorf("balloon: %v", err)
		}
	}
	interval := d.interval
	w.Go(func() { w.run(interval) })
	return w
}

// Suspend implements virtio.Snapshotter: it stops the worker once the
// chains it popped are returned, and the polling timer with it. The
// statistics buffer the driver posted stays held. API changes made while
// suspended (target, hinting commands, interval) reach the driver on
// Resume.
func (d *Device) Suspend() { d.life.Suspend() }

// Resume implements virtio.Snapshotter: it starts a new worker, which
// looks at every queue, restarts the polling timer and raises the config
// interrupt that changes made while suspended owe the driver.
func (d *Device) Resume() error { return d.life.Resume() }

// QueueNotify implements virtio.Device: it wakes the worker and never
// blocks. Before activation and after Reset it does nothing.
func (d *Device) QueueNotify(index int) { d.life.Notify(index) }

// Reset implements virtio.Device: it stops the worker, waits for it, and
// returns the device to its state before activation, as Firecracker's
// reset does: actual 0, no hinting run, no statistics or held buffer. The
// target (num_pages) stays. It never fails.
func (d *Device) Reset() error { return d.life.Reset() }

// forget is the Lifecycle's Forget: the device state a Reset clears.
func (d *Device) forget() {
	d.mu.Lock()
	defer d.mu.Unlock()
	binary.LittleEndian.PutUint32(d.config[offActual:], 0)
	binary.LittleEndian.PutUint32(d.config[offHintCmd:], HintCmdStop)
	d.stats = guestStats{}
	d.hint = hintState{}
	d.parked, d.configPending, d.refreshPending = false, false, false
	d.statsHeld, d.started, d.restored = false, false, false
}

// activeLocked reports whether the device is active, running or
// suspended; d.mu is held.
func (d *Device) activeLocked() bool { return d.irq != nil || d.parked }

// UpdateAmount sets the balloon's target to mib MiB (PATCH /balloon) and
// tells the driver with a config interrupt. guestMemMib is the guest's
// memory size; the target may not exceed it. The device must be active;
// while it is suspended, the driver hears of the change on Resume.
func (d *Device) UpdateAmount(mib uint32, guestMemMib uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.activeLocked() {
		return ErrNotActivated
	}
	if uint64(mib) > guestMemMib {
		return &TooMuchMemoryError{Mib: mib}
	}
	pages, err := mibToPages(mib)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(d.config[offNumPages:], pages)
	return d.triggerConfigLocked()
}

// triggerConfigLocked raises the config interrupt, or records it for
// Resume while suspended; d.mu is held, which keeps Reset from dropping
// the interrupt meanwhile. The transport's interrupt never calls back
// into the device.
func (d *Device) triggerConfigLocked() error {
	if d.irq == nil {
		d.configPending = true
		return nil
	}
	if err := d.irq.TriggerConfig(); err != nil {
		return &InterruptError{Err: err}
	}
	return nil
}

// UpdateStatsInterval changes the statistics polling interval (PATCH
// /balloon/statistics). Statistics cannot be turned on or off this way;
// a change asks the driver for fresh numbers at once.
func (d *Device) UpdateStatsInterval(seconds uint16) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if seconds == d.interval {
		return nil
	}
	if seconds == 0 || d.interval == 0 {
		return ErrStatsStateChange
	}
	d.interval = seconds
	if d.refresh != nil {
		select {
		case d.refresh <- struct{}{}:
		default:
		}
	} else if d.parked {
		d.refreshPending = true
	}
	return nil
}

// Stats returns the latest statistics (GET /balloon/statistics): the
// target and actual sizes, and each value the driver has reported. It
// only reads what the worker stored, so it never waits for a refresh.
func (d *Device) Stats() (vmm.BalloonStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.interval == 0 {
		return vmm.BalloonStats{}, ErrStatsDisabled
	}
	s := vmm.BalloonStats{
		TargetPages: d.u32Locked(offNumPages),
		ActualPages: d.u32Locked(offActual),
	}
	s.TargetMib = s.TargetPages / PagesPerMib
	s.ActualMib = s.ActualPages / PagesPerMib
	d.stats.fill(&s)
	return s, nil
}

// Config returns the current configuration as GET /balloon reports it;
// amount_mib is the current target.
func (d *Device) Config() vmm.Balloon {
	d.mu.Lock()
	amount := d.u32Locked(offNumPages) / PagesPerMib
	interval := d.interval
	d.mu.Unlock()
	deflate := virtio.HasFeature(d.features, FeatureDeflateOnOOM)
	hinting, reporting := d.hinting, d.reporting
	return vmm.Balloon{
		AmountMib:             &amount,
		DeflateOnOOM:          &deflate,
		StatsPollingIntervalS: &interval,
		FreePageHinting:       &hinting,
		FreePageReporting:     &reporting,
	}
}

// worker owns the queues between Activate and Reset: a virtio.Queue is not
// safe for concurrent use, so only this goroutine touches them.
type worker struct {
	*virtio.Worker
	d      *Device
	mem    *memory.Guest
	queues []*virtio.Queue
	irq    virtio.Interrupt
	m      *metrics.BalloonMetrics
	// discard gives guest pages back to the host; tests watch it.
	discard func(gpa, n uint64) error

	refresh chan struct{} // capacity 1: the stats interval changed

	statsHead uint16 // the held statistics buffer, if statsHeld
	statsHeld bool
	statsBuf  []byte   // copy of one statistics buffer
	pfns      []uint32 // PFNs gathered for compaction
	heads     []uint16 // inflate chains to return after the discard
}

func (d *Device) newWorker(mem *memory.Guest, queues []*virtio.Queue, irq virtio.Interrupt) *worker {
	w := &worker{
		Worker: virtio.NewWorker(),
		d:      d, mem: mem, queues: queues, irq: irq, m: d.m,
		discard: mem.Discard,
		refresh: make(chan struct{}, 1),
		pfns:    make([]uint32, 0, MaxPageCompactBuffer),
		heads:   make([]uint16, 0, QueueSize),
	}
	if d.statsIdx >= 0 {
		w.statsBuf = make([]byte, MaxStatsDescLen)
	}
	return w
}

func (w *worker) run(interval uint16) {
	var tick <-chan time.Time
	var ticker *time.Ticker
	if w.d.statsIdx >= 0 && interval > 0 {
		ticker = time.NewTicker(time.Duration(interval) * time.Second)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case <-w.Done():
			return
		case <-w.Wake():
			p := w.TakeKicks()
			for i, k := range w.d.kinds {
				if p&(1<<i) != 0 && !w.Stopping() {
					w.process(i, k)
				}
			}
		case <-tick:
			w.statsTick()
		case <-w.refresh:
			w.statsTick()
			w.d.mu.Lock()
			iv := w.d.interval
			w.d.mu.Unlock()
			if ticker != nil && iv > 0 {
				ticker.Reset(time.Duration(iv) * time.Second)
			}
		}
	}
}

func (w *worker) process(i int, k queueKind) {
	switch k {
	case kindInflate:
		w.processInflate(i)
	case kindDeflate:
		w.processDeflate(i)
	case kindStats:
		w.processStats(i)
	case kindHint:
		w.processHinting(i)
	case kindReport:
		w.processReporting(i)
	}
}

// pop takes the next chain of queue qi; nil when the queue is empty, its
// avail ring is corrupt (stop processing it) or the worker is stopping.
func (w *worker) pop(qi int, usedAny *bool) *virtio.DescriptorChain {
	return w.Pop(w.queues[qi], w.mem, usedAny, func(f virtio.PopFault, err error) {
		switch f {
		case virtio.CorruptRing:
			// Nothing sensible can be popped until the driver resets the
			// device (Firecracker panics here).
			w.m.EventFails.Inc()
			log.RateLimited(&rlAvail).Errorf("balloon: Could not pop from queue %d: %v", qi, err)
		case virtio.MalformedChain:
			w.m.EventFails.Inc()
			log.RateLimited(&rlChain).Errorf("balloon: Guest gave us a malformed descriptor: %v", err)
		}
	})
}

// addUsed returns a chain with nothing written to it: the balloon never
// writes into the driver's buffers.
func (w *worker) addUsed(qi int, head uint16, usedAny *bool) {
	if err := w.queues[qi].AddUsed(w.mem, head, 0); err != nil {
		w.m.EventFails.Inc()
		log.RateLimited(&rlUsed).Errorf("balloon: Could not add used descriptor to queue %d: %v", qi, err)
		return
	}
	*usedAny = true
}

// signal interrupts the driver for queue qi if anything was returned.
func (w *worker) signal(q *virtio.Queue, qi int, usedAny bool) {
	if err := q.Signal(w.mem, w.irq, qi, usedAny); err != nil {
		w.m.EventFails.Inc()
		log.RateLimited(&rlIRQ).Errorf("balloon: Received error while sending an interrupt: %v", err)
	}
}

// processInflate handles the inflate queue (Firecracker's
// process_inflate). Each buffer is an array of le32 PFNs the driver has
// taken from the guest; the device gathers up to MaxPageCompactBuffer of
// them, sorts them into ranges and discards those, then carries on. A
// buffer that is device-writable or not a whole number of PFNs is
// returned unread.
//
// A round's buffers are returned only after its pages are discarded, as
// Firecracker publishes the used index only then: the driver may reuse a
// page once the host has acknowledged it, and a discard after that would
// wipe the guest's new data.
func (w *worker) processInflate(qi int) {
	w.m.InflateCount.Inc()
	q := w.queues[qi]
	usedAny := false
	for {
		w.pfns, w.heads = w.pfns[:0], w.heads[:0]
		more := false // stopped early: another round may find chains
		for {
			// At most a queue's worth of chains a round, so that a driver
			// republishing empty buffers cannot grow w.heads without bound.
			if len(w.heads) == QueueSize {
				more = true
				break
			}
			c := w.pop(qi, &usedAny)
			if c == nil {
				break // empty, a corrupt ring, or a Reset: nothing more to take
			}
			// Only the first buffer counts, as in Firecracker: Linux sends
			// the array as one.
			d0 := c.Descriptors()[0]
			if !d0.IsWriteOnly() && d0.Len%4 == 0 {
				n := int(d0.Len / 4)
				if n > MaxPagesInDesc {
					// Firecracker leaves such a buffer unreturned; it is
					// handed back here so the driver does not lose it.
					log.RateLimited(&rlInflate).Errorf("Inflate descriptor has bogus page count %d > %d, skipping.", n, MaxPagesInDesc)
					w.heads = append(w.heads, c.Head)
					continue
				}
				if MaxPageCompactBuffer-len(w.pfns) < n {
					q.UndoPop() // next round, after these are discarded
					more = true
					break
				}
				b, err := w.mem.Slice(d0.Addr, uint64(d0.Len)) // inside RAM: the queue checked it
				if err != nil {
					w.m.EventFails.Inc()
					log.RateLimited(&rlInflate).Errorf("balloon: %v", err)
				}
				for ; len(b) >= 4; b = b[4:] {
					w.pfns = append(w.pfns, binary.LittleEndian.Uint32(b))
				}
			}
			w.heads = append(w.heads, c.Head)
		}
		w.discardPFNs(w.pfns)
		for _, h := range w.heads {
			w.addUsed(qi, h, &usedAny)
		}
		if !more || w.Stopping() {
			break
		}
	}
	w.signal(q, qi, usedAny)
}

// discardPFNs discards the pages listed, as ranges of consecutive PFNs.
// Pages outside guest RAM are skipped with a log line: only the driver's
// own memory can be given back.
func (w *worker) discardPFNs(pfns []uint32) {
	for _, r := range compactPFNs(pfns) {
		lo := uint64(r.pfn) << PFNShift
		hi := lo + uint64(r.n)<<PFNShift // < 2^45: no overflow
		var covered uint64
		for _, reg := range w.mem.Regions() {
			a, b := max(lo, reg.Start), min(hi, reg.End())
			if a >= b {
				continue
			}
			covered += b - a
			if err := w.discard(a, b-a); err != nil {
				log.RateLimited(&rlInflate).Errorf("Error removing memory range: %v", err)
			}
		}
		if covered < hi-lo {
			log.RateLimited(&rlInflate).Warnf("balloon: skipping %d page(s) outside guest memory in PFNs [%#x, +%d)", (hi-lo-covered)>>PFNShift, r.pfn, r.n)
		}
	}
}

// pfnRange is n consecutive pages from pfn.
type pfnRange struct{ pfn, n uint32 }

// compactPFNs sorts pfns in place and returns the ranges of consecutive
// PFNs they form, each PFN once (Firecracker's
// compact_page_frame_numbers).
func compactPFNs(pfns []uint32) []pfnRange {
	if len(pfns) == 0 {
		return nil
	}
	slices.Sort(pfns)
	out := []pfnRange{{pfns[0], 1}}
	for i := 1; i < len(pfns); i++ {
		p := pfns[i]
		if p == pfns[i-1] {
			continue // a duplicate
		}
		last := &out[len(out)-1]
		// Cannot wrap: last covers distinct PFNs up to pfns[i-1] < p.
		if p == last.pfn+last.n {
			last.n++
		} else {
			out = append(out, pfnRange{p, 1})
		}
	}
	return out
}

// processDeflate handles the deflate queue: the driver tells the device
// which pages it takes back, and nothing needs doing, since a discarded
// page refaults as a zero page on the guest's next touch. The buffers are
// returned unread.
func (w *worker) processDeflate(qi int) {
	w.m.DeflateCount.Inc()
	usedAny := false
	for c := w.pop(qi, &usedAny); c != nil; c = w.pop(qi, &usedAny) {
		w.addUsed(qi, c.Head, &usedAny)
	}
	w.signal(w.queues[qi], qi, usedAny)
}
