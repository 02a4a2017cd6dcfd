package memory

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/uffd"
)

// TestMain doubles as the page-fault handler process for the Uffd tests:
// a handler must live in another process for the Go code here to touch
// guest memory directly (an in-process handler could wait on a garbage
// collection that waits on the faulting goroutine).
func TestMain(m *testing.M) {
	if os.Getenv("SQUIB_MEMORY_TEST_HANDLER") == "1" {
		fl, err := net.FileListener(os.NewFile(3, "listener"))
		if err == nil {
			err = uffd.ServeListener(fl.(*net.UnixListener), os.NewFile(4, "memory file"),
				log.New(os.Stderr, "handler: ", 0))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "handler:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// patterned returns n bytes in which every 4 KiB page differs from every
// other, and a file holding them.
func patterned(t *testing.T, n int) ([]byte, *os.File) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/page*7 + i%251)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "mem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return b, f
}

// contents reads all of guest memory, regions concatenated.
func contents(t *testing.T, g *Guest) []byte {
	t.Helper()
	var out []byte
	for _, r := range g.Regions() {
		b := make([]byte, len(r.Mem))
		if err := g.ReadAt(b, r.Start); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

var snapLayout = []Layout{{0, 16 * page}, {1 << 20, 8 * page}}

func TestNewFromFile(t *testing.T) {
	want, f := patterned(t, 24*page)
	g, err := NewFromFile(snapLayout, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// The mapping outlives the descriptor.
	f.Close()
	if !bytes.Equal(contents(t, g), want) {
		t.Fatal("guest memory does not hold the file's contents in region order")
	}
	// Writes are private: memory changes, the file does not.
	if err := g.WriteAt([]byte("guest write"), (1<<20)+page+5); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 11)
	if err := g.ReadAt(got, (1<<20)+page+5); err != nil || string(got) != "guest write" {
		t.Fatalf("read back %q, %v", got, err)
	}
	onDisk, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, want) {
		t.Fatal("a guest write reached the memory file")
	}
}

func TestNewFromFileRejects(t *testing.T) {
	_, f := patterned(t, 24*page)
	_, err := NewFromFile([]Layout{{0, 32 * page}}, f, Options{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(24*page)) || !strings.Contains(err.Error(), fmt.Sprint(32*page)) {
		t.Fatalf("short file: %v (want both sizes named)", err)
	}
	if _, err := NewFromFile([]Layout{{0, 8 * page}}, f, Options{}); err == nil {
		t.Fatal("long file accepted")
	}
	if _, err := NewFromFile(snapLayout, f, Options{HugePages: HugePages2M}); !errors.Is(err, ErrHugetlbfsFile) {
		t.Fatalf("hugetlbfs: %v", err)
	}
	if _, err := NewFromFile([]Layout{{0, 24*page - 1}}, f, Options{}); err == nil {
		t.Fatal("unaligned region size accepted")
	}
	if _, err := NewFromFile([]Layout{{1 << 20, 8 * page}, {0, 16 * page}}, f, Options{}); err == nil {
		t.Fatal("regions out of order accepted")
	}
}

func TestDiscardFileBacked(t *testing.T) {
	for _, hp := range []HugePages{HugePagesNone, HugePagesTransparent} {
		want, f := patterned(t, 24*page)
		g, err := NewFromFile(snapLayout, f, Options{HugePages: hp})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		// Dirty a page first: its private copy must go too.
		if err := g.WriteU64(3*page, 0x1122334455667788); err != nil {
			t.Fatal(err)
		}
		if err := g.Discard(2*page, 3*page); err != nil {
			t.Fatal(err)
		}
		if !isFilled(t, g, 2*page, 3*page, 0) {
			t.Fatal("discarded file-backed pages do not read back as zero")
		}
		got := contents(t, g)
		if !bytes.Equal(got[:2*page], want[:2*page]) || !bytes.Equal(got[5*page:], want[5*page:]) {
			t.Fatal("discard reached beyond its range")
		}
		// The replaced range is ordinary memory.
		if err := g.WriteU32(2*page, 9); err != nil {
			t.Fatal(err)
		}
		if v, _ := g.ReadU32(2 * page); v != 9 {
			t.Fatalf("read %d after writing a discarded page", v)
		}
	}
}

// startHandler runs the handler in a child process (this test binary)
// serving mem on a fresh socket. wait returns its exit error and stderr.
func startHandler(t *testing.T, mem *os.File) (path string, wait func() (string, error)) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "uffd.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	defer lf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// A race-enabled child would otherwise linger a second at exit.
	cmd.Env = append(os.Environ(), "SQUIB_MEMORY_TEST_HANDLER=1", "GORACE=atexit_sleep_ms=0")
	cmd.ExtraFiles = []*os.File{lf, mem}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return path, func() (string, error) {
		err := cmd.Wait()
		exited = true
		return stderr.String(), err
	}
}

func requireUffd(t *testing.T) {
	t.Helper()
	fd, err := uffd.New(uffd.FeatureEventRemove)
	if err != nil {
		t.Skipf("no userfaultfd here: %v", err)
	}
	unix.Close(fd)
}

func TestNewUffd(t *testing.T) {
	requireUffd(t)
	want, f := patterned(t, 24*page)
	path, wait := startHandler(t, f)
	g, err := NewUffd(snapLayout, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Region B's pages 1-2 go before ever being touched.
	if err := g.Discard((1<<20)+page, 2*page); err != nil {
		t.Fatal(err)
	}
	// Every page faults in from the file at its region's offset...
	exp := bytes.Clone(want)
	clear(exp[17*page : 19*page])
	if !bytes.Equal(contents(t, g), exp) {
		t.Fatal("guest memory does not read the file's contents through the handler")
	}
	// ...and a populated page that is discarded comes back as zeroes.
	if err := g.Discard(4*page, page); err != nil {
		t.Fatal(err)
	}
	clear(exp[4*page : 5*page])
	if !bytes.Equal(contents(t, g), exp) {
		t.Fatal("discarded page does not read back as zeroes")
	}
	// A kernel-mode reader (write(2), as KVM) gets the same.
	out, err := os.Create(filepath.Join(t.TempDir(), "full"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := g.WriteFull(out); err != nil {
		t.Fatal(err)
	}
	if dump, _ := os.ReadFile(out.Name()); !bytes.Equal(dump, exp) {
		t.Fatal("WriteFull of uffd-backed memory differs")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing the memory hangs up on the handler, which exits cleanly.
	log, err := wait()
	if err != nil {
		t.Fatalf("handler: %v\n%s", err, log)
	}
	if !strings.Contains(log, "VMM hung up") {
		t.Fatalf("handler log: %s", log)
	}
}

func TestNewUffdErrors(t *testing.T) {
	requireUffd(t)
	dir := t.TempDir()
	_, err := NewUffd(snapLayout, filepath.Join(dir, "missing.sock"), Options{})
	const want = "Error creating guest memory from uffd: Failed to connect to UDS Unix stream: No such file or directory (os error 2)"
	if err == nil || err.Error() != want {
		t.Fatalf("missing socket: %v", err)
	}
	// A socket nobody listens on any more.
	path := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	_, err = NewUffd(snapLayout, path, Options{})
	if err == nil || !strings.HasSuffix(err.Error(), "Failed to connect to UDS Unix stream: Connection refused (os error 111)") {
		t.Fatalf("stale socket: %v", err)
	}
	_, err = NewUffd(snapLayout, "/"+strings.Repeat("x", 200), Options{})
	if err == nil || !strings.HasSuffix(err.Error(), "Failed to connect to UDS Unix stream: path must be shorter than SUN_LEN") {
		t.Fatalf("long path: %v", err)
	}
}
