package metrics

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
)

// agg stands for a {min_us,max_us,sum_us} object.
const agg = "{}"

var (
	blockFields = []string{
		"activate_fails", "cfg_fails", "no_avail_buffer", "event_fails", "execute_fails",
		"invalid_reqs_count", "flush_count", "queue_event_count", "rate_limiter_event_count",
		"update_count", "update_fails", "read_bytes", "write_bytes", "read_count", "write_count",
		"read_agg" + agg, "write_agg" + agg,
		"rate_limiter_throttled_events", "io_engine_throttled_events", "remaining_reqs_count",
	}
	netFields = []string{
		"activate_fails", "cfg_fails", "no_rx_avail_buffer", "no_tx_avail_buffer", "event_fails",
		"rx_queue_event_count", "rx_event_rate_limiter_count", "rx_rate_limiter_throttled",
		"rx_tap_event_count", "rx_bytes_count", "rx_packets_count", "rx_fails", "rx_count",
		"tap_read_fails", "tap_write_fails", "tap_write_agg" + agg,
		"tx_bytes_count", "tx_malformed_frames", "tx_fails", "tx_count", "tx_packets_count",
		"tx_queue_event_count", "tx_rate_limiter_event_count", "tx_rate_limiter_throttled",
		"tx_spoofed_mac_count", "tx_remaining_reqs_count",
	}
	pmemFields = []string{
		"activate_fails", "cfg_fails", "event_fails", "queue_event_count",
		"rate_limiter_throttled_events", "rate_limiter_event_count",
	}
)

// fcGroups is Firecracker's x86_64 metrics schema: the key sets are those
// of tests/host_tools/fcmetrics.py (validate_fc_metrics), the order is that
// of the serde structs in metrics.rs and the devices' metrics.rs, which is
// the order Firecracker prints. Written out by hand, independently of the
// struct tags, so a mistake in either shows up here.
var fcGroups = []struct {
	name   string
	fields []string
}{
	{"api_server", []string{"process_startup_time_us", "process_startup_time_cpu_us"}},
	{"balloon", []string{
		"activate_fails", "inflate_count", "stats_updates_count", "stats_update_fails",
		"deflate_count", "event_fails", "free_page_report_count", "free_page_report_freed",
		"free_page_report_fails", "free_page_hint_count", "free_page_hint_freed", "free_page_hint_fails",
	}},
	{"block", blockFields},
	{"deprecated_api", []string{"deprecated_http_api_calls"}},
	{"get_api_requests", []string{
		"instance_info_count", "machine_cfg_count", "mmds_count", "vmm_version_count", "hotplug_memory_count",
	}},
	{"i8042", []string{"error_count", "missed_read_count", "missed_write_count", "read_count", "reset_count", "write_count"}},
	{"uart", []string{
		"error_count", "flush_count", "missed_read_count", "missed_write_count", "read_count",
		"write_count", "rate_limiter_dropped_bytes",
	}},
	{"latencies_us", []string{
		"full_create_snapshot", "diff_create_snapshot", "load_snapshot", "pause_vm", "resume_vm",
		"vmm_full_create_snapshot", "vmm_diff_create_snapshot", "vmm_load_snapshot", "vmm_pause_vm", "vmm_resume_vm",
	}},
	{"logger", []string{"missed_metrics_count", "metrics_fails", "missed_log_count", "rate_limited_log_count"}},
	{"mmds", []string{
		"rx_accepted", "rx_accepted_err", "rx_accepted_unusual", "rx_bad_eth", "rx_invalid_token",
		"rx_no_token", "rx_count", "tx_bytes", "tx_count", "tx_errors", "tx_frames",
		"connections_created", "connections_destroyed",
	}},
	{"net", netFields},
	{"patch_api_requests", []string{
		"drive_count", "drive_fails", "network_count", "network_fails", "machine_cfg_count",
		"machine_cfg_fails", "mmds_count", "mmds_fails", "hotplug_memory_count", "hotplug_memory_fails",
		"pmem_count", "pmem_fails",
	}},
	{"put_api_requests", []string{
		"actions_count", "actions_fails", "boot_source_count", "boot_source_fails", "drive_count",
		"drive_fails", "logger_count", "logger_fails", "machine_cfg_count", "machine_cfg_fails",
		"cpu_cfg_count", "cpu_cfg_fails", "metrics_count", "metrics_fails", "network_count",
		"network_fails", "mmds_count", "mmds_fails", "vsock_count", "vsock_fails", "pmem_count",
		"pmem_fails", "serial_count", "serial_fails", "hotplug_memory_count", "hotplug_memory_fails",
	}},
	{"seccomp", []string{"num_faults"}},
	{"vcpu", []string{
		"exit_io_in", "exit_io_out", "exit_mmio_read", "exit_mmio_write", "failures", "kvmclock_ctrl_fails",
		"exit_io_in_agg" + agg, "exit_io_out_agg" + agg, "exit_mmio_read_agg" + agg, "exit_mmio_write_agg" + agg,
	}},
	{"vmm", []string{"panic_count"}},
	{"signals", []string{"sigbus", "sigsegv", "sigxfsz", "sigxcpu", "sigpipe", "sighup", "sigill"}},
	{"vsock", []string{
		"activate_fails", "cfg_fails", "rx_queue_event_fails", "tx_queue_event_fails",
		"ev_queue_event_fails", "muxer_event_fails", "conn_event_fails", "rx_queue_event_count",
		"tx_queue_event_count", "rx_bytes_count", "tx_bytes_count", "rx_packets_count",
		"tx_packets_count", "conns_added", "conns_killed", "conns_removed", "killq_resync",
		"tx_flush_fails", "tx_write_fails", "rx_read_fails",
	}},
	{"entropy", []string{
		"activate_fails", "entropy_event_fails", "entropy_event_count", "entropy_bytes",
		"host_rng_fails", "entropy_rate_limiter_throttled", "rate_limiter_event_count",
	}},
	{"pmem", pmemFields},
	{"interrupts", []string{"triggers", "config_updates"}},
	{"memory_hotplug", []string{
		"activate_fails", "queue_event_fails", "queue_event_count", "plug_agg" + agg, "plug_count",
		"plug_bytes", "plug_fails", "unplug_agg" + agg, "unplug_count", "unplug_bytes", "unplug_fails",
		"unplug_discard_fails", "unplug_all_agg" + agg, "unplug_all_count", "unplug_all_fails",
		"state_agg" + agg, "state_count", "state_fails",
	}},
}

// node is a JSON value with object key order preserved.
type node struct {
	keys []string
	kids map[string]*node
	num  json.Number
	str  string
	obj  bool
}

func parseOrdered(t *testing.T, line []byte) *node {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var parse func() *node
	parse = func() *node {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
		switch v := tok.(type) {
		case json.Delim:
			if v != '{' {
				t.Fatalf("unexpected %v in metrics line", v)
			}
			n := &node{obj: true, kids: map[string]*node{}}
			for dec.More() {
				k, _ := dec.Token()
				key := k.(string)
				if _, dup := n.kids[key]; dup {
					t.Fatalf("duplicate key %q", key)
				}
				n.keys = append(n.keys, key)
				n.kids[key] = parse()
			}
			dec.Token() // '}'
			return n
		case json.Number:
			return &node{num: v}
		case string:
			return &node{str: v}
		}
		t.Fatalf("unexpected token %v", tok)
		return nil
	}
	n := parse()
	if dec.More() {
		t.Fatal("trailing data after the metrics object")
	}
	return n
}

// checkGroup checks that n has exactly fields, in order, all numbers.
func checkGroup(t *testing.T, name string, n *node, fields []string) {
	t.Helper()
	if n == nil || !n.obj {
		t.Fatalf("group %q missing or not an object", name)
	}
	var want []string
	for _, f := range fields {
		want = append(want, strings.TrimSuffix(f, agg))
	}
	if strings.Join(n.keys, ",") != strings.Join(want, ",") {
		t.Fatalf("group %q keys:\n got  %v\n want %v", name, n.keys, want)
	}
	for _, f := range fields {
		k := strings.TrimSuffix(f, agg)
		if k != f {
			checkGroup(t, name+"."+k, n.kids[k], []string{"min_us", "max_us", "sum_us"})
			continue
		}
		if n.kids[k].obj || n.kids[k].num == "" {
			t.Fatalf("%s.%s is not a number", name, k)
		}
	}
}

// expectedTop lists the top-level keys for the given devices.
func expectedTop(extra []string, blocks, nets, pmems []string) []string {
	keys := []string{"utc_timestamp_ms"}
	keys = append(keys, extra...)
	for _, g := range fcGroups {
		var devs []string
		switch g.name {
		case "block":
			devs = blocks
		case "net":
			devs = nets
		case "pmem":
			devs = pmems
		}
		for _, d := range devs {
			keys = append(keys, g.name+"_"+d)
		}
		keys = append(keys, g.name)
	}
	return keys
}

func newTestMetrics(t *testing.T) (*Metrics, string) {
	t.Helper()
	m := New()
	path := filepath.Join(t.TempDir(), "metrics")
	if err := m.Init(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.sink.Close() })
	return m, path
}

func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatal("metrics output does not end with a newline")
	}
	return bytes.Split(b[:len(b)-1], []byte{'\n'})
}

func lastLine(t *testing.T, path string) *node {
	t.Helper()
	ls := lines(t, path)
	if len(ls) == 0 {
		t.Fatal("no metrics line written")
	}
	return parseOrdered(t, ls[len(ls)-1])
}

func TestSchemaNoDevices(t *testing.T) {
	m, path := newTestMetrics(t)
	before := time.Now().UnixMilli()
	if err := m.Write(); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()
	n := lastLine(t, path)
	if got, want := strings.Join(n.keys, ","), strings.Join(expectedTop(nil, nil, nil, nil), ","); got != want {
		t.Fatalf("top-level keys:\n got  %s\n want %s", got, want)
	}
	ts, err := n.kids["utc_timestamp_ms"].num.Int64()
	if err != nil || ts < before || ts > after {
		t.Errorf("utc_timestamp_ms = %v, want between %d and %d", n.kids["utc_timestamp_ms"].num, before, after)
	}
	for _, g := range fcGroups {
		checkGroup(t, g.name, n.kids[g.name], g.fields)
	}
}

func TestSchemaWithDevices(t *testing.T) {
	m, path := newTestMetrics(t)
	// Registered out of order: output is sorted by ID, bytewise.
	m.Block("scratch")
	m.Block("Root_fs")
	m.Block("rootfs")
	m.Net("eth1")
	m.Net("eth0")
	m.Pmem("pm0")
	m.SetEmitID("my-vm")
	m.SetProperties(map[string]string{"team": "a", "env": "prod"})
	if err := m.Write(); err != nil {
		t.Fatal(err)
	}
	n := lastLine(t, path)
	want := expectedTop([]string{"id", "properties"}, []string{"Root_fs", "rootfs", "scratch"}, []string{"eth0", "eth1"}, []string{"pm0"})
	if got := strings.Join(n.keys, ","); got != strings.Join(want, ",") {
		t.Fatalf("top-level keys:\n got  %s\n want %s", got, strings.Join(want, ","))
	}
	for _, id := range []string{"Root_fs", "rootfs", "scratch"} {
		checkGroup(t, "block_"+id, n.kids["block_"+id], blockFields)
	}
	checkGroup(t, "net_eth0", n.kids["net_eth0"], netFields)
	checkGroup(t, "pmem_pm0", n.kids["pmem_pm0"], pmemFields)
	if n.kids["id"].str != "my-vm" {
		t.Errorf("id = %q", n.kids["id"].str)
	}
	props := n.kids["properties"]
	if strings.Join(props.keys, ",") != "env,team" || props.kids["env"].str != "prod" {
		t.Errorf("properties = %v", props.keys)
	}
}

func num(t *testing.T, n *node, path string) uint64 {
	t.Helper()
	for _, k := range strings.Split(path, ".") {
		if n = n.kids[k]; n == nil {
			t.Fatalf("no %s in metrics line", path)
		}
	}
	var v uint64
	if _, err := fmt.Sscan(string(n.num), &v); err != nil {
		t.Fatalf("%s = %q: %v", path, n.num, err)
	}
	return v
}

func TestIncResetsStoreDoesNot(t *testing.T) {
	m, path := newTestMetrics(t)
	m.PutAPIRequests.DriveCount.Inc()
	m.PutAPIRequests.DriveCount.Add(2)
	m.APIServer.ProcessStartupTimeUS.Store(1234)
	m.Vcpu.ExitIOInAgg.Record(10)
	m.Vcpu.ExitIOInAgg.Record(4)
	m.Vcpu.ExitIOInAgg.Record(7)
	if d := m.PutAPIRequests.DriveCount.Delta(); d != 3 {
		t.Fatalf("Delta = %d", d)
	}
	m.Write()
	n := lastLine(t, path)
	if v := num(t, n, "put_api_requests.drive_count"); v != 3 {
		t.Errorf("drive_count = %d, want 3", v)
	}
	if v := num(t, n, "api_server.process_startup_time_us"); v != 1234 {
		t.Errorf("process_startup_time_us = %d", v)
	}
	if mn, mx, s := num(t, n, "vcpu.exit_io_in_agg.min_us"), num(t, n, "vcpu.exit_io_in_agg.max_us"), num(t, n, "vcpu.exit_io_in_agg.sum_us"); mn != 4 || mx != 10 || s != 21 {
		t.Errorf("exit_io_in_agg = %d/%d/%d, want 4/10/21", mn, mx, s)
	}

	m.PutAPIRequests.DriveCount.Inc()
	m.Write()
	n = lastLine(t, path)
	if v := num(t, n, "put_api_requests.drive_count"); v != 1 {
		t.Errorf("drive_count after second write = %d, want 1 (delta)", v)
	}
	if v := num(t, n, "api_server.process_startup_time_us"); v != 1234 {
		t.Errorf("store metric changed by a write: %d", v)
	}
	if mn, mx, s := num(t, n, "vcpu.exit_io_in_agg.min_us"), num(t, n, "vcpu.exit_io_in_agg.max_us"), num(t, n, "vcpu.exit_io_in_agg.sum_us"); mn != 4 || mx != 10 || s != 0 {
		t.Errorf("exit_io_in_agg = %d/%d/%d, want 4/10/0", mn, mx, s)
	}
	if c := m.PutAPIRequests.DriveCount.Count(); c != 4 {
		t.Errorf("Count = %d, want 4 (lifetime total)", c)
	}
	m.Write()
	if v := num(t, lastLine(t, path), "put_api_requests.drive_count"); v != 0 {
		t.Errorf("drive_count on third write = %d, want 0", v)
	}
	if got := len(lines(t, path)); got != 3 {
		t.Errorf("%d lines, want 3", got)
	}
}

func TestDeviceAggregates(t *testing.T) {
	m, path := newTestMetrics(t)
	a, b := m.Block("a"), m.Block("b")
	if m.Block("a") != a {
		t.Fatal("Block(id) does not return the same counters on a second call")
	}
	a.ReadBytes.Add(100)
	b.ReadBytes.Add(50)
	b.WriteCount.Inc()
	a.ReadAgg.Record(30)
	b.ReadAgg.Record(20)
	m.Net("eth0").TapWriteAgg.Record(5)
	m.Pmem("p").QueueEventCount.Add(3)
	m.Write()
	n := lastLine(t, path)
	checks := map[string]uint64{
		"block_a.read_bytes": 100, "block_b.read_bytes": 50, "block.read_bytes": 150,
		"block.write_count": 1, "block_a.read_agg.min_us": 30, "block_b.read_agg.max_us": 20,
		"block.read_agg.sum_us": 50,
		// Firecracker's aggregate only sums counters: min/max stay 0.
		"block.read_agg.min_us": 0, "block.read_agg.max_us": 0,
		"net.tap_write_agg.sum_us": 5, "net.tap_write_agg.max_us": 0, "net_eth0.tap_write_agg.max_us": 5,
		"pmem.queue_event_count": 3, "pmem_p.queue_event_count": 3,
	}
	for p, want := range checks {
		if got := num(t, n, p); got != want {
			t.Errorf("%s = %d, want %d", p, got, want)
		}
	}
	m.Write()
	n = lastLine(t, path)
	if num(t, n, "block.read_bytes") != 0 || num(t, n, "block_a.read_bytes") != 0 {
		t.Error("device counters not reset by the write")
	}

	m.RemoveBlock("a")
	m.RemoveNet("eth0")
	m.RemovePmem("p")
	m.RemoveBlock("nonexistent")
	m.Write()
	n = lastLine(t, path)
	if got, want := strings.Join(n.keys, ","), strings.Join(expectedTop(nil, []string{"b"}, nil, nil), ","); got != want {
		t.Errorf("keys after removal:\n got  %s\n want %s", got, want)
	}
}

func TestIDAndProperties(t *testing.T) {
	m, path := newTestMetrics(t)
	m.SetEmitID("vm\"1")
	m.SetProperties(map[string]string{"z": "last", "a": "first\n<&>é"})
	m.Write()
	raw := lines(t, path)[0]
	if !bytes.HasPrefix(raw, []byte(`{"utc_timestamp_ms":`)) {
		t.Fatalf("line does not start with the timestamp: %.40s", raw)
	}
	// serde_json escaping: no HTML escapes, UTF-8 kept.
	if !bytes.Contains(raw, []byte(`,"id":"vm\"1","properties":{"a":"first\n<&>é","z":"last"},"api_server":`)) {
		t.Errorf("id/properties not rendered like serde_json: %.200s", raw)
	}
	m.SetEmitID("")
	m.SetProperties(map[string]string{})
	m.Write()
	if n := lastLine(t, path); n.keys[1] != "properties" || len(n.kids["properties"].keys) != 0 {
		t.Errorf("keys = %v", n.keys[:3])
	}
	m.SetProperties(nil)
	m.Write()
	if n := lastLine(t, path); n.keys[1] != "api_server" {
		t.Errorf("keys = %v", n.keys[:3])
	}
}

func TestConfigure(t *testing.T) {
	m := New()
	path := filepath.Join(t.TempDir(), "m")
	logger.Default.SetInstanceID("cfg-vm")
	defer logger.Default.SetInstanceID(logger.DefaultInstanceID)
	if err := m.Configure(Config{Path: path, EmitID: true, Properties: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	defer m.sink.Close()
	m.Write()
	n := lastLine(t, path)
	if n.kids["id"].str != "cfg-vm" || n.kids["properties"].kids["k"].str != "v" {
		t.Errorf("keys %v", n.keys[:3])
	}
	if err := m.Configure(Config{Path: path, EmitID: false}); !errors.Is(err, ErrReinit) {
		t.Errorf("second Configure = %v", err)
	}
}

func TestInitErrors(t *testing.T) {
	m := New()
	if err := m.Write(); err != nil {
		t.Fatalf("Write before Init = %v, want nil", err)
	}
	m.PutAPIRequests.MetricsCount.Inc()
	bad := filepath.Join(t.TempDir(), "no", "such", "dir")
	err := m.Init(bad)
	if err == nil || err.Error() != "No such file or directory (os error 2)" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Init(bad) = %v", err)
	}
	if got := "Metrics error: " + InitErrorPrefix + err.Error(); got != "Metrics error: Cannot initialize the metrics system due to bad user input: No such file or directory (os error 2)" {
		t.Errorf("API message = %q", got)
	}
	dir := t.TempDir()
	first := filepath.Join(dir, "first")
	if err := m.Init(first); err != nil {
		t.Fatal(err)
	}
	defer m.sink.Close()
	second := filepath.Join(dir, "second")
	err = m.Init(second)
	if !errors.Is(err, ErrReinit) || err.Error() != "Reinitialization of metrics not allowed." {
		t.Fatalf("second Init = %v", err)
	}
	if _, statErr := os.Stat(second); statErr != nil {
		t.Error("second path not created (Firecracker opens before checking)")
	}
	if err := m.Init(bad); err == nil || errors.Is(err, ErrReinit) {
		t.Errorf("Init(bad) after init = %v, want the open error", err)
	}
	// A Write without a sink left the counter alone.
	m.Write()
	if v := num(t, lastLine(t, first), "put_api_requests.metrics_count"); v != 1 {
		t.Errorf("metrics_count = %d, want 1", v)
	}
	if len(lines(t, second)) != 0 {
		t.Error("second path received metrics")
	}
}

func TestNotTruncated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m")
	junk := bytes.Repeat([]byte("J"), 20000)
	os.WriteFile(path, junk, 0o600)
	m := New()
	if err := m.Init(path); err != nil {
		t.Fatal(err)
	}
	defer m.sink.Close()
	m.Write()
	b, _ := os.ReadFile(path)
	if len(b) != len(junk) || !bytes.HasPrefix(b, []byte(`{"utc_timestamp_ms":`)) {
		t.Errorf("file was truncated or appended to (len %d)", len(b))
	}
}

func TestWriteFailureKeepsCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	m := New()
	if err := m.Init(path); err != nil { // must not block without a reader
		t.Fatal(err)
	}
	defer m.sink.Close()
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The pipe holds 64 KiB; a line is about 7 KB.
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		m.Vsock.ConnsAdded.Inc()
		werr = m.Write()
	}
	if werr == nil {
		t.Fatal("writes to a full FIFO never failed")
	}
	if got, want := werr.Error(), "Failed to write metrics: Resource temporarily unavailable (os error 11)"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	if d := m.Logger.MetricsFails.Delta(); d != 1 {
		t.Errorf("metrics_fails = %d, want 1", d)
	}
	if d := m.Vsock.ConnsAdded.Delta(); d == 0 {
		t.Error("counts of the failed line were dropped")
	}
}

func TestPeriodic(t *testing.T) {
	m, path := newTestMetrics(t)
	p := m.StartPeriodic(30 * time.Millisecond)
	defer p.Stop()
	if n := len(lines(t, path)); n != 1 {
		t.Fatalf("%d lines right after StartPeriodic, want 1", n)
	}
	waitLines := func(atLeast int) int {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if n := len(lines(t, path)); n >= atLeast {
				return n
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("fewer than %d lines after 5 s", atLeast)
		return 0
	}
	waitLines(3)
	p.Pause()
	time.Sleep(40 * time.Millisecond) // let a write in flight land
	paused := len(lines(t, path))
	time.Sleep(150 * time.Millisecond)
	if n := len(lines(t, path)); n != paused {
		t.Fatalf("%d lines written while paused", n-paused)
	}
	p.Resume() // a period expired while paused: one catch-up line
	waitLines(paused + 1)
	p.Stop()
	p.Stop() // idempotent
	stopped := len(lines(t, path))
	time.Sleep(80 * time.Millisecond)
	if n := len(lines(t, path)); n != stopped {
		t.Errorf("%d lines written after Stop", n-stopped)
	}
}

func TestPeriodicFailure(t *testing.T) {
	m, _ := newTestMetrics(t)
	m.sink.Close() // every write now fails
	p := m.StartPeriodic(time.Hour)
	p.Stop()
	if d := m.Logger.MissedMetricsCount.Delta(); d != 1 {
		t.Errorf("missed_metrics_count = %d, want 1", d)
	}
	if d := m.Logger.MetricsFails.Delta(); d != 1 {
		t.Errorf("metrics_fails = %d, want 1", d)
	}
}

// Increments racing with writes are each reported exactly once.
func TestConcurrentCounting(t *testing.T) {
	m, path := newTestMetrics(t)
	const goroutines, per = 4, 5000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			blk := m.Block(fmt.Sprint("d", g%2))
			for range per {
				m.Vcpu.ExitMMIOWrite.Inc()
				blk.ReadCount.Inc()
			}
		}()
	}
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-stop:
				return
			default:
				m.Write()
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-writerDone
	m.Write()
	var vcpu, blk uint64
	sc := bufio.NewScanner(bytes.NewReader(bytes.Join(lines(t, path), []byte{'\n'})))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n := parseOrdered(t, sc.Bytes())
		vcpu += num(t, n, "vcpu.exit_mmio_write")
		blk += num(t, n, "block.read_count")
	}
	if vcpu != goroutines*per || blk != goroutines*per {
		t.Errorf("summed deltas vcpu=%d block=%d, want %d", vcpu, blk, goroutines*per)
	}
}

// Default is wired to the logger's counters.
func TestDefaultLoggerCounters(t *testing.T) {
	before := Default.Logger.RateLimitedLogCount.Count()
	rl := &logger.RateLimiter{Burst: 1, Refill: time.Hour}
	rl.Allow()
	rl.Allow()
	if got := Default.Logger.RateLimitedLogCount.Count() - before; got != 1 {
		t.Errorf("rate_limited_log_count grew by %d, want 1", got)
	}
}

func TestAppendStringContent(t *testing.T) {
	cases := map[string]string{
		"plain":      "plain",
		`q"b\`:       `q\"b\\`,
		"\b\f\n\r\t": `\b\f\n\r\t`,
		"\x00\x1f":   `\u0000\u001f`,
		"\x7f/<>&":   "\x7f/<>&",
		"é€":         "é€",
		"bad\xffx":   "bad\ufffdx",
	}
	for in, want := range cases {
		if got := string(appendStringContent(nil, in)); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	m := New()
	if err := m.Init(os.DevNull); err != nil {
		b.Fatal(err)
	}
	m.Block("rootfs")
	m.Net("eth0")
	b.ReportAllocs()
	for b.Loop() {
		m.Vcpu.ExitIOIn.Inc()
		if err := m.Write(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInc(b *testing.B) {
	m := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Vcpu.ExitMMIOWrite.Inc()
		}
	})
}
