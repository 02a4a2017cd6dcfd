package machine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/vmm"
)

func resources(t *testing.T) *vmm.Resources {
	t.Helper()
	res := vmm.NewResources()
	k := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(k, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := res.SetBootSource(vmm.BootSource{KernelImagePath: &k}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	return res
}

// TestBuildWithoutKVM: on a host without the hypervisor device InstanceStart
// fails with Firecracker's prefix and a message naming the device.
func TestBuildWithoutKVM(t *testing.T) {
	b := &Builder{Device: "/nonexistent/kvm"}
	_, err := b.Build(context.Background(), resources(t), vmm.BuildOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), vmm.PrefixStart) ||
		!strings.Contains(err.Error(), "Cannot open /nonexistent/kvm: No such file or directory (os error 2)") {
		t.Fatalf("Build = %v", err)
	}
}

// TestBuildRefusesDevicesItCannotAttach: configured devices squib cannot
// attach yet fail InstanceStart clearly instead of being left out.
func TestBuildRefusesDevicesItCannotAttach(t *testing.T) {
	res := resources(t)
	total := uint32(1024)
	if err := res.SetHotplug(vmm.MemoryHotplugConfig{TotalSizeMib: &total}); err != nil {
		t.Fatal(err)
	}
	_, err := (&Builder{}).Build(context.Background(), res, vmm.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "squib cannot attach memory hot-plug yet") {
		t.Fatalf("Build = %v", err)
	}
}

// TestBuildRejectsANonKernel runs where KVM opens (the harness covers real
// boots): a file that is no kernel is a clear InstanceStart error.
func TestBuildRejectsANonKernel(t *testing.T) {
	if _, err := os.Stat(KVMDevice); err != nil {
		t.Skipf("%s: %v (tests/e2e covers this under KVM)", KVMDevice, err)
	}
	_, err := (&Builder{}).Build(context.Background(), resources(t), vmm.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "not an ELF vmlinux or bzImage") {
		t.Fatalf("Build = %v", err)
	}
}

// TestSerialLimiter: PUT /serial's rate_limiter becomes a byte limiter that
// drops output beyond its bucket, and no limiter at all (a plain nil, so the
// serial skips it) when it limits nothing.
func TestSerialLimiter(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	for _, s := range []*vmm.Serial{
		nil,
		{},
		{RateLimiter: &vmm.TokenBucket{Size: u(0), RefillTime: u(1000)}},
		{RateLimiter: &vmm.TokenBucket{Size: u(4), RefillTime: u(0)}},
	} {
		if l := serialLimiter(s); l != nil {
			t.Errorf("serialLimiter(%+v) = %#v, want nil", s, l)
		}
	}
	l := serialLimiter(&vmm.Serial{RateLimiter: &vmm.TokenBucket{Size: u(4), OneTimeBurst: u(2), RefillTime: u(1_000_000)}})
	if l == nil {
		t.Fatal("no limiter for an enabled bucket")
	}
	n := 0
	for range 100 {
		if l.AllowBytes(1) {
			n++
		}
	}
	if n != 6 {
		t.Fatalf("%d bytes allowed, want size 4 + burst 2", n)
	}
}
