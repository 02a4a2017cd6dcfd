package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden")

// TestGolden pins the exact bytes of a line: compact JSON, key order,
// escaping and the newline, for a fixed timestamp and a fixed set of
// counters. Regenerate with go test -run TestGolden -update, and check the
// diff against Firecracker's output before committing it.
func TestGolden(t *testing.T) {
	m, path := newTestMetrics(t)
	m.now = func() time.Time { return time.UnixMilli(1541591155180) }
	m.SetEmitID("golden-vm")
	m.SetProperties(map[string]string{"region": "eu-west-1", "fleet": "a\tb"})
	m.APIServer.ProcessStartupTimeUS.Store(12345)
	m.APIServer.ProcessStartupTimeCPUUS.Store(6789)
	m.PutAPIRequests.ActionsCount.Add(2)
	m.PutAPIRequests.DriveCount.Add(2)
	m.GetAPIRequests.InstanceInfoCount.Inc()
	rootfs, scratch := m.Block("rootfs"), m.Block("scratch")
	rootfs.ReadBytes.Add(4096)
	rootfs.ReadCount.Inc()
	rootfs.ReadAgg.Record(150)
	scratch.WriteBytes.Add(512)
	scratch.WriteAgg.Record(80)
	m.Net("eth0").TxPacketsCount.Add(3)
	m.Pmem("pm0").ActivateFails.Inc()
	m.Vcpu.ExitIOOut.Add(42)
	m.Vcpu.ExitIOOutAgg.Record(3)
	m.Signals.Sigpipe.Inc()
	m.MemoryHotplug.PlugAgg.Record(9)
	m.Uart.WriteCount.Add(77)
	if err := m.Write(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("metrics line differs from %s:\n got  %s\n want %s", golden, got, want)
	}
}
