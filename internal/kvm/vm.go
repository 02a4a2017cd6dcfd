package kvm

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine (the fd KVM_CREATE_VM returns). Its methods
// may be called from any goroutine.
type VM struct {
	fd           int
	vcpuMmapSize int

	// mu serialises memory-slot changes with GetDirtyLog, and slots maps
	// each slot set through SetUserMemoryRegion to its size, so that
	// GetDirtyLog can prove the caller's bitmap is as large as the one the
	// kernel will copy into it.
	mu    sync.Mutex
	slots map[uint32]uint64
}

// FD is the VM file descriptor. Memory slots changed through it directly
// are unknown to GetDirtyLog.
func (vm *VM) FD() int { return vm.fd }

// Close closes the VM fd. The kernel frees the VM once every vCPU fd is
// closed as well.
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	return err
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM fd: like
// System.CheckExtension, but answers for this VM (needed for
// KVM_CAP_XSAVE2 and per-VM limits such as KVM_CAP_NR_MEMSLOTS).
func (vm *VM) CheckExtension(cap int) (int, error) {
	return checkExtension(vm.fd, cap)
}

// SetTSSAddr is KVM_SET_TSS_ADDR: the guest-physical address of the three
// pages KVM uses for the real-mode TSS on Intel (must not overlap RAM or
// MMIO; Firecracker uses 0xfffbd000).
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, e := ioctlInt(vm.fd, kvmSetTSSAddr, uintptr(addr)); e != 0 {
		return ioctlErr("KVM_SET_TSS_ADDR", e)
	}
	return nil
}

// SetIdentityMapAddr is KVM_SET_IDENTITY_MAP_ADDR: the guest-physical
// address of the one-page identity page table KVM uses for real mode on
// Intel without unrestricted guest.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if _, e := ioctlPtr(vm.fd, kvmSetIdentityMap, &addr); e != 0 {
		return ioctlErr("KVM_SET_IDENTITY_MAP_ADDR", e)
	}
	return nil
}

// CreateIRQChip is KVM_CREATE_IRQCHIP: create the in-kernel PIC, IOAPIC
// and per-vCPU LAPICs. Call it before CreateVCPU.
func (vm *VM) CreateIRQChip() error {
	if _, e := ioctlInt(vm.fd, kvmCreateIRQChip, 0); e != 0 {
		return ioctlErr("KVM_CREATE_IRQCHIP", e)
	}
	return nil
}

// CreatePIT2 is KVM_CREATE_PIT2: create the in-kernel i8254 PIT, with
// flags such as PITSpeakerDummy. Needs CreateIRQChip first.
func (vm *VM) CreatePIT2(flags uint32) error {
	cfg := pitConfig{Flags: flags}
	if _, e := ioctlPtr(vm.fd, kvmCreatePIT2, &cfg); e != 0 {
		return ioctlErr("KVM_CREATE_PIT2", e)
	}
	return nil
}

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION: map size bytes of host
// memory at hostAddr into the guest at gpa as slot, with flags such as
// MemLogDirtyPages. A size of 0 deletes the slot.
//
// hostAddr must stay mapped (mmap memory, never Go heap memory) until the
// slot is deleted or the VM is closed: the guest reads and writes it
// directly.
func (vm *VM) SetUserMemoryRegion(slot, flags uint32, gpa, size uint64, hostAddr uintptr) error {
	r := userspaceMemoryRegion{
		Slot:          slot,
		Flags:         flags,
		GuestPhysAddr: gpa,
		MemorySize:    size,
		UserspaceAddr: uint64(hostAddr),
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if _, e := ioctlPtr(vm.fd, kvmSetUserMemRegion, &r); e != 0 {
		return ioctlErr("KVM_SET_USER_MEMORY_REGION", e)
	}
	if size == 0 {
		delete(vm.slots, slot)
	} else {
		vm.slots[slot] = size
	}
	return nil
}

// DirtyLogWords is the number of uint64 words GetDirtyLog needs for a slot
// of size bytes: one bit per host page, rounded up to 64 pages.
func DirtyLogWords(size uint64) int {
	pages := (size + uint64(unix.Getpagesize()) - 1) / uint64(unix.Getpagesize())
	return int((pages + 63) / 64)
}

// GetDirtyLog is KVM_GET_DIRTY_LOG: copy into bitmap one bit per page of
// slot written since the previous call (the slot needs MemLogDirtyPages),
// and reset the log. bitmap needs DirtyLogWords(slot size) words.
func (vm *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	size, ok := vm.slots[slot]
	if !ok {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: slot %d was not set through SetUserMemoryRegion", slot)
	}
	// The kernel copies the whole slot bitmap; a shorter slice would let it
	// write past the Go allocation.
	if need := DirtyLogWords(size); len(bitmap) < need {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: bitmap has %d words, slot %d needs %d", len(bitmap), slot, need)
	}
	d := dirtyLog{Slot: slot, DirtyBitmap: &bitmap[0]}
	_, e := ioctlPtr(vm.fd, kvmGetDirtyLog, &d)
	runtime.KeepAlive(bitmap)
	if e != 0 {
		return ioctlErr("KVM_GET_DIRTY_LOG", e)
	}
	return nil
}

// CreateVCPU is KVM_CREATE_VCPU: create vCPU id (its initial APIC id) and
// mmap its kvm_run region.
//
// Call it from the goroutine that will run the vCPU, after
// runtime.LockOSThread; see the package documentation.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	r, e := ioctlInt(vm.fd, kvmCreateVCPU, uintptr(id))
	if e != 0 {
		return nil, ioctlErr("KVM_CREATE_VCPU", e)
	}
	fd := int(r)
	if vm.vcpuMmapSize < runSize {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %d bytes, smaller than struct kvm_run (%d)", vm.vcpuMmapSize, runSize)
	}
	mem, err := unix.Mmap(fd, 0, vm.vcpuMmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap kvm_run: %w", err)
	}
	// Ask only now: the xsave size is fixed when the first vCPU is created
	// (guest FPU permissions lock then), so this answer is at least the
	// size KVM will copy for this vCPU.
	xsaveSize, err := vm.CheckExtension(CapXSAVE2)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return nil, err
	}
	return &VCPU{fd: fd, id: id, run: &RunData{mem: mem}, xsaveSize: max(xsaveSize, XSAVELegacySize), xsave2: xsaveSize > XSAVELegacySize}, nil
}

// irqfd issues KVM_IRQFD.
func (vm *VM) irqfd(fd int, gsi, flags uint32) error {
	a := irqfd{FD: uint32(fd), GSI: gsi, Flags: flags}
	if _, e := ioctlPtr(vm.fd, kvmIRQFD, &a); e != 0 {
		return ioctlErr("KVM_IRQFD", e)
	}
	return nil
}

// IRQFD is KVM_IRQFD: a write to eventfd fd raises interrupt line gsi of
// the in-kernel irqchip (edge: asserted and de-asserted at once).
func (vm *VM) IRQFD(fd int, gsi uint32) error { return vm.irqfd(fd, gsi, 0) }

// IRQFDDeassign is KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN: detach eventfd
// fd from gsi.
func (vm *VM) IRQFDDeassign(fd int, gsi uint32) error {
	return vm.irqfd(fd, gsi, irqfdFlagDeassign)
}

// ioeventfd issues KVM_IOEVENTFD.
func (vm *VM) ioeventfd(fd int, addr uint64, length uint32, datamatch *uint64, pio bool, flags uint32) error {
	a := ioeventfd{Addr: addr, Len: length, FD: int32(fd), Flags: flags}
	if datamatch != nil {
		a.Datamatch = *datamatch
		a.Flags |= ioeventfdFlagDatamatch
	}
	if pio {
		a.Flags |= ioeventfdFlagPIO
	}
	if _, e := ioctlPtr(vm.fd, kvmIOEventFD, &a); e != 0 {
		return ioctlErr("KVM_IOEVENTFD", e)
	}
	return nil
}

// IOEventFD is KVM_IOEVENTFD: a guest write of length bytes (1, 2, 4, 8,
// or 0 for any) to addr (a port if pio, else MMIO) signals eventfd fd in
// the kernel instead of exiting, optionally only when the value equals
// *datamatch.
func (vm *VM) IOEventFD(fd int, addr uint64, length uint32, datamatch *uint64, pio bool) error {
	return vm.ioeventfd(fd, addr, length, datamatch, pio, 0)
}

// IOEventFDDeassign is KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN:
// remove the matching IOEventFD registration (same arguments).
func (vm *VM) IOEventFDDeassign(fd int, addr uint64, length uint32, datamatch *uint64, pio bool) error {
	return vm.ioeventfd(fd, addr, length, datamatch, pio, ioeventfdFlagDeassign)
}

// SetIRQLine is KVM_IRQ_LINE: set the level of interrupt line irq (a GSI)
// of the in-kernel irqchip.
func (vm *VM) SetIRQLine(irq uint32, level bool) error {
	a := irqLevel{IRQ: irq}
	if level {
		a.Level = 1
	}
	if _, e := ioctlPtr(vm.fd, kvmIRQLine, &a); e != 0 {
		return ioctlErr("KVM_IRQ_LINE", e)
	}
	return nil
}

// GetClock is KVM_GET_CLOCK: the current kvmclock value (ns) as seen by
// the guest.
func (vm *VM) GetClock() (ClockData, error) {
	var c ClockData
	if _, e := ioctlPtr(vm.fd, kvmGetClock, &c); e != 0 {
		return ClockData{}, ioctlErr("KVM_GET_CLOCK", e)
	}
	return c, nil
}

// SetClock is KVM_SET_CLOCK: set the kvmclock value (restoring a
// snapshot); Flags may carry ClockRealtime to account for elapsed time.
func (vm *VM) SetClock(c *ClockData) error {
	if _, e := ioctlPtr(vm.fd, kvmSetClock, c); e != 0 {
		return ioctlErr("KVM_SET_CLOCK", e)
	}
	return nil
}

// GetIRQChip is KVM_GET_IRQCHIP: the state of in-kernel interrupt
// controller chipID (IRQChipPICMaster, IRQChipPICSlave or IRQChipIOAPIC).
func (vm *VM) GetIRQChip(chipID uint32) (IRQChip, error) {
	c := IRQChip{ChipID: chipID}
	if _, e := ioctlPtr(vm.fd, kvmGetIRQChip, &c); e != 0 {
		return IRQChip{}, ioctlErr("KVM_GET_IRQCHIP", e)
	}
	return c, nil
}

// SetIRQChip is KVM_SET_IRQCHIP: restore the state of the interrupt
// controller c.ChipID.
func (vm *VM) SetIRQChip(c *IRQChip) error {
	if _, e := ioctlPtr(vm.fd, kvmSetIRQChip, c); e != 0 {
		return ioctlErr("KVM_SET_IRQCHIP", e)
	}
	return nil
}

// GetPIT2 is KVM_GET_PIT2: the state of the in-kernel PIT.
func (vm *VM) GetPIT2() (PITState2, error) {
	var p PITState2
	if _, e := ioctlPtr(vm.fd, kvmGetPIT2, &p); e != 0 {
		return PITState2{}, ioctlErr("KVM_GET_PIT2", e)
	}
	return p, nil
}

// SetPIT2 is KVM_SET_PIT2: restore the state of the in-kernel PIT.
func (vm *VM) SetPIT2(p *PITState2) error {
	if _, e := ioctlPtr(vm.fd, kvmSetPIT2, p); e != 0 {
		return ioctlErr("KVM_SET_PIT2", e)
	}
	return nil
}
