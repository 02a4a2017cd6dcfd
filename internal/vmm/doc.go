// Package vmm holds squib's VM resources and the single controller that
// changes them.
//
// It mirrors Firecracker's vmm crate: the typed, validated configuration
// models (vmm_config), the resource set that a boot consumes (resources.rs),
// and the controller through which every mutation passes (rpc_interface.rs).
// The API layer above turns HTTP into these types; everything here is
// testable without KVM because the hypervisor sits behind the Builder and
// VM interfaces.
//
// Concurrency: exactly one goroutine (Controller.Run) owns the resources and
// the running VM. Readers never wait for it: after every change the
// controller publishes an immutable View through an atomic pointer, which
// the API's read-only fast path serves.
package vmm
