package x86

// hostCPUID executes CPUID on the host (hostcpuid_amd64.s).
func hostCPUID(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
