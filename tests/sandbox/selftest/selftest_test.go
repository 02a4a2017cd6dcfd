package selftest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// ioctl numbers from <linux/kvm.h>: _IO(KVMIO=0xAE, nr).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
)

// underHarness reports whether tests/sandbox/run.sh started this binary; it
// then promises a working /dev/kvm and the SQUIB_* files.
func underHarness() bool { return os.Getenv("SQUIB_TEST_MODE") != "" }

func openKVM(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if !underHarness() {
			t.Skipf("no usable /dev/kvm (%v); run tests/sandbox/run.sh", err)
		}
		t.Fatalf("open /dev/kvm: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestKVMAPIVersion(t *testing.T) {
	fd := openKVM(t)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		t.Fatalf("KVM_GET_API_VERSION: %v", err)
	}
	// 12 is the only stable KVM API version there has ever been.
	if v != 12 {
		t.Fatalf("KVM_GET_API_VERSION = %d, want 12", v)
	}
	t.Logf("KVM_GET_API_VERSION = %d (mode %q)", v, os.Getenv("SQUIB_TEST_MODE"))
}

func TestKVMCreateVM(t *testing.T) {
	fd := openKVM(t)
	// machine type 0: the default VM type
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	unix.Close(vm)
}

// harnessFile returns the path in the environment variable name, skipping
// the test when the harness did not set it.
func harnessFile(t *testing.T, name string) string {
	t.Helper()
	p := os.Getenv(name)
	if p == "" {
		if underHarness() {
			t.Fatalf("%s is not set", name)
		}
		t.Skipf("%s is not set; run tests/sandbox/run.sh", name)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !st.Mode().IsRegular() || st.Size() == 0 {
		t.Fatalf("%s=%s is not a non-empty regular file", name, p)
	}
	return p
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func TestGuestFiles(t *testing.T) {
	checks := []struct {
		env   string
		off   int64
		magic string
	}{
		{"SQUIB_GUEST_KERNEL", 0x202, "HdrS"}, // x86 boot protocol header
		{"SQUIB_GUEST_VMLINUX", 0, "\x7fELF"}, // ELF
		{"SQUIB_GUEST_INITRD", 0, "\x1f\x8b"}, // gzip
	}
	for _, c := range checks {
		t.Run(c.env, func(t *testing.T) {
			p := harnessFile(t, c.env)
			if got := readAt(t, p, c.off, len(c.magic)); !bytes.Equal(got, []byte(c.magic)) {
				t.Fatalf("%s=%s: bytes at %#x are %q, want %q", c.env, p, c.off, got, c.magic)
			}
		})
	}
}

func TestSquibRuns(t *testing.T) {
	bin := harnessFile(t, "SQUIB_BIN")
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), "Firecracker v") {
		t.Fatalf("%s --version printed %q, want a Firecracker version line", bin, out)
	}
}

func TestTempDirWritable(t *testing.T) {
	// e2e tests write VM config files, sockets and disk images here
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/probe", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dir + "/probe"); err != nil || string(b) != "x" {
		t.Fatalf("read back %q, %v", b, err)
	}
}
