//go:build !amd64

package x86

// hostCPUID reports nothing off x86_64, where no KVM x86 guest runs; the
// package still builds so that its pure encoders can be tested anywhere.
func hostCPUID(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32) { return 0, 0, 0, 0 }
