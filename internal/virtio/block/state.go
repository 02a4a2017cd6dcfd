package block

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
)

// state is the device's own snapshot state (virtio.Snapshotter). The
// file, read-only flag and cache type come from the drive's configuration,
// which the machine rebuilds the device from; the queue is the
// transport's, and the device holds no request between two (Suspend waits
// for the one in flight).
type state struct {
	// Capacity is the disk size in sectors the guest last read from the
	// configuration space.
	Capacity uint64 `json:"capacity"`
	// RateLimiter is the limiter's buckets and what the guest has spent.
	RateLimiter *ratelimit.State `json:"rate_limiter"`
}

// Suspend implements virtio.Snapshotter: it stops the worker once the
// request it is serving, if any, is complete and returned to the driver,
// so every request is either done or still on the queue.
func (d *Device) Suspend() { d.life.Suspend() }

// Resume implements virtio.Snapshotter: it restarts the worker, which
// serves what the driver made available meanwhile. After a restore onto a
// backing file whose size is not the one the guest saw, it raises a
// configuration interrupt, so that the guest reads the new capacity (as
// after a PATCH of the drive).
func (d *Device) Resume() error {
	if err := d.life.Resume(); err != nil {
		return err
	}
	return d.life.Exclusive(func(w *worker) {
		if d.capacityChanged && w != nil {
			if err := w.irq.TriggerConfig(); err != nil {
				log.RateLimited(&rlIRQ).Errorf("block: config interrupt: %v", err)
				d.m.EventFails.Inc()
			}
		}
		d.capacityChanged = false
	})
}

// SaveState implements virtio.Snapshotter.
func (d *Device) SaveState() ([]byte, error) {
	var s state
	if err := d.life.Exclusive(func(*worker) {
		st := d.limiter.State()
		s = state{Capacity: d.capacity.Load(), RateLimiter: &st}
	}); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// RestoreState implements virtio.Snapshotter on a new, inactive device:
// the saved limiter, rebuilt by ratelimit.Restore, replaces the
// configured one (Limiter returns it from then on). The capacity stays
// the backing file's; if the guest saw another, Resume tells it.
func (d *Device) RestoreState(data []byte) error {
	s, err := virtio.DecodeState[state](data)
	if err != nil {
		return fmt.Errorf("block: invalid saved state: %w", err)
	}
	if s.RateLimiter == nil {
		return errors.New("block: invalid saved state: no rate limiter")
	}
	lim, err := ratelimit.Restore(*s.RateLimiter)
	if err != nil {
		return fmt.Errorf("block: invalid saved state: %w", err)
	}
	if xerr := d.life.Exclusive(func(*worker) {
		if d.life.Active() {
			err = errors.New("block: restoring the state of an active device")
			return
		}
		d.limiter.Stop()
		d.limiter = lim
		if now := d.capacity.Load(); now != s.Capacity {
			log.Warnf("block %s: the guest saw %d sectors, the disk now has %d", d.id, s.Capacity, now)
			d.capacityChanged = true
		}
	}); xerr != nil {
		return xerr
	}
	return err
}
