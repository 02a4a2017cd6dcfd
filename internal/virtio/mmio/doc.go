// Package mmio is the virtio-mmio transport, register layout version 2
// (virtio 1.x §4.2.2) only, with Firecracker's behaviour: a strict device
// status state machine, VIRTIO_F_VERSION_1 forced on, 4-byte-only access
// below the configuration space, activation on DRIVER_OK and one
// interrupt line whose cause is in the interrupt-status register.
//
// A Transport is a devices.Device: insert it on the MMIO bus at its base
// with Size bytes (the first at 0xC000_1000, then one page apart), give it
// an interrupt line (an irqfd on the next GSI from 5) and announce it to
// the guest with CmdlineParam. Queue notifications arrive either as a
// 4-byte write of the queue index at NotifyOffset, which Write handles, or
// through one ioeventfd per queue (address base+NotifyOffset, datamatch the
// index) whose reader calls QueueNotify.
//
// Snapshots: the machine pauses the VM, calls Suspend on every transport
// (which stops a virtio.Snapshotter device's processing), then SaveState.
// To restore, it builds each device and transport from the VM's
// configuration over the restored memory and calls RestoreState, which
// activates a device the driver had activated and leaves it suspended;
// Resume starts it and raises one used-ring interrupt.
package mmio
