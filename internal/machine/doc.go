// Package machine builds and runs a microVM on KVM: guest memory, the
// in-kernel interrupt controllers, the legacy devices, the loaded kernel
// with its boot tables, and one goroutine per vCPU locked to its own OS
// thread. Builder implements vmm.Builder and Machine implements vmm.VM, so
// the controller above stays free of KVM.
//
// Thread model (Go has no thread-affine objects, so it is written down
// here): each vCPU goroutine calls runtime.LockOSThread and never unlocks;
// that thread creates the vCPU, configures it and issues every KVM_RUN.
// Other goroutines reach a vCPU only by kicking it: they set kvm_run's
// immediate_exit and send the thread a real-time signal, which makes
// KVM_RUN return EINTR.
package machine
