package rng

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
)

// state is the device's own snapshot state (virtio.Snapshotter): only the
// rate limiter, whose budget the guest has spent; the queue is the
// transport's, and the device holds no chain between requests.
type state struct {
	// RateLimiter is nil for a device without a limiter.
	RateLimiter *ratelimit.State `json:"rate_limiter"`
}

// Suspend implements virtio.Snapshotter: it stops the worker once the
// request it is serving, if any, is complete and returned to the driver,
// so every request is either done or still on the queue.
func (d *Device) Suspend() { d.life.Suspend() }

// Resume implements virtio.Snapshotter: it restarts the worker, which
// serves what the driver made available meanwhile.
func (d *Device) Resume() error { return d.life.Resume() }

// SaveState implements virtio.Snapshotter. The limiter must be nil or a
// ratelimit.DeviceLimiter (as the machine builds it): another kind keeps
// no state a snapshot could restore, so it is an error.
func (d *Device) SaveState() ([]byte, error) {
	var s state
	var err error
	if xerr := d.life.Exclusive(func(*worker) {
		switch l := d.limiter.(type) {
		case nil:
		case ratelimit.DeviceLimiter:
			st := l.L.State()
			s.RateLimiter = &st
		default:
			err = fmt.Errorf("entropy: a %T rate limiter cannot be saved", l)
		}
	}); xerr != nil {
		return nil, xerr
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// RestoreState implements virtio.Snapshotter on a new, inactive device:
// the saved limiter, rebuilt by ratelimit.Restore, replaces the configured
// one (the snapshot holds what the guest has spent of it).
func (d *Device) RestoreState(data []byte) error {
	s, err := virtio.DecodeState[state](data)
	if err != nil {
		return fmt.Errorf("entropy: invalid saved state: %w", err)
	}
	var lim Limiter
	if s.RateLimiter != nil {
		l, err := ratelimit.Restore(*s.RateLimiter)
		if err != nil {
			return fmt.Errorf("entropy: invalid saved state: %w", err)
		}
		lim = ratelimit.DeviceLimiter{L: l}
	}
	err = nil
	if xerr := d.life.Exclusive(func(*worker) {
		if d.life.Active() {
			err = errors.New("entropy: restoring the state of an active device")
			return
		}
		d.limiter, d.refunder = lim, nil
		if r, ok := lim.(Refunder); ok {
			d.refunder = r
		}
	}); xerr != nil {
		return xerr
	}
	return err
}
