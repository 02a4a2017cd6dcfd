package boottimer

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/logger"
)

func TestLine(t *testing.T) {
	tests := []struct {
		wall, cpu uint64
		want      string
	}{
		{95342, 84012, "Guest-boot-time =  95342 us 95 ms,  84012 CPU us 84 CPU ms"},
		{5, 0, "Guest-boot-time =      5 us 0 ms,      0 CPU us 0 CPU ms"},
		{1234567, 999, "Guest-boot-time = 1234567 us 1234 ms,    999 CPU us 0 CPU ms"},
	}
	for _, tc := range tests {
		if got := Line(tc.wall, tc.cpu); got != tc.want {
			t.Errorf("Line(%d, %d) = %q, want %q", tc.wall, tc.cpu, got, tc.want)
		}
	}
}

func TestWriteLogsBootTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l := logger.New("boot-test")
	if err := l.Configure(logger.Config{Path: &path}); err != nil {
		t.Fatal(err)
	}
	start := Now()
	start.Wall = start.Wall.Add(-1500 * time.Millisecond)
	b := New(start)
	b.log = l.With("fc_vcpu 0", "devices/boottimer")

	// Ignored: wrong value, offset or size; reads do nothing.
	b.Write(0, []byte{122})
	b.Write(1, []byte{MagicBootComplete})
	b.Write(0, []byte{MagicBootComplete, 0})
	d := []byte{0xaa}
	b.Read(0, d)
	if d[0] != 0xaa {
		t.Fatal("read changed data")
	}
	if out, _ := os.ReadFile(path); len(out) != 0 {
		t.Fatalf("logged %q for ignored writes", out)
	}

	b.Write(0, []byte{MagicBootComplete})
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(out))
	re := regexp.MustCompile(`\[boot-test:fc_vcpu 0\] Guest-boot-time = +(\d+) us (\d+) ms, +(\d+) CPU us (\d+) CPU ms$`)
	m := re.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("log line %q", line)
	}
	if len(m[1]) < 7 || !strings.HasPrefix(m[2], "15") {
		t.Fatalf("wall time %s us %s ms, want about 1.5 s", m[1], m[2])
	}
}

func TestNowCPUAdvances(t *testing.T) {
	a := Now()
	x := 0
	for i := range 20_000_000 {
		x += i
	}
	_ = x
	if b := Now(); b.CPU <= a.CPU || a.CPU <= 0 {
		t.Fatalf("process CPU time %v then %v", a.CPU, b.CPU)
	}
}
