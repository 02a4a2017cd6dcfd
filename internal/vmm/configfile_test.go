package vmm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/vmm"
	"github.com/squib-vmm/squib/internal/vmm/vmmtest"
)

func newController(t *testing.T) *vmm.Controller {
	t.Helper()
	c := vmm.NewController(vmm.Options{
		Builder: &vmmtest.Builder{},
		Hooks: vmm.Hooks{
			Mmds:             mmds.NewStore(mmds.DefaultSizeLimit),
			ConfigureLogger:  func(vmm.LoggerConfig) error { return nil },
			ConfigureMetrics: func(vmm.MetricsConfig) error { return nil },
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Run(ctx)
	return c
}

func apply(t *testing.T, c *vmm.Controller, data []byte) {
	t.Helper()
	reqs, err := vmm.ParseConfigFile(data)
	if err != nil {
		t.Fatalf("ParseConfigFile: %v", err)
	}
	for _, r := range reqs {
		if _, err := c.Do(context.Background(), r); err != nil {
			t.Fatalf("%s: %v", r.Op, err)
		}
	}
}

// TestConfigFileRoundTrip: what GET /vm/config returns loads back, as a
// config file, to the same configuration.
func TestConfigFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel, initrd, root, data := write("vmlinux"), write("initrd"), write("root.ext4"), write("data.ext4")
	cfg := fmt.Sprintf(`{
	  "boot-source": {"kernel_image_path": %q, "initrd_path": %q, "boot_args": "console=ttyS0 reboot=k"},
	  "drives": [
	    {"drive_id": "data", "path_on_host": %q, "is_root_device": false, "is_read_only": true,
	     "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 1000, "one_time_burst": 4096}}},
	    {"drive_id": "rootfs", "path_on_host": %q, "is_root_device": true, "partuuid": "abcd-01", "cache_type": "Writeback"}
	  ],
	  "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": true, "huge_pages": "None"},
	  "balloon": {"amount_mib": 16, "deflate_on_oom": true, "stats_polling_interval_s": 1},
	  "vsock": {"guest_cid": 3, "uds_path": %q},
	  "entropy": {"rate_limiter": {"ops": {"size": 10, "refill_time": 100}}},
	  "pmem": [{"id": "pm0", "path_on_host": %q, "read_only": true}],
	  "memory-hotplug": {"total_size_mib": 1024},
	  "logger": {"level": "Debug"},
	  "some-future-key": {"ignored": true}
	}`, kernel, initrd, data, root, filepath.Join(dir, "v.sock"), data)

	first := newController(t)
	apply(t, first, []byte(cfg))
	got1 := first.View().VMConfig

	// The vsock socket is bound by the first controller; the second needs
	// its own path, so compare with the path swapped back.
	again := strings.Replace(string(got1), filepath.Join(dir, "v.sock"), filepath.Join(dir, "v2.sock"), 1)
	second := newController(t)
	apply(t, second, []byte(again))
	got2 := strings.Replace(string(second.View().VMConfig), filepath.Join(dir, "v2.sock"), filepath.Join(dir, "v.sock"), 1)
	if string(got1) != got2 {
		t.Errorf("round trip changed the configuration:\nfirst:  %s\nsecond: %s", got1, got2)
	}
	// The root device comes first, whatever the file's order.
	if !strings.Contains(string(got1), `"drives":[{"drive_id":"rootfs"`) {
		t.Errorf("root drive not first: %s", got1)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"drives": []}`, "missing field `boot-source`"},
		{`{"boot-source": {"kernel_image_path": "/k"}}`, "missing field `drives`"},
		{`{"boot-source": {"kernel_image_path": "/k"}, "drives": [], "machine-config": {"vcpu_count": 1}}`, "missing field `mem_size_mib`"},
		{`{"boot-source": {"kernel_image_path": "/k", "bogus": 1}, "drives": []}`, "unknown field `bogus`"},
		{`{"boot-source": {"kernel_image_path": "/k"}, "drives": [], "cpu-config": "/nonexistent/template.json"}`, "No such file or directory (os error 2)"},
	} {
		_, err := vmm.ParseConfigFile([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfigFile(%s) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func FuzzParseConfigFile(f *testing.F) {
	f.Add([]byte(`{"boot-source":{"kernel_image_path":"/k"},"drives":[{"drive_id":"a","is_root_device":true,"path_on_host":"/p"}],"cpu-config":{"msr_modifiers":[{"addr":"0x1","bitmap":"0b1x"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		reqs, err := vmm.ParseConfigFile(b)
		if err == nil && len(reqs) == 0 {
			t.Fatal("a valid config file yields at least the boot-source request")
		}
	})
}
