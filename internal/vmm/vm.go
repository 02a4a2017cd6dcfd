package vmm

import (
	"context"

	"github.com/squib-vmm/squib/internal/mmds"
)

// Builder turns configured resources into a running VM. The production
// builder (builder.go) drives KVM; tests substitute their own.
type Builder interface {
	// Build creates and starts the VM. An error leaves the resources
	// usable, so the client may fix the configuration and retry.
	Build(ctx context.Context, res *Resources, opts BuildOptions) (VM, error)
	// Restore creates a VM from a snapshot, paused unless params say
	// otherwise.
	Restore(ctx context.Context, params *SnapshotLoadParams, opts BuildOptions) (VM, *Resources, error)
}

// BuildOptions are process-wide settings a build needs.
type BuildOptions struct {
	InstanceID string
	EnablePCI  bool
	BootTimer  bool
	// Mmds is the process's MMDS data store, which the network interfaces
	// named in mmds-config serve to the guest; nil when there is none.
	Mmds *mmds.Store
	// Serial is the serial console configured before a snapshot load
	// (nil: the process's stdio).
	Serial *Serial
	// ClockRealtime asks a restore to advance the guest's clock by the
	// time elapsed since the snapshot (the load's clock_realtime).
	ClockRealtime bool
}

// VM is a started microVM, as the controller sees it. Its methods are
// called only from the controller goroutine, except the read-only ones
// documented as safe for the API's fast path.
type VM interface {
	Pause() error
	Resume() error
	SendCtrlAltDel() error
	UpdateDrive(id string, pathOnHost *string, rl *RateLimiter) error
	UpdateNet(id string, rx, tx *RateLimiter) error
	UpdatePmem(id string, rl *RateLimiter) error
	UpdateBalloon(amountMib uint32) error
	UpdateBalloonStatsInterval(seconds uint16) error
	StartHinting(cmd BalloonStartCmd) error
	HintingStatus() (HintingStatus, error)
	StopHinting() error
	UpdateHotplugMemory(requestedMib uint32) error
	// CreateSnapshot saves the paused VM; config is the VM's configuration
	// (GET /vm/config's answer), which the state file keeps so a restore
	// can rebuild the devices.
	CreateSnapshot(ctx context.Context, params *SnapshotCreateParams, config []byte) error

	// BalloonStats returns the latest guest statistics. Safe to call from
	// any goroutine; it must not wait on the controller.
	BalloonStats() (BalloonStats, error)
	// HotplugStatus returns the memory hot-plug status. Safe to call from
	// any goroutine.
	HotplugStatus() (MemoryHotplugStatus, error)

	// Done is closed when the VM has stopped; ExitCode is then valid.
	Done() <-chan struct{}
	// ExitCode is the process exit code the VM's end calls for
	// (Firecracker's: 0 for a guest reboot, 1 for a vCPU error).
	ExitCode() int
	// Stop ends the VM and releases its resources.
	Stop()
}
