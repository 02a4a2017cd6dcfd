// Package legacy holds the x86 port-I/O devices of the machine squib gives a
// guest, which is Firecracker's machine plus one addition:
//
//   - Serial: the 16550A UART at 0x3f8 (8 ports, IRQ 4), register for
//     register the model rust-vmm's vm-superio emulates and Firecracker
//     uses, including its quirks (enabling the THR-empty interrupt in IER
//     raises nothing; reading IIR clears every pending cause).
//   - I8042: the keyboard controller at 0x60 (5 ports, IRQ 1), just enough
//     for Linux's reboot=k path (command 0xFE) and Ctrl-Alt-Del injection.
//   - RTC: a minimal MC146818 CMOS clock at 0x70/0x71. Firecracker has none;
//     squib adds it because without one a stock distribution kernel's
//     rtc_cmos driver polls a floating bus (every read 0xFF, "update in
//     progress" forever) and stalls boot for seconds.
//
// Each device implements devices.Device and locks itself, since any vCPU
// goroutine may call it. Interrupts are raised with the device lock held,
// as Firecracker does, so an Interrupt must not call back into its device.
// Counters go to metrics.Default (groups "uart" and "i8042"); messages a
// guest can provoke are logged through rate limiters.
package legacy
