package legacy

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/metrics"
)

// COM1 as Firecracker wires it.
const (
	SerialBase = 0x3f8 // first port
	SerialSize = 8     // ports claimed on the bus
	SerialIRQ  = 4     // GSI of the interrupt line
)

// SerialFIFOSize is the capacity of the receive FIFO in bytes.
const SerialFIFOSize = 64

// DefaultOutputBuffer is the output queue size used when
// SerialConfig.OutputBuffer is 0. It matches a Linux pipe's buffer, which
// is what Firecracker's non-blocking stdout can absorb before it drops.
const DefaultOutputBuffer = 64 << 10

// Register offsets. With LCR.DLAB set, offsets 0 and 1 are the divisor
// latch instead of RBR/THR and IER.
const (
	regData = 0 // RBR (read) / THR (write); DLL with DLAB
	regIER  = 1 // DLM with DLAB
	regIIR  = 2 // FCR on write (ignored: the FIFO is always on)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

const (
	ierRDA   = 0x01
	ierTHRE  = 0x02
	ierValid = 0x0f

	iirFIFO = 0xc0 // always reported: a 16550A with FIFOs enabled
	iirNone = 0x01
	iirTHRE = 0x02
	iirRDA  = 0x04

	lcrDLAB = 0x80

	lsrDR   = 0x01
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80
)

// Reset values, those of vm-superio (divisor 12 = 9600 baud, 8N1).
const (
	defaultDLL = 0x0c
	defaultDLM = 0x00
	defaultIIR = iirNone
	defaultLCR = 0x03
	defaultLSR = lsrTHRE | lsrTEMT
	defaultMCR = mcrOUT2
	defaultMSR = msrDSR | msrCTS | msrDCD
)

// ErrFIFOFull is returned by EnqueueInput when the input does not fit in
// the receive FIFO; nothing is enqueued then.
var ErrFIFOFull = errors.New("serial: no space left in FIFO")

// errOutputFull reports a byte dropped because the output queue was full,
// the counterpart of Firecracker's EAGAIN on a non-blocking stdout.
var errOutputFull = errors.New("output buffer full")

// InterruptError wraps a failure of the serial's Interrupt.
type InterruptError struct{ Err error }

// Error returns vm-superio's wording.
func (e *InterruptError) Error() string { return "Failed to trigger interrupt: " + e.Err.Error() }

// Unwrap returns the Interrupt's error.
func (e *InterruptError) Unwrap() error { return e.Err }

// OutputLimiter is a token bucket on serial output (PUT /serial's
// rate_limiter). AllowBytes takes n tokens and reports whether it could;
// refused bytes are dropped and counted in uart.rate_limiter_dropped_bytes.
// It is called with the serial's lock held, once per output byte.
type OutputLimiter interface {
	AllowBytes(n int) bool
}

// SerialConfig configures NewSerial.
type SerialConfig struct {
	// Interrupt is the IRQ 4 line; nil means no interrupts.
	Interrupt devices.Interrupt
	// Out receives guest output (stdout or the serial_out_path file); nil
	// discards it, like Firecracker's Sink. It is written from a goroutine
	// owned by the Serial, never from a vCPU.
	Out io.Writer
	// Limiter, if not nil, rate-limits output.
	Limiter OutputLimiter
	// OutputBuffer bounds the bytes queued for Out; 0 means
	// DefaultOutputBuffer.
	OutputBuffer int
	// State, if not nil, is restored as by RestoreState (snapshot load).
	State *SerialState
}

var (
	vcpuLog = logger.For("fc_vcpu", "devices/legacy")
	mainLog = logger.For("main", "devices/legacy")

	serialWriteErrLimiter logger.RateLimiter
	serialOutErrLimiter   logger.RateLimiter
	serialInErrLimiter    logger.RateLimiter
)

var _ devices.Device = (*Serial)(nil)

// Serial is a 16550A UART. Output never blocks a vCPU: bytes written to THR
// go to a bounded queue that a goroutine copies to Out; when Out is slower
// than the guest and the queue is full, bytes are dropped and counted in
// uart.missed_write_count (and uart.error_count), which is what Firecracker
// does when its non-blocking stdout returns EAGAIN. Input arrives through
// EnqueueInput or PumpInput.
type Serial struct {
	mu                                     sync.Mutex
	dll, dlm, ier, iir, lcr, lsr, mcr, msr uint8
	scr                                    uint8
	fifo                                   [SerialFIFOSize]byte
	head, n                                int // ring buffer start and length

	irq     devices.Interrupt
	limiter OutputLimiter
	out     *outputQueue // nil: output discarded

	ready     chan struct{} // signalled when the guest empties the FIFO
	closed    chan struct{}
	closeOnce sync.Once
}

// NewSerial returns a UART in its reset state, or in cfg.State. It starts
// the output goroutine when cfg.Out is set; Close stops it. It fails only
// when cfg.State is invalid or its pending interrupt cannot be raised.
func NewSerial(cfg SerialConfig) (*Serial, error) {
	s := &Serial{
		dll: defaultDLL, dlm: defaultDLM, iir: defaultIIR, lcr: defaultLCR,
		lsr: defaultLSR, mcr: defaultMCR, msr: defaultMSR,
		irq:     cfg.Interrupt,
		limiter: cfg.Limiter,
		ready:   make(chan struct{}, 1),
		closed:  make(chan struct{}),
	}
	if cfg.State != nil {
		if err := s.RestoreState(*cfg.State); err != nil {
			return nil, err
		}
	}
	if cfg.Out != nil {
		size := cfg.OutputBuffer
		if size <= 0 {
			size = DefaultOutputBuffer
		}
		s.out = newOutputQueue(cfg.Out, size)
		go s.out.run()
	}
	return s, nil
}

// Read implements devices.Device. Only 1-byte accesses are served; others
// leave data alone and count uart.missed_read_count.
func (s *Serial) Read(offset uint64, data []byte) {
	if len(data) != 1 || offset > 0xff {
		metrics.Default.Uart.MissedReadCount.Inc()
		return
	}
	s.mu.Lock()
	data[0] = s.readReg(uint8(offset))
	s.mu.Unlock()
}

// Write implements devices.Device. Only 1-byte accesses are served; others
// count uart.missed_write_count.
func (s *Serial) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset > 0xff {
		metrics.Default.Uart.MissedWriteCount.Inc()
		return
	}
	s.mu.Lock()
	err := s.writeReg(uint8(offset), data[0])
	s.mu.Unlock()
	if err != nil {
		vcpuLog.RateLimited(&serialWriteErrLimiter).Errorf("Failed the write to serial: %v", err)
		metrics.Default.Uart.ErrorCount.Inc()
	}
}

func (s *Serial) dlab() bool { return s.lcr&lcrDLAB != 0 }

func (s *Serial) readReg(off uint8) uint8 {
	switch {
	case off == regData && s.dlab():
		return s.dll
	case off == regIER && s.dlab():
		return s.dlm
	}
	switch off {
	case regData:
		s.delInterrupt(iirRDA)
		var b uint8
		if s.n > 0 {
			b = s.fifo[s.head]
			s.head = (s.head + 1) % SerialFIFOSize
			s.n--
		}
		if s.n == 0 {
			s.lsr &^= lsrDR
			// Tell PumpInput there is room again (vm-superio's
			// in_buffer_empty event).
			select {
			case s.ready <- struct{}{}:
			default:
			}
		}
		metrics.Default.Uart.ReadCount.Inc()
		return b
	case regIER:
		return s.ier
	case regIIR:
		// Reading IIR acknowledges every pending cause, RDA included:
		// vm-superio's behaviour, which Linux's 8250 driver copes with.
		v := s.iir | iirFIFO
		s.iir = iirNone
		return v
	case regLCR:
		return s.lcr
	case regMCR:
		return s.mcr
	case regLSR:
		return s.lsr
	case regMSR:
		if s.mcr&mcrLoop == 0 {
			return s.msr
		}
		// In loopback the modem inputs are wired to the MCR outputs;
		// Linux's 8250 probe checks this (MCR=0x1a must read MSR=0x9x).
		v := s.msr &^ (msrDSR | msrCTS | msrRI | msrDCD)
		if s.mcr&mcrDTR != 0 {
			v |= msrDSR
		}
		if s.mcr&mcrRTS != 0 {
			v |= msrCTS
		}
		if s.mcr&mcrOUT1 != 0 {
			v |= msrRI
		}
		if s.mcr&mcrOUT2 != 0 {
			v |= msrDCD
		}
		return v
	case regSCR:
		return s.scr
	}
	return 0
}

func (s *Serial) writeReg(off, v uint8) error {
	switch {
	case off == regData && s.dlab():
		s.dll = v
		return nil
	case off == regIER && s.dlab():
		s.dlm = v
		return nil
	}
	switch off {
	case regData:
		if s.mcr&mcrLoop != 0 {
			// Loopback: the byte comes back as input, or is lost if the
			// FIFO is full; nothing reaches the output.
			if s.n < SerialFIFOSize {
				s.push(v)
				return s.rdaInterrupt()
			}
			return nil
		}
		err := s.output(v)
		// THR is "empty" again at once, whether or not the byte made it.
		if terr := s.thrInterrupt(); terr != nil {
			return terr
		}
		return err
	case regIER:
		// Enabling THRE here raises nothing (vm-superio); Linux detects
		// that at probe time and polls LSR.THRE instead (UART_BUG_TXEN).
		s.ier = v & ierValid
	case regLCR:
		s.lcr = v
	case regMCR:
		s.mcr = v
	case regSCR:
		s.scr = v
	}
	// FCR, LSR and MSR writes are ignored.
	return nil
}

// output sends one THR byte on its way. Counting follows Firecracker's
// SerialOut: a byte the limiter drops still counts as written.
func (s *Serial) output(b uint8) error {
	m := &metrics.Default.Uart
	if s.out == nil {
		m.WriteCount.Inc()
		return nil
	}
	if s.limiter != nil && !s.limiter.AllowBytes(1) {
		m.RateLimiterDroppedBytes.Inc()
		m.WriteCount.Inc()
		return nil
	}
	if !s.out.put(b) {
		m.MissedWriteCount.Inc()
		return errOutputFull
	}
	m.WriteCount.Inc()
	return nil
}

func (s *Serial) push(b uint8) {
	s.fifo[(s.head+s.n)%SerialFIFOSize] = b
	s.n++
	s.lsr |= lsrDR
}

func (s *Serial) trigger() error {
	if s.irq == nil {
		return nil
	}
	if err := s.irq.Trigger(); err != nil {
		return &InterruptError{Err: err}
	}
	return nil
}

func (s *Serial) addInterrupt(bits uint8) {
	s.iir &^= iirNone
	s.iir |= bits
}

func (s *Serial) delInterrupt(bits uint8) {
	s.iir &^= bits
	if s.iir == 0 {
		s.iir = iirNone
	}
}

// thrInterrupt and rdaInterrupt raise the line only when the cause is
// enabled and not already pending, so the guest sees one edge per cause.
func (s *Serial) thrInterrupt() error {
	if s.ier&ierTHRE != 0 && s.iir&iirTHRE == 0 {
		s.addInterrupt(iirTHRE)
		return s.trigger()
	}
	return nil
}

func (s *Serial) rdaInterrupt() error {
	if s.ier&ierRDA != 0 && s.iir&iirRDA == 0 {
		s.addInterrupt(iirRDA)
		return s.trigger()
	}
	return nil
}

// FIFOCapacity returns the free space in the receive FIFO.
func (s *Serial) FIFOCapacity() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SerialFIFOSize - s.n
}

// EnqueueInput puts host input (stdin) into the receive FIFO, sets LSR.DR
// and raises the receive interrupt if the guest enabled it. As in
// Firecracker, input larger than the free space is refused whole with
// ErrFIFOFull, and input arriving while the guest has the UART in loopback
// is discarded without error. A failing Interrupt gives an
// *InterruptError, the bytes being enqueued all the same.
func (s *Serial) EnqueueInput(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(data) > SerialFIFOSize-s.n {
		return ErrFIFOFull
	}
	_, err := s.enqueueLocked(data)
	return err
}

// enqueueLocked enqueues what fits and returns how many bytes of data it
// consumed (all of them in loopback, where input is dropped).
func (s *Serial) enqueueLocked(data []byte) (int, error) {
	if s.mcr&mcrLoop != 0 {
		return len(data), nil
	}
	if len(data) == 0 {
		return 0, nil
	}
	free := SerialFIFOSize - s.n
	if free == 0 {
		return 0, ErrFIFOFull
	}
	k := min(free, len(data))
	for _, b := range data[:k] {
		s.push(b)
	}
	return k, s.rdaInterrupt()
}

// PumpInput copies r (stdin in raw mode) into the receive FIFO until r
// returns an error or io.EOF, or the Serial is closed; run it in its own
// goroutine. It reads at most the FIFO's free space at a time and, when
// the FIFO is full, waits until the guest has drained it, as Firecracker
// stops polling stdin then. It returns nil on EOF or Close, else r's error.
// A Read blocked in r is not interrupted by Close.
func (s *Serial) PumpInput(r io.Reader) error {
	buf := make([]byte, SerialFIFOSize)
	for {
		free := s.waitSpace()
		if free == 0 {
			return nil
		}
		n, rerr := r.Read(buf[:free])
		pending := buf[:n]
		for len(pending) > 0 {
			s.mu.Lock()
			k, err := s.enqueueLocked(pending)
			s.mu.Unlock()
			if err != nil && !errors.Is(err, ErrFIFOFull) {
				mainLog.RateLimited(&serialInErrLimiter).Errorf("Failed to enqueue serial input: %v", err)
				metrics.Default.Uart.ErrorCount.Inc()
			}
			pending = pending[k:]
			// Only loopback writes by the guest can have eaten the space
			// we saw; wait for it to come back rather than drop input.
			if len(pending) > 0 && s.waitSpace() == 0 {
				return nil
			}
		}
		if rerr != nil {
			mainLog.Warnf("Detached the serial input due to peer close/error.")
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}

// waitSpace blocks until the FIFO has room and returns it, or returns 0
// once the Serial is closed.
func (s *Serial) waitSpace() int {
	for {
		select {
		case <-s.closed:
			return 0
		default:
		}
		if free := s.FIFOCapacity(); free > 0 {
			return free
		}
		select {
		case <-s.ready:
		case <-s.closed:
			return 0
		}
	}
}

// Flush waits up to timeout for queued output to reach Out and reports
// whether it did. Call it before the process exits so the guest's last
// words are not lost. It polls, being meant for shutdown only.
func (s *Serial) Flush(timeout time.Duration) bool {
	if s.out == nil {
		return true
	}
	deadline := time.Now().Add(timeout)
	for !s.out.drained() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// Close stops PumpInput and the output goroutine, which first writes what
// is already queued. Output written afterwards is dropped. Close does not
// wait; use Flush for that. It is idempotent.
func (s *Serial) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.out != nil {
			s.out.close()
		}
	})
}

// outputQueue decouples vCPUs from the output writer.
type outputQueue struct {
	w     io.Writer
	limit int

	mu     sync.Mutex
	buf    []byte // queued, not yet handed to w
	busy   bool   // a Write to w is in progress
	closed bool

	wake chan struct{} // cap 1: buf became non-empty
	stop chan struct{}
}

func newOutputQueue(w io.Writer, limit int) *outputQueue {
	return &outputQueue{w: w, limit: limit, wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

// put queues b, or reports false if the queue is full or closed.
func (q *outputQueue) put(b byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.buf) >= q.limit {
		return false
	}
	q.buf = append(q.buf, b)
	if len(q.buf) == 1 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (q *outputQueue) drained() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf) == 0 && !q.busy
}

func (q *outputQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	close(q.stop)
}

// run writes queued bytes in batches (one write(2) for many guest bytes)
// until the queue is closed and empty.
func (q *outputQueue) run() {
	var spare []byte
	for {
		q.mu.Lock()
		chunk := q.buf
		if len(chunk) > 0 {
			// Swap buffers only when taking data: the vCPU appends to
			// q.buf while chunk is written, so they must never share an
			// array (spare is the array written last time, now idle).
			q.buf = spare[:0]
		}
		q.busy = len(chunk) > 0
		closed := q.closed
		q.mu.Unlock()
		if len(chunk) == 0 {
			if closed {
				return
			}
			select {
			case <-q.wake:
			case <-q.stop:
			}
			continue
		}
		n, err := q.w.Write(chunk)
		if lost := len(chunk) - min(max(n, 0), len(chunk)); err != nil || lost > 0 {
			if err == nil {
				err = io.ErrShortWrite
			}
			// These bytes were counted in write_count when queued; count
			// them as missed too so the loss is visible.
			metrics.Default.Uart.MissedWriteCount.Add(uint64(lost))
			metrics.Default.Uart.ErrorCount.Inc()
			vcpuLog.RateLimited(&serialOutErrLimiter).Errorf("Failed the write to serial: %d bytes lost: %v", lost, err)
		}
		spare = chunk
	}
}
