//go:build !race

package seccomp

const raceEnabled = false
