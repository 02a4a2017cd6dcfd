package app

// The one in-process test: Main boots a config file with the test builder.
// logger.Default and metrics.Default are process globals, so this file
// holds the only call of Main that gets past argument parsing.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/jsonx"
	"github.com/squib-vmm/squib/internal/vmm"
	"github.com/squib-vmm/squib/internal/vmm/vmmtest"
)

// notifyBuilder reports each VM the test builder builds, so that the test
// reads Builder.Last only after Build has set it.
type notifyBuilder struct {
	*vmmtest.Builder
	built chan struct{}
}

func (b notifyBuilder) Build(ctx context.Context, res *vmm.Resources, opts vmm.BuildOptions) (vmm.VM, error) {
	vm, err := b.Builder.Build(ctx, res, opts)
	if err == nil {
		b.built <- struct{}{}
	}
	return vm, err
}

// vmConfigFile is a config file in the exact shape of GET /vm/config, like
// Firecracker's tests/framework/vm_config.json.
const vmConfigFile = `{
  "balloon": null,
  "drives": [
    {
      "drive_id": "rootfs",
      "partuuid": null,
      "is_root_device": true,
      "cache_type": "Unsafe",
      "is_read_only": false,
      "path_on_host": "{dir}/rootfs.ext4",
      "rate_limiter": null,
      "io_engine": "Sync",
      "socket": null
    }
  ],
  "boot-source": {
    "kernel_image_path": "{dir}/vmlinux.bin",
    "initrd_path": null,
    "boot_args": "console=ttyS0 reboot=k panic=1"
  },
  "cpu-config": null,
  "logger": null,
  "machine-config": {
    "vcpu_count": 2,
    "mem_size_mib": 256,
    "smt": false,
    "track_dirty_pages": false,
    "huge_pages": "None"
  },
  "metrics": null,
  "mmds-config": null,
  "network-interfaces": [],
  "vsock": null,
  "entropy": null,
  "pmem": [],
  "memory-hotplug": null
}`

func TestMainBootsFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "vmlinux.bin", "kernel")
	writeFile(t, dir, "rootfs.ext4", "rootfs")
	cfgText := strings.ReplaceAll(vmConfigFile, "{dir}", dir)
	cfg := writeFile(t, dir, "vm.json", cfgText)
	logPath := filepath.Join(dir, "log")
	sock := filepath.Join(dir, "api.sock")

	b := notifyBuilder{Builder: &vmmtest.Builder{}, built: make(chan struct{}, 1)}
	ready := make(chan string, 1)
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main([]string{"--api-sock", sock, "--config-file", cfg, "--log-path", logPath, "--id", "inproc-1"},
			Env{Stdout: &stdout, Stderr: &stderr, Builder: b, Signals: make(chan os.Signal), Ready: func(s string) { ready <- s }})
	}()
	readLog := func() string { d, _ := os.ReadFile(logPath); return string(d) }
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nlog:\n%s", append(args, readLog())...)
	}

	select {
	case s := <-ready:
		if s != sock {
			t.Errorf("Ready(%q), want %q", s, sock)
		}
	case code := <-done:
		fail("Main returned %d before serving; stderr: %s", code, stderr.String())
	case <-time.After(startTimeout):
		fail("Main did not call Ready")
	}
	select {
	case <-b.built:
	case code := <-done:
		fail("Main returned %d before booting; stderr: %s", code, stderr.String())
	case <-time.After(startTimeout):
		fail("the builder was not called")
	}
	vm := b.Last
	if vm == nil {
		t.Fatal("Builder.Last is nil after Build")
	}

	c := newUnixClient(sock)
	defer c.close()
	// The boot completes asynchronously to Build's return: poll GET /.
	var info struct {
		ID, State, VmmVersion string
	}
	deadline := time.Now().Add(startTimeout)
	for {
		status, body := c.do(t, "GET", "/", "")
		if status != 200 {
			fail("GET / = %d %s", status, body)
		}
		var raw map[string]string
		if err := json.Unmarshal(body, &raw); err != nil {
			fail("GET / body %q: %v", body, err)
		}
		info.ID, info.State, info.VmmVersion = raw["id"], raw["state"], raw["vmm_version"]
		if info.State == "Running" {
			break
		}
		if time.Now().After(deadline) {
			fail("GET / state = %q, want Running", info.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info.ID != "inproc-1" || info.VmmVersion != vmm.FirecrackerVersion {
		t.Errorf("GET / = %+v", info)
	}

	status, got := c.do(t, "GET", "/vm/config", "")
	if status != 200 {
		fail("GET /vm/config = %d %s", status, got)
	}
	// The file is already in the GET shape, so it must come back as is...
	if !jsonEqual(t, got, []byte(cfgText)) {
		t.Errorf("GET /vm/config differs from the config file:\n got: %s\nwant: %s", got, cfgText)
	}
	// ...and equal its decoding re-encoded in the config shape.
	var full vmm.FullVMConfig
	if err := jsonx.Decode([]byte(cfgText), &full); err != nil {
		t.Fatalf("decoding the config file: %v", err)
	}
	reenc, err := json.Marshal(&full)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, got, reenc) {
		t.Errorf("GET /vm/config differs from the re-encoded config file:\n got: %s\nwant: %s", got, reenc)
	}

	log := readLog()
	for _, s := range []string{
		"Running Firecracker v" + vmm.FirecrackerVersion,
		"Successfully started microvm that was configured from one single json",
	} {
		if !strings.Contains(log, s) {
			t.Errorf("log lacks %q:\n%s", s, log)
		}
	}

	// The guest reboots: Main returns 0.
	c.close()
	vm.Exit(0)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("Main returned %d after a clean guest exit, want 0; stderr: %s", code, stderr.String())
		}
	case <-time.After(exitTimeout):
		fail("Main did not return after the VM exited")
	}
	log = readLog()
	if !strings.Contains(log, "Firecracker exiting successfully. exit_code=0") {
		t.Errorf("log lacks the successful exit line:\n%s", log)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q, want empty", stderr.String())
	}
	checkLogLines(t, log, true)
}
