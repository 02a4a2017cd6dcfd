package virtiotest

import (
	"encoding/json"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
)

// SaveJSON suspends tr (a no-op if it is already) and returns its saved
// state encoded as JSON, as a snapshot file would hold it, failing t if
// the transport or its device cannot save.
func SaveJSON(t testing.TB, tr *mmio.Transport) []byte {
	t.Helper()
	tr.Suspend()
	s, err := tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RestoreJSON decodes a state from SaveJSON and restores fresh, a
// transport just built over a device made from the same configuration,
// with it, failing t on any error. The device is left suspended, as in a
// restored VM before its resume.
func RestoreJSON(t testing.TB, fresh *mmio.Transport, data []byte) {
	t.Helper()
	var s mmio.State
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	if err := fresh.RestoreState(s); err != nil {
		t.Fatal(err)
	}
}

// MoveState moves a device's state from old to fresh as a snapshot and
// restore do: SaveJSON of old, RestoreJSON into fresh. It returns the
// saved JSON. Both transports are left suspended; Resume fresh to go on.
func MoveState(t testing.TB, old, fresh *mmio.Transport) []byte {
	t.Helper()
	b := SaveJSON(t, old)
	RestoreJSON(t, fresh, b)
	return b
}

// CheckResave is the fuzz targets' property for a device d whose
// RestoreState accepted some input: d saves a state, and fresh (a new
// device of the same configuration) restores that state.
func CheckResave(t testing.TB, d, fresh virtio.Snapshotter) {
	t.Helper()
	again, err := d.SaveState()
	if err != nil {
		t.Fatalf("restored state does not save: %v", err)
	}
	if err := fresh.RestoreState(again); err != nil {
		t.Fatalf("saved state %s does not restore: %v", again, err)
	}
}

// ActivateSuspendResume activates d with queues and a test interrupt over
// mem, then suspends and resumes it, failing t on any error: what a
// restored device goes through before its guest runs.
func ActivateSuspendResume(t testing.TB, d interface {
	virtio.Device
	virtio.Snapshotter
}, mem *memory.Guest, queues []*virtio.Queue) {
	t.Helper()
	if err := d.Activate(mem, queues, &IRQ{}); err != nil {
		t.Fatal(err)
	}
	d.Suspend()
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
}
