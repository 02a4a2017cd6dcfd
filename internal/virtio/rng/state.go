package rng

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/squib-vmm/squib/internal/ratelimit"
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
	var s *state
	if err := decodeStrict(data, &s); err != nil {
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
	var err error
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

// decodeStrict decodes one JSON object into *v (a pointer to a pointer,
// so that "null" is caught), rejecting unknown fields and trailing data:
// a blob from another device or a corrupt file fails rather than restore
// defaults.
func decodeStrict[T any](data []byte, v **T) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if *v == nil {
		return errors.New("no state")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the state")
	}
	return nil
}
