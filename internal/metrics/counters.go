package metrics

import (
	"sync/atomic"
	"time"
)

// IncMetric is a counter (Firecracker's SharedIncMetric). Each metrics line
// prints how much it grew since the previous successful line. Updating it is
// a single atomic add; the zero value is ready to use.
type IncMetric struct {
	cur  atomic.Uint64 // total since start; only ever added to
	prev atomic.Uint64 // cur as of the last line written; owned by Write
}

// Inc adds 1.
func (m *IncMetric) Inc() { m.cur.Add(1) }

// Add adds n.
func (m *IncMetric) Add(n uint64) { m.cur.Add(n) }

// Count returns the total since the process started (not reset by writes).
func (m *IncMetric) Count() uint64 { return m.cur.Load() }

// Delta returns what the next line would print: the growth since the
// last line written.
func (m *IncMetric) Delta() uint64 { return m.cur.Load() - m.prev.Load() }

// StoreMetric holds a value (Firecracker's SharedStoreMetric): times,
// latencies, flags. Each line prints the current value; writes do not reset
// it. The zero value is ready to use.
type StoreMetric struct {
	v atomic.Uint64
}

// Store sets the value.
func (m *StoreMetric) Store(v uint64) { m.v.Store(v) }

// Fetch returns the value.
func (m *StoreMetric) Fetch() uint64 { return m.v.Load() }

// LatencyAgg aggregates durations in microseconds (Firecracker's
// LatencyAggregateMetrics, printed as {"min_us","max_us","sum_us"}). The
// minimum and maximum are kept for the process lifetime; the sum is a
// counter reset by each line.
type LatencyAgg struct {
	MinUS StoreMetric `json:"min_us"` // smallest sample, µs; 0 until the first
	MaxUS StoreMetric `json:"max_us"` // largest sample, µs
	SumUS IncMetric   `json:"sum_us"` // sum of samples since the last line, µs
}

// Record adds one sample of us microseconds. As in Firecracker, min/max
// updates are load-compare-store: a concurrent Record may lose an extreme,
// never corrupt it.
func (a *LatencyAgg) Record(us uint64) {
	a.SumUS.Add(us)
	if m := a.MinUS.Fetch(); m == 0 || m > us {
		a.MinUS.Store(us)
	}
	if m := a.MaxUS.Fetch(); m == 0 || m < us {
		a.MaxUS.Store(us)
	}
}

// RecordSince records the monotonic time elapsed since start, in whole
// microseconds: defer agg.RecordSince(time.Now()).
func (a *LatencyAgg) RecordSince(start time.Time) {
	a.Record(uint64(time.Since(start).Microseconds()))
}

// StoreElapsedUS stores in m the microseconds elapsed since start and
// returns them (Firecracker's update_metric_with_elapsed_time), for the
// latencies_us group.
func StoreElapsedUS(m *StoreMetric, start time.Time) uint64 {
	us := uint64(time.Since(start).Microseconds())
	m.Store(us)
	return us
}
