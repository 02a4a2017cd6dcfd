package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/vmm"
	"github.com/squib-vmm/squib/internal/vmm/vmmtest"
)

// harness is an API server in front of a real controller whose builder is
// a test double, so every phase (pre-boot, running, paused) is reachable
// without KVM.
type harness struct {
	t       testing.TB
	srv     *Server
	ctrl    *vmm.Controller
	builder *vmmtest.Builder
	store   *mmds.Store
	dir     string
}

func newHarness(t testing.TB, opts ...func(*vmm.Options)) *harness {
	t.Helper()
	h := &harness{t: t, builder: &vmmtest.Builder{}, store: mmds.NewStore(mmds.DefaultSizeLimit), dir: t.TempDir()}
	o := vmm.Options{
		InstanceID: "test-vm",
		Builder:    h.builder,
		Hooks: vmm.Hooks{
			Mmds:             h.store,
			ConfigureLogger:  func(vmm.LoggerConfig) error { return nil },
			ConfigureMetrics: func(vmm.MetricsConfig) error { return nil },
			FlushMetrics:     func() error { return nil },
		},
	}
	for _, f := range opts {
		f(&o)
	}
	h.ctrl = vmm.NewController(o)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go h.ctrl.Run(ctx)
	h.srv = New(h.ctrl, Options{Mmds: h.store})
	return h
}

// file creates a file in the harness's directory and returns its path.
func (h *harness) file(name, content string) string {
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) do(method, path, body string) *httptest.ResponseRecorder {
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, "http://localhost"+path, nil)
	} else {
		r = httptest.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	}
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, r)
	return w
}

// step is one request and the answer it must get: a status and, for
// errors, a substring of fault_message (or of the body for 200s).
type step struct {
	method, path, body string
	status             int
	want               string
}

func (h *harness) run(steps []step) {
	h.t.Helper()
	for _, s := range steps {
		w := h.do(s.method, s.path, s.body)
		got := w.Body.String()
		var f struct {
			FaultMessage string `json:"fault_message"`
		}
		if w.Code >= 400 && json.Unmarshal([]byte(got), &f) == nil {
			got = f.FaultMessage
		}
		if w.Code != s.status {
			h.t.Errorf("%s %s %s: status %d, want %d; body %s", s.method, s.path, s.body, w.Code, s.status, got)
			continue
		}
		if s.want != "" && !strings.Contains(got, s.want) {
			h.t.Errorf("%s %s %s: body %s, want it to contain %q", s.method, s.path, s.body, got, s.want)
		}
		if w.Header().Get("Server") != "Firecracker API" {
			h.t.Errorf("%s %s: missing Server header", s.method, s.path)
		}
		if s.status == http.StatusNoContent && got != "" {
			h.t.Errorf("%s %s: 204 with a body %q", s.method, s.path, got)
		}
		if s.status >= 400 && f.FaultMessage == "" && !strings.HasPrefix(w.Body.String(), `{ "error": `) {
			h.t.Errorf("%s %s: error body %q is neither a fault_message nor an HTTP-level error", s.method, s.path, w.Body.String())
		}
	}
}

func (h *harness) boot() {
	h.t.Helper()
	k := h.file("vmlinux", "kernel")
	h.run([]step{
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q}`, k), 204, ""},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 204, ""},
		{"GET", "/", "", 200, `"state":"Running"`},
	})
}

const (
	notBefore = vmm.MsgNotSupportedBeforeStart
	notAfter  = vmm.MsgNotSupportedAfterStart
	deser     = "An error occurred when deserializing the json body of a request: "
)

func TestRoutingAndBodyRules(t *testing.T) {
	h := newHarness(t)
	h.run([]step{
		{"GET", "/", "", 200, `{"id":"test-vm","state":"Not started","vmm_version":"` + vmm.FirecrackerVersion + `","app_name":"Firecracker"}`},
		{"GET", "/version", "", 200, `{"firecracker_version":"` + vmm.FirecrackerVersion + `"}`},
		{"GET", "/", `{"a":1}`, 400, "GET request cannot have a body."},
		{"GET", "/foo", `{"a":1}`, 400, "GET request cannot have a body."},
		{"PUT", "/machine-config", "", 400, "Empty PUT request."},
		{"PUT", "/nonexistent", "", 400, "Empty PUT request."},
		{"PATCH", "/machine-config", "", 400, "Empty PATCH request."},
		{"DELETE", "/drives/a", `{}`, 400, "Empty Delete request."},
		{"PATCH", "/boot-source", `{}`, 400, "Invalid request method and/or path: PATCH boot-source."},
		{"PATCH", "/logger", `{}`, 400, "Invalid request method and/or path: PATCH logger."},
		{"POST", "/actions", `{}`, 400, "Invalid request method and/or path: POST actions."},
		{"GET", "/nonexistent", "", 400, "Invalid request method and/or path: GET nonexistent."},
		{"HEAD", "/", "", 400, ""},
		// Only the first segment selects the handler.
		{"GET", "/version/extra", "", 200, "firecracker_version"},
		// Resource ID rules.
		{"PUT", "/drives/", `{}`, 400, "The ID cannot be empty."},
		{"PUT", "/drives/a-b", `{}`, 400, "API Resource IDs can only contain alphanumeric characters and underscores."},
		{"PUT", "/network-interfaces/a.b", `{}`, 400, "API Resource IDs can only contain alphanumeric characters and underscores."},
		{"PUT", "/pmem/", `{}`, 400, "The ID cannot be empty."},
	})
}

func TestStrictDecoding(t *testing.T) {
	h := newHarness(t)
	h.run([]step{
		{"PUT", "/machine-config", `{"mem_size_mib": 128}`, 400, deser + "missing field `vcpu_count` at line 1 column 21."},
		{"PUT", "/machine-config", `{"vcpu_count": 2}`, 400, deser + "missing field `mem_size_mib` at line 1 column 17."},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":128,"bogus":1}`, 400, deser + "unknown field `bogus`"},
		{"PUT", "/machine-config", `{"VCPU_COUNT":2,"mem_size_mib":128}`, 400, "unknown field `VCPU_COUNT`"},
		{"PUT", "/machine-config", `{"vcpu_count":2,"vcpu_count":2,"mem_size_mib":128}`, 400, "duplicate field `vcpu_count`"},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":128} {}`, 400, "trailing characters"},
		{"PUT", "/machine-config", `{"vcpu_count":"-2","mem_size_mib":128}`, 400, `invalid type: string "-2", expected u8`},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":128,"smt":"random_string"}`, 400, `invalid type: string "random_string", expected a boolean`},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":18446744073709551616}`, 400, "invalid type: floating point"},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":128,"cpu_template":"bogus"}`, 400, "unknown variant `bogus`"},
		{"PUT", "/machine-config", `not json`, 400, deser},
		{"PUT", "/mmds/config", `{"network_interfaces":["a"],"version":"foo"}`, 400, deser + "unknown variant `foo`, expected `V1` or `V2`"},
		{"PUT", "/actions", `{"action_type":"Bogus"}`, 400, "unknown variant `Bogus`"},
		{"PUT", "/network-interfaces/e", `{"iface_id":"e","host_dev_name":"t","guest_mac":"zz"}`, 400, "The provided MAC address is invalid."},
		{"PUT", "/mmds/config", `{"network_interfaces":["a"],"ipv4_address":""}`, 400, deser},
		// Explicit nulls for optional fields are accepted (the Go SDK sends them).
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256,"smt":null,"cpu_template":null,"track_dirty_pages":null}`, 204, ""},
		// Token buckets ignore unknown members, as Firecracker's do.
		{"PUT", "/entropy", `{"rate_limiter":{"bandwidth":{"size":1,"refill_time":100,"extra":1}}}`, 204, ""},
		{"PUT", "/entropy", `{"rate_limiter":{"bogus":{}}}`, 400, "unknown field `bogus`, expected `bandwidth` or `ops`"},
		{"PUT", "/metrics", `{"metrics_path":"/dev/null","unknown":1}`, 204, ""},
	})
}

func TestMachineConfig(t *testing.T) {
	h := newHarness(t)
	h.run([]step{
		// The seed's rule: nothing applied yet reads as {}.
		{"GET", "/machine-config", "", 200, "{}"},
		{"PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":128}`, 400, "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."},
		{"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, 400, "The number of vCPUs must be"},
		{"PUT", "/machine-config", `{"vcpu_count":3,"mem_size_mib":128,"smt":true}`, 400, "The number of vCPUs must be"},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":0}`, 400, "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":129,"huge_pages":"2M"}`, 400, "not a multiple of the configured page size"},
		{"GET", "/machine-config", "", 200, "{}"},
		{"PUT", "/machine-config", `{"vcpu_count":32,"mem_size_mib":256,"smt":true,"track_dirty_pages":true,"cpu_template":"C3"}`, 204, ""},
		{"GET", "/machine-config", "", 200, `{"vcpu_count":32,"mem_size_mib":256,"smt":true,"cpu_template":"C3","track_dirty_pages":true,"huge_pages":"None"}`},
		// An omitted cpu_template is kept by PUT; the others reset.
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256}`, 204, ""},
		{"GET", "/machine-config", "", 200, `{"vcpu_count":2,"mem_size_mib":256,"smt":false,"cpu_template":"C3","track_dirty_pages":false,"huge_pages":"None"}`},
		{"PATCH", "/machine-config", `{}`, 400, "Empty PATCH request."},
		{"PATCH", "/machine-config", `{"cpu_template":"None"}`, 204, ""},
		{"PATCH", "/machine-config", `{"track_dirty_pages":true}`, 204, ""},
		{"GET", "/machine-config", "", 200, `{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,"huge_pages":"None"}`},
		// An invalid PATCH applies nothing.
		{"PATCH", "/machine-config", `{"vcpu_count":4,"mem_size_mib":0}`, 400, "memory size"},
		{"GET", "/machine-config", "", 200, `"vcpu_count":2`},
		// 2^64-1 MiB is accepted here; it fails at InstanceStart.
		{"PATCH", "/machine-config", `{"mem_size_mib":18446744073709551615}`, 204, ""},
	})
	w := h.do("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"None"}`)
	if w.Header().Get("Deprecation") != "true" {
		t.Errorf("cpu_template did not set the Deprecation header")
	}
	w = h.do("PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":128,"cpu_template":"T2"}`)
	if w.Code != 400 || w.Header().Get("Deprecation") != "true" {
		t.Errorf("a failed request using cpu_template: %d, Deprecation %q", w.Code, w.Header().Get("Deprecation"))
	}
}

func TestBootSourceAndDrives(t *testing.T) {
	h := newHarness(t)
	k := h.file("vmlinux", "kernel")
	d1 := h.file("root.ext4", "root")
	d2 := h.file("data.ext4", "data")
	h.run([]step{
		{"PUT", "/boot-source", `{"kernel_image_path":"/nonexistent/vmlinux"}`, 400, "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"initrd_path":"/nonexistent"}`, k), 400, "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)"},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":%q}`, k, strings.Repeat("a", 2048)), 400, "Boot source error: The kernel command line is invalid"},
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q,"boot_args":"console=ttyS0"}`, k), 204, ""},
		{"PUT", "/drives/root", fmt.Sprintf(`{"drive_id":"root","path_on_host":"/nonexistent","is_root_device":true}`), 400, "Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) /nonexistent"},
		{"PUT", "/drives/root", fmt.Sprintf(`{"drive_id":"other","path_on_host":%q,"is_root_device":true}`, d1), 400, "The id from the path does not match the id from the body!"},
		{"PUT", "/drives/root", fmt.Sprintf(`{"drive_id":"root","path_on_host":%q}`, d1), 400, "missing field `is_root_device`"},
		{"PUT", "/drives/root", fmt.Sprintf(`{"drive_id":"root","path_on_host":%q,"is_root_device":true,"partuuid":"0eaa91a0-01"}`, d1), 204, ""},
		{"PUT", "/drives/data", fmt.Sprintf(`{"drive_id":"data","path_on_host":%q,"is_root_device":true}`, d2), 400, "Drive config error: A root block device already exists!"},
		{"PUT", "/drives/data", fmt.Sprintf(`{"drive_id":"data","path_on_host":%q,"is_root_device":false,"is_read_only":true,"cache_type":"Writeback","rate_limiter":{"bandwidth":{"size":1000,"refill_time":100},"ops":{"size":0,"refill_time":0}}}`, d2), 204, ""},
		{"PUT", "/drives/bad", fmt.Sprintf(`{"drive_id":"bad","is_root_device":false,"socket":"/s","path_on_host":%q}`, d2), 400, "Invalid block config."},
		{"PUT", "/drives/rl", fmt.Sprintf(`{"drive_id":"rl","path_on_host":%q,"is_root_device":false,"rate_limiter":{}}`, d2), 204, ""},
		// Re-PUT replaces.
		{"PUT", "/drives/rl", fmt.Sprintf(`{"drive_id":"rl","path_on_host":%q,"is_root_device":false}`, d1), 204, ""},
		{"PUT", "/pmem/p0", fmt.Sprintf(`{"id":"p0","path_on_host":%q,"root_device":true}`, d2), 400, "Pmem config error: Attempt to add pmem as a root device while the root device defined as a block device"},
		{"PUT", "/pmem/p0", `{"id":"p0"}`, 400, "missing field `path_on_host`"},
		{"PUT", "/pmem/p0", fmt.Sprintf(`{"id":"p0","path_on_host":%q,"rate_limiter":{"ops":{"size":10,"refill_time":10,"one_time_burst":0}}}`, d2), 204, ""},
		{"PATCH", "/drives/root", `{"drive_id":"root"}`, 400, notBefore},
		{"PATCH", "/pmem/nope", `{"id":"nope"}`, 400, notBefore},
		{"DELETE", "/drives/root", "", 400, notBefore},
	})
	var cfg map[string]any
	if err := json.Unmarshal(h.do("GET", "/vm/config", "").Body.Bytes(), &cfg); err != nil {
		t.Fatal(err)
	}
	drives := cfg["drives"].([]any)
	if len(drives) != 3 || drives[0].(map[string]any)["drive_id"] != "root" {
		t.Fatalf("drives = %v, want root first then data, rl", drives)
	}
	want := fmt.Sprintf(`{"drive_id":"data","partuuid":null,"is_root_device":false,"cache_type":"Writeback","is_read_only":true,"path_on_host":%q,"rate_limiter":{"bandwidth":{"size":1000,"one_time_burst":null,"refill_time":100},"ops":null},"io_engine":"Sync","socket":null}`, d2)
	if got := h.do("GET", "/vm/config", "").Body.String(); !strings.Contains(got, want) {
		t.Errorf("/vm/config = %s\nwant it to contain %s", got, want)
	}
	if got := h.do("GET", "/vm/config", "").Body.String(); !strings.Contains(got, `"pmem":[{"id":"p0","path_on_host":`+fmt.Sprintf("%q", d2)+`,"root_device":false,"read_only":false,"rate_limiter":{"bandwidth":null,"ops":{"size":10,"one_time_burst":null,"refill_time":10}}}]`) {
		t.Errorf("/vm/config pmem wrong: %s", got)
	}
}

func TestVMConfigShape(t *testing.T) {
	h := newHarness(t)
	got := h.do("GET", "/vm/config", "").Body.String()
	want := `{"balloon":null,"drives":[],"boot-source":null,"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"pmem":[],"memory-hotplug":null}`
	if got != want {
		t.Errorf("GET /vm/config =\n%s\nwant\n%s", got, want)
	}
}

func TestVsockEntropyBalloonHotplug(t *testing.T) {
	h := newHarness(t)
	sock := filepath.Join(h.dir, "v.sock")
	h.run([]step{
		{"PUT", "/vsock", fmt.Sprintf(`{"guest_cid":3,"uds_path":%q}`, sock), 204, ""},
		// Re-PUT replaces (the old socket is unlinked first).
		{"PUT", "/vsock", fmt.Sprintf(`{"guest_cid":4,"uds_path":%q,"vsock_id":"x"}`, sock), 204, ""},
		{"PUT", "/vsock", fmt.Sprintf(`{"guest_cid":4,"uds_path":%q}`, filepath.Join(h.dir, "nodir", "v.sock")), 400, "Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket"},
		{"PUT", "/entropy", `{}`, 204, ""},
		{"PUT", "/balloon", `{"amount_mib":1024,"deflate_on_oom":true}`, 400, "Balloon config error: Amount of pages requested is too large."},
		{"GET", "/balloon", "", 400, "Balloon config error: No balloon device found."},
		{"PATCH", "/balloon", `{"amount_mib":1}`, 400, notBefore},
		{"PUT", "/balloon", `{"amount_mib":64,"deflate_on_oom":false,"stats_polling_interval_s":1}`, 204, ""},
		{"GET", "/balloon", "", 200, `{"amount_mib":64,"deflate_on_oom":false,"stats_polling_interval_s":1,"free_page_hinting":false,"free_page_reporting":false}`},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":32}`, 400, "Machine config error: The memory size (MiB) is smaller than the previously set balloon device target size."},
		{"GET", "/balloon/statistics", "", 400, notBefore},
		{"PATCH", "/balloon/statistics", `{"stats_polling_interval_s":2}`, 400, notBefore},
		{"PATCH", "/balloon/hinting/start", "", 400, notBefore},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024,"block_size_mib":1}`, 400, "Memory hotplug config error: Block size must not be lower than 2 MiB"},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024,"block_size_mib":6}`, 400, "Block size must be a power of 2"},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024,"slot_size_mib":64}`, 400, "Slot size must not be lower than 128 MiB"},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024,"block_size_mib":256,"slot_size_mib":384}`, 400, "Slot size must be a multiple of block size (256 MiB)"},
		{"PUT", "/hotplug/memory", `{"total_size_mib":64}`, 400, "Total size must not be lower than slot size (128 MiB)"},
		{"PUT", "/hotplug/memory", `{"total_size_mib":200}`, 400, "Total size must be a multiple of slot size (128 MiB)"},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024,"block_size_mib":128,"slot_size_mib":1024}`, 204, ""},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024}`, 204, ""},
		{"GET", "/hotplug/memory", "", 400, notBefore},
		{"PATCH", "/hotplug/memory", `{"requested_size_mib":512}`, 400, notBefore},
		{"PUT", "/serial", `{"serial_out_path":"/tmp/x"}`, 204, ""},
		{"PUT", "/cpu-config", `{"foo":false}`, 400, "unknown field `foo`"},
		{"PUT", "/cpu-config", `{"kvm_capabilities":["1","!2"],"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{"register":"eax","bitmap":"0b1x00100xxx1xxxxxxxxxxxxxxxxxxxxx1"}]}]}`, 400, "string is too long"},
		{"PUT", "/cpu-config", `{"kvm_capabilities":["1","!2"],"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{"register":"eax","bitmap":"0bx00100xxx1xxxxxxxxxxxxxxxxxxxxx"}]}],"msr_modifiers":[{"addr":"0x10a","bitmap":"0b0000000000000000000000000000000000000000000000000000000000000001"}]}`, 204, ""},
		{"PUT", "/cpu-config", `{"cpuid_modifiers":[{"leaf":"1","subleaf":"0x0","flags":0,"modifiers":[]}]}`, 400, "No supported number system prefix found in value [1]"},
	})
	if !strings.Contains(h.do("GET", "/vm/config", "").Body.String(), fmt.Sprintf(`"vsock":{"guest_cid":4,"uds_path":%q}`, sock)) {
		t.Errorf("vsock not reported (vsock_id must not be echoed)")
	}
	if w := h.do("PUT", "/vsock", fmt.Sprintf(`{"guest_cid":4,"uds_path":%q,"vsock_id":"x"}`, sock)); w.Header().Get("Deprecation") != "true" {
		t.Errorf("vsock_id did not set Deprecation")
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("vsock socket not bound at PUT: %v", err)
	}
}

func TestMmdsData(t *testing.T) {
	h := newHarness(t)
	h.run([]step{
		{"GET", "/mmds", "", 200, "{}"},
		{"PATCH", "/mmds", `{"a":1}`, 400, "MMDS error: The MMDS data store is not initialized."},
		{"PUT", "/mmds", `{"latest":{"meta-data":{"ami-id":"ami-1","tags":{"a":"b"}}}}`, 204, ""},
		{"PATCH", "/mmds", `{"latest":{"meta-data":{"tags":null,"x":"y"}}}`, 204, ""},
		{"GET", "/mmds", "", 200, `{"latest":{"meta-data":{"ami-id":"ami-1","x":"y"}}}`},
		{"PUT", "/mmds", `{"big":"` + strings.Repeat("x", 51200) + `"}`, 400, "larger than the limit"},
		{"PUT", "/mmds", `{bad`, 400, deser},
		{"PUT", "/mmds/config", `{"network_interfaces":[]}`, 400, "MMMDS config error: The list of network interface IDs that allow forwarding MMDS requests is empty."},
		{"PUT", "/mmds/config", `{"network_interfaces":["nope"]}`, 400, "MMMDS config error: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface."},
		{"PUT", "/mmds/config", `{"network_interfaces":["nope"],"ipv4_address":"1.1.1.1"}`, 400, "MMMDS config error: The MMDS IPv4 address is not link local."},
	})
	// The size limit answers 413 and leaves the store unchanged.
	small := newHarness(t)
	small.store.SetSizeLimit(30)
	small.run([]step{
		{"PUT", "/mmds", `{"a":"b"}`, 204, ""},
		{"PUT", "/mmds", `{"a":"` + strings.Repeat("x", 40) + `"}`, 413, "MMDS limit exceeded error: The MMDS patch request doesn't fit."},
		{"PATCH", "/mmds", `{"c":"` + strings.Repeat("x", 40) + `"}`, 413, "MMDS limit exceeded error: The MMDS patch request doesn't fit."},
		{"GET", "/mmds", "", 200, `{"a":"b"}`},
	})
	if w := h.do("PUT", "/mmds/config", `{"network_interfaces":["x"]}`); w.Header().Get("Deprecation") != "true" {
		t.Error("an MMDS config without a version (V1) must carry the Deprecation header")
	}
}

func TestSnapshotLoadValidation(t *testing.T) {
	h := newHarness(t)
	h.run([]step{
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}`, 400, deser + "too many fields: either `mem_backend` or `mem_file_path` exclusively is required."},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s"}`, 400, deser + "missing field: either `mem_backend` or `mem_file_path` is required."},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_path":"m"}}`, 400, "missing field `backend_type`"},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_type":"File"}}`, 400, "missing field `backend_path`"},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_type":"foo","backend_path":"m"}}`, 400, "unknown variant `foo`, expected `File` or `Uffd`"},
		{"PUT", "/snapshot/load", `{"mem_file_path":"m"}`, 400, "missing field `snapshot_path`"},
		{"PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m"}`, 400, notBefore},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 204, ""},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"}}`, 400, "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources."},
	})
	if w := h.do("PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}`); w.Header().Get("Deprecation") != "true" {
		t.Error("mem_file_path must set the Deprecation header even on an error answer")
	}
}

func TestPostBootPhases(t *testing.T) {
	h := newHarness(t)
	d := h.file("root.ext4", "root")
	h.run([]step{
		{"PUT", "/drives/root", fmt.Sprintf(`{"drive_id":"root","path_on_host":%q,"is_root_device":true}`, d), 204, ""},
		{"PUT", "/balloon", `{"amount_mib":10,"deflate_on_oom":false,"stats_polling_interval_s":1,"free_page_hinting":true}`, 204, ""},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024}`, 204, ""},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`, 400, notBefore},
		{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 400, notBefore},
		{"PATCH", "/vm", `{"state":"Paused"}`, 400, notBefore},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "Start microvm error: Cannot start microvm without kernel configuration."},
	})
	h.boot()
	h.run([]step{
		{"PUT", "/boot-source", `{"kernel_image_path":"/x"}`, 400, notAfter},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 400, notAfter},
		{"PATCH", "/machine-config", `{"vcpu_count":1}`, 400, notAfter},
		{"PUT", "/logger", `{"level":"Info"}`, 400, notAfter},
		{"PUT", "/metrics", `{"metrics_path":"/dev/null"}`, 400, notAfter},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"/tmp/x"}`, 400, notAfter},
		{"PUT", "/entropy", `{}`, 400, notAfter},
		{"PUT", "/balloon", `{"amount_mib":1,"deflate_on_oom":false}`, 400, notAfter},
		{"PUT", "/mmds/config", `{"network_interfaces":["a"],"version":"V2"}`, 400, notAfter},
		{"PUT", "/hotplug/memory", `{"total_size_mib":1024}`, 400, notAfter},
		{"PUT", "/serial", `{}`, 400, notAfter},
		{"PUT", "/cpu-config", `{}`, 400, notAfter},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, notAfter},
		{"PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m"}`, 400, notAfter},
		{"PATCH", "/boot-source", `{}`, 400, "Invalid request method and/or path: PATCH boot-source."},
		// Hot-plug needs --enable-pci.
		{"PUT", "/drives/d2", fmt.Sprintf(`{"drive_id":"d2","path_on_host":%q,"is_root_device":false}`, d), 400, "PCI is not enabled"},
		{"DELETE", "/drives/root", "", 400, "PCI is not enabled"},
		{"DELETE", "/network-interfaces/x", "", 400, "PCI is not enabled"},
		{"DELETE", "/pmem/x", "", 400, "PCI is not enabled"},
		// Runtime updates.
		{"PATCH", "/drives/root", `{"drive_id":"root"}`, 400, "Running method expected different backend."},
		{"PATCH", "/drives/root", `{"drive_id":"root","is_read_only":true}`, 400, "unknown field `is_read_only`"},
		{"PATCH", "/drives/nope", `{"drive_id":"nope","path_on_host":"x"}`, 400, "Device not found"},
		{"PATCH", "/drives/root", `{"drive_id":"root","rate_limiter":{"ops":{"size":5,"refill_time":10}}}`, 204, ""},
		{"PATCH", "/network-interfaces/nope", `{"iface_id":"nope"}`, 400, "Device not found"},
		{"PATCH", "/network-interfaces/a", `{"iface_id":"b"}`, 400, "The id from the path [a] does not match the id from the body [b]!"},
		{"PATCH", "/pmem/nope", `{"id":"nope"}`, 400, "not found"},
		{"PATCH", "/pmem/nope", `{"id":"nope","path_on_host":"x"}`, 400, "unknown field `path_on_host`"},
		{"PATCH", "/balloon", `{"amount_mib":300}`, 400, "Balloon update error: Balloon: Requested memory should be less than 300MiB"},
		{"PATCH", "/balloon", `{"amount_mib":4}`, 204, ""},
		{"GET", "/balloon", "", 200, `"amount_mib":4`},
		{"PATCH", "/balloon/statistics", `{"stats_polling_interval_s":0}`, 400, "Balloon update error: Balloon: Statistics cannot be enabled/disabled after activation."},
		{"PATCH", "/balloon/statistics", `{"stats_polling_interval_s":5}`, 204, ""},
		{"GET", "/balloon", "", 200, `{"amount_mib":4,"deflate_on_oom":false,"stats_polling_interval_s":5,"free_page_hinting":true,"free_page_reporting":false}`},
		{"GET", "/balloon/statistics", "", 200, `"target_pages":0`},
		{"PATCH", "/balloon/hinting/start", "", 204, ""},
		{"PATCH", "/balloon/hinting/start", `{"acknowledge_on_stop":false,"extra":1}`, 204, ""},
		{"GET", "/balloon/hinting/status", "", 200, `{"host_cmd":2,"guest_cmd":null}`},
		{"PATCH", "/balloon/hinting/stop", "", 204, ""},
		{"PATCH", "/hotplug/memory", `{"requested_size_mib":3}`, 400, "it must be a multiple of block size and less than the total size"},
		{"PATCH", "/hotplug/memory", `{"requested_size_mib":512}`, 204, ""},
		{"GET", "/hotplug/memory", "", 200, `"requested_size_mib":512`},
		{"PUT", "/mmds", `{"a":1}`, 400, "MMDS error: The MMDS data store is not initialized."},
		{"GET", "/mmds", "", 400, "MMDS error: The MMDS data store is not initialized."},
		{"PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m"}`, 400, "Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running"},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`, 204, ""},
		{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 204, ""},
		// Pause and resume are idempotent.
		{"PATCH", "/vm", `{"state":"Paused"}`, 204, ""},
		{"GET", "/", "", 200, `"state":"Paused"`},
		{"PATCH", "/vm", `{"state":"Paused"}`, 204, ""},
		{"PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m","snapshot_type":"Full"}`, 204, ""},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`, 204, ""},
		{"PATCH", "/vm", `{"state":"Resumed"}`, 204, ""},
		{"PATCH", "/vm", `{"state":"Resumed"}`, 204, ""},
		{"GET", "/", "", 200, `"state":"Running"`},
		{"PATCH", "/vm", `{"state":"Stopped"}`, 400, "unknown variant `Stopped`"},
	})
	calls := strings.Join(h.builder.Last.CallLog(), ",")
	for _, want := range []string{"UpdateDrive root", "UpdateBalloon", "Pause", "CreateSnapshot", "Resume", "SendCtrlAltDel"} {
		if !strings.Contains(calls, want) {
			t.Errorf("VM calls %s lack %s", calls, want)
		}
	}
	if strings.Count(calls, "Pause") != 1 || strings.Count(calls, "Resume") != 1 {
		t.Errorf("idempotent pause/resume reached the VM more than once: %s", calls)
	}
	if got := h.do("GET", "/vm/config", "").Body.String(); !strings.Contains(got, `"rate_limiter":{"bandwidth":null,"ops":{"size":5,"one_time_burst":null,"refill_time":10}}`) {
		t.Errorf("PATCHed rate limiter not in /vm/config: %s", got)
	}
}

func TestFailedStartIsRetryable(t *testing.T) {
	h := newHarness(t)
	h.builder.BuildErr = &vmm.Error{Msg: "Start microvm error: Invalid Memory Configuration: Cannot create mmap region: Out of memory (os error 12)"}
	k := h.file("vmlinux", "k")
	h.run([]step{
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q}`, k), 204, ""},
		{"PATCH", "/machine-config", `{"mem_size_mib":18446744073709551615}`, 204, ""},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 400, "Out of memory (os error 12)"},
		{"GET", "/", "", 200, `"state":"Not started"`},
		{"PATCH", "/machine-config", `{"mem_size_mib":256}`, 204, ""},
	})
	h.builder.BuildErr = nil
	h.run([]step{
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, 204, ""},
		{"GET", "/machine-config", "", 200, `"mem_size_mib":256`},
	})
}

func TestPayloadLimit(t *testing.T) {
	h := newHarness(t)
	h.srv.maxPayload = 250
	body := `{"a":"` + strings.Repeat("x", 251-8) + `"}`
	if len(body) != 251 {
		t.Fatalf("body is %d bytes", len(body))
	}
	w := h.do("PUT", "/mmds", body)
	want := "{ \"error\": \"Request payload with size 251 is larger than the limit of 250 allowed by server.\nAll previous unanswered requests will be dropped.\" }"
	if w.Code != 400 || w.Body.String() != want {
		t.Errorf("got %d %q, want 400 %q", w.Code, w.Body.String(), want)
	}
	// A body of exactly the limit is accepted.
	body = `{"a":"` + strings.Repeat("x", 250-8) + `"}`
	if w := h.do("PUT", "/mmds", body); w.Code != 204 {
		t.Errorf("a body at the limit: %d %s", w.Code, w.Body.String())
	}
}

// TestNetworkInterfaces needs a TAP device, which root can create.
func TestNetworkInterfaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating TAP devices needs root")
	}
	tap1, tap2 := tapName(t, 1), tapName(t, 2)
	h := newHarness(t)
	h.run([]step{
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"a_name_too_long_for_linux"}`, 400, "Network config error: Could not create the network device: Open tap device failed: Invalid interface name"},
		{"PUT", "/network-interfaces/eth0", fmt.Sprintf(`{"iface_id":"eth0","host_dev_name":%q,"guest_mac":"06:00:00:00:00:01"}`, tap1), 204, ""},
		{"PUT", "/network-interfaces/eth1", fmt.Sprintf(`{"iface_id":"eth1","host_dev_name":%q,"guest_mac":"06:00:00:00:00:01"}`, tap2), 400, "Network config error: The MAC address is already in use: 06:00:00:00:00:01"},
		{"PUT", "/network-interfaces/eth1", fmt.Sprintf(`{"iface_id":"eth1","host_dev_name":%q,"guest_mac":"06:00:00:00:00:02"}`, tap1), 400, "Could not create the network device"},
		{"PUT", "/network-interfaces/eth1", fmt.Sprintf(`{"iface_id":"eth1","host_dev_name":%q,"guest_mac":"06:00:00:00:00:02","mtu":1500,"rx_rate_limiter":{"ops":{"size":1,"refill_time":1}}}`, tap2), 204, ""},
		// Re-PUT of an interface with its own TAP works.
		{"PUT", "/network-interfaces/eth0", fmt.Sprintf(`{"iface_id":"eth0","host_dev_name":%q,"guest_mac":"06:00:00:00:00:0A"}`, tap1), 204, ""},
		{"PUT", "/mmds/config", `{"network_interfaces":["eth0"],"version":"V2","ipv4_address":"169.254.170.2","imds_compat":true}`, 204, ""},
	})
	got := h.do("GET", "/vm/config", "").Body.String()
	for _, want := range []string{
		fmt.Sprintf(`{"iface_id":"eth0","host_dev_name":%q,"guest_mac":"06:00:00:00:00:0a","mtu":null,"rx_rate_limiter":null,"tx_rate_limiter":null}`, tap1),
		`"mmds-config":{"version":"V2","network_interfaces":["eth0"],"ipv4_address":"169.254.170.2","imds_compat":true}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("/vm/config = %s\nwant it to contain %s", got, want)
		}
	}
}

// tapName creates a TAP device for the test and removes it afterwards.
func tapName(t *testing.T, n int) string {
	t.Helper()
	name := fmt.Sprintf("sqbt%d%d", os.Getpid()%100000, n)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap").CombinedOutput(); err != nil {
		t.Fatalf("creating TAP %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	return name
}

// TestReadsDoNotWaitOnTheController is the seed's guarantee: with the
// controller stuck in a long InstanceStart, the read-only endpoints still
// answer, and calls that need the controller time out cleanly.
func TestReadsDoNotWaitOnTheController(t *testing.T) {
	h := newHarness(t, func(o *vmm.Options) {
		o.Timeouts = map[vmm.Class]time.Duration{vmm.ClassAction: 300 * time.Millisecond, vmm.ClassConfig: 300 * time.Millisecond}
	})
	h.builder.Block = make(chan struct{})
	h.builder.Started = make(chan struct{}, 1)
	k := h.file("vmlinux", "k")
	h.run([]step{
		{"PUT", "/boot-source", fmt.Sprintf(`{"kernel_image_path":%q}`, k), 204, ""},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 204, ""},
	})

	startDone := make(chan *httptest.ResponseRecorder)
	go func() { startDone <- h.do("PUT", "/actions", `{"action_type":"InstanceStart"}`) }()
	<-h.builder.Started // the controller is now inside Build, blocked

	for _, path := range []string{"/", "/machine-config", "/vm/config", "/version", "/mmds"} {
		begin := time.Now()
		w := h.do("GET", path, "")
		t.Logf("GET %s answered in %v while the controller was blocked", path, time.Since(begin))
		if w.Code != 200 {
			t.Errorf("GET %s: %d %s", path, w.Code, w.Body.String())
		}
	}
	if got := h.do("GET", "/", "").Body.String(); !strings.Contains(got, "Not started") {
		t.Errorf("GET / during InstanceStart = %s", got)
	}

	// The blocked call itself times out, saying the work goes on.
	w := <-startDone
	if w.Code != 400 || !strings.Contains(w.Body.String(), "still executing InstanceStart") {
		t.Errorf("timed-out InstanceStart: %d %s", w.Code, w.Body.String())
	}
	// A mutation queued behind it times out without being applied.
	w = h.do("PATCH", "/machine-config", `{"vcpu_count":2}`)
	if w.Code != 400 || !strings.Contains(w.Body.String(), "busy with InstanceStart; the request was not applied") {
		t.Errorf("queued PATCH: %d %s", w.Code, w.Body.String())
	}

	close(h.builder.Block)
	waitFor(t, func() bool { return strings.Contains(h.do("GET", "/", "").Body.String(), "Running") })
	if got := h.do("GET", "/machine-config", "").Body.String(); !strings.Contains(got, `"vcpu_count":1`) {
		t.Errorf("the withdrawn PATCH was applied: %s", got)
	}
	// The controller is consistent and serves the next request.
	h.run([]step{{"PATCH", "/vm", `{"state":"Paused"}`, 204, ""}})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
