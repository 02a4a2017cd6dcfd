package legacy

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/metrics"
)

// countIRQ counts Trigger calls and fails them with err if set.
type countIRQ struct {
	n   atomic.Int64
	err error
}

func (c *countIRQ) Trigger() error { c.n.Add(1); return c.err }

// syncBuf is a goroutine-safe bytes.Buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestSerial(t testing.TB, cfg SerialConfig) *Serial {
	t.Helper()
	s, err := NewSerial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func rd(d interface{ Read(uint64, []byte) }, off uint64) uint8 {
	b := []byte{0}
	d.Read(off, b)
	return b[0]
}

func wr(d interface{ Write(uint64, []byte) }, off uint64, v uint8) {
	d.Write(off, []byte{v})
}

// step is one port access: a write of val, or a read expecting want.
type step struct {
	name  string
	write bool
	off   uint64
	val   uint8 // written, or expected when reading
}

func runSteps(t *testing.T, d interface {
	Read(uint64, []byte)
	Write(uint64, []byte)
}, steps []step) {
	t.Helper()
	for i, s := range steps {
		if s.write {
			wr(d, s.off, s.val)
			continue
		}
		if got := rd(d, s.off); got != s.val {
			t.Errorf("step %d (%s): read +%d = %#02x, want %#02x", i, s.name, s.off, got, s.val)
		}
	}
}

func w(name string, off uint64, v uint8) step { return step{name, true, off, v} }
func r(name string, off uint64, v uint8) step { return step{name, false, off, v} }

func TestSerialResetValues(t *testing.T) {
	s := newTestSerial(t, SerialConfig{})
	runSteps(t, s, []step{
		r("IER", regIER, 0x00),
		r("IIR", regIIR, 0xc1),
		r("LCR", regLCR, 0x03),
		r("MCR", regMCR, 0x08),
		r("LSR", regLSR, 0x60),
		r("MSR", regMSR, 0xb0),
		r("SCR", regSCR, 0x00),
		w("DLAB on", regLCR, 0x83),
		r("DLL", regData, 0x0c),
		r("DLM", regIER, 0x00),
	})
}

// TestSerialLinuxProbe replays the register accesses of Linux's 8250
// autoconfig (drivers/tty/serial/8250/8250_port.c) and checks that the UART
// is detected as a 16550A without producing output or interrupts.
func TestSerialLinuxProbe(t *testing.T) {
	irq := &countIRQ{}
	out := &syncBuf{}
	s := newTestSerial(t, SerialConfig{Interrupt: irq, Out: out})
	runSteps(t, s, []step{
		// IER scratch test: writable low nibble.
		r("save IER", regIER, 0x00),
		w("IER=0", regIER, 0x00),
		r("IER reads 0", regIER, 0x00),
		w("IER=0xf", regIER, 0x0f),
		r("IER reads 0xf", regIER, 0x0f),
		w("IER upper bits dropped", regIER, 0xff),
		r("IER masked", regIER, 0x0f),
		w("restore IER", regIER, 0x00),
		// Loopback test: MCR LOOP|OUT2|RTS must read back MSR 0x90.
		w("MCR loop", regMCR, 0x1a),
		r("MSR in loop", regMSR, 0x90),
		w("MCR loop all outputs", regMCR, 0x1f),
		r("MSR all set", regMSR, 0xf0),
		w("restore MCR", regMCR, 0x08),
		r("MSR out of loop", regMSR, 0xb0),
		// EFR probe (LCR 0xBF), then FIFO detection through IIR bits 7:6.
		w("LCR conf B", regLCR, 0xbf),
		w("EFR=0", regIIR, 0x00),
		w("LCR=0", regLCR, 0x00),
		w("FCR enable FIFO", regIIR, 0x01),
		r("IIR FIFO bits", regIIR, 0xc1),
		// Divisor latch round trip.
		w("DLAB", regLCR, 0x80),
		w("DLL", regData, 0x01),
		w("DLM", regIER, 0x02),
		r("DLL back", regData, 0x01),
		r("DLM back", regIER, 0x02),
		w("8N1", regLCR, 0x03),
		r("LCR back", regLCR, 0x03),
		r("IER not DLM", regIER, 0x00),
		// Scratch register.
		w("SCR 55", regSCR, 0x55),
		r("SCR 55", regSCR, 0x55),
		w("SCR aa", regSCR, 0xaa),
		r("SCR aa", regSCR, 0xaa),
		r("LSR idle", regLSR, 0x60),
	})
	s.Flush(time.Second)
	if out.String() != "" || irq.n.Load() != 0 {
		t.Fatalf("probe produced output %q, %d interrupts", out.String(), irq.n.Load())
	}
}

func TestSerialTHROutputAndInterrupt(t *testing.T) {
	irq := &countIRQ{}
	out := &syncBuf{}
	s := newTestSerial(t, SerialConfig{Interrupt: irq, Out: out})
	m := &metrics.Default.Uart
	wc := m.WriteCount.Count()

	wr(s, regData, 'a') // THRE interrupt not enabled yet
	if irq.n.Load() != 0 {
		t.Fatal("interrupt with IER=0")
	}
	wr(s, regIER, ierTHRE)
	if irq.n.Load() != 0 {
		t.Fatal("enabling THRE raised an interrupt (vm-superio does not)")
	}
	wr(s, regData, 'b')
	wr(s, regData, 'c') // THRE still pending: no second edge
	if n := irq.n.Load(); n != 1 {
		t.Fatalf("interrupts = %d, want 1", n)
	}
	if got := rd(s, regIIR); got != 0xc2 {
		t.Fatalf("IIR = %#x, want 0xc2", got)
	}
	if got := rd(s, regIIR); got != 0xc1 {
		t.Fatalf("IIR after read = %#x, want 0xc1", got)
	}
	wr(s, regData, '\n')
	if n := irq.n.Load(); n != 2 {
		t.Fatalf("interrupts = %d, want 2", n)
	}
	if got := rd(s, regLSR); got != 0x60 {
		t.Fatalf("LSR = %#x", got)
	}
	if !s.Flush(5 * time.Second) {
		t.Fatal("flush timed out")
	}
	if got := out.String(); got != "abc\n" {
		t.Fatalf("output %q", got)
	}
	if d := m.WriteCount.Count() - wc; d != 4 {
		t.Fatalf("write_count += %d, want 4", d)
	}
}

func TestSerialRXInput(t *testing.T) {
	irq := &countIRQ{}
	s := newTestSerial(t, SerialConfig{Interrupt: irq})
	m := &metrics.Default.Uart
	rc := m.ReadCount.Count()

	if err := s.EnqueueInput([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if irq.n.Load() != 0 || rd(s, regLSR)&lsrDR == 0 {
		t.Fatal("input without RDA enabled: want DR and no interrupt")
	}
	if got := rd(s, regData); got != 'x' {
		t.Fatalf("RBR = %q", got)
	}
	wr(s, regIER, ierRDA)
	if err := s.EnqueueInput([]byte("ab")); err != nil {
		t.Fatal(err)
	}
	if n := irq.n.Load(); n != 1 {
		t.Fatalf("interrupts = %d, want 1", n)
	}
	runSteps(t, s, []step{
		r("LSR DR", regLSR, 0x61),
		r("IIR RDA", regIIR, 0xc4),
		r("IIR cleared by read", regIIR, 0xc1),
		r("first byte", regData, 'a'),
		r("DR still set", regLSR, 0x61),
		r("second byte", regData, 'b'),
		r("DR clear", regLSR, 0x60),
		r("empty RBR", regData, 0),
	})
	if d := m.ReadCount.Count() - rc; d != 4 {
		t.Fatalf("read_count += %d, want 4", d)
	}

	if err := s.EnqueueInput(make([]byte, SerialFIFOSize+1)); !errors.Is(err, ErrFIFOFull) {
		t.Fatalf("oversized input: %v", err)
	}
	if s.FIFOCapacity() != SerialFIFOSize {
		t.Fatal("refused input was partly enqueued")
	}
	if err := s.EnqueueInput(bytes.Repeat([]byte{'z'}, SerialFIFOSize)); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueInput([]byte{1}); !errors.Is(err, ErrFIFOFull) {
		t.Fatalf("input to full FIFO: %v", err)
	}
	if err := s.EnqueueInput(nil); err != nil {
		t.Fatalf("empty input to full FIFO: %v", err)
	}
}

func TestSerialLoopback(t *testing.T) {
	irq := &countIRQ{}
	out := &syncBuf{}
	s := newTestSerial(t, SerialConfig{Interrupt: irq, Out: out})
	wr(s, regIER, ierRDA|ierTHRE)
	wr(s, regMCR, mcrLoop|mcrOUT2)
	wr(s, regData, 'L')
	if n := irq.n.Load(); n != 1 {
		t.Fatalf("interrupts = %d, want 1 (RDA only, no THRE in loopback)", n)
	}
	if got := rd(s, regIIR); got != 0xc4 {
		t.Fatalf("IIR = %#x", got)
	}
	if got := rd(s, regData); got != 'L' {
		t.Fatalf("looped byte %q", got)
	}
	for range SerialFIFOSize + 5 {
		wr(s, regData, 'x')
	}
	if c := s.FIFOCapacity(); c != 0 {
		t.Fatalf("FIFO capacity %d after overfilling in loopback", c)
	}
	// Host input is discarded while in loopback.
	if err := s.EnqueueInput(nil); err != nil {
		t.Fatal(err)
	}
	for range SerialFIFOSize {
		rd(s, regData)
	}
	if err := s.EnqueueInput([]byte("host")); err != nil || s.FIFOCapacity() != SerialFIFOSize {
		t.Fatalf("loopback input: err %v, capacity %d", err, s.FIFOCapacity())
	}
	s.Flush(time.Second)
	if out.String() != "" {
		t.Fatalf("loopback leaked output %q", out.String())
	}
}

// allowN lets the first n bytes through.
type allowN struct{ n int }

func (a *allowN) AllowBytes(n int) bool {
	if a.n >= n {
		a.n -= n
		return true
	}
	return false
}

func TestSerialRateLimiter(t *testing.T) {
	out := &syncBuf{}
	s := newTestSerial(t, SerialConfig{Out: out, Limiter: &allowN{3}})
	m := &metrics.Default.Uart
	dropped, wc := m.RateLimiterDroppedBytes.Count(), m.WriteCount.Count()
	for _, c := range []byte("hello") {
		wr(s, regData, c)
	}
	s.Flush(5 * time.Second)
	if out.String() != "hel" {
		t.Fatalf("output %q", out.String())
	}
	if d := m.RateLimiterDroppedBytes.Count() - dropped; d != 2 {
		t.Fatalf("rate_limiter_dropped_bytes += %d, want 2", d)
	}
	// As in Firecracker, a byte the limiter drops still counts as written.
	if d := m.WriteCount.Count() - wc; d != 5 {
		t.Fatalf("write_count += %d, want 5", d)
	}
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	out     syncBuf
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	return b.out.Write(p)
}

func TestSerialOutputNeverBlocks(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	s := newTestSerial(t, SerialConfig{Out: bw, OutputBuffer: 4})
	m := &metrics.Default.Uart
	missed, errs := m.MissedWriteCount.Count(), m.ErrorCount.Count()
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			wr(s, regData, byte('0'+i%10))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("THR writes blocked on a stuck writer")
	}
	dm := m.MissedWriteCount.Count() - missed
	// At most one chunk in flight plus 4 queued bytes got through.
	if dm < 100-2*4 || dm > 100-4 {
		t.Fatalf("missed_write_count += %d", dm)
	}
	if de := m.ErrorCount.Count() - errs; de != dm {
		t.Fatalf("error_count += %d, want %d", de, dm)
	}
	if s.Flush(10 * time.Millisecond) {
		t.Fatal("flush reported success with a stuck writer")
	}
	close(bw.release)
	if !s.Flush(5 * time.Second) {
		t.Fatal("flush timed out")
	}
	if got := len(bw.out.String()); got != int(100-dm) {
		t.Fatalf("wrote %d bytes, want %d", got, 100-dm)
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }

func TestSerialWriterError(t *testing.T) {
	s := newTestSerial(t, SerialConfig{Out: failWriter{}})
	m := &metrics.Default.Uart
	missed := m.MissedWriteCount.Count()
	wr(s, regData, 'a')
	s.Flush(5 * time.Second)
	if d := m.MissedWriteCount.Count() - missed; d != 1 {
		t.Fatalf("missed_write_count += %d, want 1", d)
	}
}

func TestSerialBadAccess(t *testing.T) {
	s := newTestSerial(t, SerialConfig{})
	m := &metrics.Default.Uart
	mr, mw := m.MissedReadCount.Count(), m.MissedWriteCount.Count()
	b := []byte{0xee, 0xee}
	s.Read(0, b)
	s.Write(regSCR, []byte{1, 2})
	s.Read(0x100, b[:1])
	s.Write(0x107, b[:1])
	if b[0] != 0xee || b[1] != 0xee {
		t.Fatal("wide read changed data")
	}
	if rd(s, regSCR) != 0 {
		t.Fatal("wide write reached SCR")
	}
	if d := m.MissedReadCount.Count() - mr; d != 2 {
		t.Fatalf("missed_read_count += %d", d)
	}
	if d := m.MissedWriteCount.Count() - mw; d != 2 {
		t.Fatalf("missed_write_count += %d", d)
	}
}

func TestSerialInterruptError(t *testing.T) {
	irq := &countIRQ{err: errors.New("eventfd broken")}
	s := newTestSerial(t, SerialConfig{Interrupt: irq})
	m := &metrics.Default.Uart
	errs := m.ErrorCount.Count()
	wr(s, regIER, ierTHRE|ierRDA)
	wr(s, regData, 'a')
	if d := m.ErrorCount.Count() - errs; d != 1 {
		t.Fatalf("error_count += %d, want 1", d)
	}
	var ie *InterruptError
	if err := s.EnqueueInput([]byte("a")); !errors.As(err, &ie) || s.FIFOCapacity() != SerialFIFOSize-1 {
		t.Fatalf("EnqueueInput: %v, capacity %d", err, s.FIFOCapacity())
	}
}

func TestSerialStateRestore(t *testing.T) {
	s := newTestSerial(t, SerialConfig{})
	wr(s, regIER, ierRDA)
	wr(s, regSCR, 0x42)
	if err := s.EnqueueInput([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	st := s.SaveState()
	if string(st.InBuffer) != "abc" || st.Scratch != 0x42 || st.InterruptEnable != ierRDA {
		t.Fatalf("state %+v", st)
	}
	irq := &countIRQ{}
	s2 := newTestSerial(t, SerialConfig{Interrupt: irq, State: &st})
	if irq.n.Load() != 1 {
		t.Fatalf("restore raised %d interrupts, want 1 (RDA pending)", irq.n.Load())
	}
	runSteps(t, s2, []step{
		r("IIR", regIIR, 0xc4),
		r("a", regData, 'a'),
		r("b", regData, 'b'),
		r("c", regData, 'c'),
		r("LSR", regLSR, 0x60),
		r("SCR", regSCR, 0x42),
	})
	st.InBuffer = make([]byte, SerialFIFOSize+1)
	if _, err := NewSerial(SerialConfig{State: &st}); err == nil {
		t.Fatal("oversized FIFO restored")
	}
}

func TestSerialPumpInput(t *testing.T) {
	irq := &countIRQ{}
	s := newTestSerial(t, SerialConfig{Interrupt: irq})
	wr(s, regIER, ierRDA)
	want := make([]byte, 3*SerialFIFOSize+7)
	for i := range want {
		want[i] = byte(i)
	}
	pumpErr := make(chan error, 1)
	go func() { pumpErr <- s.PumpInput(bytes.NewReader(want)) }()
	var got []byte
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		if rd(s, regLSR)&lsrDR == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		got = append(got, rd(s, regData))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("guest read %d bytes, want %d (equal %v)", len(got), len(want), bytes.Equal(got, want[:len(got)]))
	}
	select {
	case err := <-pumpErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pump did not return at EOF")
	}

	// Close releases a pump waiting for the guest to drain the FIFO.
	s3 := newTestSerial(t, SerialConfig{})
	go func() { pumpErr <- s3.PumpInput(bytes.NewReader(make([]byte, 2*SerialFIFOSize))) }()
	for s3.FIFOCapacity() != 0 {
		time.Sleep(time.Millisecond)
	}
	s3.Close()
	select {
	case err := <-pumpErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pump did not return on Close")
	}
}

func TestSerialConcurrentAccess(t *testing.T) {
	out := &syncBuf{}
	s := newTestSerial(t, SerialConfig{Interrupt: &countIRQ{}, Out: out})
	wr(s, regIER, ierRDA|ierTHRE)
	var wg sync.WaitGroup
	for v := range 4 {
		wg.Go(func() {
			for i := range 200 {
				wr(s, regData, byte('a'+v))
				rd(s, uint64(i%8))
				_ = s.EnqueueInput([]byte{byte(i)})
			}
		})
	}
	wg.Wait()
	s.Flush(5 * time.Second)
	if n := len(out.String()); n != 800 {
		t.Fatalf("output %d bytes, want 800", n)
	}
}

// slowWriter copies what it is given, slowly, so that the vCPU side keeps
// appending while a batch is being written.
type slowWriter struct{ out syncBuf }

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(200 * time.Microsecond)
	return w.out.Write(p)
}

// TestSerialOutputIntact: bytes written in bursts with idle gaps between
// them (the queue drains, then refills while a batch is in flight) come
// out exactly as the guest wrote them.
func TestSerialOutputIntact(t *testing.T) {
	w := &slowWriter{}
	s := newTestSerial(t, SerialConfig{Out: w})
	var want []byte
	for burst := range 200 {
		for i := range 1 + burst%37 {
			b := byte('A' + (burst+i)%26)
			wr(s, regData, b)
			want = append(want, b)
		}
		if burst%3 == 0 {
			time.Sleep(300 * time.Microsecond)
		}
	}
	if !s.Flush(5 * time.Second) {
		t.Fatal("output did not drain")
	}
	if got := w.out.String(); got != string(want) {
		t.Fatalf("output corrupted:\n got %q\nwant %q", got, want)
	}
}
