package metrics

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/squib-vmm/squib/internal/logger"
)

// Metrics is the whole set of Firecracker metrics plus the sink they are
// written to. Groups that are not per-device are plain fields: count with
// m.PutAPIRequests.DriveCount.Inc(). Use New; a Metrics must not be copied.
type Metrics struct {
	APIServer        APIServerMetrics        // "api_server"
	Balloon          BalloonMetrics          // "balloon"
	DeprecatedAPI    DeprecatedAPIMetrics    // "deprecated_api"
	GetAPIRequests   GetAPIRequestsMetrics   // "get_api_requests"
	I8042            I8042Metrics            // "i8042"
	Uart             UartMetrics             // "uart"
	LatenciesUS      LatenciesMetrics        // "latencies_us"
	Logger           LoggerMetrics           // "logger"
	MMDS             MMDSMetrics             // "mmds"
	PatchAPIRequests PatchAPIRequestsMetrics // "patch_api_requests"
	PutAPIRequests   PutAPIRequestsMetrics   // "put_api_requests"
	Seccomp          SeccompMetrics          // "seccomp"
	Vcpu             VcpuMetrics             // "vcpu"
	Vmm              VmmMetrics              // "vmm"
	Signals          SignalMetrics           // "signals"
	Vsock            VsockMetrics            // "vsock"
	Entropy          EntropyMetrics          // "entropy"
	Interrupts       InterruptMetrics        // "interrupts"
	MemoryHotplug    MemoryHotplugMetrics    // "memory_hotplug"

	block *family[BlockMetrics]
	net   *family[NetMetrics]
	pmem  *family[PmemMetrics]
	parts []part // top-level groups in output order

	id    atomic.Pointer[[]byte] // rendered `,"id":"..."`, nil when off
	props atomic.Pointer[[]byte] // rendered `,"properties":{...}`, nil when unset

	mu   sync.Mutex // serialises Init and Write; guards sink and w
	sink *logger.Sink
	w    writer
	now  func() time.Time // replaced by tests for a fixed timestamp
}

// Default is the process-wide metrics, Firecracker's global METRICS:
// devices and subsystems count into it directly.
var Default = New()

func init() {
	logger.SetCounters(&Default.Logger.MissedLogCount, &Default.Logger.RateLimitedLogCount)
}

// New returns zeroed metrics with no sink. Only Default is wired to the
// logger's counters; other instances are for tests.
func New() *Metrics {
	m := &Metrics{
		block: newFamily[BlockMetrics]("block"),
		net:   newFamily[NetMetrics]("net"),
		pmem:  newFamily[PmemMetrics]("pmem"),
		now:   time.Now,
	}
	add := func(name string, g any) {
		key := appendString([]byte{','}, name)
		m.parts = append(m.parts, &staticPart{key: append(key, ':'), g: newGroup(g)})
	}
	// Firecracker's FirecrackerMetrics field order; flattened device
	// proxies sit where their field is.
	add("api_server", &m.APIServer)
	add("balloon", &m.Balloon)
	m.parts = append(m.parts, m.block)
	add("deprecated_api", &m.DeprecatedAPI)
	add("get_api_requests", &m.GetAPIRequests)
	add("i8042", &m.I8042)
	// The legacy devices also emit "rtc" here, on aarch64 only; squib is x86.
	add("uart", &m.Uart)
	add("latencies_us", &m.LatenciesUS)
	add("logger", &m.Logger)
	add("mmds", &m.MMDS)
	m.parts = append(m.parts, m.net)
	add("patch_api_requests", &m.PatchAPIRequests)
	add("put_api_requests", &m.PutAPIRequests)
	add("seccomp", &m.Seccomp)
	add("vcpu", &m.Vcpu)
	add("vmm", &m.Vmm)
	add("signals", &m.Signals)
	add("vsock", &m.Vsock)
	add("entropy", &m.Entropy)
	m.parts = append(m.parts, m.pmem)
	// Firecracker emits "vhost_user_block_<id>" groups here, one per
	// vhost-user drive. squib has no vhost-user devices, so there are none.
	add("interrupts", &m.Interrupts)
	add("memory_hotplug", &m.MemoryHotplug)
	return m
}

// Block returns the metrics of drive id (group "block_<id>"), creating them
// on first use; later calls with the same id return the same counters, so
// a drive that is replaced or re-attached keeps counting where it left off.
func (m *Metrics) Block(id string) *BlockMetrics { return m.block.get(id) }

// Net returns the metrics of network interface id (group "net_<id>").
func (m *Metrics) Net(id string) *NetMetrics { return m.net.get(id) }

// Pmem returns the metrics of pmem device id (group "pmem_<id>").
func (m *Metrics) Pmem(id string) *PmemMetrics { return m.pmem.get(id) }

// RemoveBlock drops the "block_<id>" group. Firecracker never drops a
// device's group, not even after hot-unplug; call this only where that
// difference is wanted.
func (m *Metrics) RemoveBlock(id string) { m.block.remove(id) }

// RemoveNet drops the "net_<id>" group; see RemoveBlock.
func (m *Metrics) RemoveNet(id string) { m.net.remove(id) }

// RemovePmem drops the "pmem_<id>" group; see RemoveBlock.
func (m *Metrics) RemovePmem(id string) { m.pmem.remove(id) }

// ErrReinit is returned by Init after a successful Init. Its text is
// Firecracker's MetricsError::AlreadyInitialized.
var ErrReinit = errors.New("Reinitialization of metrics not allowed.") //nolint:staticcheck // Firecracker's exact text

// InitErrorPrefix is what Firecracker puts before an Init error
// (MetricsConfigError::InitializationFailure). PUT /metrics answers
// "Metrics error: " + InitErrorPrefix + err.Error(); the CLI logs
// "Could not initialize metrics: " + InitErrorPrefix + err.Error().
const InitErrorPrefix = "Cannot initialize the metrics system due to bad user input: "

// OpenError is returned by Init when the path cannot be opened.
type OpenError struct {
	Err error // the error from logger.OpenSink
}

// Error renders the OS error Rust-style, e.g.
// "No such file or directory (os error 2)", with no path, as Firecracker does.
func (e *OpenError) Error() string { return logger.OSErrorText(e.Err) }

// Unwrap returns the open error.
func (e *OpenError) Unwrap() error { return e.Err }

// WriteError is returned by Write when the line could not be written.
type WriteError struct {
	Err error // the write error
}

// Error returns "Failed to write metrics: <Rust-style OS error>".
// FlushMetrics reports it as "Internal VMM error: Metrics error: " + this.
func (e *WriteError) Error() string { return "Failed to write metrics: " + logger.OSErrorText(e.Err) }

// Unwrap returns the write error.
func (e *WriteError) Unwrap() error { return e.Err }

// Init sets the metrics output, opened like the log file (logger.OpenSink:
// create, read-write, non-blocking, not truncated; a FIFO works without a
// reader). Metrics can be initialised once: later calls return ErrReinit.
// As in Firecracker the path is opened (and so created) before that check,
// and an open error wins over ErrReinit.
func (m *Metrics) Init(path string) error {
	s, err := logger.OpenSink(path)
	if err != nil {
		return &OpenError{Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sink != nil {
		s.Close()
		return ErrReinit
	}
	m.sink = s
	return nil
}

// Config is the body of PUT /metrics (and the "metrics" object of
// --config-file).
type Config struct {
	Path       string            // metrics_path
	EmitID     bool              // emit_id: add the instance ID as top-level "id"
	Properties map[string]string // properties: nil omits the key, empty emits {}
}

// Configure does what PUT /metrics does: Init(c.Path), then, only if that
// succeeded, enables "id" with the logger's instance ID and sets
// "properties". Errors are Init's.
func (m *Metrics) Configure(c Config) error {
	if err := m.Init(c.Path); err != nil {
		return err
	}
	if c.EmitID {
		m.SetEmitID(logger.Default.InstanceID())
	}
	if c.Properties != nil {
		m.SetProperties(c.Properties)
	}
	return nil
}

// SetEmitID makes every line carry `"id":"<id>"` right after the
// timestamp; an empty id turns it off.
func (m *Metrics) SetEmitID(id string) {
	if id == "" {
		m.id.Store(nil)
		return
	}
	b := appendString([]byte(`,"id":`), id)
	m.id.Store(&b)
}

// SetProperties makes every line carry `"properties":{...}` (keys in byte
// order, as Firecracker's BTreeMap) after the id. A nil map removes it; an
// empty one prints {}.
func (m *Metrics) SetProperties(props map[string]string) {
	if props == nil {
		m.props.Store(nil)
		return
	}
	b := []byte(`,"properties":{`)
	for i, k := range slices.Sorted(maps.Keys(props)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, props[k])
	}
	b = append(b, '}')
	m.props.Store(&b)
}

// Write appends one JSON line to the sink with a single write. Without a
// sink it does nothing and returns nil, leaving counters untouched. On
// success every IncMetric restarts from zero for the next line. On failure
// it increments logger.metrics_fails and returns a *WriteError; the counts
// are kept for the next line rather than lost (Firecracker loses them).
func (m *Metrics) Write() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sink == nil {
		return nil
	}
	if err := m.sink.Write(m.render()); err != nil {
		m.Logger.MetricsFails.Inc()
		return &WriteError{Err: err}
	}
	for _, c := range m.w.commits {
		c.m.prev.Store(c.v)
	}
	return nil
}

// render builds the line in m.w.b and queues counter baselines in
// m.w.commits. m.mu must be held.
func (m *Metrics) render() []byte {
	w := &m.w
	w.b = append(w.b[:0], `{"utc_timestamp_ms":`...)
	w.b = strconv.AppendInt(w.b, m.now().UnixMilli(), 10)
	w.commits = w.commits[:0]
	if id := m.id.Load(); id != nil {
		w.b = append(w.b, *id...)
	}
	if p := m.props.Load(); p != nil {
		w.b = append(w.b, *p...)
	}
	for _, p := range m.parts {
		p.emit(w)
	}
	w.b = append(w.b, '}', '\n')
	return w.b
}

// WritePeriod is Firecracker's WRITE_METRICS_PERIOD_MS.
const WritePeriod = 60 * time.Second

// Periodic writes metrics on a timer; see StartPeriodic.
type Periodic struct {
	m        *Metrics
	log      logger.Handle
	mu       sync.Mutex
	paused   bool
	pending  bool          // a tick arrived while paused
	kick     chan struct{} // asks the loop for a catch-up write
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// StartPeriodic writes one line at once (Firecracker does, to report the
// start-up time) and then one every interval (WritePeriod in squib). A
// failed periodic write increments logger.missed_metrics_count and logs
// Firecracker's error. Firecracker starts this when the VM boots.
func (m *Metrics) StartPeriodic(interval time.Duration) *Periodic {
	p := &Periodic{
		m:    m,
		log:  logger.For("main", "metrics"),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	p.write()
	go p.run(interval)
	return p
}

func (p *Periodic) run(interval time.Duration) {
	defer close(p.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			paused := p.paused
			p.pending = paused
			p.mu.Unlock()
			if !paused {
				p.write()
			}
		case <-p.kick:
			p.write()
		}
	}
}

func (p *Periodic) write() {
	if err := p.m.Write(); err != nil {
		p.m.Logger.MissedMetricsCount.Inc()
		// Firecracker wraps the already-prefixed error once more; keep it.
		p.log.Errorf("Failed to write metrics: %s", err)
	}
}

// Pause stops periodic writes, as Firecracker's frozen event loop does
// while the VM is paused.
func (p *Periodic) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume restarts periodic writes. If a period expired while paused, one
// line is written right away, as Firecracker's expired timerfd fires as
// soon as its event loop runs again.
func (p *Periodic) Resume() {
	p.mu.Lock()
	p.paused = false
	catchUp := p.pending
	p.pending = false
	p.mu.Unlock()
	if catchUp {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// Stop ends periodic writing and waits for an in-flight write. It does not
// write a final line; Firecracker does that separately on VMM teardown.
func (p *Periodic) Stop() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}
