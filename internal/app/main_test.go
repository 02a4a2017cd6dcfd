package app

// Helpers shared by the command-line tests: TestMain builds ./cmd/squib
// once, proc runs it in its own temp dir, and unixClient talks HTTP over the
// API socket.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// squibBin is the binary built by TestMain; empty when the build failed.
var squibBin string

// Generous deadlines: the tests must pass on a loaded 2-core machine.
const (
	startTimeout = 60 * time.Second
	exitTimeout  = 60 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "squib-app-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdtemp:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(dir, "squib")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/squib")
	cmd.Dir = root
	// As `make build` builds it: pure Go, the build the default seccomp
	// filter was traced from (a cgo build gets glibc's syscalls added).
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/squib: %v\n%s", err, out)
		return 1
	}
	squibBin = bin
	return m.Run()
}

// moduleRoot walks up from the working directory (internal/app) to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// proc is one squib process. Its stdout (where the log goes unless
// --log-path is given) and stderr are files in its own temp dir.
type proc struct {
	t       *testing.T
	dir     string
	cmd     *exec.Cmd
	outPath string
	errPath string
	done    chan struct{}
	code    int
}

// startSquib starts squib with args; "{dir}" in an argument is replaced by
// the process's temp dir. The process is killed in t.Cleanup.
func startSquib(t *testing.T, args ...string) *proc {
	t.Helper()
	return startSquibIn(t, t.TempDir(), args...)
}

func startSquibIn(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	if squibBin == "" {
		t.Fatal("squib binary was not built")
	}
	p := &proc{t: t, dir: dir, outPath: filepath.Join(dir, "stdout"), errPath: filepath.Join(dir, "stderr"), done: make(chan struct{})}
	stdout, err := os.Create(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(p.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	argv := make([]string, len(args))
	for i, a := range args {
		argv[i] = strings.ReplaceAll(a, "{dir}", dir)
	}
	p.cmd = exec.Command(squibBin, argv...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) path(name string) string { return filepath.Join(p.dir, name) }

func (p *proc) stdout() string {
	b, _ := os.ReadFile(p.outPath)
	return string(b)
}

func (p *proc) stderr() string {
	b, _ := os.ReadFile(p.errPath)
	return string(b)
}

// exited reports whether the process has ended, without waiting.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to end and returns its exit code (-1 when it
// died of a signal).
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(exitTimeout):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("squib did not exit within %v\nstdout:\n%s\nstderr:\n%s", exitTimeout, p.stdout(), p.stderr())
		return -1
	}
}

// waitLog polls the log (stdout) until it contains s. It fails the test if
// the process exits first or the deadline passes.
func (p *proc) waitLog(s string) {
	p.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		if strings.Contains(p.stdout(), s) {
			return
		}
		if p.exited() {
			if strings.Contains(p.stdout(), s) {
				return
			}
			p.t.Fatalf("squib exited (code %d) before logging %q\nstdout:\n%s\nstderr:\n%s", p.code, s, p.stdout(), p.stderr())
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("squib did not log %q within %v\nstdout:\n%s\nstderr:\n%s", s, startTimeout, p.stdout(), p.stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// startAPI starts squib with an API socket in its temp dir and waits until
// the API server has started. It returns the process and a client.
func startAPI(t *testing.T, args ...string) (*proc, *unixClient) {
	t.Helper()
	p := startSquib(t, append([]string{"--api-sock", "{dir}/api.sock"}, args...)...)
	p.waitLog("API server started.")
	return p, newUnixClient(p.path("api.sock"))
}

// unixClient is an HTTP client for a Unix socket.
type unixClient struct {
	sock string
	hc   *http.Client
}

func newUnixClient(sock string) *unixClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		// Stay well under the server's 10-connection cap.
		MaxConnsPerHost: 2,
	}
	return &unixClient{sock: sock, hc: &http.Client{Transport: tr, Timeout: startTimeout}}
}

// do sends a request and returns the status and body.
func (c *unixClient) do(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

func (c *unixClient) close() { c.hc.CloseIdleConnections() }

// rawRequest writes req on conn and reads one HTTP response.
func rawRequest(conn net.Conn, req string) (*http.Response, []byte, error) {
	conn.SetDeadline(time.Now().Add(startTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
