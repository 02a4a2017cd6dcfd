// Package selftest is the test binary the tests/sandbox harness runs while
// tests/e2e does not exist yet, and a check of the harness itself: /dev/kvm
// works where the harness runs the tests (on the host or inside the L1
// sandbox guest) and the files named by the SQUIB_* variables are there.
//
// Outside the harness (SQUIB_TEST_MODE unset), a missing /dev/kvm or missing
// variables skip the tests instead of failing them, so `go test ./...` passes
// on machines without KVM.
package selftest
