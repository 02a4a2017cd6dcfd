package virtio_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// testWorker is a device worker as the devices build theirs: it embeds the
// control block and counts the kicks it sees.
type testWorker struct {
	*virtio.Worker
	kicks atomic.Uint32
	woken chan struct{}
}

func newTestWorker() *testWorker {
	return &testWorker{Worker: virtio.NewWorker(), woken: make(chan struct{}, 64)}
}

func (w *testWorker) run() {
	for {
		select {
		case <-w.Done():
			return
		case <-w.Wake():
			w.kicks.Or(w.TakeKicks())
			w.woken <- struct{}{}
		}
	}
}

func testLifecycle(fails *metrics.IncMetric) *virtio.Lifecycle[*testWorker] {
	return &virtio.Lifecycle[*testWorker]{Name: "test", Queues: 2, ActivateFails: fails}
}

func queues(n int) []*virtio.Queue {
	qs := make([]*virtio.Queue, n)
	for i := range qs {
		qs[i] = virtio.NewQueue(16)
	}
	return qs
}

func TestLifecycleActivateChecks(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, 0x10000)
	var fails metrics.IncMetric
	l := testLifecycle(&fails)
	started := 0
	start := func() (*testWorker, *virtio.Worker, error) {
		started++
		w := newTestWorker()
		w.Go(w.run)
		return w, w.Worker, nil
	}
	for _, tc := range []struct {
		mem  *memory.Guest
		qs   []*virtio.Queue
		irq  virtio.Interrupt
		want string
	}{
		{nil, queues(2), &virtiotest.IRQ{}, "test: activation without memory or interrupt"},
		{mem, queues(2), nil, "test: activation without memory or interrupt"},
		{mem, queues(3), &virtiotest.IRQ{}, "test: activation with 3 queues, want 2"},
		{mem, []*virtio.Queue{virtio.NewQueue(16), nil}, &virtiotest.IRQ{}, "test: activation with 2 queues, want 2"},
	} {
		if err := l.Activate(tc.mem, tc.qs, tc.irq, start); err == nil || err.Error() != tc.want {
			t.Fatalf("Activate: %v, want %q", err, tc.want)
		}
	}
	if started != 0 || l.Active() || fails.Count() != 4 {
		t.Fatalf("started %d, active %v, fails %d", started, l.Active(), fails.Count())
	}
	startErr := errors.New("no backend")
	if err := l.Activate(mem, queues(2), &virtiotest.IRQ{}, func() (*testWorker, *virtio.Worker, error) {
		return nil, nil, startErr
	}); err != startErr || fails.Count() != 5 || l.Active() {
		t.Fatalf("failing start: %v, fails %d", err, fails.Count())
	}
	l.AckFeatures(7)
	if err := l.Activate(mem, queues(2), &virtiotest.IRQ{}, start); err != nil {
		t.Fatal(err)
	}
	if err := l.Activate(mem, queues(2), &virtiotest.IRQ{}, start); err == nil || err.Error() != "test: device already activated" {
		t.Fatalf("second Activate: %v", err)
	}
	if !l.Active() || l.Current() == nil || l.AckedFeatures() != 7 || fails.Count() != 6 {
		t.Fatal("not active after Activate")
	}
	forgot := 0
	l.Forget = func() { forgot++ }
	w := l.Current()
	l.Reset()
	if l.Active() || l.Current() != nil || l.AckedFeatures() != 0 || forgot != 1 || w.Running() != 0 || !w.Stopping() {
		t.Fatal("still active after Reset")
	}

	// Close: once, with release; then Activate and Exclusive fail.
	released := 0
	if err := l.Activate(mem, queues(2), &virtiotest.IRQ{}, start); err != nil {
		t.Fatal(err)
	}
	w = l.Current()
	for range 2 {
		if err := l.Close(func() error { released++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if released != 1 || l.Active() || w.Running() != 0 {
		t.Fatalf("released %d times, active %v", released, l.Active())
	}
	if err := l.Activate(mem, queues(2), &virtiotest.IRQ{}, start); err == nil || !strings.Contains(err.Error(), "test: device closed") {
		t.Fatalf("Activate after Close: %v", err)
	}
	if err := l.Exclusive(func(*testWorker) { t.Fatal("ran after Close") }); err == nil {
		t.Fatal("Exclusive after Close succeeded")
	}
	l.ErrClosed = errors.New("custom")
	if err := l.Exclusive(func(*testWorker) {}); err != l.ErrClosed {
		t.Fatalf("Exclusive after Close: %v", err)
	}
}

// TestLifecycleNotifyDuringReset: a kick never waits behind a Reset that
// is waiting for the worker, and Reset waits for every goroutine.
func TestLifecycleNotifyDuringReset(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, 0x10000)
	l := testLifecycle(new(metrics.IncMetric))
	release := make(chan struct{})
	exited := make(chan struct{})
	var w *testWorker
	err := l.Activate(mem, queues(2), &virtiotest.IRQ{}, func() (*testWorker, *virtio.Worker, error) {
		w = newTestWorker()
		w.OnStop(nil, func() { close(exited) })
		w.Go(w.run)
		// A goroutine that exits only when released, well after Done.
		w.Go(func() {
			<-w.Done()
			<-release
		})
		return w, w.Worker, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Notify(1)
	l.Notify(5)  // out of range: ignored
	l.Notify(-1) // likewise
	select {
	case <-w.woken:
	case <-time.After(10 * time.Second):
		t.Fatal("kick not delivered")
	}
	if got := w.kicks.Load(); got != 1<<1 {
		t.Fatalf("kicks %#b", got)
	}

	resetDone := make(chan struct{})
	go func() {
		l.Reset()
		close(resetDone)
	}()
	<-w.Done() // Reset has begun, and waits for the second goroutine
	for range 1000 {
		l.Notify(0) // must not block: the worker may already be gone
	}
	select {
	case <-resetDone:
		t.Fatal("Reset returned before the goroutines exited")
	case <-exited:
		t.Fatal("exited hook ran before the goroutines exited")
	default:
	}
	close(release)
	<-resetDone
	select {
	case <-exited:
	default:
		t.Fatal("exited hook did not run")
	}
	if w.Running() != 0 {
		t.Fatalf("%d goroutines still running", w.Running())
	}
}

// TestWorkerPop: malformed chains go back empty and are reported; a corrupt
// avail ring stops popping; a stopping worker pops nothing.
func TestWorkerPop(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, 0x10000)
	ring, err := virtiotest.NewRing(mem, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	q := ring.Queue()
	if err := q.Initialize(mem); err != nil {
		t.Fatal(err)
	}
	ring.AddChain(virtiotest.Buffer{Addr: 0x20000, Len: 8}) // outside RAM
	ring.Publish(9)                                         // head out of range
	good, _ := ring.AddChain(virtiotest.Buffer{Addr: 0x1000, Len: 8})

	w := virtio.NewWorker()
	var faults []virtio.PopFault
	report := func(f virtio.PopFault, err error) {
		var ce *virtio.ChainError
		if !errors.As(err, &ce) {
			t.Fatalf("fault %d with %v", f, err)
		}
		faults = append(faults, f)
	}
	used := false
	c := w.Pop(q, mem, &used, report)
	if c == nil || c.Head != good {
		t.Fatalf("popped %v, want head %d", c, good)
	}
	want := []virtio.PopFault{virtio.MalformedChain, virtio.MalformedChain, virtio.UnreturnedChain}
	if !used || len(faults) != len(want) || faults[0] != want[0] || faults[1] != want[1] || faults[2] != want[2] {
		t.Fatalf("used %v, faults %v", used, faults)
	}
	if u, ok, _ := ring.PopUsed(); !ok || u.ID != 0 || u.Len != 0 {
		t.Fatalf("malformed chain returned as %+v (%v)", u, ok)
	}
	if c := w.Pop(q, mem, &used, report); c != nil {
		t.Fatal("popped from an empty queue")
	}

	ring.SetAvailIdx(ring.AvailIdx() + 100)
	var corrupt int
	if c := w.Pop(q, mem, &used, func(f virtio.PopFault, err error) {
		if f == virtio.CorruptRing {
			corrupt++
		}
	}); c != nil || corrupt != 1 {
		t.Fatalf("corrupt ring: chain %v, %d reports", c, corrupt)
	}

	w.Shutdown()
	ring.SetAvailIdx(ring.AvailIdx() - 100)
	ring.AddChain(virtiotest.Buffer{Addr: 0x1000, Len: 8})
	if c := w.Pop(q, mem, &used, report); c != nil {
		t.Fatal("a stopping worker popped a chain")
	}
}

type countIRQ struct {
	n   int
	err error
}

func (c *countIRQ) TriggerQueue(int) error { c.n++; return c.err }
func (c *countIRQ) TriggerConfig() error   { return nil }

// TestQueueSignal: an interrupt only for a batch that added used entries,
// and the interrupt's error comes back.
func TestQueueSignal(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, 0x10000)
	ring := virtiotest.RingAt(t, mem, 0, 4)
	q := ring.InitQueue(t, false)
	irq := &countIRQ{}
	if err := q.Signal(mem, irq, 0, false); err != nil || irq.n != 0 {
		t.Fatalf("nothing used: %v, %d interrupts", err, irq.n)
	}
	head, _ := ring.AddChain(virtiotest.Buffer{Addr: 0x1000, Len: 8})
	if err := q.AddUsed(mem, head, 0); err != nil {
		t.Fatal(err)
	}
	if err := q.Signal(mem, irq, 0, true); err != nil || irq.n != 1 {
		t.Fatalf("used: %v, %d interrupts", err, irq.n)
	}
	irq.err = errors.New("line down")
	if err := q.Signal(mem, irq, 0, true); err != irq.err {
		t.Fatalf("error %v", err)
	}
}
