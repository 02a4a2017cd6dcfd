package app

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// filterWithout writes the default filter minus the rules for syscall to
// dir/filter.json.
func filterWithout(t *testing.T, dir, syscall string) string {
	t.Helper()
	data, err := os.ReadFile("../seccomp/default.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, cat := range doc {
		kept := []any{}
		for _, r := range cat["filter"].([]any) {
			if r.(map[string]any)["syscall"] != syscall {
				kept = append(kept, r)
			}
		}
		cat["filter"] = kept
	}
	b, _ := json.Marshal(doc)
	p := filepath.Join(dir, "filter.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSeccompCustomFilterKills: a --seccomp-filter file is compiled and
// installed instead of the default; a syscall outside it (here accept4,
// taken out of the default set, when a client connects) ends squib with
// Firecracker's exit code 148 and a log line naming the syscall.
func TestSeccompCustomFilterKills(t *testing.T) {
	dir := t.TempDir()
	filter := filterWithout(t, dir, "accept4")
	p := startSquibIn(t, dir, "--api-sock", "{dir}/api.sock", "--seccomp-filter", filter, "--metrics-path", "{dir}/metrics.json")
	p.waitLog("API server started.")
	if c, err := net.Dial("unix", p.path("api.sock")); err == nil {
		defer c.Close()
	}
	if code := p.wait(); code != 148 {
		t.Fatalf("exit code %d, want 148 (bad syscall)\nstdout:\n%s\nstderr:\n%s", code, p.stdout(), p.stderr())
	}
	if !strings.Contains(p.stdout(), "Shutting down VM after intercepting a bad syscall (288).") {
		t.Errorf("log lacks the bad syscall (accept4 is 288):\n%s", p.stdout())
	}
	m, _ := os.ReadFile(p.path("metrics.json"))
	if !strings.Contains(string(m), `"seccomp":{"num_faults":1}`) {
		t.Errorf("metrics lack seccomp.num_faults 1:\n%s", m)
	}
}

// TestSeccompDefaultFilterServes: squib runs under the default filter
// unless told otherwise (Seccomp: 2 in /proc), and serves its API; the
// other command-line tests run every path they cover under it too.
func TestSeccompDefaultFilterServes(t *testing.T) {
	p, c := startAPI(t)
	status, body := c.do(t, "GET", "/", "")
	if status != 200 || !strings.Contains(string(body), `"state":"Not started"`) {
		t.Fatalf("GET / = %d %s", status, body)
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), "Seccomp:\t2") {
		t.Errorf("squib is not in seccomp filter mode:\n%s", st)
	}
}

// TestSeccompMalformedFilter: a filter file that is not Firecracker's
// format stops squib before it serves, with a message naming the problem.
func TestSeccompMalformedFilter(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"vmm":{"default_action":"trap","filter_action":"allow","filter":[{"syscall":"no_such_call"}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startSquibIn(t, dir, "--api-sock", "{dir}/api.sock", "--seccomp-filter", "{dir}/bad.json")
	if code := p.wait(); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.stderr(), "Seccomp error") {
		t.Errorf("stderr lacks the seccomp error:\n%s", p.stderr())
	}
	if _, err := os.Stat(filepath.Join(dir, "api.sock")); err == nil {
		t.Error("squib created its API socket despite the bad filter")
	}
}
