package virtio

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
)

// Worker is the goroutine side of one activation of a device, from
// Activate to Reset: the driver's queue kicks waiting for the device, the
// stop signal, and the goroutines to wait for. A device's worker type
// embeds *Worker; Lifecycle creates nothing itself, so a test can build a
// device's worker with NewWorker and drive it synchronously.
type Worker struct {
	kicks   atomic.Uint32 // bit i: queue i was kicked since TakeKicks
	wake    chan struct{} // capacity 1: a pending wake-up
	done    chan struct{} // closed when Shutdown begins
	wg      sync.WaitGroup
	running atomic.Int32

	interrupt, exited func() // see OnStop
}

// NewWorker returns the control block of a new activation.
func NewWorker() *Worker {
	return &Worker{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// OnStop sets what Shutdown does besides closing Done: interrupt runs right
// after Done is closed, to wake goroutines blocked outside the Worker's
// channels (a read on a socket, an Accept); exited runs once every
// goroutine started with Go has returned. Either may be nil. Call it before
// the activation is published.
func (w *Worker) OnStop(interrupt, exited func()) { w.interrupt, w.exited = interrupt, exited }

// Go runs f in a goroutine that Shutdown waits for. Call it before the
// activation is published or from a goroutine it already counts, so that
// no goroutine starts once Shutdown waits.
func (w *Worker) Go(f func()) {
	w.wg.Add(1)
	w.running.Add(1)
	go func() {
		defer w.wg.Done()
		defer w.running.Add(-1)
		f()
	}()
}

// Running is the number of goroutines started with Go that have not yet
// returned.
func (w *Worker) Running() int { return int(w.running.Load()) }

// Kick records a driver notification of queue index (0 to 31) and wakes
// the device's goroutine. It never blocks: kicks coalesce until the
// goroutine takes them, since one look at a queue serves all its kicks
// (as one read of an eventfd takes every write).
func (w *Worker) Kick(index int) {
	w.kicks.Or(1 << index)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Wake delivers a value after one or more Kicks.
func (w *Worker) Wake() <-chan struct{} { return w.wake }

// TakeKicks returns and clears the queues kicked since the last call, bit
// i for queue i. It may be 0 after a wake-up: a kick can land between the
// two.
func (w *Worker) TakeKicks() uint32 { return w.kicks.Swap(0) }

// Done is closed when Shutdown begins: the device's goroutines select on
// it to exit, and long loops check Stopping.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Stopping reports whether Shutdown has begun, so that a long drain of a
// queue the guest keeps refilling does not hold a Reset up.
func (w *Worker) Stopping() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Shutdown ends the activation: it closes Done, runs the interrupt hook,
// waits for every goroutine started with Go, then runs the exited hook.
// Lifecycle calls it once; a test that built the worker itself may too.
func (w *Worker) Shutdown() {
	close(w.done)
	if w.interrupt != nil {
		w.interrupt()
	}
	w.wg.Wait()
	if w.exited != nil {
		w.exited()
	}
}

// PopFault is a ring error Worker.Pop met, for the device to log and count.
type PopFault int

const (
	// CorruptRing: the avail ring itself is corrupt (say the driver's
	// avail index ran more than a queue's worth ahead), so nothing sensible
	// can be popped until the driver resets the device. Pop returns nil.
	CorruptRing PopFault = iota
	// MalformedChain: the queue rejected a chain (a *ChainError). Pop
	// then hands it back to the driver with length 0, so the driver can
	// reuse its descriptors, and carries on.
	MalformedChain
	// UnreturnedChain: handing a malformed chain back failed (its head is
	// out of range); it is dropped, and Pop carries on. The error is a
	// *ChainError with the chain's head, wrapping the failure.
	UnreturnedChain
)

// Pop takes the next chain of q for a device's drain loop, as
// Queue.PopOrEnableNotification does (so an empty queue re-enables
// notifications), and makes the recovery every device makes from a bad
// ring: see PopFault. Each fault goes to report before Pop acts on it;
// *used is set when a malformed chain went back to the driver (the
// device then owes it an interrupt). Pop returns nil when the queue is
// empty, its avail ring is corrupt, or the worker is stopping.
func (w *Worker) Pop(q *Queue, mem *memory.Guest, used *bool, report func(f PopFault, err error)) *DescriptorChain {
	for !w.Stopping() {
		c, err := q.PopOrEnableNotification(mem)
		if err == nil {
			return c
		}
		var ce *ChainError
		if !errors.As(err, &ce) {
			report(CorruptRing, err)
			return nil
		}
		report(MalformedChain, err)
		if err := q.AddUsed(mem, ce.Head, 0); err != nil {
			report(UnreturnedChain, &ChainError{Head: ce.Head, Err: err})
			continue
		}
		*used = true
	}
	return nil
}

// Lifecycle is the activation state every device keeps alike: the
// acknowledged features, the running worker of type W (a pointer to the
// device's worker type), and whether the device is closed. It implements
// the checks and the concurrency rules of Device.Activate, QueueNotify and
// Reset:
//
//   - Activate, Reset, Close and Exclusive are serialised by a lock of the
//     Lifecycle's own (the transport serialises its calls already, but the
//     device does not rely on it).
//   - Notify (QueueNotify) takes no lock and never blocks, so a vCPU
//     kicking a queue never waits behind a Reset that is stopping the
//     worker.
//   - Reset and Close return only once every goroutine of the activation
//     has exited, so the queues, memory and interrupt are no longer used.
//
// Set the exported fields before first use; the zero value is otherwise
// ready.
type Lifecycle[W any] struct {
	// Name begins the activation errors, as in "block: device already
	// activated".
	Name string
	// Queues is the number of queues the device has (QueueMaxSizes), at
	// most 32.
	Queues int
	// ActivateFails counts failed activations (the device's
	// activate_fails metric).
	ActivateFails *metrics.IncMetric
	// ErrClosed is returned by Activate and Exclusive after Close; if nil,
	// an error "<Name>: device closed".
	ErrClosed error
	// Forget, if set, runs at the end of every Reset, under the lock, to
	// return the device's own state to how it was before activation.
	Forget func()

	mu     sync.Mutex
	closed bool
	acked  atomic.Uint64
	cur    atomic.Pointer[activation[W]]
	// start is the current activation's worker factory, kept so that
	// Resume can start the worker again; suspended is set between
	// Suspend and Resume (written under mu, read without it by Active).
	start     func() (W, *Worker, error)
	suspended atomic.Bool
}

// activation is one published activation: the device's worker and its
// control block.
type activation[W any] struct {
	w   W
	run *Worker
}

// AckFeatures records the features the driver acknowledged
// (Device.AckFeatures).
func (l *Lifecycle[W]) AckFeatures(features uint64) { l.acked.Store(features) }

// AckedFeatures returns the acknowledged features; Reset forgets them.
func (l *Lifecycle[W]) AckedFeatures() uint64 { return l.acked.Load() }

// Active reports whether the device is activated (between Activate and
// Reset), its worker running or suspended.
func (l *Lifecycle[W]) Active() bool { return l.cur.Load() != nil || l.suspended.Load() }

// Current returns the running worker, or the zero W while inactive. It
// takes no lock: the worker may be stopping by the time the caller looks.
func (l *Lifecycle[W]) Current() W {
	if a := l.cur.Load(); a != nil {
		return a.w
	}
	var zero W
	return zero
}

func (l *Lifecycle[W]) errClosed() error {
	if l.ErrClosed != nil {
		return l.ErrClosed
	}
	return fmt.Errorf("%s: device closed", l.Name)
}

// Activate implements the checks of Device.Activate: it fails if the
// device is closed or active already, without memory or interrupt, or
// with other than Queues queues (or a nil one). It then calls start, which
// builds the worker, starts its goroutines with Worker.Go and returns it
// with its control block, or fails without leaving a goroutine behind.
// Every failure, start's included, counts in ActivateFails. The worker is
// published (Current, Notify) once start returns; a kick that comes
// earlier is dropped, which is harmless because the transport notifies
// every queue after a successful Activate.
func (l *Lifecycle[W]) Activate(mem *memory.Guest, queues []*Queue, irq Interrupt, start func() (W, *Worker, error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	switch {
	case l.closed:
		err = l.errClosed()
	case l.cur.Load() != nil || l.suspended.Load():
		err = fmt.Errorf("%s: device already activated", l.Name)
	case mem == nil || irq == nil:
		err = fmt.Errorf("%s: activation without memory or interrupt", l.Name)
	case len(queues) != l.Queues || slices.Contains(queues, nil):
		err = fmt.Errorf("%s: activation with %d queues, want %d", l.Name, len(queues), l.Queues)
	}
	a := &activation[W]{}
	if err == nil {
		a.w, a.run, err = start()
	}
	if err != nil {
		l.ActivateFails.Inc()
		return err
	}
	l.cur.Store(a)
	l.start = start
	l.suspended.Store(false)
	return nil
}

// Suspend stops the running worker, as Reset does, but keeps the
// activation: the features stay acknowledged and Resume starts a new
// worker with the same start function (so the device's start must build
// the worker from state the device keeps, not from the old worker's). A
// device that holds chains in its worker moves them back to the device in
// the worker's exited hook (Worker.OnStop). Suspending an inactive or
// suspended device does nothing.
func (l *Lifecycle[W]) Suspend() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur.Load() == nil {
		return
	}
	l.stopLocked()
	l.suspended.Store(true)
}

// Suspended reports whether the device is between Suspend and Resume.
func (l *Lifecycle[W]) Suspended() bool { return l.suspended.Load() }

// Resume starts the worker of a suspended activation again and kicks
// every queue, so buffers the driver made available meanwhile are seen.
// It does nothing unless the device is suspended. A failure to start
// leaves the device suspended.
func (l *Lifecycle[W]) Resume() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.suspended.Load() || l.closed {
		return nil
	}
	a := &activation[W]{}
	var err error
	if a.w, a.run, err = l.start(); err != nil {
		return err
	}
	l.suspended.Store(false)
	l.cur.Store(a)
	for i := range l.Queues {
		a.run.Kick(i)
	}
	return nil
}

// Notify implements Device.QueueNotify: it kicks the running worker for
// queue index, and does nothing while inactive or for an index out of
// range. It never blocks.
func (l *Lifecycle[W]) Notify(index int) {
	a := l.cur.Load()
	if a == nil || index < 0 || index >= l.Queues {
		return
	}
	a.run.Kick(index)
}

// Reset implements Device.Reset: it stops the running worker, if any,
// waits for all its goroutines, forgets the acknowledged features and
// runs Forget. It never fails: the error is always nil, there to match
// Device.Reset.
func (l *Lifecycle[W]) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopLocked()
	l.start = nil
	l.suspended.Store(false)
	l.acked.Store(0)
	if l.Forget != nil {
		l.Forget()
	}
	return nil
}

// Close stops the running worker as Reset does (the features stay), marks
// the device closed, so that Activate and Exclusive fail from then on, and
// then runs release (if not nil) and returns its error. Only the first call
// does anything; later ones return nil.
func (l *Lifecycle[W]) Close(release func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.stopLocked()
	l.start = nil
	l.suspended.Store(false)
	if release == nil {
		return nil
	}
	return release()
}

// Exclusive runs f under the lock, so that no Activate, Reset or Close
// overlaps it, with the running worker (the zero W while inactive). Once
// the device is closed it returns ErrClosed without running f.
func (l *Lifecycle[W]) Exclusive(f func(running W)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.errClosed()
	}
	f(l.Current())
	return nil
}

func (l *Lifecycle[W]) stopLocked() {
	if a := l.cur.Swap(nil); a != nil {
		a.run.Shutdown()
	}
}
