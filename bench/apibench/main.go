// Command apibench measures squib's control plane from the outside, as a
// client of the squib binary: process start-up until the API answers, API
// latency and throughput over the Unix socket, and idle memory.
//
// It prints markdown tables (docs/benchmarks.md quotes them). It asserts
// nothing about the figures: the machine it runs on decides them, so they
// are recorded, never used as pass/fail thresholds.
//
// Usage:
//
//	apibench -squib ./squib [-n 50] [-requests 20000] [-out results.md]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const machineConfigBody = `{"vcpu_count":2,"mem_size_mib":256}`

func main() {
	squib := flag.String("squib", "", "path of the squib binary to measure (required)")
	n := flag.Int("n", 50, "start-up runs")
	requests := flag.Int("requests", 20000, "measured requests per latency case (split across the clients)")
	warmup := flag.Int("warmup", 1000, "unmeasured requests before each latency case")
	clientsFlag := flag.String("clients", "1,8", "comma-separated concurrent client counts (squib serves at most 10 connections)")
	only := flag.String("only", "startup,latency,rss", "comma-separated subset of startup,latency,rss to run")
	out := flag.String("out", "", "also write the report to this file")
	extra := flag.String("args", "", "extra space-separated arguments for squib after --api-sock (e.g. \"--level Off\")")
	flag.Parse()
	if *squib == "" {
		fmt.Fprintln(os.Stderr, "apibench: -squib is required")
		flag.Usage()
		os.Exit(2)
	}
	bin, err := filepath.Abs(*squib)
	if err != nil {
		fatal(err)
	}
	var clients []int
	for _, f := range strings.Split(*clientsFlag, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 || c > 10 {
			fatal(fmt.Errorf("bad -clients value %q (1..10)", f))
		}
		clients = append(clients, c)
	}
	want := map[string]bool{}
	for _, f := range strings.Split(*only, ",") {
		want[strings.TrimSpace(f)] = true
	}

	childArgs = strings.Fields(*extra)

	dir, err := os.MkdirTemp("", "apibench")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)

	var rep bytes.Buffer
	fmt.Fprintf(&rep, "squib binary: `%s` (%d bytes), arguments `--api-sock <fresh path> %s`; runner: %s, GOMAXPROCS %d, CLK_TCK %d\n\n",
		bin, fileSize(bin), *extra, runtime.Version(), runtime.GOMAXPROCS(0), clockTicks())
	if want["startup"] {
		if err := startup(&rep, bin, dir, *n); err != nil {
			fatal(err)
		}
	}
	if want["latency"] {
		if err := latency(&rep, bin, dir, clients, *requests, *warmup); err != nil {
			fatal(err)
		}
	}
	if want["rss"] {
		if err := idleRSS(&rep, bin, dir); err != nil {
			fatal(err)
		}
	}
	os.Stdout.Write(rep.Bytes())
	if *out != "" {
		if err := os.WriteFile(*out, rep.Bytes(), 0o644); err != nil {
			fatal(err)
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "apibench:", err)
	os.Exit(1)
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return st.Size()
}

// childArgs are passed to every squib after --api-sock.
var childArgs []string

// child is a running squib.
type child struct {
	cmd  *exec.Cmd
	sock string
}

// spawn starts squib on a fresh socket path. Its stdout (the log, at Info
// by default) goes to /dev/null, the cheapest sink, so the figures do not
// depend on how fast this tool would drain a pipe.
func spawn(bin, sock string) (*child, error) {
	cmd := exec.Command(bin, append([]string{"--api-sock", sock}, childArgs...)...)
	// Measure the Go runtime's defaults: no GOGC or GOMEMLIMIT tuning
	// inherited from whoever runs the benchmark.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "GOGC=") || strings.HasPrefix(e, "GOMEMLIMIT=") || strings.HasPrefix(e, "GODEBUG=")
	})
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd, sock: sock}, nil
}

// kill ends the child and returns its CPU time from wait4's rusage, which
// the kernel derives from the scheduler's nanosecond runtime rather than
// from ticks, so it resolves well below 10 ms.
func (c *child) kill() time.Duration {
	c.cmd.Process.Kill()
	c.cmd.Wait()
	os.Remove(c.sock) // squib never unlinks its socket
	if ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return -1
}

// getRoot sends one GET / on conn and reports whether it answered 200.
// A hand-written request keeps the probe's own cost out of the start-up
// figure.
func getRoot(conn net.Conn) (bool, error) {
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// waitReady polls the socket every 50 µs until a connect succeeds and
// GET / answers 200.
func waitReady(sock string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			ok, err := getRoot(conn)
			conn.Close()
			if ok {
				return nil
			}
			if err == nil {
				return errors.New("GET / did not answer 200")
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("squib not ready on %s after %s: %v", sock, limit, err)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// procCPU reads utime+stime of pid from /proc/<pid>/stat, in clock ticks.
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it start
	// past the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad utime/stime in /proc stat")
	}
	return ut + st, nil
}

// clockTicks returns CLK_TCK (sysconf(_SC_CLK_TCK)) from the auxiliary
// vector, since the standard library has no sysconf without cgo.
func clockTicks() int64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		for i := 0; i+16 <= len(b); i += 16 {
			k, v := binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+8:])
			if k == atClkTck && v > 0 {
				return int64(v)
			}
		}
	}
	return 100
}

func startup(rep *bytes.Buffer, bin, dir string, n int) error {
	tck := clockTicks()
	var wall, tickCPU, ruCPU []time.Duration
	for i := range n {
		sock := filepath.Join(dir, fmt.Sprintf("start%d.sock", i))
		t0 := time.Now()
		c, err := spawn(bin, sock)
		if err != nil {
			return err
		}
		err = waitReady(sock, 5*time.Second)
		w := time.Since(t0)
		ticks, perr := procCPU(c.cmd.Process.Pid)
		// Kill at once: the rusage CPU then covers start-up plus the few
		// microseconds until the signal lands.
		ru := c.kill()
		if err != nil {
			return err
		}
		if perr != nil {
			return perr
		}
		wall = append(wall, w)
		tickCPU = append(tickCPU, time.Duration(ticks)*time.Second/time.Duration(tck))
		ruCPU = append(ruCPU, ru)
	}
	fmt.Fprintf(rep, "### Start-up (%d runs)\n\n", n)
	fmt.Fprintf(rep, "Wall: from just before `cmd.Start()` until a connect succeeds and `GET /` answers 200 (polled every 50 µs). "+
		"CPU (/proc): the child's utime+stime at that moment, in %d ms ticks. CPU (rusage): utime+stime from wait4 after SIGKILL right after the answer.\n\n", 1000/tck)
	fmt.Fprintln(rep, "| metric | median | p90 | min | max | mean |")
	fmt.Fprintln(rep, "|---|---|---|---|---|---|")
	row := func(name string, d []time.Duration) {
		s := summarize(d)
		fmt.Fprintf(rep, "| %s | %s | %s | %s | %s | %s |\n", name, ms(s.p50), ms(s.p90), ms(s.min), ms(s.max), ms(s.mean))
	}
	row("wall until GET / = 200", wall)
	row(fmt.Sprintf("CPU, /proc stat (%d ms ticks)", 1000/tck), tickCPU)
	row("CPU, wait4 rusage", ruCPU)
	fmt.Fprintln(rep)
	return nil
}

func latency(rep *bytes.Buffer, bin, dir string, clients []int, requests, warmup int) error {
	sock := filepath.Join(dir, "lat.sock")
	c, err := spawn(bin, sock)
	if err != nil {
		return err
	}
	defer c.kill()
	if err := waitReady(sock, 5*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(rep, "### API latency and throughput (one squib, %d measured requests per case after %d warm-up)\n\n", requests, warmup)
	fmt.Fprintln(rep, "Each client is its own `http.Client` holding one keep-alive Unix-socket connection; latency is per request as the client sees it (client-side cost included).")
	fmt.Fprintln(rep)
	fmt.Fprintln(rep, "| request | clients | p50 | p99 | max | req/s | connections opened |")
	fmt.Fprintln(rep, "|---|---|---|---|---|---|---|")
	cases := []struct {
		name, method, path, body string
		want                     int
	}{
		{"GET /", http.MethodGet, "/", "", http.StatusOK},
		{"PUT /machine-config", http.MethodPut, "/machine-config", machineConfigBody, http.StatusNoContent},
	}
	for _, cs := range cases {
		for _, nc := range clients {
			r, err := runCase(sock, cs.method, cs.path, cs.body, cs.want, nc, requests, warmup)
			if err != nil {
				return fmt.Errorf("%s with %d clients: %w", cs.name, nc, err)
			}
			s := summarize(r.lat)
			fmt.Fprintf(rep, "| %s | %d | %s | %s | %s | %.0f | %d |\n", cs.name, nc, us(s.p50), us(s.p99), us(s.max),
				float64(len(r.lat))/r.elapsed.Seconds(), r.dials)
		}
	}
	fmt.Fprintln(rep)
	// The same process after the load: what serving some 10^5 requests
	// leaves resident.
	st, err := procStatus(c.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(rep, "Memory of that squib after the load: VmRSS %s, VmHWM %s, RssAnon %s, RssFile %s, threads %s.\n\n",
		st["VmRSS"], st["VmHWM"], st["RssAnon"], st["RssFile"], st["Threads"])
	return nil
}

type caseResult struct {
	lat     []time.Duration
	elapsed time.Duration
	dials   int
}

// runCase runs warmup then requests requests of one kind, spread over nc
// clients each with exactly one connection.
func runCase(sock, method, path, body string, want, nc, requests, warmup int) (caseResult, error) {
	var mu sync.Mutex
	dials := 0
	newClient := func() *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				mu.Lock()
				dials++
				mu.Unlock()
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
		}}
	}
	cls := make([]*http.Client, nc)
	for i := range cls {
		cls[i] = newClient()
	}
	defer func() {
		for _, cl := range cls {
			cl.CloseIdleConnections()
		}
	}()
	do := func(cl *http.Client) error {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://localhost"+path, rd)
		if err != nil {
			return err
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		// Drain so the connection goes back for reuse.
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
		}
		return nil
	}
	// run sends total requests from nc clients; each client records its own
	// latencies so the hot loop shares nothing.
	run := func(total int, record bool) ([][]time.Duration, time.Duration, error) {
		per := make([][]time.Duration, nc)
		errs := make([]error, nc)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range nc {
			cnt := total / nc
			if i < total%nc {
				cnt++
			}
			if record {
				per[i] = make([]time.Duration, 0, cnt)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range cnt {
					t := time.Now()
					if err := do(cls[i]); err != nil {
						errs[i] = err
						return
					}
					if record {
						per[i] = append(per[i], time.Since(t))
					}
				}
			}()
		}
		wg.Wait()
		return per, time.Since(start), errors.Join(errs...)
	}
	if _, _, err := run(warmup, false); err != nil {
		return caseResult{}, err
	}
	per, elapsed, err := run(requests, true)
	if err != nil {
		return caseResult{}, err
	}
	var all []time.Duration
	for _, p := range per {
		all = append(all, p...)
	}
	mu.Lock()
	defer mu.Unlock()
	return caseResult{lat: all, elapsed: elapsed, dials: dials}, nil
}

// procStatus returns the fields of /proc/<pid>/status, values as written
// ("5432 kB").
func procStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// idleRSS measures three fresh processes that answered one GET / and then
// idled 1 s, so one noisy run does not stand alone.
func idleRSS(rep *bytes.Buffer, bin, dir string) error {
	fmt.Fprintln(rep, "### Idle memory (fresh squib, one GET /, then 1 s idle; GOGC/GOMEMLIMIT unset)")
	fmt.Fprintln(rep)
	fmt.Fprintln(rep, "| run | VmRSS | VmHWM | RssAnon | RssFile | threads |")
	fmt.Fprintln(rep, "|---|---|---|---|---|---|")
	for i := range 3 {
		sock := filepath.Join(dir, fmt.Sprintf("rss%d.sock", i))
		c, err := spawn(bin, sock)
		if err != nil {
			return err
		}
		err = waitReady(sock, 5*time.Second)
		if err == nil {
			time.Sleep(time.Second)
		}
		var st map[string]string
		if err == nil {
			st, err = procStatus(c.cmd.Process.Pid)
		}
		c.kill()
		if err != nil {
			return err
		}
		fmt.Fprintf(rep, "| %d | %s | %s | %s | %s | %s |\n", i+1, st["VmRSS"], st["VmHWM"], st["RssAnon"], st["RssFile"], st["Threads"])
	}
	fmt.Fprintln(rep)
	return nil
}

type summary struct {
	min, p50, p90, p99, max, mean time.Duration
}

// summarize uses nearest-rank percentiles on a sorted copy.
func summarize(d []time.Duration) summary {
	if len(d) == 0 {
		return summary{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	return summary{min: s[0], p50: rank(0.50), p90: rank(0.90), p99: rank(0.99), max: s[len(s)-1], mean: sum / time.Duration(len(s))}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/1e3) }
