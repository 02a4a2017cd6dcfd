package virtiotest

import "sync"

// IRQ is a virtio.Interrupt that counts what a device raises, per queue
// and for the configuration space. The zero value is ready; it is safe
// for concurrent use.
type IRQ struct {
	mu     sync.Mutex
	queue  map[int]int
	config int
	wake   chan struct{}
}

func (i *IRQ) wakeLocked() chan struct{} {
	if i.wake == nil {
		i.wake = make(chan struct{}, 1)
	}
	return i.wake
}

func (i *IRQ) raised() {
	select {
	case i.wakeLocked() <- struct{}{}:
	default:
	}
}

// TriggerQueue implements virtio.Interrupt.
func (i *IRQ) TriggerQueue(q int) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.queue == nil {
		i.queue = make(map[int]int)
	}
	i.queue[q]++
	i.raised()
	return nil
}

// TriggerConfig implements virtio.Interrupt.
func (i *IRQ) TriggerConfig() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.config++
	i.raised()
	return nil
}

// Queue is the number of interrupts for queue q.
func (i *IRQ) Queue(q int) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.queue[q]
}

// Queues is the number of queue interrupts, all queues together.
func (i *IRQ) Queues() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	n := 0
	for _, k := range i.queue {
		n += k
	}
	return n
}

// Config is the number of configuration interrupts.
func (i *IRQ) Config() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.config
}

// Raised delivers a value after one or more interrupts, to wait on
// instead of polling.
func (i *IRQ) Raised() <-chan struct{} {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.wakeLocked()
}

// Line is a transport's interrupt line (devices.Interrupt) that counts
// its triggers. The zero value is ready; it is safe for concurrent use.
type Line struct {
	mu  sync.Mutex
	n   int
	err error
}

// Trigger implements devices.Interrupt. It counts the trigger even when it
// returns the error set by SetErr.
func (l *Line) Trigger() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return l.err
}

// SetErr makes every later Trigger fail with err (nil: succeed).
func (l *Line) SetErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

// Count is the number of triggers.
func (l *Line) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
