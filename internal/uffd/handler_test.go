package uffd

import (
	"bytes"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

const page = 4096

// memFile writes a memory file of n pages whose page i is filled with
// byte i+1 and starts with its own number.
func memFile(t *testing.T, n int) *os.File {
	t.Helper()
	b := make([]byte, n*page)
	for i := range n {
		p := b[i*page : (i+1)*page]
		for j := range p {
			p[j] = byte(i + 1)
		}
		p[0], p[1] = byte(i), byte(i>>8)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "mem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// kread copies region into a fresh file with write(2) and reads it back:
// the faults happen in the kernel, as KVM's do, and this goroutine is in
// a system call meanwhile, so the in-process handler goroutine and the
// Go runtime (a garbage collection's stop-the-world) never wait on each
// other. A plain Go read of unpopulated memory could deadlock in-process.
func kread(t *testing.T, region []byte) []byte {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "dump")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := unix.Pwrite(int(f.Fd()), region, 0); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func requireUffd(t *testing.T) {
	t.Helper()
	fd, err := New(FeatureEventRemove)
	if err != nil {
		t.Skipf("no userfaultfd here: %v", err)
	}
	unix.Close(fd)
}

// TestHandlerServesFile runs the handler in-process against two regions
// registered with a userfaultfd and checks that faults bring in the
// file's pages at the regions' offsets, that a removed range (balloon)
// reads back as zeroes whether or not it had been populated, and that the
// handler stops when the VMM's connection closes.
func TestHandlerServesFile(t *testing.T) {
	requireUffd(t)
	const pagesA, pagesB = 8, 8
	mem := memFile(t, pagesA+pagesB)
	want, _ := os.ReadFile(mem.Name())

	fd, err := New(FeatureEventRemove)
	if err != nil {
		t.Fatal(err)
	}
	var regions []Region
	var maps [][]byte
	var off uint64
	for _, n := range []int{pagesA, pagesB} {
		m, err := unix.Mmap(-1, 0, n*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		if _, err := Register(fd, AddressOf(m), uint64(len(m)), RegisterModeMissing); err != nil {
			t.Fatal(err)
		}
		maps = append(maps, m)
		regions = append(regions, Region{BaseHostVirtAddr: AddressOf(m), Size: uint64(len(m)), Offset: off, PageSize: page, PageSizeKiB: page})
		off += uint64(len(m))
	}

	l, path := listen(t)
	var logBuf bytes.Buffer
	type result struct {
		stats Stats
		err   error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := l.AcceptUnix()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		hs, err := Receive(conn)
		if err != nil {
			done <- result{err: err}
			return
		}
		h, err := NewHandler(hs, mem, log.New(&logBuf, "", 0))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer h.Close()
		err = h.Serve(conn)
		done <- result{h.Stats(), err}
	}()
	conn, err := Connect(path, regions, fd)
	if err != nil {
		t.Fatal(err)
	}

	// Region A: every page comes from the file's start.
	if got := kread(t, maps[0]); !bytes.Equal(got, want[:pagesA*page]) {
		t.Fatal("region A does not hold the file's first pages")
	}
	// A second fill of a present page is refused with EEXIST, which the
	// handler treats as success.
	src, err := unix.Mmap(-1, 0, page, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(src)
	if _, err := Copy(fd, regions[0].BaseHostVirtAddr, AddressOf(src), page, 0); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("UFFDIO_COPY onto a present page: %v", err)
	}
	if _, err := ZeroPage(fd, regions[0].BaseHostVirtAddr, page, 0); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("UFFDIO_ZEROPAGE onto a present page: %v", err)
	}
	// Populated pages 2-3 are discarded: madvise returns once the handler
	// has read the remove event, and the pages then read back as zeroes.
	if err := unix.Madvise(maps[0][2*page:4*page], unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	wantA := bytes.Clone(want[:pagesA*page])
	clear(wantA[2*page : 4*page])
	if got := kread(t, maps[0]); !bytes.Equal(got, wantA) {
		t.Fatal("removed pages of region A do not read back as zeroes")
	}
	// Region B: pages 0-1 are removed before ever being touched.
	if err := unix.Madvise(maps[1][:2*page], unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	wantB := bytes.Clone(want[pagesA*page:])
	clear(wantB[:2*page])
	if got := kread(t, maps[1]); !bytes.Equal(got, wantB) {
		t.Fatal("region B does not hold the file's later pages with the removed ones zeroed")
	}
	// Zero-filled pages are ordinary memory afterwards.
	if _, err := unix.Pread(int(mem.Fd()), maps[1][:page], 5*page); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(maps[1][:page], want[5*page:6*page]) {
		t.Fatal("write into a zero-filled page lost")
	}

	// The VMM goes away: the handler stops without error.
	unix.Close(fd)
	conn.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("Serve: %v (log: %s)", r.err, logBuf.String())
	}
	// 8 pages of A, 2 refilled, 8 of B.
	if r.stats.Faults != 18 || r.stats.Zeroed != 4 || r.stats.Removes != 2 {
		t.Fatalf("stats %+v", r.stats)
	}
}

func TestNewHandlerRejectsShortFile(t *testing.T) {
	mem := memFile(t, 2)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	hs := &Handshake{Regions: []Region{{BaseHostVirtAddr: 1 << 30, Size: 3 * page, Offset: 0, PageSize: page}}, Uffd: p[0]}
	if _, err := NewHandler(hs, mem, nil); err == nil {
		t.Fatal("region beyond the file accepted")
	}
	hs = &Handshake{Regions: []Region{{BaseHostVirtAddr: 1 << 30, Size: page, Offset: 2 * page, PageSize: page}}, Uffd: -1}
	if _, err := NewHandler(hs, mem, nil); err == nil {
		t.Fatal("region beyond the file accepted")
	}
}

func TestListenAndServeErrors(t *testing.T) {
	dir := t.TempDir()
	if err := ListenAndServe(filepath.Join(dir, "s"), filepath.Join(dir, "missing"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing memory file: %v", err)
	}
}
