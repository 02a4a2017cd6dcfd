package virtio_test

import (
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// TestConcurrentEventIdx runs a driver and a device on one ring at the
// same time, with EVENT_IDX: the driver kicks only when avail_event asks
// for it, the device sleeps until kicked. Run under -race it checks the
// queue's own synchronisation; a lost wake-up (the race that
// PopOrEnableNotification closes, in a window of nanoseconds) would stall
// it.
func TestConcurrentEventIdx(t *testing.T) {
	const total = 20000
	mem, r, q := setup(t, 8)
	q.EventIdx = true
	kick := make(chan struct{}, 1)
	var fence atomic.Int32 // a locked op: the driver's virtio_mb()
	done := make(chan error, 1)

	go func() { // device
		for served := 0; served < total; {
			c, err := q.PopOrEnableNotification(mem)
			if err != nil {
				done <- err
				return
			}
			if c == nil {
				select {
				case <-kick:
				case <-time.After(10 * time.Second):
					done <- errTimeout
					return
				}
				continue
			}
			if err := q.AddUsed(mem, c.Head, c.ReadableLen()); err != nil {
				done <- err
				return
			}
			q.NeedsNotification(mem)
			served++
		}
		done <- nil
	}()

	deadline := time.Now().Add(20 * time.Second)
	seen := 0
	for i := range total {
		// Wait for a free slot: at most 8 chains outstanding. Check the
		// used entries as they come back.
		for {
			for {
				u, ok, err := r.PopUsed()
				if err != nil || !ok {
					break
				}
				if u.Len != uint32(seen%100+1) {
					t.Fatalf("used entry %d: %+v", seen, u)
				}
				seen++
				// A guard against a stall, not a time limit: it restarts
				// whenever the device makes progress, so a loaded
				// machine only makes the test slower.
				deadline = time.Now().Add(20 * time.Second)
			}
			if i-seen < 8 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("driver stuck at chain %d", i)
			}
			runtime.Gosched()
		}
		old := r.AvailIdx()
		if _, err := r.AddChain(virtiotest.Buffer{Addr: dataBase, Len: uint32(i%100 + 1)}); err != nil {
			t.Fatal(err)
		}
		fence.Add(1)
		ev, _ := r.AvailEvent()
		if newIdx := r.AvailIdx(); newIdx-ev-1 < newIdx-old {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for ; seen < total; seen++ {
		u, ok, err := r.PopUsed()
		if !ok || err != nil || u.Len != uint32(seen%100+1) {
			t.Fatalf("used entry %d: %+v %v %v", seen, u, ok, err)
		}
	}
}

var errTimeout = errors.New("device waited 10 s for a kick: lost wake-up")
