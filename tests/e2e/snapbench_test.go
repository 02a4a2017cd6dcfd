//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkSnapshot measures, for a 1-vCPU guest of 128 MiB and of 1 GiB:
// the time PUT /snapshot/create (Full) takes, the time PUT /snapshot/load
// (File backend, resume_vm) takes in a new squib, the time from sending the
// load to the guest's first answer (a vsock echo), and GET / latency
// while the create and the load run (a client polls it every millisecond).
func BenchmarkSnapshot(b *testing.B) {
	for _, mib := range []int{128, 1024} {
		b.Run(fmt.Sprintf("mem=%dMiB", mib), func(b *testing.B) {
			var create, load, answer, echo time.Duration
			var lat, idle latencies
			for i := 0; i < b.N; i++ {
				c, l, a, e := snapshotRound(b, mib, &lat, &idle)
				create, load, answer, echo = create+c, load+l, answer+a, echo+e
			}
			n := float64(b.N)
			b.ReportMetric(float64(create.Microseconds())/1000/n, "ms-create")
			b.ReportMetric(float64(load.Microseconds())/1000/n, "ms-load")
			b.ReportMetric(float64(answer.Microseconds())/1000/n, "ms-to-answer")
			b.ReportMetric(float64(echo.Microseconds())/1000/n, "ms-to-console-echo")
			p50, p99, max := lat.stats()
			b.ReportMetric(p50, "us-GET/-p50")
			b.ReportMetric(p99, "us-GET/-p99")
			b.ReportMetric(max, "us-GET/-max")
			// The same client against the same squib with nothing running,
			// for comparison on this (noisy, emulated) machine.
			p50, p99, _ = idle.stats()
			b.ReportMetric(p50, "us-GET/-idle-p50")
			b.ReportMetric(p99, "us-GET/-idle-p99")
		})
	}
}

// latencies collects GET / round trips.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) stats() (p50, p99, max float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	return us(l.d[len(l.d)/2]), us(l.d[len(l.d)*99/100]), us(l.d[len(l.d)-1])
}

// poll sends GET / every millisecond until stop is closed, recording each
// round trip, and checks that one answer named the operation in progress.
func (l *latencies) poll(b *testing.B, s *squib, op string, stop <-chan struct{}, seen *bool) {
	cl := s.client()
	for {
		select {
		case <-stop:
			return
		default:
		}
		t0 := time.Now()
		resp, err := cl.Get("http://localhost/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			d := time.Since(t0)
			l.mu.Lock()
			l.d = append(l.d, d)
			l.mu.Unlock()
			if strings.Contains(string(body), `"in_progress":"`+op+`"`) {
				*seen = true
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// timedAPI runs one API call while GET / is polled, and returns its
// duration.
func timedAPI(b *testing.B, s *squib, lat *latencies, method, path, body string) time.Duration {
	stop := make(chan struct{})
	done := make(chan struct{})
	seen := false
	go func() { lat.poll(b, s, method+" "+path, stop, &seen); close(done) }()
	t0 := time.Now()
	req, _ := newRequest(method, path, body)
	resp, err := s.client().Do(req)
	d := time.Since(t0)
	close(stop)
	<-done
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		b.Fatalf("%s %s: %d %s\nlog:\n%s", method, path, resp.StatusCode, msg, s.log())
	}
	if d > 50*time.Millisecond && !seen {
		b.Errorf("GET / never reported %s in progress during a %v call", path, d)
	}
	return d
}

// snapshotRound boots a guest, snapshots it, restores it in a new squib
// and ends it; it returns the create, load and load-to-answer times.
func snapshotRound(b *testing.B, mib int, lat, idle *latencies) (create, load, answer, echo time.Duration) {
	// Progress on stderr, which reaches the console at once: a run that
	// ends L1 shows where it was.
	step := func(s string) { fmt.Fprintf(os.Stderr, "snapshot bench %d MiB: %s\n", mib, s) }
	dir := b.TempDir()
	uds := filepath.Join(dir, "v.sock")
	g := guest{kernel: envB(b, "SQUIB_GUEST_VMLINUX"), vcpus: 1, memMiB: mib,
		args:  "squib.modules=virtio_mmio,vmw_vsock_virtio_transport squib.test=snapecho",
		extra: map[string]any{"vsock": map[string]any{"guest_cid": 3, "uds_path": uds}}}
	cfg := writeConfig(b, g)
	var s *squib
	for attempt := 1; ; attempt++ {
		s = startB(b, dir, fmt.Sprintf("a%d", attempt), "--config-file", cfg)
		if s.waitLineQuiet("SQUIB-SNAP-READY", bootTimeout) {
			break
		}
		// The nested emulator's triple fault right after a start (see
		// nestedCrash) ends the VM before its init: boot again, at most
		// twice, as the e2e tests do.
		if attempt < 3 && s.hasExited() && nestedCrash(s.log()) {
			fmt.Fprintf(os.Stderr, "snapshot bench %d MiB: the guest crashed under nested virtualization before its init; retrying\n", mib)
			os.Remove(uds)
			continue
		}
		b.Fatalf("the guest never became ready; console and goroutines:\n%s\nlog:\n%s", s.dumpGoroutines(), s.log())
	}
	step("guest ready")
	stop, done := make(chan struct{}), make(chan struct{})
	var seen bool
	go func() { idle.poll(b, s, "", stop, &seen); close(done) }()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-done
	s.apiB(b, "PATCH", "/vm", `{"state":"Paused"}`)
	step("paused")
	state, mem := filepath.Join(dir, "vm.state"), filepath.Join(dir, "vm.mem")
	create = timedAPI(b, s, lat, "PUT", "/snapshot/create", fmt.Sprintf(`{"snapshot_type":"Full","snapshot_path":%q,"mem_file_path":%q}`, state, mem))
	step("created")
	s.cmd.Process.Kill()
	<-s.exited
	step("first squib killed")
	os.Remove(uds)

	r := startB(b, dir, "b")
	r.waitAPI(b)
	t0 := time.Now()
	load = timedAPI(b, r, lat, "PUT", "/snapshot/load", fmt.Sprintf(`{"snapshot_path":%q,"mem_backend":{"backend_type":"File","backend_path":%q},"resume_vm":true}`, state, mem))
	echo = consoleEcho(b, r.stdin, r.console, t0)
	for {
		if vsockEcho(uds) {
			break
		}
		if time.Since(t0) > 2*time.Minute {
			b.Fatalf("the restored guest never answered on vsock; console:\n%s\nlog:\n%s", r.console.text(), r.log())
		}
		time.Sleep(time.Millisecond)
	}
	answer = time.Since(t0)
	step("restored guest answered")
	r.apiB(b, "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	<-r.exited
	os.Remove(state)
	os.Remove(mem)
	return create, load, answer, echo
}

// consoleEcho writes a line to the guest's serial console every 5 ms until
// the guest echoes one (snapecho.sh), and returns the time since t0.
func consoleEcho(b *testing.B, stdin io.Writer, c *console, t0 time.Time) time.Duration {
	d, ok := consoleEchoWithin(stdin, c, t0, 2*time.Minute)
	if !ok {
		b.Fatalf("the restored guest never echoed on its console:\n%s", c.text())
	}
	return d
}

// consoleEchoWithin is consoleEcho giving up after limit.
func consoleEchoWithin(stdin io.Writer, c *console, t0 time.Time, limit time.Duration) (time.Duration, bool) {
	for i := 0; ; i++ {
		fmt.Fprintf(stdin, "ping-%d\n", i)
		if strings.Contains(c.text(), "SQUIB-ECHO=ping-") {
			return time.Since(t0), true
		}
		if time.Since(t0) > limit {
			return 0, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// vsockEcho reports whether an echo through the guest's port 5000 works.
func vsockEcho(uds string) bool {
	c, err := net.Dial("unix", uds)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "CONNECT 5000\n")
	br := bufio.NewReader(c)
	if ok, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(ok, "OK ") {
		return false
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	_, err = io.ReadFull(br, buf)
	return err == nil && string(buf) == "ping"
}

// startB starts squib with its API socket in dir (named by tag).
func startB(b *testing.B, dir, tag string, args ...string) *squib {
	s := &squib{console: newConsole(), dir: dir, sock: filepath.Join(dir, tag+".sock"), logPath: filepath.Join(dir, tag+".log")}
	full := squibArgs(append([]string{"--api-sock", s.sock, "--log-path", s.logPath, "--level", "Info"}, args...))
	s.cmd = exec.Command(envB(b, "SQUIB_BIN"), full...)
	s.cmd.Stdout, s.cmd.Stderr = s.console, s.console
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	b.Cleanup(func() { s.cmd.Process.Kill() })
	return s
}

func (s *squib) waitAPI(b *testing.B) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if resp, err := s.client().Get("http://localhost/"); err == nil {
			resp.Body.Close()
			return
		}
	}
	b.Fatal("squib's API never answered")
}

func (s *squib) apiB(b *testing.B, method, path, body string) {
	req, _ := newRequest(method, path, body)
	resp, err := s.client().Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, msg)
	}
}

func newRequest(method, path, body string) (*http.Request, error) {
	return http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
}

// waitLineQuiet waits for a console line holding prefix and reports
// whether it came in time; it gives up early when squib exits.
func (s *squib) waitLineQuiet(prefix string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if strings.Contains(s.console.text(), prefix) {
			return true
		}
		if s.hasExited() {
			return strings.Contains(s.console.text(), prefix)
		}
	}
	return false
}

// hasExited reports whether the squib process has ended.
func (s *squib) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}
