package virtiotest

import (
	"encoding/json"
	"testing"

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
