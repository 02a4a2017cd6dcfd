// Package boottimer is Firecracker's boot-timer pseudo-device, present only
// with --boot-timer: one MMIO page at 0xC0000000, attached before every
// other MMIO device, that a guest's init writes the byte 123 to when boot
// is complete. The device then logs, at info level,
//
//	Guest-boot-time =  95342 us 95 ms,  84012 CPU us 84 CPU ms
//
// the wall-clock time since InstanceStart began and the VMM process's CPU
// time over the same span. Firecracker's boot-time tests grep this line.
package boottimer
