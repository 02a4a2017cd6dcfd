package virtiotest

import (
	"runtime"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/metrics"
)

// WaitTimeout bounds every wait of this package. It only matters when a
// test fails: no assertion depends on timing.
const WaitTimeout = 10 * time.Second

// Eventually polls cond until it holds, failing t with what after
// WaitTimeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// WaitGoroutines waits until no more than base goroutines run, base being
// runtime.NumGoroutine before the device started: a device's goroutines
// must all exit once it is reset or closed.
func WaitGoroutines(t testing.TB, base int) {
	t.Helper()
	Eventually(t, "the device's goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
}

// Delta is how much a counter grew since Track, for "grew by" checks
// that do not depend on what earlier tests counted.
type Delta struct {
	m    *metrics.IncMetric
	base uint64
}

// Track starts a Delta of m.
func Track(m *metrics.IncMetric) Delta { return Delta{m, m.Count()} }

// Get is the growth so far.
func (d Delta) Get() uint64 { return d.m.Count() - d.base }

// Is returns a condition, for Eventually, that the growth is n.
func (d Delta) Is(n uint64) func() bool { return func() bool { return d.Get() == n } }
