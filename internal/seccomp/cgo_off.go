//go:build !cgo

package seccomp

// cgoBuild: this binary is pure Go (CGO_ENABLED=0, how `make build` and
// the sandbox build squib, and how default.json was traced).
const cgoBuild = false
