package sdkcompat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	firecracker "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/sirupsen/logrus"
)

// squibBin is the squib binary built once by TestMain.
var squibBin string

// Messages squib must answer with, byte for byte as Firecracker does:
// orchestrators match on them.
const (
	msgKernelMissing = "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
	msgSecondRoot    = "Drive config error: A root block device already exists!"
	msgBadVcpus      = "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."
	msgStartPrefix   = "Start microvm error:"
	msgPreBoot       = "The requested operation is not supported before starting the microVM."
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The SDK reads these when a client is made. Its defaults (500 ms per
	// request, 3 s for the socket to appear) are tight for a loaded CI
	// box with two shared cores; a timeout there would be a false failure.
	os.Setenv("FIRECRACKER_GO_SDK_REQUEST_TIMEOUT_MILLISECONDS", "10000")
	os.Setenv("FIRECRACKER_GO_SDK_INIT_TIMEOUT_SECONDS", "20")

	dir, err := os.MkdirTemp("", "sdkcompat-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdkcompat:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	// A build failure must fail the suite, never skip it: a skipped
	// compatibility test reads as a passing one.
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdkcompat:", err)
		return 1
	}
	if bin := os.Getenv("SQUIB_BIN"); bin != "" {
		// The KVM harness (tests/sandbox) provides a built squib; inside
		// its sandbox there is no Go toolchain to build one.
		squibBin = bin
		return m.Run()
	}
	squibBin = filepath.Join(dir, "squib")
	build := exec.Command("go", "build", "-o", squibBin, "./cmd/squib")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "sdkcompat: building squib in %s: %v\n%s", root, err, out)
		return 1
	}
	code := m.Run()
	if err := os.WriteFile(cacheStamp, []byte("see cacheStamp in sdkcompat_test.go\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "sdkcompat: writing", cacheStamp+":", err)
	}
	return code
}

// cacheStamp makes `go test` rerun this package every time instead of
// answering "(cached)". The result cache only notices changes to files
// inside this module, never to squib's sources in ../.., so a cached PASS
// would outlive edits to squib. But cmd/go refuses to cache a run that
// opened a file inside the module which is less than 2 s old when the run
// ends, so the tests open the stamp and TestMain rewrites it last thing.
// It is git-ignored.
const cacheStamp = "nocache.stamp"

var stampOnce sync.Once

// markUncacheable records (in the test log cmd/go reads) that this run
// read cacheStamp. It must be called from a test: file access is only
// recorded once m.Run has begun.
func markUncacheable() {
	stampOnce.Do(func() {
		if f, err := os.Open(cacheStamp); err == nil {
			f.Close()
		}
	})
}

// testLog adapts logrus to t.Log, so SDK chatter is only shown for a
// failing test or under -v. Lines that arrive after the test has ended
// (the SDK logs from goroutines) are dropped instead of panicking.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLog) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func newLogger(t testing.TB) (*logrus.Entry, *testLog) {
	w := &testLog{t: t}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l), w
}

// dumpOnFailure shows squib's own log when the test failed, since the SDK's
// error strings rarely say why squib refused something.
func dumpOnFailure(t *testing.T, path string) {
	if !t.Failed() {
		return
	}
	if b, err := os.ReadFile(path); err == nil {
		t.Logf("squib output:\n%s", b)
	}
}

// squib is one running squib process with an SDK client on its socket.
type squib struct {
	dir    string
	sock   string
	id     string
	client *firecracker.Client
}

// startSquib starts squib on a fresh socket and waits until it answers
// GET / through the SDK. The process is killed when the test ends.
func startSquib(t *testing.T, id string) *squib {
	t.Helper()
	markUncacheable()
	dir := t.TempDir()
	s := &squib{dir: dir, sock: filepath.Join(dir, "api.sock"), id: id}

	out, err := os.Create(filepath.Join(dir, "squib.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(squibBin, "--api-sock", s.sock, "--id", id)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting squib: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		out.Close()
		dumpOnFailure(t, out.Name())
	})

	entry, _ := newLogger(t)
	s.client = firecracker.NewClient(s.sock, entry, false)

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.client.GetInstanceInfo(ctx)
		cancel()
		if err == nil {
			return s
		}
		select {
		case werr := <-exited:
			exited <- werr // let the cleanup's receive finish
			t.Fatalf("squib exited before answering GET /: %v", werr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("squib did not answer GET / on %s: %v", s.sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// faultMessage digs Firecracker's fault_message out of an SDK error. Every
// generated error response type has GetPayload() *models.Error.
func faultMessage(err error) string {
	var f interface{ GetPayload() *models.Error }
	if errors.As(err, &f) && f.GetPayload() != nil {
		return f.GetPayload().FaultMessage
	}
	return ""
}

func wantFault(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want fault %q", want)
	}
	if got := faultMessage(err); got != want {
		t.Fatalf("fault_message = %q, want %q (error: %v)", got, want, err)
	}
}

// writeFile makes a small non-empty file squib can open as a kernel or
// drive image; squib only has to open it, not boot it.
func writeFile(t *testing.T, path string) string {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{0}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// normJSON round-trips v through JSON so values decoded by the SDK (which
// keeps numbers as json.Number) compare equal to plain Go literals.
func normJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// createTap makes a TAP device for the MMDS sub-case, which needs a network
// interface. It returns "" (and says why) when this host cannot make one,
// e.g. without root or /dev/net/tun; only that sub-case is then skipped.
// It is registered before squib starts so that squib, which holds the
// device open, is killed before the device is deleted.
func createTap(t *testing.T) string {
	name := fmt.Sprintf("sqsdk%d", os.Getpid()%1000000)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap").CombinedOutput(); err != nil {
		t.Logf("cannot create TAP %s: %v: %s", name, err, bytes.TrimSpace(out))
		return ""
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
			t.Errorf("deleting TAP %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
	})
	return name
}

// TestClientConfiguresSquib drives every pre-boot endpoint the v1.0.0
// client offers. The sub-tests share one squib and run in order, because
// later ones (InstanceStart) check that earlier configuration survived.
func TestClientConfiguresSquib(t *testing.T) {
	tap := createTap(t)
	s := startSquib(t, "sdkcompat-client")
	c := s.client
	ctx := context.Background()

	kernel := writeFile(t, filepath.Join(s.dir, "vmlinux"))
	rootfs := writeFile(t, filepath.Join(s.dir, "rootfs.ext4"))
	data := writeFile(t, filepath.Join(s.dir, "data.img"))

	wantMachine := models.MachineConfiguration{
		VcpuCount:       firecracker.Int64(2),
		MemSizeMib:      firecracker.Int64(256),
		Smt:             firecracker.Bool(false),
		TrackDirtyPages: true,
	}
	wantBalloon := models.Balloon{
		AmountMib:             firecracker.Int64(16),
		DeflateOnOom:          firecracker.Bool(true),
		StatsPollingIntervals: 1,
	}

	t.Run("DescribeInstance", func(t *testing.T) {
		resp, err := c.GetInstanceInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := resp.Payload
		if got := firecracker.StringValue(p.State); got != models.InstanceInfoStateNotStarted {
			t.Errorf("state = %q, want %q", got, models.InstanceInfoStateNotStarted)
		}
		if got := firecracker.StringValue(p.ID); got != s.id {
			t.Errorf("id = %q, want %q", got, s.id)
		}
		if got := firecracker.StringValue(p.AppName); got != "Firecracker" {
			t.Errorf("app_name = %q, want Firecracker", got)
		}
		if firecracker.StringValue(p.VmmVersion) == "" {
			t.Error("vmm_version is empty")
		}
	})

	t.Run("GetFirecrackerVersion", func(t *testing.T) {
		resp, err := c.GetFirecrackerVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v := firecracker.StringValue(resp.Payload.FirecrackerVersion)
		info, err := c.GetInstanceInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v == "" || v != firecracker.StringValue(info.Payload.VmmVersion) {
			t.Errorf("firecracker_version = %q, want non-empty and equal to GET / vmm_version %q",
				v, firecracker.StringValue(info.Payload.VmmVersion))
		}
	})

	// squib answers {} before any machine config is applied; the SDK's
	// readiness probe depends on that decoding without error.
	t.Run("GetMachineConfigurationBeforePut", func(t *testing.T) {
		resp, err := c.GetMachineConfiguration()
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.Payload; p.VcpuCount != nil || p.MemSizeMib != nil {
			t.Errorf("got vcpu_count=%v mem_size_mib=%v, want both absent",
				firecracker.Int64Value(p.VcpuCount), firecracker.Int64Value(p.MemSizeMib))
		}
	})

	// The SDK validates nothing client-side, so squib's own check must
	// produce Firecracker's message.
	t.Run("PutMachineConfigurationZeroVcpus", func(t *testing.T) {
		_, err := c.PutMachineConfiguration(ctx, &models.MachineConfiguration{
			VcpuCount:  firecracker.Int64(0),
			MemSizeMib: firecracker.Int64(128),
		})
		wantFault(t, err, msgBadVcpus)
	})

	t.Run("PutMachineConfiguration", func(t *testing.T) {
		in := wantMachine
		if _, err := c.PutMachineConfiguration(ctx, &in); err != nil {
			t.Fatal(err)
		}
		resp, err := c.GetMachineConfiguration()
		if err != nil {
			t.Fatal(err)
		}
		checkMachine(t, resp.Payload, wantMachine)
	})

	t.Run("PutGuestBootSource", func(t *testing.T) {
		if _, err := c.PutGuestBootSource(ctx, &models.BootSource{
			KernelImagePath: firecracker.String(kernel),
			BootArgs:        "console=ttyS0 reboot=k panic=1",
		}); err != nil {
			t.Fatal(err)
		}
		_, err := c.PutGuestBootSource(ctx, &models.BootSource{
			KernelImagePath: firecracker.String(filepath.Join(s.dir, "missing-vmlinux")),
		})
		wantFault(t, err, msgKernelMissing)
	})

	t.Run("PutGuestDriveByID", func(t *testing.T) {
		if _, err := c.PutGuestDriveByID(ctx, "rootfs", &models.Drive{
			DriveID:      firecracker.String("rootfs"),
			PathOnHost:   firecracker.String(rootfs),
			IsRootDevice: firecracker.Bool(true),
			IsReadOnly:   firecracker.Bool(false),
		}); err != nil {
			t.Fatalf("root drive: %v", err)
		}
		if _, err := c.PutGuestDriveByID(ctx, "data", &models.Drive{
			DriveID:      firecracker.String("data"),
			PathOnHost:   firecracker.String(data),
			IsRootDevice: firecracker.Bool(false),
			IsReadOnly:   firecracker.Bool(true),
		}); err != nil {
			t.Fatalf("read-only data drive: %v", err)
		}
		_, err := c.PutGuestDriveByID(ctx, "root2", &models.Drive{
			DriveID:      firecracker.String("root2"),
			PathOnHost:   firecracker.String(data),
			IsRootDevice: firecracker.Bool(true),
			IsReadOnly:   firecracker.Bool(false),
		})
		wantFault(t, err, msgSecondRoot)
	})

	t.Run("PutLogger", func(t *testing.T) {
		// Firecracker opens, but does not create, the log file.
		logPath := filepath.Join(s.dir, "fc.log")
		if err := os.WriteFile(logPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutLogger(ctx, &models.Logger{
			LogPath:       firecracker.String(logPath),
			Level:         firecracker.String(models.LoggerLevelDebug),
			ShowLevel:     firecracker.Bool(true),
			ShowLogOrigin: firecracker.Bool(false),
		}); err != nil {
			t.Fatal(err)
		}
		// Any request is logged at Debug; poll because logging need not
		// be synchronous with the answer.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := c.GetInstanceInfo(ctx); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Count(b, []byte("\n")) > 0 {
				t.Logf("log file has %d lines", bytes.Count(b, []byte("\n")))
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("log file still empty after PUT /logger and further requests")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("PutMetrics", func(t *testing.T) {
		metricsPath := filepath.Join(s.dir, "fc.metrics")
		if err := os.WriteFile(metricsPath, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutMetrics(ctx, &models.Metrics{MetricsPath: firecracker.String(metricsPath)}); err != nil {
			t.Fatal(err)
		}
		// Firecracker writes metrics only after boot, and FlushMetrics is
		// post-boot only; the SDK must see its pre-boot refusal.
		_, err := c.CreateSyncAction(ctx, &models.InstanceActionInfo{
			ActionType: firecracker.String(models.InstanceActionInfoActionTypeFlushMetrics),
		})
		wantFault(t, err, msgPreBoot)
	})

	t.Run("Mmds", func(t *testing.T) {
		put := map[string]any{
			"latest": map[string]any{
				"meta-data": map[string]any{
					"instance-id": "i-1234",
					"tags":        []any{"a", "b"},
					"network":     map[string]any{"mac": "02:00:00:00:00:01", "mtu": 1500},
				},
			},
		}
		if _, err := c.PutMmds(ctx, put); err != nil {
			t.Fatal(err)
		}
		got, err := c.GetMmds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := normJSON(t, got.Payload), normJSON(t, put); !reflect.DeepEqual(g, w) {
			t.Fatalf("GET /mmds after PUT = %v, want %v", g, w)
		}

		// JSON merge patch (RFC 7396): objects merge, null deletes.
		patch := map[string]any{
			"latest": map[string]any{
				"meta-data": map[string]any{
					"instance-id": "i-5678",
					"tags":        nil,
					"network":     map[string]any{"mtu": 9000},
				},
				"user-data": map[string]any{"k": "v"},
			},
		}
		want := map[string]any{
			"latest": map[string]any{
				"meta-data": map[string]any{
					"instance-id": "i-5678",
					"network":     map[string]any{"mac": "02:00:00:00:00:01", "mtu": 9000},
				},
				"user-data": map[string]any{"k": "v"},
			},
		}
		if _, err := c.PatchMmds(ctx, patch); err != nil {
			t.Fatal(err)
		}
		got, err = c.GetMmds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := normJSON(t, got.Payload), normJSON(t, want); !reflect.DeepEqual(g, w) {
			t.Fatalf("GET /mmds after PATCH = %v, want %v", g, w)
		}
	})

	t.Run("PutMmdsConfig", func(t *testing.T) {
		if tap == "" {
			t.Skip("no TAP device on this host; PUT /mmds/config needs a network interface")
		}
		if _, err := c.PutGuestNetworkInterfaceByID(ctx, "eth0", &models.NetworkInterface{
			IfaceID:     firecracker.String("eth0"),
			HostDevName: firecracker.String(tap),
			GuestMac:    "06:00:ac:10:00:02",
		}); err != nil {
			t.Fatalf("PUT /network-interfaces/eth0: %v", err)
		}
		if _, err := c.PutMmdsConfig(ctx, &models.MmdsConfig{
			Version:           firecracker.String(string(firecracker.MMDSv2)),
			IPV4Address:       firecracker.String("169.254.170.2"),
			NetworkInterfaces: []string{"eth0"},
		}); err != nil {
			t.Fatal(err)
		}
	})

	// The v1.0 SDK still sends the deprecated vsock_id; Firecracker accepts
	// it (with a Deprecation header), so squib must too.
	t.Run("PutGuestVsock", func(t *testing.T) {
		if _, err := c.PutGuestVsock(ctx, &models.Vsock{
			VsockID:  "vsock0",
			GuestCid: firecracker.Int64(3),
			UdsPath:  firecracker.String(filepath.Join(s.dir, "v.sock")),
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("PutBalloon", func(t *testing.T) {
		in := wantBalloon
		if _, err := c.PutBalloon(ctx, &in); err != nil {
			t.Fatal(err)
		}
		resp, err := c.DescribeBalloonConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkBalloon(t, resp.Payload, wantBalloon)
	})

	// Guests cannot boot yet, so InstanceStart must fail cleanly: a 400
	// with Firecracker's prefix, and the VM left configured and not started.
	t.Run("InstanceStart", func(t *testing.T) {
		_, err := c.CreateSyncAction(ctx, &models.InstanceActionInfo{
			ActionType: firecracker.String(models.InstanceActionInfoActionTypeInstanceStart),
		})
		if err == nil {
			t.Fatal("InstanceStart succeeded; this test expects squib not to boot guests yet")
		}
		if msg := faultMessage(err); !strings.HasPrefix(msg, msgStartPrefix) {
			t.Fatalf("fault_message = %q, want prefix %q (error: %v)", msg, msgStartPrefix, err)
		} else {
			t.Logf("InstanceStart: %s", msg)
		}

		info, err := c.GetInstanceInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := firecracker.StringValue(info.Payload.State); got != models.InstanceInfoStateNotStarted {
			t.Errorf("state after failed start = %q, want %q", got, models.InstanceInfoStateNotStarted)
		}
		mc, err := c.GetMachineConfiguration()
		if err != nil {
			t.Fatal(err)
		}
		checkMachine(t, mc.Payload, wantMachine)
		b, err := c.DescribeBalloonConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkBalloon(t, b.Payload, wantBalloon)
	})

	// GET /vm/config must decode into the v1.0.0 model and reflect what
	// the sub-tests above applied.
	t.Run("GetExportVMConfig", func(t *testing.T) {
		resp, err := c.GetExportVMConfig()
		if err != nil {
			t.Fatal(err)
		}
		p := resp.Payload
		if p.MachineConfig == nil {
			t.Fatal("machine-config missing")
		}
		checkMachine(t, p.MachineConfig, wantMachine)
		if p.BootSource == nil || firecracker.StringValue(p.BootSource.KernelImagePath) != kernel {
			t.Errorf("boot-source = %+v, want kernel_image_path %q", p.BootSource, kernel)
		}
		var ids []string
		for _, d := range p.Drives {
			ids = append(ids, firecracker.StringValue(d.DriveID))
		}
		if !reflect.DeepEqual(ids, []string{"rootfs", "data"}) {
			t.Errorf("drive ids = %v, want [rootfs data]", ids)
		}
		if p.Vsock == nil || firecracker.Int64Value(p.Vsock.GuestCid) != 3 {
			t.Errorf("vsock = %+v, want guest_cid 3", p.Vsock)
		}
		if p.Balloon == nil {
			t.Error("balloon missing")
		} else {
			checkBalloon(t, p.Balloon, wantBalloon)
		}
		if tap != "" && (p.MmdsConfig == nil || !reflect.DeepEqual(p.MmdsConfig.NetworkInterfaces, []string{"eth0"})) {
			t.Errorf("mmds-config = %+v, want network_interfaces [eth0]", p.MmdsConfig)
		}
	})
}

func checkMachine(t *testing.T, got *models.MachineConfiguration, want models.MachineConfiguration) {
	t.Helper()
	if firecracker.Int64Value(got.VcpuCount) != firecracker.Int64Value(want.VcpuCount) ||
		firecracker.Int64Value(got.MemSizeMib) != firecracker.Int64Value(want.MemSizeMib) ||
		firecracker.BoolValue(got.Smt) != firecracker.BoolValue(want.Smt) ||
		got.TrackDirtyPages != want.TrackDirtyPages {
		t.Errorf("machine config = vcpu %d mem %d smt %t dirty %t, want vcpu %d mem %d smt %t dirty %t",
			firecracker.Int64Value(got.VcpuCount), firecracker.Int64Value(got.MemSizeMib),
			firecracker.BoolValue(got.Smt), got.TrackDirtyPages,
			firecracker.Int64Value(want.VcpuCount), firecracker.Int64Value(want.MemSizeMib),
			firecracker.BoolValue(want.Smt), want.TrackDirtyPages)
	}
}

func checkBalloon(t *testing.T, got *models.Balloon, want models.Balloon) {
	t.Helper()
	if firecracker.Int64Value(got.AmountMib) != firecracker.Int64Value(want.AmountMib) ||
		firecracker.BoolValue(got.DeflateOnOom) != firecracker.BoolValue(want.DeflateOnOom) ||
		got.StatsPollingIntervals != want.StatsPollingIntervals {
		t.Errorf("balloon = amount %d deflate %t stats %d, want amount %d deflate %t stats %d",
			firecracker.Int64Value(got.AmountMib), firecracker.BoolValue(got.DeflateOnOom), got.StatsPollingIntervals,
			firecracker.Int64Value(want.AmountMib), firecracker.BoolValue(want.DeflateOnOom), want.StatsPollingIntervals)
	}
}

// TestMachineStart runs the SDK's real Machine.Start path: its validation
// and init handler chain start squib, wait for the socket, set up logging
// and metrics, and PUT machine config, boot source, drives, vsock and MMDS
// data before InstanceStart. Everything up to InstanceStart must be
// accepted; InstanceStart itself must fail with Firecracker's prefix.
func TestMachineStart(t *testing.T) {
	markUncacheable()
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	const vmid = "sdkcompat-machine"

	out, err := os.Create(filepath.Join(dir, "squib.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(squibBin, "--api-sock", sock, "--id", vmid)
	cmd.Stdout, cmd.Stderr = out, out

	cfg := firecracker.Config{
		SocketPath:      sock,
		VMID:            vmid,
		KernelImagePath: writeFile(t, filepath.Join(dir, "vmlinux")),
		KernelArgs:      "console=ttyS0 reboot=k panic=1 pci=off",
		LogPath:         filepath.Join(dir, "fc.log"),
		LogLevel:        "Debug",
		MetricsPath:     filepath.Join(dir, "fc.metrics"),
		Drives: firecracker.NewDrivesBuilder(writeFile(t, filepath.Join(dir, "rootfs.ext4"))).
			AddDrive(writeFile(t, filepath.Join(dir, "data.img")), true).
			Build(),
		VsockDevices: []firecracker.VsockDevice{{ID: "vsock0", Path: filepath.Join(dir, "v.sock"), CID: 3}},
		MachineCfg: models.MachineConfiguration{
			VcpuCount:  firecracker.Int64(1),
			MemSizeMib: firecracker.Int64(128),
		},
	}

	entry, logw := newLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := firecracker.NewMachine(ctx, cfg, firecracker.WithProcessRunner(cmd), firecracker.WithLogger(entry))
	if err != nil {
		cancel()
		t.Fatalf("NewMachine: %v", err)
	}
	t.Cleanup(func() {
		// Cancelling Start's context makes the SDK SIGTERM squib (its
		// StopVMM does the same); wait for the SDK to reap it, and SIGKILL
		// if squib ignores the signal. With no process there is no wait.
		cancel()
		if cmd.Process != nil {
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer wcancel()
			if err := m.Wait(wctx); errors.Is(err, context.DeadlineExceeded) {
				t.Error("squib did not exit on SIGTERM")
				_ = cmd.Process.Kill()
				_ = m.Wait(context.Background())
			}
		}
		logw.close()
		out.Close()
		dumpOnFailure(t, out.Name())
	})

	metadata := map[string]any{"latest": map[string]any{"meta-data": map[string]any{"instance-id": vmid}}}
	m.Handlers.FcInit = m.Handlers.FcInit.Append(firecracker.NewSetMetadataHandler(metadata))

	// The SDK removes the API socket when Start fails, so squib's state can
	// only be inspected from inside the chain, just before InstanceStart.
	var probed bool
	m.Handlers.FcInit = m.Handlers.FcInit.Append(firecracker.Handler{
		Name: "sdkcompat.Probe",
		Fn: func(ctx context.Context, _ *firecracker.Machine) error {
			probed = true
			c := firecracker.NewClient(sock, entry, false)
			mc, err := c.GetMachineConfiguration()
			if err != nil {
				t.Errorf("GET /machine-config inside the chain: %v", err)
				return nil
			}
			checkMachine(t, mc.Payload, cfg.MachineCfg)
			mmds, err := c.GetMmds(ctx)
			if err != nil {
				t.Errorf("GET /mmds inside the chain: %v", err)
			} else if g, w := normJSON(t, mmds.Payload), normJSON(t, metadata); !reflect.DeepEqual(g, w) {
				t.Errorf("GET /mmds = %v, want %v", g, w)
			}
			return nil
		},
	})

	err = m.Start(ctx)
	if err == nil {
		t.Fatal("Machine.Start succeeded; this test expects squib not to boot guests yet")
	}
	if !strings.Contains(err.Error(), msgStartPrefix) {
		t.Fatalf("Machine.Start error = %v, want it to contain %q (an earlier handler failed?)", err, msgStartPrefix)
	}
	t.Logf("Machine.Start: %v", err)
	if !probed {
		t.Error("the handler chain did not reach the probe before InstanceStart")
	}
	// A refused start is an API answer, not a crash: squib keeps running.
	if _, err := m.PID(); err != nil {
		t.Errorf("squib is not running after the refused start: %v", err)
	}
	if b, err := os.ReadFile(cfg.LogPath); err != nil || len(b) == 0 {
		t.Errorf("log file %s empty or unreadable (err %v)", cfg.LogPath, err)
	}
}
