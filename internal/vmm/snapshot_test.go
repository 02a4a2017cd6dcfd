package vmm_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/vmm"
	"github.com/squib-vmm/squib/internal/vmm/vmmtest"
)

// TestSnapshotLoadKeepsReadsFast: while a snapshot load runs (here, for as
// long as the test holds it), the read-only views answer at once and
// GET / names the load in progress; afterwards the VM is Paused.
func TestSnapshotLoadKeepsReadsFast(t *testing.T) {
	b := &vmmtest.Builder{Block: make(chan struct{}), Started: make(chan struct{}, 1), RestoreOK: true}
	c := vmm.NewController(vmm.Options{Builder: b, Hooks: vmm.Hooks{Mmds: mmds.NewStore(mmds.DefaultSizeLimit)}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	path := "/snap"
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, vmm.Request{Op: vmm.OpSnapshotLoad, Body: &vmm.SnapshotLoadParams{SnapshotPath: &path, MemFilePath: &path}})
		done <- err
	}()
	<-b.Started
	v := c.View()
	var info vmm.InstanceInfo
	if err := json.Unmarshal(c.InstanceInfo(v), &info); err != nil {
		t.Fatal(err)
	}
	if info.InProgress != "PUT /snapshot/load" || info.State != vmm.StateNotStarted {
		t.Errorf("GET / during the load: %+v", info)
	}
	if len(v.MachineConfig) == 0 || len(v.VMConfig) == 0 {
		t.Error("the configuration views are empty during the load")
	}
	close(b.Block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	v = c.View()
	if got := string(c.InstanceInfo(v)); strings.Contains(got, "in_progress") || !strings.Contains(got, `"state":"Paused"`) {
		t.Errorf("GET / after the load: %s", got)
	}
}

// TestRestoreResources: the saved configuration is rebuilt with the
// load's overrides and settings, and bad overrides are refused with
// Firecracker's messages.
func TestRestoreResources(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	os.WriteFile(disk, make([]byte, 4096), 0o644)
	cfg := `{"boot-source":{"kernel_image_path":"/gone/vmlinux","boot_args":"console=ttyS0"},
		"drives":[{"drive_id":"root","path_on_host":"` + disk + `","is_root_device":true,"is_read_only":false}],
		"machine-config":{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,"huge_pages":"None"},
		"vsock":{"guest_cid":3,"uds_path":"` + filepath.Join(dir, "old.sock") + `"},
		"balloon":{"amount_mib":16,"deflate_on_oom":true,"stats_polling_interval_s":1}}`
	yes, no := true, false
	file, uffd := vmm.MemBackendType("File"), vmm.MemBackendType("Uffd")
	newSock := filepath.Join(dir, "new.sock")
	p := &vmm.SnapshotLoadParams{MemBackend: &vmm.MemBackend{BackendType: &file}, TrackDirtyPages: &no, EnableDiffSnapshots: &yes,
		VsockOverride: &vmm.VsockOverride{UDSPath: &newSock}}
	r, err := vmm.RestoreResources([]byte(cfg), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m := r.Machine
	if m.VcpuCount != 2 || m.MemSizeMib != 256 || !m.TrackDirtyPages || !r.MachineApplied {
		t.Errorf("machine %+v", m)
	}
	if r.Boot == nil || *r.Boot.Config.KernelImagePath != "/gone/vmlinux" || r.Boot.Kernel != nil {
		t.Errorf("boot source %+v", r.Boot)
	}
	if len(r.Drives) != 1 || r.Drives[0].File == nil {
		t.Errorf("drives %+v", r.Drives)
	}
	if r.Vsock == nil || *r.Vsock.Config.UDSPath != newSock {
		t.Errorf("vsock %+v", r.Vsock)
	}
	if _, err := os.Stat(newSock); err != nil {
		t.Errorf("the overridden vsock socket is not bound: %v", err)
	}
	if r.Balloon == nil || *r.Balloon.AmountMib != 16 {
		t.Errorf("balloon %+v", r.Balloon)
	}

	eth, tap := "eth9", "tap9"
	for _, c := range []struct {
		name string
		p    vmm.SnapshotLoadParams
		want string
	}{
		{"unknown interface", vmm.SnapshotLoadParams{MemBackend: &vmm.MemBackend{BackendType: &file}, NetworkOverrides: []vmm.NetworkOverride{{IfaceID: &eth, HostDevName: &tap}}}, "Unknown Network Device."},
		{"2M pages from a file", vmm.SnapshotLoadParams{MemBackend: &vmm.MemBackend{BackendType: &file}, HugePages: ptr(vmm.SnapshotHugePages("2M"))}, "Please use uffd."},
	} {
		if _, err := vmm.RestoreResources([]byte(cfg), &c.p, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	noVsock := strings.Replace(cfg, `"vsock":`, `"unused":`, 1)
	noVsock = strings.Replace(noVsock, `"unused":{"guest_cid":3,"uds_path":"`+filepath.Join(dir, "old.sock")+`"},`, "", 1)
	p2 := &vmm.SnapshotLoadParams{MemBackend: &vmm.MemBackend{BackendType: &uffd}, VsockOverride: &vmm.VsockOverride{UDSPath: &newSock}}
	if _, err := vmm.RestoreResources([]byte(noVsock), p2, nil); err == nil || err.Error() != "Unknown Vsock Device." {
		t.Errorf("vsock override without a vsock: %v", err)
	}
	if _, err := vmm.RestoreResources([]byte(`{"drives":[]}`), p2, nil); err == nil {
		t.Error("a configuration without machine-config was accepted")
	}
}

func ptr[T any](v T) *T { return &v }
