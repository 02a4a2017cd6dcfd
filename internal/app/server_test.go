package app

// Subprocess tests that talk to a running squib: --metadata, the payload
// limit, --metrics-path, the connection cap, signals, the default socket
// and the log format.

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("invalid JSON %q: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// faultMessage returns the fault_message of an API error body.
func faultMessage(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		FaultMessage string `json:"fault_message"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.FaultMessage
}

func TestMetadataFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	md := writeFile(t, dir, "md.json", bigMetadata)
	p, c := startAPI(t, "--metadata", md)
	defer c.close()
	status, body := c.do(t, "GET", "/mmds", "")
	if status != 200 || !jsonEqual(t, body, []byte(bigMetadata)) {
		t.Errorf("GET /mmds = %d %s, want 200 %s", status, body, bigMetadata)
	}
	if !strings.Contains(p.stdout(), "Successfully added metadata to mmds from file") {
		t.Errorf("log lacks the metadata line:\n%s", p.stdout())
	}
}

func TestPayloadLimit(t *testing.T) {
	t.Parallel()
	_, c := startAPI(t, "--http-api-max-payload-size", "250")
	defer c.close()

	// A body of exactly the limit is accepted.
	mc := `{"vcpu_count": 1, "mem_size_mib": 128}`
	mc += strings.Repeat(" ", 250-len(mc))
	if status, body := c.do(t, "PUT", "/machine-config", mc); status != 204 {
		t.Errorf("PUT of 250 bytes = %d %s, want 204", status, body)
	}

	big := `{"k": "` + strings.Repeat("x", 251-len(`{"k": ""}`)) + `"}`
	if len(big) != 251 {
		t.Fatalf("body is %d bytes", len(big))
	}
	want := "{ \"error\": \"Request payload with size 251 is larger than the limit of 250 allowed by server.\nAll previous unanswered requests will be dropped.\" }"
	status, body := c.do(t, "PUT", "/mmds", big)
	if status != 400 || string(body) != want {
		t.Errorf("PUT of 251 bytes = %d %q, want 400 %q", status, body, want)
	}
}

func TestMetricsPathThenPutMetrics(t *testing.T) {
	t.Parallel()
	p, c := startAPI(t, "--metrics-path", "{dir}/metrics")
	defer c.close()
	status, body := c.do(t, "PUT", "/metrics", `{"metrics_path": "`+p.path("metrics2")+`"}`)
	want := "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."
	if status != 400 || faultMessage(t, body) != want {
		t.Errorf("PUT /metrics = %d %s, want 400 %q", status, body, want)
	}
	if _, err := os.Stat(p.path("metrics")); err != nil {
		t.Errorf("--metrics-path file: %v", err)
	}
}

func TestConnectionCap(t *testing.T) {
	t.Parallel()
	p, c := startAPI(t)
	c.close()
	sock := p.path("api.sock")
	conns := make([]net.Conn, 10)
	for i := range conns {
		conn, err := net.DialTimeout("unix", sock, startTimeout)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		defer conn.Close()
		conns[i] = conn
	}
	// The server accepts in order, so the 11th connection is the one over
	// the cap once the first ten are accepted.
	extra, err := net.DialTimeout("unix", sock, startTimeout)
	if err != nil {
		t.Fatalf("11th connection: %v", err)
	}
	defer extra.Close()
	extra.SetDeadline(time.Now().Add(startTimeout))
	got, err := io.ReadAll(extra)
	if err != nil {
		t.Fatalf("reading the 11th connection: %v (read %q)", err, got)
	}
	want := "HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{ \"error\": \"Too many open connections\" }"
	if string(got) != want {
		t.Errorf("11th connection got %q, want %q", got, want)
	}
	for i, conn := range conns {
		resp, body, err := rawRequest(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
		if err != nil {
			t.Fatalf("request on connection %d: %v", i+1, err)
		}
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"state":"Not started"`) {
			t.Errorf("connection %d: GET / = %d %s", i+1, resp.StatusCode, body)
		}
	}
	// Closing one frees a slot for a new connection.
	conns[0].Close()
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("unix", sock, startTimeout)
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := rawRequest(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
		conn.Close()
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection slot freed after closing one: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lastMetrics returns the last metrics line written to path, decoded.
func lastMetrics(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("metrics line %q: %v", lines[len(lines)-1], err)
	}
	return m
}

func signalMetric(t *testing.T, m map[string]any, name string) float64 {
	t.Helper()
	sigs, ok := m["signals"].(map[string]any)
	if !ok {
		t.Fatalf("metrics line has no signals group: %v", m)
	}
	v, ok := sigs[name].(float64)
	if !ok {
		t.Fatalf("signals.%s missing: %v", name, sigs)
	}
	return v
}

func TestSignals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		sig    syscall.Signal
		code   int
		metric string
	}{
		{syscall.SIGHUP, 156, "sighup"},
		{syscall.SIGXFSZ, 151, "sigxfsz"},
		{syscall.SIGXCPU, 154, "sigxcpu"},
	} {
		t.Run(c.metric, func(t *testing.T) {
			t.Parallel()
			p, cl := startAPI(t, "--metrics-path", "{dir}/metrics")
			cl.close()
			p.signal(c.sig)
			if code := p.wait(); code != c.code {
				t.Errorf("exit code after %v = %d, want %d\n%s", c.sig, code, c.code, p.stdout())
			}
			want := "Shutting down VM after intercepting signal " + strconv.Itoa(int(c.sig))
			if !strings.Contains(p.stdout(), want) {
				t.Errorf("log lacks %q:\n%s", want, p.stdout())
			}
			if v := signalMetric(t, lastMetrics(t, p.path("metrics")), c.metric); v != 1 {
				t.Errorf("signals.%s = %v, want 1", c.metric, v)
			}
		})
	}
	t.Run("sigpipe", func(t *testing.T) {
		t.Parallel()
		p, cl := startAPI(t)
		defer cl.close()
		p.signal(syscall.SIGPIPE)
		p.waitLog("Received signal 13")
		if status, body := cl.do(t, "GET", "/", ""); status != 200 {
			t.Errorf("GET / after SIGPIPE = %d %s", status, body)
		}
		if p.exited() {
			t.Fatalf("squib exited (code %d) after SIGPIPE", p.code)
		}
		// Killed by t.Cleanup.
	})
}

// TestNoArguments runs squib with no arguments: it listens on
// /run/firecracker.socket and keeps running.
func TestNoArguments(t *testing.T) {
	const sock = DefaultAPISock
	if _, err := os.Lstat(sock); err == nil {
		t.Skipf("%s exists", sock)
	}
	if err := syscall.Access("/run", 2 /* W_OK */); err != nil {
		t.Skipf("/run is not writable: %v", err)
	}
	p := startSquib(t)
	deadline := time.Now().Add(startTimeout)
	for !strings.Contains(p.stdout(), "API server started.") {
		if p.exited() {
			if strings.Contains(p.stdout(), "Failed to open the API socket") {
				t.Skipf("%s was taken by another process", sock)
			}
			t.Fatalf("squib exited with %d:\n%s\n%s", p.code, p.stdout(), p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("squib did not start:\n%s", p.stdout())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The socket is ours now: remove it once the process is gone (squib,
	// like Firecracker, never unlinks it). This cleanup runs before the one
	// registered by startSquib, so it kills the process itself.
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
		os.Remove(sock)
	})
	if !strings.Contains(p.stdout(), `Listening on API socket ("`+sock+`").`) {
		t.Errorf("log lacks the listening line:\n%s", p.stdout())
	}
	c := newUnixClient(sock)
	defer c.close()
	status, body := c.do(t, "GET", "/", "")
	if status != 200 || !strings.Contains(string(body), `"id":"anonymous-instance"`) {
		t.Errorf("GET / = %d %s", status, body)
	}
	// Still running a while later.
	time.Sleep(500 * time.Millisecond)
	if p.exited() {
		t.Errorf("squib exited with %d", p.code)
	}
}

func TestLogFormat(t *testing.T) {
	t.Parallel()
	levelRE := regexp.MustCompile(`^\S+ \[[^:\]]+:[^:\]]+:(ERROR|WARN|INFO|DEBUG|TRACE)\] `)
	originRE := regexp.MustCompile(`^\S+ \[[^:\]]+:[^:\]]+:(ERROR|WARN|INFO|DEBUG|TRACE):[^:\]]+:\d+\] `)
	for _, c := range []struct {
		name string
		args []string
		re   *regexp.Regexp
	}{
		{"plain", nil, regexp.MustCompile(`^\S+ \[my-vm-1:(main|fc_api)\] `)},
		{"show-level", []string{"--show-level"}, levelRE},
		{"show-level-and-origin", []string{"--show-level", "--show-log-origin"}, originRE},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// Start a server, log an error and a deprecation warning with
			// API requests, then stop it with a signal: INFO, WARN and
			// ERROR lines.
			args := append([]string{"--id", "my-vm-1", "--api-sock", "{dir}/api.sock", "--metadata", "{dir}/md.json"}, c.args...)
			dir := t.TempDir()
			writeFile(t, dir, "md.json", "{}")
			p := startSquibIn(t, dir, args...)
			p.waitLog("API server started.")
			cl := newUnixClient(p.path("api.sock"))
			if status, _ := cl.do(t, "PUT", "/boot-source", `{"kernel_image_path": "/nonexistent"}`); status != 400 {
				t.Errorf("PUT /boot-source = %d, want 400", status)
			}
			// A deprecated field gives a WARN line.
			if status, body := cl.do(t, "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "None"}`); status != 204 {
				t.Errorf("PUT /machine-config = %d %s, want 204", status, body)
			}
			cl.close()
			p.signal(syscall.SIGHUP)
			p.wait()
			out := p.stdout()
			checkLogLines(t, out, true)
			sc := bufio.NewScanner(strings.NewReader(out))
			levels := map[string]bool{}
			for sc.Scan() {
				l := sc.Text()
				if !c.re.MatchString(l) {
					t.Errorf("line does not match %v: %q", c.re, l)
				}
				if !strings.Contains(l, "[my-vm-1:") {
					t.Errorf("line lacks the instance ID: %q", l)
				}
				if m := levelRE.FindStringSubmatch(l); m != nil {
					levels[m[1]] = true
				} else if m := originRE.FindStringSubmatch(l); m != nil {
					levels[m[1]] = true
				}
			}
			if c.re != levelRE && c.re != originRE {
				return
			}
			for _, lvl := range []string{"INFO", "WARN", "ERROR"} {
				if !levels[lvl] {
					t.Errorf("no %s line in:\n%s", lvl, out)
				}
			}
			if !strings.Contains(out, "Received Error. Status code: 400 Bad Request. Message: Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)") {
				t.Errorf("log lacks the API error line:\n%s", out)
			}
		})
	}
}
