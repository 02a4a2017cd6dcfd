//go:build e2e

// Package e2e boots real Linux guests with the squib binary under KVM and
// checks what the guests report. It needs a KVM that can run a stock
// kernel, so tests/sandbox/run.sh runs it: directly on a host with
// hardware-backed KVM, otherwise inside the nested sandbox. The inputs come
// from the environment (SQUIB_BIN, SQUIB_GUEST_KERNEL for the bzImage,
// SQUIB_GUEST_VMLINUX for the ELF image, SQUIB_GUEST_INITRD); a missing one
// fails the run rather than skipping it.
package e2e
