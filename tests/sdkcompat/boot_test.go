package sdkcompat

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	firecracker "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
)

// TestMachineStartBootsGuest boots a real Linux guest through the SDK's
// Machine.Start, as firecracker-containerd or flintlock would, and waits for
// the guest to power off. It needs KVM and a guest kernel: the KVM harness
// runs it (`SQUIB_TEST_PKG=./tests/sdkcompat tests/sandbox/run.sh`, which
// `make e2e` does) and provides SQUIB_GUEST_VMLINUX and SQUIB_GUEST_INITRD.
func TestMachineStartBootsGuest(t *testing.T) {
	kernel, initrd := os.Getenv("SQUIB_GUEST_VMLINUX"), os.Getenv("SQUIB_GUEST_INITRD")
	if kernel == "" || initrd == "" {
		t.Skip("needs a guest kernel and KVM: run through tests/sandbox/run.sh (make e2e runs it)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	console := filepath.Join(dir, "console.out")
	out, err := os.Create(console)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(squibBin, "--api-sock", sock, "--id", "sdk-boot")
	cmd.Stdout, cmd.Stderr = out, out

	cfg := firecracker.Config{
		SocketPath:      sock,
		VMID:            "sdk-boot",
		KernelImagePath: kernel,
		InitrdPath:      initrd,
		KernelArgs:      "console=ttyS0 reboot=k panic=1 quiet i8042.noaux i8042.nomux i8042.dumbkbd",
		LogPath:         filepath.Join(dir, "squib.log"),
		LogLevel:        "Info",
		MachineCfg: models.MachineConfiguration{
			VcpuCount:  firecracker.Int64(2),
			MemSizeMib: firecracker.Int64(128),
			Smt:        firecracker.Bool(false),
		},
	}
	entry, logw := newLogger(t)
	defer logw.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := firecracker.NewMachine(ctx, cfg, firecracker.WithProcessRunner(cmd), firecracker.WithLogger(entry))
	if err != nil {
		t.Fatalf("NewMachine: %v", err)
	}
	if err := m.Start(ctx); err != nil {
		b, _ := os.ReadFile(cfg.LogPath)
		t.Fatalf("Machine.Start: %v\nsquib log:\n%s", err, b)
	}
	// The guest prints its facts and powers off (reboot=k through the
	// i8042): squib exits 0 and Wait returns no error.
	if err := m.Wait(ctx); err != nil {
		b, _ := os.ReadFile(console)
		t.Fatalf("Machine.Wait: %v\nconsole:\n%s", err, b)
	}
	b, _ := os.ReadFile(console)
	for _, want := range []string{"SQUIB-GUEST-UP", "SQUIB-CPUS=2"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("console lacks %q:\n%s", want, b)
		}
	}
}
