//go:build cgo

package seccomp

// cgoBuild: this binary links the C runtime (a plain `go build` where a C
// compiler is present). Its threads then come from glibc's pthread_create,
// and its C allocations from glibc's malloc, which need cgoSyscalls.
const cgoBuild = true
