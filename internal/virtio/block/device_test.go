package block

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// Test guest memory layout.
const (
	ramSize    = 0x400000
	ringBase   = 0x1000
	hdrBase    = 0x10000 // request headers
	statusBase = 0x20000 // status bytes
	dataBase   = 0x100000
	sentinel   = 0xee // a status byte the device has not written
	fileSize   = 1 << 20
)

// pattern is the initial content of test disks: every byte depends on its
// offset, so a read of the wrong sector shows.
func pattern(off int64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := off + int64(i)
		b[i] = byte(x*7 + x>>9)
	}
	return b
}

// tempDisk writes a file of size bytes of pattern and returns its path.
func tempDisk(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, pattern(0, int(size)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func open(t testing.TB, path string, readOnly bool) *os.File {
	t.Helper()
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var rigSeq atomic.Int32

// uniqueID names a drive whose metrics group no other test uses.
func uniqueID() string { return "test" + strconv.Itoa(int(rigSeq.Add(1))) }

type rigOpts struct {
	size     int64 // file size, fileSize if 0
	readOnly bool
	cache    CacheType
	limiter  *ratelimit.RateLimiter
	eventIdx bool
	ringSize uint16 // 256 if 0
	inactive bool   // do not activate
}

type rig struct {
	t    *testing.T
	mem  *memory.Guest
	dev  *Device
	irq  *virtiotest.IRQ
	ring *virtiotest.Ring
	path string
	m    *metrics.BlockMetrics
}

func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	if o.size == 0 {
		o.size = fileSize
	}
	if o.ringSize == 0 {
		o.ringSize = 256
	}
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, o.size)
	id := uniqueID()
	dev, err := New(Config{ID: id, File: open(t, path, o.readOnly), ReadOnly: o.readOnly, Cache: o.cache, Limiter: o.limiter})
	if err != nil {
		t.Fatal(err)
	}
	// Stop the worker before the memory it uses is unmapped.
	t.Cleanup(func() { dev.Close() })
	r := &rig{t: t, mem: mem, dev: dev, irq: &virtiotest.IRQ{}, path: path, m: metrics.Default.Block(id)}
	r.ring = virtiotest.RingAt(t, mem, ringBase, o.ringSize)
	if !o.inactive {
		r.activate(o.eventIdx)
	}
	return r
}

// activate starts the device on r.ring as a transport would.
func (r *rig) activate(eventIdx bool) {
	r.t.Helper()
	q := r.ring.InitQueue(r.t, eventIdx)
	if err := r.dev.Activate(r.mem, []*virtio.Queue{q}, r.irq); err != nil {
		r.t.Fatal(err)
	}
	r.dev.QueueNotify(0)
}

func hdr(addr uint64) virtiotest.Buffer { return virtiotest.Buffer{Addr: addr, Len: headerLen} }
func rbuf(addr uint64, n uint32) virtiotest.Buffer {
	return virtiotest.Buffer{Addr: addr, Len: n}
}
func wbuf(addr uint64, n uint32) virtiotest.Buffer {
	return virtiotest.Buffer{Addr: addr, Len: n, Writable: true}
}

// header writes a request header at addr.
func (r *rig) header(addr uint64, typ uint32, sector uint64) virtiotest.Buffer {
	r.t.Helper()
	var h [headerLen]byte
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], 0xdeadbeef) // reserved: ignored
	binary.LittleEndian.PutUint64(h[8:], sector)
	r.write(addr, h[:])
	return hdr(addr)
}

// status returns a one-byte status buffer at addr, set to sentinel.
func (r *rig) status(addr uint64) virtiotest.Buffer {
	r.write(addr, []byte{sentinel})
	return wbuf(addr, 1)
}

func (r *rig) write(addr uint64, b []byte) {
	r.t.Helper()
	virtiotest.WriteGuest(r.t, r.mem, addr, b)
}

func (r *rig) read(addr uint64, n int) []byte {
	r.t.Helper()
	return virtiotest.ReadGuest(r.t, r.mem, addr, n)
}

func (r *rig) fill(addr uint64, n int, v byte) { r.write(addr, bytes.Repeat([]byte{v}, n)) }

func (r *rig) statusAt(addr uint64) byte { return r.read(addr, 1)[0] }

func (r *rig) add(bufs ...virtiotest.Buffer) uint16 {
	r.t.Helper()
	return r.ring.Add(r.t, bufs...)
}

func (r *rig) kick() { r.dev.QueueNotify(0) }

// waitUsed waits for n used entries and returns them.
func (r *rig) waitUsed(n int) []virtiotest.Used {
	r.t.Helper()
	return r.ring.WaitUsed(r.t, n)
}

// do submits one chain and returns its used entry.
func (r *rig) do(bufs ...virtiotest.Buffer) virtiotest.Used {
	r.t.Helper()
	head := r.add(bufs...)
	r.kick()
	u := r.waitUsed(1)[0]
	if u.ID != uint32(head) {
		r.t.Fatalf("used head %d, want %d", u.ID, head)
	}
	return u
}

// fileBytes reads the backing file from the host.
func (r *rig) fileBytes() []byte {
	r.t.Helper()
	b, err := os.ReadFile(r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func wantUsed(t *testing.T, u virtiotest.Used, n uint32) {
	t.Helper()
	if u.Len != n {
		t.Fatalf("used length %d, want %d", u.Len, n)
	}
}

func TestIdentity(t *testing.T) {
	base := uint64(1)<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx
	for _, tc := range []struct {
		readOnly bool
		cache    CacheType
		want     uint64
	}{
		{false, CacheUnsafe, base},
		{false, CacheWriteback, base | 1<<FeatureFlush},
		{true, CacheUnsafe, base | 1<<FeatureRO},
		{true, CacheWriteback, base | 1<<FeatureFlush | 1<<FeatureRO},
	} {
		t.Run(fmt.Sprintf("ro=%v,%v", tc.readOnly, tc.cache), func(t *testing.T) {
			// A size that is not a whole number of sectors: the tail is
			// not visible.
			r := newRig(t, rigOpts{size: fileSize + 100, readOnly: tc.readOnly, cache: tc.cache, inactive: true})
			d := r.dev
			if d.DeviceType() != virtio.TypeBlock || d.DeviceType() != 2 {
				t.Fatalf("device type %v", d.DeviceType())
			}
			if got := d.AvailableFeatures(); got != tc.want {
				t.Fatalf("features %#x, want %#x", got, tc.want)
			}
			if s := d.QueueMaxSizes(); len(s) != 1 || s[0] != 256 {
				t.Fatalf("queues %v", s)
			}
			cfg := make([]byte, 12)
			d.ReadConfig(0, cfg)
			if got := binary.LittleEndian.Uint64(cfg); got != fileSize/512 || d.Capacity() != fileSize/512 {
				t.Fatalf("capacity %d (%d), want %d", got, d.Capacity(), fileSize/512)
			}
			if !bytes.Equal(cfg[8:], make([]byte, 4)) {
				t.Fatalf("config past the capacity reads %v", cfg[8:])
			}
			hi := make([]byte, 4)
			d.ReadConfig(4, hi)
			if !bytes.Equal(hi, cfg[4:8]) {
				t.Fatalf("config at 4 reads %v, want %v", hi, cfg[4:8])
			}
			fails := virtiotest.Track(&r.m.CfgFails)
			d.WriteConfig(0, []byte{1, 2, 3, 4})
			d.ReadConfig(0, cfg[:8])
			if binary.LittleEndian.Uint64(cfg) != fileSize/512 || fails.Get() != 1 {
				t.Fatalf("config write took effect or was not counted (cfg_fails %d)", fails.Get())
			}
			if d.ID() == "" || d.Limiter() == nil || d.Activated() {
				t.Fatal("bad id, nil limiter or active when new")
			}
			d.AckFeatures(base)
			if d.AckedFeatures() != base {
				t.Fatal("acked features not kept")
			}
			d.QueueNotify(0) // ignored before activation
			if err := d.Reset(); err != nil {
				t.Fatal(err)
			}
			if d.AckedFeatures() != 0 {
				t.Fatal("reset kept the acked features")
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{ID: "x"}); err == nil {
		t.Fatal("New without a file")
	}
	f := open(t, tempDisk(t, 4096), false)
	if _, err := New(Config{ID: "x", File: f, Cache: 7}); err == nil {
		t.Fatal("New with a bad cache type")
	}
	if _, err := f.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("New did not close the file on error: %v", err)
	}
}

func TestRead(t *testing.T) {
	r := newRig(t, rigOpts{})
	reads, rbytes := virtiotest.Track(&r.m.ReadCount), virtiotest.Track(&r.m.ReadBytes)
	const n = 1024
	r.fill(dataBase-16, n+32, 0xaa) // guards either side
	u := r.do(r.header(hdrBase, TypeIn, 3), wbuf(dataBase, n), r.status(statusBase))
	wantUsed(t, u, n+1)
	if got := r.statusAt(statusBase); got != StatusOK {
		t.Fatalf("status %d", got)
	}
	if !bytes.Equal(r.read(dataBase, n), pattern(3*512, n)) {
		t.Fatal("read the wrong data")
	}
	if !bytes.Equal(r.read(dataBase-16, 16), bytes.Repeat([]byte{0xaa}, 16)) ||
		!bytes.Equal(r.read(dataBase+n, 16), bytes.Repeat([]byte{0xaa}, 16)) {
		t.Fatal("wrote outside the data buffer")
	}
	if reads.Get() != 1 || rbytes.Get() != n {
		t.Fatalf("metrics: read_count %d, read_bytes %d", reads.Get(), rbytes.Get())
	}
	virtiotest.Eventually(t, "interrupt", func() bool { return r.irq.Queues() == 1 })

	// The last sector of the disk.
	u = r.do(r.header(hdrBase, TypeIn, fileSize/512-1), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 513)
	if r.statusAt(statusBase) != StatusOK || !bytes.Equal(r.read(dataBase, 512), pattern(fileSize-512, 512)) {
		t.Fatal("last sector")
	}
}

// TestAnyLayout splits the header and the data over several descriptors
// and puts the status at the end of the last data descriptor.
func TestAnyLayout(t *testing.T) {
	r := newRig(t, rigOpts{})
	h := r.header(hdrBase, TypeIn, 10)
	r.fill(dataBase, 0x4000, 0)
	u := r.do(rbuf(h.Addr, 8), rbuf(h.Addr+8, 8),
		wbuf(dataBase, 512), wbuf(dataBase+0x1000, 1024), wbuf(dataBase+0x2000, 512+1))
	wantUsed(t, u, 2048+1)
	got := append(append(r.read(dataBase, 512), r.read(dataBase+0x1000, 1024)...), r.read(dataBase+0x2000, 512)...)
	if !bytes.Equal(got, pattern(10*512, 2048)) {
		t.Fatal("scattered read returned the wrong data")
	}
	if s := r.statusAt(dataBase + 0x2000 + 512); s != StatusOK {
		t.Fatalf("status %d", s)
	}

	// A write with the header and the data in one descriptor.
	data := bytes.Repeat([]byte{0x5a}, 1024)
	r.header(hdrBase, TypeOut, 20)
	r.write(hdrBase+headerLen, data)
	u = r.do(rbuf(hdrBase, headerLen+1024), r.status(statusBase))
	wantUsed(t, u, 1)
	if r.statusAt(statusBase) != StatusOK || !bytes.Equal(r.fileBytes()[20*512:21*512+512], data) {
		t.Fatal("combined header and data write")
	}
}

func TestWrite(t *testing.T) {
	r := newRig(t, rigOpts{})
	writes, wbytes := virtiotest.Track(&r.m.WriteCount), virtiotest.Track(&r.m.WriteBytes)
	data := bytes.Repeat([]byte("squib!!\n"), 1536/8)
	r.write(dataBase, data)
	u := r.do(r.header(hdrBase, TypeOut, 5), rbuf(dataBase, uint32(len(data))), r.status(statusBase))
	wantUsed(t, u, 1)
	if r.statusAt(statusBase) != StatusOK {
		t.Fatalf("status %d", r.statusAt(statusBase))
	}
	want := pattern(0, fileSize)
	copy(want[5*512:], data)
	if got := r.fileBytes(); !bytes.Equal(got, want) {
		t.Fatal("file content after the write is wrong")
	}
	if writes.Get() != 1 || wbytes.Get() != uint64(len(data)) {
		t.Fatalf("metrics: write_count %d, write_bytes %d", writes.Get(), wbytes.Get())
	}
	// And the guest reads it back.
	r.fill(dataBase+0x10000, len(data), 0)
	u = r.do(r.header(hdrBase, TypeIn, 5), wbuf(dataBase+0x10000, uint32(len(data))), r.status(statusBase))
	wantUsed(t, u, uint32(len(data))+1)
	if !bytes.Equal(r.read(dataBase+0x10000, len(data)), data) {
		t.Fatal("read back differs")
	}
}

func TestReadOnly(t *testing.T) {
	for _, mode := range []string{"O_RDONLY", "O_RDWR"} {
		t.Run(mode, func(t *testing.T) {
			r := newRig(t, rigOpts{readOnly: true, inactive: true})
			if mode == "O_RDWR" {
				// The caller opened the file writable: the device still
				// refuses writes.
				if err := r.dev.UpdateFile(open(t, r.path, false)); err != nil {
					t.Fatal(err)
				}
			}
			r.activate(false)
			if r.dev.AvailableFeatures()&(1<<FeatureRO) == 0 {
				t.Fatal("VIRTIO_BLK_F_RO not offered")
			}
			invalid, writes := virtiotest.Track(&r.m.InvalidReqsCount), virtiotest.Track(&r.m.WriteCount)
			r.fill(dataBase, 512, 0x77)
			u := r.do(r.header(hdrBase, TypeOut, 0), rbuf(dataBase, 512), r.status(statusBase))
			wantUsed(t, u, 1)
			if s := r.statusAt(statusBase); s != StatusIOErr {
				t.Fatalf("status %d, want IOERR", s)
			}
			if !bytes.Equal(r.fileBytes(), pattern(0, fileSize)) {
				t.Fatal("a read-only drive was written")
			}
			if invalid.Get() != 1 || writes.Get() != 0 {
				t.Fatalf("metrics: invalid_reqs_count %d, write_count %d", invalid.Get(), writes.Get())
			}
			// Reads and flushes work.
			u = r.do(r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 512), r.status(statusBase))
			wantUsed(t, u, 513)
			if r.statusAt(statusBase) != StatusOK || !bytes.Equal(r.read(dataBase, 512), pattern(0, 512)) {
				t.Fatal("read from a read-only drive")
			}
			u = r.do(r.header(hdrBase, TypeFlush, 0), r.status(statusBase))
			if wantUsed(t, u, 1); r.statusAt(statusBase) != StatusOK {
				t.Fatal("flush of a read-only drive")
			}
		})
	}
}

func TestFlush(t *testing.T) {
	for _, cache := range []CacheType{CacheUnsafe, CacheWriteback} {
		t.Run(cache.String(), func(t *testing.T) {
			r := newRig(t, rigOpts{cache: cache})
			flushes := virtiotest.Track(&r.m.FlushCount)
			u := r.do(r.header(hdrBase, TypeFlush, 0), r.status(statusBase))
			wantUsed(t, u, 1)
			if s := r.statusAt(statusBase); s != StatusOK {
				t.Fatalf("status %d", s)
			}
			// A flush with a data buffer (of either direction) and any
			// sector: the data is ignored.
			r.fill(dataBase, 512, 0x33)
			u = r.do(r.header(hdrBase, TypeFlush, math.MaxUint64), wbuf(dataBase, 512), r.status(statusBase))
			wantUsed(t, u, 1)
			u = r.do(r.header(hdrBase, TypeFlush, 7), rbuf(dataBase, 100), r.status(statusBase))
			wantUsed(t, u, 1)
			if r.statusAt(statusBase) != StatusOK || !bytes.Equal(r.read(dataBase, 512), bytes.Repeat([]byte{0x33}, 512)) {
				t.Fatal("flush with data")
			}
			if flushes.Get() != 3 {
				t.Fatalf("flush_count %d", flushes.Get())
			}
		})
	}
}

func TestGetID(t *testing.T) {
	r := newRig(t, rigOpts{})
	fi, err := os.Stat(r.path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s := fmt.Sprintf("%d%d%d", st.Dev, st.Rdev, st.Ino)
	want := make([]byte, IDBytes)
	copy(want, s)

	r.fill(dataBase, 64, 0xcc)
	u := r.do(r.header(hdrBase, TypeGetID, 0), wbuf(dataBase, IDBytes), r.status(statusBase))
	wantUsed(t, u, IDBytes+1)
	if st := r.statusAt(statusBase); st != StatusOK {
		t.Fatalf("status %d", st)
	}
	if got := r.read(dataBase, IDBytes); !bytes.Equal(got, want) {
		t.Fatalf("id %q, want %q", got, want)
	}

	// A bigger buffer gets the id and, as in Firecracker, IOERR.
	r.fill(dataBase, 64, 0xcc)
	u = r.do(r.header(hdrBase, TypeGetID, 0), wbuf(dataBase, 12), wbuf(dataBase+12, 36), r.status(statusBase))
	wantUsed(t, u, IDBytes+1)
	if st := r.statusAt(statusBase); st != StatusIOErr {
		t.Fatalf("status %d, want IOERR", st)
	}
	if !bytes.Equal(r.read(dataBase, IDBytes), want) || !bytes.Equal(r.read(dataBase+IDBytes, 28), bytes.Repeat([]byte{0xcc}, 28)) {
		t.Fatal("id in a 48-byte buffer")
	}

	// A smaller one is a parse error.
	r.fill(dataBase, 64, 0xcc)
	u = r.do(r.header(hdrBase, TypeGetID, 0), wbuf(dataBase, IDBytes-1), r.status(statusBase))
	wantUsed(t, u, 0)
	if r.statusAt(statusBase) != sentinel || !bytes.Equal(r.read(dataBase, 64), bytes.Repeat([]byte{0xcc}, 64)) {
		t.Fatal("short GET_ID buffer was written")
	}
}

func TestUnsupported(t *testing.T) {
	r := newRig(t, rigOpts{})
	invalid := virtiotest.Track(&r.m.InvalidReqsCount)
	for _, typ := range []uint32{2, 3, 11, 13, 0xffffffff} {
		r.fill(dataBase, 512, 0x44)
		u := r.do(r.header(hdrBase, typ, 0), rbuf(dataBase, 512), r.status(statusBase))
		wantUsed(t, u, 1)
		if s := r.statusAt(statusBase); s != StatusUnsupp {
			t.Fatalf("type %d: status %d, want UNSUPP", typ, s)
		}
	}
	if invalid.Get() != 5 {
		t.Fatalf("invalid_reqs_count %d", invalid.Get())
	}
	if !bytes.Equal(r.fileBytes(), pattern(0, fileSize)) {
		t.Fatal("an unsupported request changed the disk")
	}
}

// TestMalformed checks the Firecracker outcome of chains that do not
// parse: used length 0, no status written, nothing read or written, and
// one execute_fails each.
func TestMalformed(t *testing.T) {
	const nsec = fileSize / 512
	cases := []struct {
		name  string
		build func(r *rig) []virtiotest.Buffer
	}{
		{"sector past the end", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, nsec-1), wbuf(dataBase, 1024), r.status(statusBase)}
		}},
		{"write past the end", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeOut, nsec), rbuf(dataBase, 512), r.status(statusBase)}
		}},
		{"sector overflow", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, math.MaxUint64), wbuf(dataBase, 1024), r.status(statusBase)}
		}},
		{"unaligned read length", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 1000), r.status(statusBase)}
		}},
		{"unaligned write length", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeOut, 0), rbuf(dataBase, 513), r.status(statusBase)}
		}},
		{"read without data", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, 0), r.status(statusBase)}
		}},
		{"unsupported without data", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, 11, 0), r.status(statusBase)}
		}},
		{"missing status descriptor", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeOut, 0), rbuf(dataBase, 512)}
		}},
		{"flush without status", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeFlush, 0)}
		}},
		{"status not writable (write)", func(r *rig) []virtiotest.Buffer {
			r.write(statusBase, []byte{sentinel})
			return []virtiotest.Buffer{r.header(hdrBase, TypeOut, 0), rbuf(dataBase, 512), rbuf(statusBase, 1)}
		}},
		{"status not writable (read)", func(r *rig) []virtiotest.Buffer {
			r.write(statusBase, []byte{sentinel})
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 512), rbuf(statusBase, 1)}
		}},
		{"read into a readable buffer", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, 0), rbuf(dataBase, 512), r.status(statusBase)}
		}},
		{"write from a writable buffer", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeOut, 0), wbuf(dataBase, 512), r.status(statusBase)}
		}},
		{"get id into a readable buffer", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeGetID, 0), rbuf(dataBase, 20), r.status(statusBase)}
		}},
		{"header too short", func(r *rig) []virtiotest.Buffer {
			r.header(hdrBase, TypeIn, 0)
			return []virtiotest.Buffer{rbuf(hdrBase, 8), wbuf(dataBase, 512), r.status(statusBase)}
		}},
		{"header writable", func(r *rig) []virtiotest.Buffer {
			h := r.header(hdrBase, TypeIn, 0)
			h.Writable = true
			return []virtiotest.Buffer{h, wbuf(dataBase, 512), r.status(statusBase)}
		}},
		{"buffer outside memory", func(r *rig) []virtiotest.Buffer {
			return []virtiotest.Buffer{r.header(hdrBase, TypeIn, 0), wbuf(ramSize-256, 512), r.status(statusBase)}
		}},
	}
	r := newRig(t, rigOpts{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.t = t
			fails, reads, writes := virtiotest.Track(&r.m.ExecuteFails), virtiotest.Track(&r.m.ReadBytes), virtiotest.Track(&r.m.WriteBytes)
			r.fill(dataBase, 1024, 0x99)
			r.write(statusBase, []byte{sentinel})
			u := r.do(tc.build(r)...)
			wantUsed(t, u, 0)
			if s := r.statusAt(statusBase); s != sentinel {
				t.Fatalf("status byte written: %d", s)
			}
			if !bytes.Equal(r.read(dataBase, 1024), bytes.Repeat([]byte{0x99}, 1024)) {
				t.Fatal("data buffer written")
			}
			if fails.Get() != 1 || reads.Get() != 0 || writes.Get() != 0 {
				t.Fatalf("metrics: execute_fails %d, read_bytes %d, write_bytes %d", fails.Get(), reads.Get(), writes.Get())
			}
		})
	}
	if !bytes.Equal(r.fileBytes(), pattern(0, fileSize)) {
		t.Fatal("a malformed request changed the disk")
	}
}

// TestIOError: the file shrinks under the guest, so a read inside the
// capacity hits end of file.
func TestIOError(t *testing.T) {
	r := newRig(t, rigOpts{})
	invalid := virtiotest.Track(&r.m.InvalidReqsCount)
	if err := os.Truncate(r.path, fileSize/2); err != nil {
		t.Fatal(err)
	}
	u := r.do(r.header(hdrBase, TypeIn, fileSize/512-1), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 1)
	if s := r.statusAt(statusBase); s != StatusIOErr {
		t.Fatalf("status %d, want IOERR", s)
	}
	if invalid.Get() != 1 {
		t.Fatalf("invalid_reqs_count %d", invalid.Get())
	}
}

func TestUpdateFile(t *testing.T) {
	r := newRig(t, rigOpts{inactive: true})
	updates, fails := virtiotest.Track(&r.m.UpdateCount), virtiotest.Track(&r.m.UpdateFails)

	// Before activation: no driver to tell.
	p2 := tempDisk(t, 2*fileSize+300)
	old := r.dev.disk.file
	if err := r.dev.UpdateFile(open(t, p2, false)); err != nil {
		t.Fatal(err)
	}
	if r.dev.Capacity() != 2*fileSize/512 || r.irq.Config() != 0 {
		t.Fatalf("capacity %d, config interrupts %d", r.dev.Capacity(), r.irq.Config())
	}
	if _, err := old.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("old file not closed: %v", err)
	}

	r.activate(false)
	// The new disk is bigger: a read past the old end works.
	u := r.do(r.header(hdrBase, TypeIn, fileSize/512+1), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 513)
	if !bytes.Equal(r.read(dataBase, 512), pattern(fileSize+512, 512)) {
		t.Fatal("read from the new file")
	}

	// While active: a config interrupt, and the capacity shrinks.
	p3 := tempDisk(t, 8192)
	if err := r.dev.UpdateFile(open(t, p3, false)); err != nil {
		t.Fatal(err)
	}
	if r.irq.Config() != 1 {
		t.Fatalf("%d config interrupts, want 1", r.irq.Config())
	}
	cfg := make([]byte, 8)
	r.dev.ReadConfig(0, cfg)
	if binary.LittleEndian.Uint64(cfg) != 16 {
		t.Fatalf("capacity %d after update, want 16", binary.LittleEndian.Uint64(cfg))
	}
	u = r.do(r.header(hdrBase, TypeIn, 16), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 0) // past the new end
	if updates.Get() != 2 || fails.Get() != 0 {
		t.Fatalf("metrics: update_count %d, update_fails %d", updates.Get(), fails.Get())
	}

	// Failures keep the current file.
	if err := r.dev.UpdateFile(nil); err == nil {
		t.Fatal("update to a nil file")
	}
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeW.Close()
	if err := r.dev.UpdateFile(pipeR); err == nil {
		t.Fatal("update to an unseekable file")
	}
	if _, err := pipeR.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("refused file not closed: %v", err)
	}
	if fails.Get() != 2 || updates.Get() != 2 || r.dev.Capacity() != 16 {
		t.Fatalf("after failed updates: update_fails %d, update_count %d, capacity %d", fails.Get(), updates.Get(), r.dev.Capacity())
	}
}

// TestUpdateFileUnderLoad swaps the file again and again while the guest
// reads: every read must succeed (never an I/O on a closed file) and a
// config read must always see one of the two capacities.
func TestUpdateFileUnderLoad(t *testing.T) {
	r := newRig(t, rigOpts{})
	small := tempDisk(t, fileSize)
	// A capacity whose high word differs: 2^32 sectors, a sparse 2 TiB.
	big := filepath.Join(t.TempDir(), "big.img")
	bigSize := int64(1) << 41
	if err := os.WriteFile(big, pattern(0, fileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	capacities := map[uint64]bool{fileSize / 512: true}
	if err := os.Truncate(big, bigSize); err == nil {
		capacities[uint64(bigSize)/512] = true
	} else {
		t.Logf("no sparse 2 TiB file here (%v): both capacities fit in 32 bits", err)
		big = small
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var torn atomic.Value
	wg.Go(func() {
		cfg := make([]byte, 8)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r.dev.ReadConfig(0, cfg)
			if c := binary.LittleEndian.Uint64(cfg); !capacities[c] {
				torn.Store(c)
			}
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := small
			if i%2 == 0 {
				p = big
			}
			if err := r.dev.UpdateFile(open(t, p, false)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	const rounds, depth = 50, 8
	for range rounds {
		for i := range depth {
			r.header(hdrBase+uint64(i)*16, TypeIn, uint64(i))
			r.add(hdr(hdrBase+uint64(i)*16), wbuf(dataBase+uint64(i)*512, 512), r.status(statusBase+uint64(i)))
		}
		r.kick()
		for i, u := range r.waitUsed(depth) {
			if u.Len != 513 || r.statusAt(statusBase+uint64(i)) != StatusOK {
				t.Fatalf("read %d during updates: used %+v, status %d", i, u, r.statusAt(statusBase+uint64(i)))
			}
			if !bytes.Equal(r.read(dataBase+uint64(i)*512, 512), pattern(int64(i)*512, 512)) {
				t.Fatalf("read %d returned the wrong data", i)
			}
		}
	}
	close(stop)
	wg.Wait()
	if c := torn.Load(); c != nil {
		t.Fatalf("config read saw capacity %d", c)
	}
}

func TestRateLimiterOps(t *testing.T) {
	clk := &ratelimit.ManualClock{}
	lim := ratelimit.New(nil, ratelimit.NewTokenBucket(1, 0, 1000)).WithClock(clk)
	r := newRig(t, rigOpts{limiter: lim, inactive: true})
	throttled, events, queueEvents := virtiotest.Track(&r.m.RateLimiterThrottledEvents), virtiotest.Track(&r.m.RateLimiterEventCount), virtiotest.Track(&r.m.QueueEventCount)
	h1 := r.add(r.header(hdrBase, TypeIn, 1), wbuf(dataBase, 512), r.status(statusBase))
	h2 := r.add(r.header(hdrBase+16, TypeIn, 2), wbuf(dataBase+512, 512), r.status(statusBase+1))
	r.activate(false)

	// The one op serves the first request; the second waits.
	if u := r.waitUsed(1)[0]; u.ID != uint32(h1) || u.Len != 513 {
		t.Fatalf("used %+v", u)
	}
	virtiotest.Eventually(t, "throttling", throttled.Is(1))
	if _, ok, _ := r.ring.PopUsed(); ok || r.statusAt(statusBase+1) != sentinel {
		t.Fatal("second request served without tokens")
	}
	// A kick while blocked is counted and ignored.
	r.kick()
	virtiotest.Eventually(t, "throttled kick", throttled.Is(2))
	if queueEvents.Get() != 2 {
		t.Fatalf("queue_event_count %d", queueEvents.Get())
	}
	if _, ok, _ := r.ring.PopUsed(); ok {
		t.Fatal("request served while blocked")
	}
	// The refill timer fires: the device retries and the bucket has
	// refilled.
	clk.Jump(time.Second)
	if u := r.waitUsed(1)[0]; u.ID != uint32(h2) || u.Len != 513 {
		t.Fatalf("used %+v", u)
	}
	if r.statusAt(statusBase+1) != StatusOK || !bytes.Equal(r.read(dataBase+512, 512), pattern(1024, 512)) {
		t.Fatal("throttled request served wrong")
	}
	if events.Get() != 1 || throttled.Get() != 2 {
		t.Fatalf("rate_limiter_event_count %d, throttled %d", events.Get(), throttled.Get())
	}
}

func TestRateLimiterBytes(t *testing.T) {
	clk := &ratelimit.ManualClock{}
	// Two ops that (practically) never refill: a refused request whose
	// op were not refunded would leave none for the retry.
	lim := ratelimit.New(ratelimit.NewTokenBucket(512, 0, 1000), ratelimit.NewTokenBucket(3, 0, 1e9)).WithClock(clk)
	r := newRig(t, rigOpts{limiter: lim})
	throttled := virtiotest.Track(&r.m.RateLimiterThrottledEvents)

	u := r.do(r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 513)
	// The bandwidth bucket is empty, but FLUSH and GET_ID cost no bytes.
	u = r.do(r.header(hdrBase, TypeGetID, 0), wbuf(dataBase, 20), r.status(statusBase))
	wantUsed(t, u, 21)
	if throttled.Get() != 0 {
		t.Fatal("GET_ID throttled on bytes")
	}
	// A write needs bytes: refused, op refunded.
	r.write(dataBase, bytes.Repeat([]byte{1}, 512))
	h := r.add(r.header(hdrBase, TypeOut, 0), rbuf(dataBase, 512), r.status(statusBase))
	r.kick()
	virtiotest.Eventually(t, "throttling", throttled.Is(1))
	clk.Jump(time.Second)
	if u := r.waitUsed(1)[0]; u.ID != uint32(h) || u.Len != 1 || r.statusAt(statusBase) != StatusOK {
		t.Fatalf("throttled write: used %+v, status %d", u, r.statusAt(statusBase))
	}
	if !bytes.Equal(r.fileBytes()[:512], bytes.Repeat([]byte{1}, 512)) {
		t.Fatal("write not done")
	}
	// All three ops are spent now: even a flush waits.
	r.add(r.header(hdrBase, TypeFlush, 0), r.status(statusBase))
	r.kick()
	virtiotest.Eventually(t, "throttled flush", throttled.Is(2))
	if _, ok, _ := r.ring.PopUsed(); ok {
		t.Fatal("flush served without an op")
	}
}

// TestParseErrorsCostNothing: a chain that does not parse takes no tokens.
func TestParseErrorsCostNothing(t *testing.T) {
	clk := &ratelimit.ManualClock{}
	lim := ratelimit.New(nil, ratelimit.NewTokenBucket(1, 0, 1e9)).WithClock(clk)
	r := newRig(t, rigOpts{limiter: lim})
	for range 3 {
		u := r.do(r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 100), r.status(statusBase))
		wantUsed(t, u, 0)
	}
	u := r.do(r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 513)
}

func TestResetStopsWorker(t *testing.T) {
	base := runtime.NumGoroutine()
	r := newRig(t, rigOpts{})
	u := r.do(r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 513)
	w := r.dev.life.Current()
	if err := r.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if w.Running() != 0 {
		t.Fatal("Reset returned before the worker exited")
	}
	if r.dev.Activated() {
		t.Fatal("active after reset")
	}
	virtiotest.WaitGoroutines(t, base)
	// A kick after reset goes nowhere.
	r.add(r.header(hdrBase, TypeIn, 0), wbuf(dataBase, 512), r.status(statusBase))
	r.kick()
	if runtime.NumGoroutine() > base {
		t.Fatal("a kick after reset started a goroutine")
	}
	if idx, _ := r.ring.UsedIdx(); idx != 1 {
		t.Fatal("a request was served after reset")
	}

	// The driver starts over on a fresh ring.
	r.ring = virtiotest.RingAt(t, r.mem, ringBase, 64)
	r.activate(true)
	u = r.do(r.header(hdrBase, TypeIn, 4), wbuf(dataBase, 512), r.status(statusBase))
	wantUsed(t, u, 513)
	if !bytes.Equal(r.read(dataBase, 512), pattern(4*512, 512)) {
		t.Fatal("read after re-activation")
	}
	if err := r.dev.Close(); err != nil {
		t.Fatal(err)
	}
	virtiotest.WaitGoroutines(t, base)
}

// TestResetWhileBusy resets while kicks race with the worker.
func TestResetWhileBusy(t *testing.T) {
	r := newRig(t, rigOpts{inactive: true})
	base := runtime.NumGoroutine()
	for range 20 {
		r.ring = virtiotest.RingAt(t, r.mem, ringBase, 256)
		for i := range 64 {
			r.add(r.header(hdrBase+uint64(i)*16, TypeIn, uint64(i)), wbuf(dataBase+uint64(i)*4096, 4096), r.status(statusBase+uint64(i)))
		}
		r.activate(false)
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 100 {
				r.dev.QueueNotify(0)
			}
		})
		if err := r.dev.Reset(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if r.dev.Activated() {
			t.Fatal("active after reset")
		}
	}
	virtiotest.WaitGoroutines(t, base)
}

func TestClose(t *testing.T) {
	for _, cache := range []CacheType{CacheUnsafe, CacheWriteback} {
		t.Run(cache.String(), func(t *testing.T) {
			r := newRig(t, rigOpts{cache: cache})
			f := r.dev.disk.file
			if err := r.dev.Close(); err != nil {
				t.Fatal(err)
			}
			if r.dev.Activated() {
				t.Fatal("active after Close")
			}
			if _, err := f.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("file not closed: %v", err)
			}
			if err := r.dev.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			q := r.ring.Queue()
			if err := r.dev.Activate(r.mem, []*virtio.Queue{q}, r.irq); !errors.Is(err, ErrClosed) {
				t.Fatalf("Activate after Close: %v", err)
			}
			g := open(t, r.path, false)
			if err := r.dev.UpdateFile(g); !errors.Is(err, ErrClosed) {
				t.Fatalf("UpdateFile after Close: %v", err)
			}
			if _, err := g.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
				t.Fatal("UpdateFile after Close kept the file open")
			}
		})
	}
}

// TestEventIdx drives the worker synchronously, so each batch and its
// interrupt decision are exact.
func TestEventIdx(t *testing.T) {
	r := newRig(t, rigOpts{inactive: true, ringSize: 16})
	q := r.ring.InitQueue(t, true)
	w := r.dev.newWorker(r.mem, q, r.irq)
	read := func(i uint64) {
		r.add(r.header(hdrBase+16*i, TypeIn, i), wbuf(dataBase+512*i, 512), r.status(statusBase+i))
	}

	r.ring.SetUsedEvent(0) // interrupt me after the first used entry
	read(0)
	w.process()
	if n := r.irq.Queues(); n != 1 {
		t.Fatalf("%d interrupts, want 1", n)
	}
	if ev, _ := r.ring.AvailEvent(); ev != 1 {
		t.Fatalf("avail_event %d, want 1", ev)
	}

	r.ring.SetUsedEvent(5) // not before used index 6
	read(1)
	w.process()
	if n := r.irq.Queues(); n != 1 {
		t.Fatal("interrupt the driver suppressed")
	}
	for i := range uint64(4) {
		read(2 + i)
	}
	w.process() // used index 2 -> 6 crosses used_event 5
	if n := r.irq.Queues(); n != 2 {
		t.Fatalf("%d interrupts, want 2", n)
	}
	if idx, _ := r.ring.UsedIdx(); idx != 6 {
		t.Fatalf("used idx %d", idx)
	}
	if ev, _ := r.ring.AvailEvent(); ev != 6 {
		t.Fatalf("avail_event %d, want 6", ev)
	}

	// Without EVENT_IDX every batch interrupts.
	q.EventIdx = false
	read(6)
	w.process()
	if n := r.irq.Queues(); n != 3 {
		t.Fatalf("%d interrupts, want 3", n)
	}
	// And an empty batch does not, but counts no_avail_buffer.
	none := virtiotest.Track(&r.m.NoAvailBuffer)
	w.process()
	if n := r.irq.Queues(); n != 3 || none.Get() != 1 {
		t.Fatalf("empty batch: %d interrupts, no_avail_buffer %d", n, none.Get())
	}
}

func TestCorruptAvailIdx(t *testing.T) {
	r := newRig(t, rigOpts{inactive: true, ringSize: 16})
	q := r.ring.InitQueue(t, false)
	w := r.dev.newWorker(r.mem, q, r.irq)
	fails := virtiotest.Track(&r.m.EventFails)
	r.ring.SetAvailIdx(100)
	w.process()
	if fails.Get() != 1 || r.irq.Queues() != 0 {
		t.Fatalf("event_fails %d, interrupts %d", fails.Get(), r.irq.Queues())
	}
}

// TestMMIO drives the device through the virtio-mmio transport as Linux's
// virtio_mmio and virtio_blk drivers do.
func TestMMIO(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, fileSize)
	dev, err := New(Config{ID: uniqueID(), File: open(t, path, false), Cache: CacheWriteback})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	tr, l := virtiotest.NewTransport(t, mem, dev)
	rd := func(off uint64) uint32 { return virtiotest.Read32(tr, off) }
	wr := func(off uint64, v uint32) { virtiotest.Write32(tr, off, v) }
	if rd(0x00) != mmio.MagicValue || rd(0x04) != 2 || rd(0x08) != 2 {
		t.Fatal("bad identification registers")
	}
	want := uint64(1)<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx | 1<<FeatureFlush
	if got := virtiotest.Negotiate(tr, nil); got != want {
		t.Fatalf("offered %#x, want %#x", got, want)
	}
	sFeat := uint32(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	if rd(0x70) != sFeat || dev.AckedFeatures() != want {
		t.Fatalf("status %#x, acked %#x", rd(0x70), dev.AckedFeatures())
	}
	// virtio_blk reads the capacity (8 bytes in one access here).
	var c [8]byte
	tr.Read(mmio.ConfigOffset, c[:])
	if binary.LittleEndian.Uint64(c[:]) != fileSize/512 || rd(mmio.ConfigOffset) != fileSize/512 || rd(mmio.ConfigOffset+4) != 0 {
		t.Fatalf("capacity %v", c)
	}
	ring := virtiotest.RingAt(t, mem, ringBase, 128)
	wr(0x30, 0)
	if rd(0x34) != QueueSize {
		t.Fatalf("queue num max %d", rd(0x34))
	}
	virtiotest.SetupQueue(tr, 0, ring)
	wr(0x70, sFeat|virtio.StatusDriverOK)
	if !dev.Activated() {
		t.Fatal("not activated by DRIVER_OK")
	}

	r := &rig{t: t, mem: mem, dev: dev, irq: &virtiotest.IRQ{}, ring: ring, path: path}
	// Linux's first request: GET_ID, then a read of sector 0.
	r.header(hdrBase, TypeIn, 0)
	r.add(hdr(hdrBase), wbuf(dataBase, 4096), r.status(statusBase))
	wr(mmio.NotifyOffset, 0)
	if u := r.waitUsed(1)[0]; u.Len != 4097 || r.statusAt(statusBase) != StatusOK {
		t.Fatalf("used %+v", u)
	}
	if !bytes.Equal(r.read(dataBase, 4096), pattern(0, 4096)) {
		t.Fatal("read through MMIO")
	}
	virtiotest.Eventually(t, "interrupt", func() bool { return l.Count() >= 1 })
	if rd(0x60)&mmio.InterruptUsedRing == 0 {
		t.Fatalf("interrupt status %#x", rd(0x60))
	}
	wr(0x64, rd(0x60))

	// PATCH /drives: a new file, a config interrupt, the new capacity.
	if err := dev.UpdateFile(open(t, tempDisk(t, 3*fileSize), false)); err != nil {
		t.Fatal(err)
	}
	if rd(0x60) != mmio.InterruptConfig {
		t.Fatalf("interrupt status %#x after update", rd(0x60))
	}
	if rd(mmio.ConfigOffset) != 3*fileSize/512 {
		t.Fatalf("capacity %d after update", rd(mmio.ConfigOffset))
	}
	wr(0x64, mmio.InterruptConfig)

	// The driver resets the device: the worker stops.
	wr(0x70, 0)
	if dev.Activated() || rd(0x70) != 0 {
		t.Fatal("still active after reset")
	}
}
