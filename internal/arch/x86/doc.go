// Package x86 builds the x86_64 machine squib gives a guest, the same as
// Firecracker's: the guest-physical memory layout, the boot state (zero
// page, PVH start info, GDT, identity page tables, registers, MSRs), CPUID
// normalisation, and the MP and ACPI tables that describe the vCPUs and
// devices. Everything here is pure computation over guest memory and KVM
// structures, testable without KVM.
package x86
