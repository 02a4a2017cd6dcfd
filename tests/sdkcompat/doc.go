// Package sdkcompat checks that squib is a drop-in for Firecracker from the
// point of view of firecracker-go-sdk v1.0.0, the Go client most existing
// orchestrators link against.
//
// It is a separate module so that the SDK and its large dependency tree
// (go-openapi, containerd, CNI, netlink) never enter squib's own go.mod.
// The tests build squib from the enclosing module (../..), start it as a
// subprocess on a private Unix socket and drive it only through the SDK:
// once through the raw firecracker.Client and once through
// firecracker.Machine's handler chain, which is what real users call.
//
// Run with:
//
//	cd tests/sdkcompat && go test ./...
package sdkcompat
