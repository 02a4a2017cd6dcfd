package boottimer

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/logger"
)

// Where Firecracker maps the device on x86_64.
const (
	Base = 0xc000_0000 // guest physical address
	Size = 0x1000      // one page
)

// MagicBootComplete is the byte a guest writes at offset 0 to report that
// it has booted.
const MagicBootComplete = 123

// Timestamp is a point in time on the two clocks the device compares.
type Timestamp struct {
	Wall time.Time     // carries Go's monotonic reading (CLOCK_MONOTONIC)
	CPU  time.Duration // CLOCK_PROCESS_CPUTIME_ID: the whole process's CPU time
}

// Now returns the current Timestamp. Take it when InstanceStart begins
// (Firecracker: at the start of build_microvm_for_boot).
func Now() Timestamp {
	return Timestamp{Wall: time.Now(), CPU: processCPU()}
}

func processCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0 // cannot happen on Linux; a 0 only skews the CPU figure
	}
	return time.Duration(ts.Nano())
}

// limiter: Firecracker's info! is rate-limited, and the guest can write
// the magic byte at will.
var limiter logger.RateLimiter

var _ devices.Device = (*BootTimer)(nil)

// BootTimer is the device. It is immutable, so concurrent vCPUs need no
// lock.
type BootTimer struct {
	start Timestamp
	log   logger.Handle
}

// New returns a boot timer measuring from start.
func New(start Timestamp) *BootTimer {
	return &BootTimer{start: start, log: logger.For("fc_vcpu", "devices/boottimer")}
}

// Read implements devices.Device. Reads return nothing (the vCPU loop has
// zeroed data).
func (*BootTimer) Read(offset uint64, data []byte) {}

// Write implements devices.Device: a 1-byte write of MagicBootComplete at
// offset 0 logs the boot time; anything else is ignored.
func (b *BootTimer) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 1 || data[0] != MagicBootComplete {
		return
	}
	wall := time.Since(b.start.Wall).Microseconds()
	cpu := (processCPU() - b.start.CPU).Microseconds()
	b.log.RateLimited(&limiter).Infof("%s", Line(uint64(max(wall, 0)), uint64(max(cpu, 0))))
}

// Line formats the log message for a boot that took wallUS microseconds
// of wall-clock time and cpuUS of VMM CPU time, exactly as Firecracker.
func Line(wallUS, cpuUS uint64) string {
	return fmt.Sprintf("Guest-boot-time = %6d us %d ms, %6d CPU us %d CPU ms", wallUS, wallUS/1000, cpuUS, cpuUS/1000)
}
