// Package vmmtest provides test doubles for vmm.Builder and vmm.VM, so that
// the controller and the API can be driven through boot, pause and device
// updates on machines without KVM. It is imported only by tests; nothing in
// squib's binary uses it.
package vmmtest

import (
	"context"
	"errors"
	"sync"

	"github.com/squib-vmm/squib/internal/vmm"
)

// Builder is a vmm.Builder whose Build returns a *VM. Setting Block makes
// Build wait until the channel is closed (or the context ends), to simulate
// a long InstanceStart; BuildErr makes it fail.
type Builder struct {
	mu       sync.Mutex
	Block    chan struct{}
	BuildErr error
	// Started, if set, receives a value each time Build begins.
	Started chan struct{}
	// Last is the most recently built VM.
	Last *VM
	// Resources is what Build was called with.
	Resources *vmm.Resources
	// RestoreOK makes Restore succeed.
	RestoreOK bool
}

// Build implements vmm.Builder.
func (b *Builder) Build(ctx context.Context, res *vmm.Resources, opts vmm.BuildOptions) (vmm.VM, error) {
	if b.Started != nil {
		b.Started <- struct{}{}
	}
	if b.Block != nil {
		select {
		case <-b.Block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if b.BuildErr != nil {
		return nil, b.BuildErr
	}
	vm := NewVM()
	b.mu.Lock()
	b.Last, b.Resources = vm, res
	b.mu.Unlock()
	return vm, nil
}

// Restore implements vmm.Builder. It waits on Block and signals Started
// as Build does; then, with RestoreOK, it returns a new VM with default
// resources, and otherwise fails.
func (b *Builder) Restore(ctx context.Context, p *vmm.SnapshotLoadParams, opts vmm.BuildOptions) (vmm.VM, *vmm.Resources, error) {
	if b.Started != nil {
		b.Started <- struct{}{}
	}
	if b.Block != nil {
		select {
		case <-b.Block:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if !b.RestoreOK {
		return nil, nil, errors.New("Failed to restore from snapshot: test builder cannot restore")
	}
	vm := NewVM()
	res := vmm.NewResources()
	b.mu.Lock()
	b.Last, b.Resources = vm, res
	b.mu.Unlock()
	return vm, res, nil
}

// VM is a vmm.VM that records calls.
type VM struct {
	mu    sync.Mutex
	Calls []string
	done  chan struct{}
	code  int
	// Stats is what BalloonStats returns.
	Stats vmm.BalloonStats
	// Hotplug is what HotplugStatus returns.
	Hotplug vmm.MemoryHotplugStatus
	// Fail, if set, is returned by every mutating call.
	Fail error
}

// NewVM returns a running test VM.
func NewVM() *VM { return &VM{done: make(chan struct{})} }

func (v *VM) record(name string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.Calls = append(v.Calls, name)
	return v.Fail
}

// Exit ends the VM with code, as a guest reboot (0) or a vCPU error (1).
func (v *VM) Exit(code int) {
	v.mu.Lock()
	v.code = code
	v.mu.Unlock()
	close(v.done)
}

// CallLog returns the calls made so far.
func (v *VM) CallLog() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.Calls...)
}

func (v *VM) Pause() error          { return v.record("Pause") }
func (v *VM) Resume() error         { return v.record("Resume") }
func (v *VM) SendCtrlAltDel() error { return v.record("SendCtrlAltDel") }
func (v *VM) UpdateDrive(id string, p *string, rl *vmm.RateLimiter) error {
	return v.record("UpdateDrive " + id)
}
func (v *VM) UpdateNet(id string, rx, tx *vmm.RateLimiter) error { return v.record("UpdateNet " + id) }
func (v *VM) UpdatePmem(id string, rl *vmm.RateLimiter) error    { return v.record("UpdatePmem " + id) }
func (v *VM) UpdateBalloon(amountMib uint32) error               { return v.record("UpdateBalloon") }
func (v *VM) UpdateBalloonStatsInterval(s uint16) error {
	return v.record("UpdateBalloonStatsInterval")
}
func (v *VM) StartHinting(cmd vmm.BalloonStartCmd) error { return v.record("StartHinting") }
func (v *VM) HintingStatus() (vmm.HintingStatus, error) {
	return vmm.HintingStatus{HostCmd: 2}, v.record("HintingStatus")
}
func (v *VM) StopHinting() error { return v.record("StopHinting") }
func (v *VM) UpdateHotplugMemory(mib uint32) error {
	v.mu.Lock()
	v.Hotplug.RequestedSizeMib = mib
	v.mu.Unlock()
	return v.record("UpdateHotplugMemory")
}
func (v *VM) CreateSnapshot(ctx context.Context, p *vmm.SnapshotCreateParams, config []byte) error {
	return v.record("CreateSnapshot")
}
func (v *VM) BalloonStats() (vmm.BalloonStats, error) { return v.Stats, nil }
func (v *VM) HotplugStatus() (vmm.MemoryHotplugStatus, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.Hotplug, nil
}
func (v *VM) Done() <-chan struct{} { return v.done }
func (v *VM) ExitCode() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.code
}
func (v *VM) Stop() { v.record("Stop") }
