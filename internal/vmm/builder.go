package vmm

import (
	"context"
	"fmt"
	"os"
)

// KVMDevice is the hypervisor device the builder opens first.
const KVMDevice = "/dev/kvm"

// KVMBuilder builds VMs on Linux KVM.
//
// The boot path (guest memory, vCPUs, devices) lands with the boot issue;
// until then a build stops right after opening the hypervisor, with an
// error that says so. On a host without KVM the error names /dev/kvm.
type KVMBuilder struct {
	// Device is the KVM device path; empty means KVMDevice.
	Device string
}

func (b KVMBuilder) device() string {
	if b.Device == "" {
		return KVMDevice
	}
	return b.Device
}

func (b KVMBuilder) openKVM() (*os.File, error) {
	f, err := os.OpenFile(b.device(), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("Cannot open %s: %s. squib boots guests on KVM; on a host without it, run them inside the KVM sandbox (make demo, make test).", b.device(), OSErrorText(err))
	}
	return f, nil
}

// Build opens KVM and boots the guest.
func (b KVMBuilder) Build(ctx context.Context, res *Resources, opts BuildOptions) (VM, error) {
	kvm, err := b.openKVM()
	if err != nil {
		return nil, &Error{Msg: PrefixStart + err.Error()}
	}
	defer kvm.Close()
	return nil, &Error{Msg: PrefixStart + "Booting guests is not available in this build of squib yet."}
}

// Restore loads a snapshot.
func (b KVMBuilder) Restore(ctx context.Context, p *SnapshotLoadParams, opts BuildOptions) (VM, *Resources, error) {
	f, err := os.Open(*p.SnapshotPath)
	if err != nil {
		return nil, nil, &Error{Msg: PrefixLoadSnap + "Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: " + OSErrorText(err)}
	}
	f.Close()
	kvm, err := b.openKVM()
	if err != nil {
		return nil, nil, &Error{Msg: PrefixLoadSnap + "Failed to restore from snapshot: " + err.Error()}
	}
	kvm.Close()
	return nil, nil, &Error{Msg: PrefixLoadSnap + "Snapshot restore is not available in this build of squib yet."}
}
