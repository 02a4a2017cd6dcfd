package vmm

import (
	"github.com/squib-vmm/squib/internal/jsonx"
)

// View is an immutable picture of the VM's configuration and state that
// the controller publishes after every change. The API's read-only
// endpoints answer from it without ever waiting on the controller, so a
// mutation that takes minutes cannot delay a liveness probe.
//
// The JSON answers are rendered once at publish time: a read then costs a
// pointer load and a write.
type View struct {
	// Started is true once the VM was booted or restored.
	Started bool
	// State is Not started, Running or Paused.
	State string
	// Info is GET /'s answer.
	Info []byte
	// MachineConfig is GET /machine-config's answer.
	MachineConfig []byte
	// VMConfig is GET /vm/config's answer.
	VMConfig []byte
	// Balloon is GET /balloon's answer, nil without a balloon.
	Balloon []byte
	// BalloonStatsEnabled reports a non-zero statistics interval.
	BalloonStatsEnabled bool
	// Hotplug reports a configured memory hot-plug region.
	Hotplug bool
	// MmdsAttached reports an MMDS configuration naming an interface;
	// after boot the data store is reachable only then.
	MmdsAttached bool
	// VM is the running VM, for its fast-path-safe reads; nil before boot.
	VM VM
}

// versionJSON is GET /version's answer, rendered once.
var versionJSON = mustMarshal(map[string]string{"firecracker_version": FirecrackerVersion})

// VersionJSON returns GET /version's answer.
func VersionJSON() []byte { return versionJSON }

func mustMarshal(v any) []byte {
	b, err := jsonx.Marshal(v)
	if err != nil {
		panic(err) // only for static values built at init
	}
	return b
}
