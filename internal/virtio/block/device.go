package block

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
)

const (
	// QueueSize is the size of the one request queue.
	QueueSize = virtio.MaxQueueSize
	// FeatureRO (VIRTIO_BLK_F_RO) is offered for a read-only drive.
	FeatureRO = 5
	// FeatureFlush (VIRTIO_BLK_F_FLUSH) is offered with CacheWriteback.
	FeatureFlush = 9
	// configLen is the configuration space: capacity u64.
	configLen = 8
)

// CacheType is the drive's cache_type.
type CacheType int

const (
	// CacheUnsafe (the default) does not offer VIRTIO_BLK_F_FLUSH, so the
	// guest does not ask for flushes; one sent anyway is still honoured.
	CacheUnsafe CacheType = iota
	// CacheWriteback offers VIRTIO_BLK_F_FLUSH, and Close flushes the file.
	CacheWriteback
)

// String returns the API name of the cache type.
func (c CacheType) String() string {
	switch c {
	case CacheUnsafe:
		return "Unsafe"
	case CacheWriteback:
		return "Writeback"
	}
	return "CacheType(" + strconv.Itoa(int(c)) + ")"
}

// Config describes a drive for New.
type Config struct {
	// ID is the drive_id; the device counts in metrics group
	// "block_<ID>".
	ID string
	// File is the backing file, opened by the caller read-write, or
	// read-only for a ReadOnly drive. The device owns it from New on,
	// whether New succeeds or not.
	File *os.File
	// ReadOnly offers VIRTIO_BLK_F_RO and fails every write with IOERR.
	ReadOnly bool
	// Cache is the cache type.
	Cache CacheType
	// Limiter rate-limits requests; nil means unlimited. The device keeps
	// it (or an unlimited one) for PATCH updates: see Device.Limiter.
	Limiter *ratelimit.RateLimiter
}

// ErrClosed is returned by calls on a closed device.
var ErrClosed = errors.New("block: device closed")

var (
	// Request processing runs on the device's worker, which stands in for
	// Firecracker's VMM thread.
	log = logger.For("main", "devices/virtio/block")

	// A driver can trigger these at will, so each is rate-limited.
	rlParse, rlAvail, rlUsed, rlIRQ, rlConfig logger.RateLimiter
	rlExecute, rlUnsupported, rlStatus        logger.RateLimiter
)

// disk is a backing file with what the device derives from it when it is
// attached (Firecracker's DiskProperties).
type disk struct {
	file     *os.File
	nsectors uint64
	id       [IDBytes]byte
}

// newDisk measures f as Firecracker does, by seeking to its end, which
// also works for a block device (whose Stat size is 0).
func newDisk(f *os.File) (*disk, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("block: size of %s: %w", f.Name(), err)
	}
	if size%SectorSize != 0 {
		log.Warnf("Disk size %d is not a multiple of sector size %d; the remainder will not be visible to the guest.", size, SectorSize)
	}
	return &disk{file: f, nsectors: uint64(size) >> SectorShift, id: imageID(f)}, nil
}

// imageID is the GET_ID answer for f: kvmtool's decimal st_dev, st_rdev
// and st_ino run together, cut or zero-padded to IDBytes, or all zeros
// if f cannot be stat'ed.
func imageID(f *os.File) (id [IDBytes]byte) {
	fi, err := f.Stat()
	if err != nil {
		log.Warnf("Could not generate device id. We'll use a default.")
		return id
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		log.Warnf("Could not generate device id. We'll use a default.")
		return id
	}
	s := strconv.AppendUint(nil, uint64(st.Dev), 10)
	s = strconv.AppendUint(s, uint64(st.Rdev), 10)
	s = strconv.AppendUint(s, st.Ino, 10)
	copy(id[:], s)
	return id
}

// flush makes the file's data durable. fdatasync rather than Firecracker's
// fsync: the guest can only observe data (and the size needed to read it
// back), not timestamps.
func (dk *disk) flush() error {
	rc, err := dk.file.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: dk.file.Name(), Err: serr}
	}
	return nil
}

// Device is the virtio-block device. It implements virtio.Device; a
// transport (virtio/mmio) drives it.
type Device struct {
	id       string
	readOnly bool
	cache    CacheType
	features uint64
	limiter  *ratelimit.RateLimiter // never nil
	m        *metrics.BlockMetrics

	// capacity is the config space's value, kept apart from disk so that
	// a config read (under the transport's lock, on a vCPU) never waits
	// for a request in flight, and is one atomic load, never torn.
	capacity atomic.Uint64

	// diskMu guards disk. The worker holds it shared for each request, so
	// UpdateFile swaps (and closes) a file only between requests.
	diskMu sync.RWMutex
	disk   *disk // nil once closed

	// life holds the acknowledged features and the running worker, and
	// serialises Activate, Reset, UpdateFile and Close.
	life virtio.Lifecycle[*worker]
	// capacityChanged is set by RestoreState when the guest saw another
	// capacity than the backing file's: Resume then raises a config
	// interrupt. Guarded by life's lock.
	capacityChanged bool
}

// New returns an inactive block device over cfg.File. On error the file
// is closed.
func New(cfg Config) (*Device, error) {
	if cfg.File == nil {
		return nil, errors.New("block: no backing file")
	}
	if cfg.Cache != CacheUnsafe && cfg.Cache != CacheWriteback {
		cfg.File.Close()
		return nil, fmt.Errorf("block: invalid cache type %d", int(cfg.Cache))
	}
	dk, err := newDisk(cfg.File)
	if err != nil {
		cfg.File.Close()
		return nil, err
	}
	m := metrics.Default.Block(cfg.ID)
	d := &Device{
		id:       cfg.ID,
		readOnly: cfg.ReadOnly,
		cache:    cfg.Cache,
		features: 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx,
		limiter:  cfg.Limiter,
		m:        m,
		disk:     dk,
		life:     virtio.Lifecycle[*worker]{Name: "block", Queues: 1, ActivateFails: &m.ActivateFails, ErrClosed: ErrClosed},
	}
	if d.limiter == nil {
		d.limiter = ratelimit.New(nil, nil)
	}
	// A reset driver reads the capacity again when it probes.
	d.life.Forget = func() { d.capacityChanged = false }
	if cfg.Cache == CacheWriteback {
		d.features |= 1 << FeatureFlush
	}
	if cfg.ReadOnly {
		d.features |= 1 << FeatureRO
	}
	d.capacity.Store(dk.nsectors)
	return d, nil
}

// ID returns the drive_id.
func (d *Device) ID() string { return d.id }

// Limiter returns the device's rate limiter, never nil; PATCH
// /drives/{id} calls its Update. RestoreState replaces it, so fetch it
// anew after a restore.
func (d *Device) Limiter() *ratelimit.RateLimiter { return d.limiter }

// Capacity returns the disk size in 512-byte sectors, as the guest sees
// it in the configuration space.
func (d *Device) Capacity() uint64 { return d.capacity.Load() }

// UpdateFile makes f the backing file (PATCH /drives/{id} with a new
// path_on_host): it waits for the request in flight, if any, swaps the
// file, re-reads the capacity, raises a config interrupt if the device is
// active, and closes the old file. The device owns f from the call on: on
// error f is closed and the old file stays.
func (d *Device) UpdateFile(f *os.File) error {
	if f == nil {
		d.m.UpdateFails.Inc()
		return errors.New("block: no backing file")
	}
	dk, err := newDisk(f)
	if err != nil {
		f.Close()
		d.m.UpdateFails.Inc()
		return err
	}
	err = d.life.Exclusive(func(w *worker) {
		d.diskMu.Lock()
		old := d.disk
		d.disk = dk
		d.capacity.Store(dk.nsectors)
		d.diskMu.Unlock()
		// Only an active device has a driver to tell; a suspended one
		// tells it on Resume.
		if d.life.Suspended() {
			d.capacityChanged = true
		}
		if w != nil {
			if err := w.irq.TriggerConfig(); err != nil {
				log.RateLimited(&rlIRQ).Errorf("block: config interrupt: %v", err)
				d.m.EventFails.Inc()
			}
		}
		d.m.UpdateCount.Inc()
		if old.file != f {
			if err := old.file.Close(); err != nil {
				log.Warnf("block: closing the old backing file: %v", err)
			}
		}
	})
	if err != nil { // closed
		f.Close()
		d.m.UpdateFails.Inc()
	}
	return err
}

// Close stops the device if it is still active, flushes the file with
// CacheWriteback (as Firecracker does when it drops the device), and
// closes it. Later calls return nil.
func (d *Device) Close() error {
	return d.life.Close(func() error {
		d.limiter.Stop()
		d.diskMu.Lock()
		dk := d.disk
		d.disk = nil
		d.diskMu.Unlock()
		var err error
		if d.cache == CacheWriteback {
			if err = dk.flush(); err != nil {
				log.Errorf("Failed to drain ops and flush block data: %v", err)
			}
		}
		if cerr := dk.file.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// DeviceType implements virtio.Device: TypeBlock.
func (d *Device) DeviceType() virtio.DeviceType { return virtio.TypeBlock }

// AvailableFeatures implements virtio.Device.
func (d *Device) AvailableFeatures() uint64 { return d.features }

// AckFeatures implements virtio.Device.
func (d *Device) AckFeatures(features uint64) { d.life.AckFeatures(features) }

// AckedFeatures returns the features the driver acknowledged (for a
// snapshot).
func (d *Device) AckedFeatures() uint64 { return d.life.AckedFeatures() }

// ReadConfig implements virtio.Device: the capacity in sectors.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	var cfg [configLen]byte
	binary.LittleEndian.PutUint64(cfg[:], d.capacity.Load())
	virtio.ReadConfigBytes(cfg[:], offset, data)
}

// WriteConfig implements virtio.Device: the configuration space is
// read-only, so a write is dropped and counted in cfg_fails.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	d.m.CfgFails.Inc()
	log.RateLimited(&rlConfig).Warnf("virtio-block: guest driver attempted to write device config (offset=%#x, len=%#x)", offset, len(data))
}

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
// wake-up is enough: the worker drains the whole queue each time it wakes
// (as an eventfd read takes all kicks at once).
func (d *Device) QueueNotify(index int) { d.life.Notify(index) }

// Reset implements virtio.Device: it stops the worker, waits for it to
// finish the request in flight and exit, and forgets the queue, memory,
// interrupt and acknowledged features. It never fails.
func (d *Device) Reset() error { return d.life.Reset() }

// worker owns the queue between Activate and Reset: a virtio.Queue is not
// safe for concurrent use, so only this goroutine touches it.
type worker struct {
	*virtio.Worker
	d        *Device
	mem      *memory.Guest
	q        *virtio.Queue
	irq      virtio.Interrupt
	limiter  *ratelimit.RateLimiter
	m        *metrics.BlockMetrics
	readOnly bool
	iov      [][]byte // data buffers of the request at hand, reused
}

func (d *Device) newWorker(mem *memory.Guest, q *virtio.Queue, irq virtio.Interrupt) *worker {
	return &worker{
		Worker: virtio.NewWorker(),
		d:      d, mem: mem, q: q, irq: irq,
		limiter: d.limiter, m: d.m, readOnly: d.readOnly,
	}
}

func (w *worker) run() {
	unblocked := w.limiter.Unblocked()
	for {
		select {
		case <-w.Done():
			return
		case <-w.Wake():
			// Firecracker's process_queue_event.
			w.m.QueueEventCount.Inc()
			if w.limiter.IsBlocked() {
				// The refused chain and those behind it wait for the
				// limiter's wake-up.
				w.m.RateLimiterThrottledEvents.Inc()
				continue
			}
			w.process()
		case <-unblocked:
			// Firecracker's process_rate_limiter_event. A wake-up left
			// over from before a reset is harmless: one more look at
			// the queue.
			w.m.RateLimiterEventCount.Inc()
			w.process()
		}
	}
}

// process serves every available request (Firecracker's process_queue)
// until the queue is empty, the limiter refuses or the device is being
// reset, then interrupts the driver if it returned anything.
func (w *worker) process() {
	usedAny := false
	for {
		c := w.Pop(w.q, w.mem, &usedAny, w.popFault)
		if c == nil {
			break
		}
		if n, err := w.q.Len(w.mem); err == nil {
			w.m.RemainingReqsCount.Add(uint64(n))
		}
		n, ok := w.handle(c)
		if !ok {
			// Back on the queue for the limiter's wake-up.
			w.q.UndoPop()
			w.m.RateLimiterThrottledEvents.Inc()
			break
		}
		usedAny = true
		if err := w.q.AddUsed(w.mem, c.Head, n); err != nil {
			log.RateLimited(&rlUsed).Errorf("Failed to add available descriptor head %d: %v", c.Head, err)
		}
	}
	if err := w.q.Signal(w.mem, w.irq, 0, usedAny); err != nil {
		log.RateLimited(&rlIRQ).Errorf("block: %v", err)
		w.m.EventFails.Inc()
	}
	if !usedAny {
		w.m.NoAvailBuffer.Inc()
	}
}

// popFault logs and counts a ring error met by Pop.
func (w *worker) popFault(f virtio.PopFault, err error) {
	switch f {
	case virtio.CorruptRing:
		log.RateLimited(&rlAvail).Errorf("block: Could not pop from the block queue: %v", err)
		w.m.EventFails.Inc()
	case virtio.MalformedChain:
		// A chain the queue rejects fails to parse, for Firecracker.
		log.RateLimited(&rlParse).Errorf("Failed to parse available descriptor chain: %v", err)
		w.m.ExecuteFails.Inc()
	}
}

// handle parses and serves one chain and returns its used length, or ok
// false when the limiter refuses it (nothing was done).
func (w *worker) handle(c *virtio.DescriptorChain) (n uint32, ok bool) {
	w.d.diskMu.RLock()
	defer w.d.diskMu.RUnlock()
	dk := w.d.disk
	req, err := parse(c, dk.nsectors)
	if err != nil {
		log.RateLimited(&rlParse).Errorf("Failed to parse available descriptor chain: %v", err)
		w.m.ExecuteFails.Inc()
		return 0, true
	}
	if !w.consume(req) {
		return 0, false
	}
	return w.execute(c, req, dk), true
}

// consume charges a request to the limiter: an op, then the data bytes of
// a transfer, with the op refunded if the bytes are refused (Firecracker's
// Request::rate_limit).
func (w *worker) consume(req request) bool {
	if req.typ == TypeIn || req.typ == TypeOut {
		return w.limiter.ConsumeRequest(uint64(req.dataLen))
	}
	return w.limiter.Consume(1, ratelimit.Ops)
}
