// Package kvm is squib's thin layer over the Linux KVM ioctl API on x86_64:
// the system handle (/dev/kvm), virtual machines, and vCPUs with their
// shared kvm_run page. Each method is one ioctl, named after it in its
// documentation and in its errors ("KVM_SET_REGS: invalid argument"); the
// errno stays reachable with errors.Is.
//
// Constants and ioctl numbers are in consts.go, structures in types.go,
// and all unsafe code in kvm_unsafe.go. layout_test.go compiles a C program
// against the installed <linux/kvm.h> to check every struct layout and
// constant against the kernel's.
//
// # Threads
//
// A vCPU belongs to one OS thread. The goroutine that runs a vCPU must call
// runtime.LockOSThread, never unlock, create the vCPU (VM.CreateVCPU) and
// issue every vCPU ioctl itself. This package does not track thread ids:
// the caller records unix.Gettid() on that goroutine if it needs to kick
// the vCPU.
//
// # Run, EINTR and kicks
//
// VCPU.Run returns unix.EINTR whenever a signal reaches the thread during
// KVM_RUN, including the Go runtime's own preemption signal (SIGURG), so a
// run loop treats EINTR as an ordinary iteration. To stop a running vCPU
// (pause, snapshot, exit), another goroutine calls
// RunData().SetImmediateExit(true) and then sends a real-time signal >= 35
// to the vCPU thread with tgkill; signals 32-34 are reserved by the Go
// runtime and libc, and 35 and up are caught by the runtime and otherwise
// ignored. KVM_RUN then returns EINTR at once, whether the signal arrived
// inside the guest or just before entry, and the loop sees ImmediateExit
// set. Clear it before running again.
package kvm
