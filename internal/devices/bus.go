// Package devices holds what every emulated device shares: the port-I/O and
// MMIO buses a vCPU exit is dispatched on, and the interrupt line a device
// raises. Device models live in sub-packages (legacy, virtio).
package devices

import (
	"fmt"
	"sort"
	"sync"
)

// Device is an emulated device on a bus. Offsets are relative to the base
// the device was inserted at. Read and Write are called from vCPU
// goroutines, possibly at the same time: a device synchronises itself.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// Interrupt is a device's interrupt line (an irqfd in a running VM).
type Interrupt interface {
	Trigger() error
}

// InterruptFunc adapts a function to Interrupt.
type InterruptFunc func() error

// Trigger calls f.
func (f InterruptFunc) Trigger() error { return f() }

type busRange struct {
	base, size uint64
	dev        Device
}

// Bus maps address ranges to devices. Lookups take a read lock only, so
// vCPUs dispatch in parallel; inserts happen while the VM is built.
type Bus struct {
	mu     sync.RWMutex
	ranges []busRange // sorted by base, non-overlapping
}

// Insert places dev at [base, base+size).
func (b *Bus) Insert(dev Device, base, size uint64) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("invalid bus range [%#x, +%#x)", base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.ranges {
		if base < r.base+r.size && r.base < base+size {
			return fmt.Errorf("bus range [%#x, +%#x) overlaps [%#x, +%#x)", base, size, r.base, r.size)
		}
	}
	b.ranges = append(b.ranges, busRange{base, size, dev})
	sort.Slice(b.ranges, func(i, j int) bool { return b.ranges[i].base < b.ranges[j].base })
	return nil
}

func (b *Bus) find(addr uint64) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.ranges), func(i int) bool { return b.ranges[i].base+b.ranges[i].size > addr })
	if i < len(b.ranges) && addr >= b.ranges[i].base {
		return b.ranges[i].dev, addr - b.ranges[i].base, true
	}
	return nil, 0, false
}

// Read dispatches a read at addr; it reports whether a device claimed it.
// An unclaimed read leaves data as it is (the vCPU loop zeroes it first).
func (b *Bus) Read(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr)
	if ok {
		dev.Read(off, data)
	}
	return ok
}

// Write dispatches a write at addr; it reports whether a device claimed it.
func (b *Bus) Write(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr)
	if ok {
		dev.Write(off, data)
	}
	return ok
}
