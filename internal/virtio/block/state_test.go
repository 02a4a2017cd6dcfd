package block

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
)

// trRig is a drive behind a virtio-mmio transport, as the machine builds
// it: a snapshot test builds a second one over the same memory and file.
type trRig struct {
	t    *testing.T
	mem  *memory.Guest
	dev  *Device
	tr   *mmio.Transport
	line *virtiotest.Line
	m    *metrics.BlockMetrics
	h    *rig // request-building helpers over mem
}

func newTrRig(t *testing.T, mem *memory.Guest, path string, lim *ratelimit.RateLimiter) *trRig {
	t.Helper()
	id := uniqueID()
	dev, err := New(Config{ID: id, File: open(t, path, false), Limiter: lim})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	tr, line := virtiotest.NewTransport(t, mem, dev)
	return &trRig{t: t, mem: mem, dev: dev, tr: tr, line: line, m: metrics.Default.Block(id), h: &rig{t: t, mem: mem}}
}

// live runs the driver's probe with ring, EVENT_IDX on.
func (r *trRig) live(ring *virtiotest.Ring) {
	r.t.Helper()
	virtiotest.Negotiate(r.tr, nil)
	virtiotest.SetupQueue(r.tr, 0, ring)
	virtiotest.Write32(r.tr, 0x70, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if !r.dev.Activated() {
		r.t.Fatal("not activated")
	}
}

func (r *trRig) kick() { virtiotest.Write32(r.tr, mmio.NotifyOffset, 0) }

// submitWrite adds a request writing sector i with pattern(i), and
// returns its head.
func (r *trRig) submitWrite(ring *virtiotest.Ring, i int) uint16 {
	r.t.Helper()
	data := bytes.Repeat([]byte{byte(i + 1)}, SectorSize)
	addr := dataBase + uint64(i)*SectorSize
	virtiotest.WriteGuest(r.t, r.mem, addr, data)
	return ring.Add(r.t,
		r.h.header(hdrBase+uint64(i)*16, TypeOut, uint64(i)),
		rbuf(addr, SectorSize),
		r.h.status(statusBase+uint64(i)))
}

// expectWrites checks that used holds heads, each exactly once and in
// order, every one done, and the file holds every sector written.
func expectWrites(t *testing.T, mem *memory.Guest, path string, used []virtiotest.Used, heads []uint16) {
	t.Helper()
	if len(used) != len(heads) {
		t.Fatalf("%d used entries for %d requests: %+v", len(used), len(heads), used)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range used {
		if u.ID != uint32(heads[i]) || u.Len != 1 {
			t.Fatalf("used[%d] = %+v, want head %d, length 1", i, u, heads[i])
		}
		if st := virtiotest.ReadGuest(t, mem, statusBase+uint64(i), 1)[0]; st != StatusOK {
			t.Fatalf("request %d status %d", i, st)
		}
		if !bytes.Equal(file[i*SectorSize:(i+1)*SectorSize], bytes.Repeat([]byte{byte(i + 1)}, SectorSize)) {
			t.Fatalf("sector %d not written", i)
		}
	}
}

func expectNoUsed(t *testing.T, ring *virtiotest.Ring) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	if u, ok, _ := ring.PopUsed(); ok {
		t.Fatalf("unexpected used entry %+v", u)
	}
}

// TestSnapshotMidStream: the device is suspended while it serves a
// request: Suspend waits for it and returns it to the driver, the rest
// stay on the queue, and a new device built over the same memory and
// file and restored from the snapshot serves them (and those the driver
// added while paused) on resume: each exactly once, the used ring going
// on where it was.
func TestSnapshotMidStream(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, fileSize)
	a := newTrRig(t, mem, path, nil)
	ring := virtiotest.RingAt(t, mem, ringBase, 256)
	a.live(ring)

	// Hold the worker at its first request, whenever it pops it: it
	// takes the disk lock for each one.
	a.dev.diskMu.Lock()
	popped := a.m.RemainingReqsCount.Count()
	var heads []uint16
	for i := range 8 {
		heads = append(heads, a.submitWrite(ring, i))
	}
	a.kick()
	virtiotest.Eventually(t, "the first request to be popped", func() bool { return a.m.RemainingReqsCount.Count() != popped })
	w := a.dev.life.Current()
	suspended := make(chan struct{})
	go func() {
		a.tr.Suspend()
		close(suspended)
	}()
	virtiotest.Eventually(t, "the worker to be told to stop", w.Stopping)
	a.dev.diskMu.Unlock()
	<-suspended
	used := ring.PopAllUsed(t)
	if len(used) != 1 {
		t.Fatalf("%d requests served before the suspend, want the one in flight", len(used))
	}

	for i := 8; i < 10; i++ {
		heads = append(heads, a.submitWrite(ring, i))
	}
	a.kick()
	expectNoUsed(t, ring)

	data := virtiotest.SaveJSON(t, a.tr)
	b := newTrRig(t, mem, path, nil)
	virtiotest.RestoreJSON(t, b.tr, data)
	if again := virtiotest.SaveJSON(t, b.tr); !bytes.Equal(again, data) {
		t.Fatalf("restored state saves as\n%s\nwant\n%s", again, data)
	}
	expectNoUsed(t, ring)
	if err := b.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	used = append(used, ring.WaitUsed(t, 9)...)
	expectWrites(t, mem, path, used, heads)
	if idx, _ := ring.UsedIdx(); idx != 10 {
		t.Fatalf("used index %d", idx)
	}
	if b.tr.InterruptStatus()&mmio.InterruptConfig != 0 {
		t.Fatal("config interrupt with the capacity unchanged")
	}
	heads = append(heads, b.submitWrite(ring, 10))
	b.kick()
	used = append(used, ring.WaitUsed(t, 1)...)
	expectWrites(t, mem, path, used, heads)
}

// TestPauseResume: a suspended device serves nothing, and on resume
// serves what the driver made available meanwhile.
func TestPauseResume(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, fileSize)
	a := newTrRig(t, mem, path, nil)
	ring := virtiotest.RingAt(t, mem, ringBase, 256)
	a.live(ring)
	heads := []uint16{a.submitWrite(ring, 0)}
	a.kick()
	used := ring.WaitUsed(t, 1)
	a.tr.Suspend()
	for i := 1; i < 5; i++ {
		heads = append(heads, a.submitWrite(ring, i))
		a.kick()
	}
	expectNoUsed(t, ring)
	lines := a.line.Count()
	if err := a.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	used = append(used, ring.WaitUsed(t, 4)...)
	expectWrites(t, mem, path, used, heads)
	if a.line.Count() <= lines {
		t.Fatal("no interrupt after resume")
	}
}

// TestSnapshotCapacityChanged: restored onto a file of another size, the
// device shows the file's capacity and tells the guest on resume.
func TestSnapshotCapacityChanged(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, fileSize)
	a := newTrRig(t, mem, path, nil)
	a.live(virtiotest.RingAt(t, mem, ringBase, 16))
	data := virtiotest.SaveJSON(t, a.tr)
	if err := os.Truncate(path, 2*fileSize); err != nil {
		t.Fatal(err)
	}
	b := newTrRig(t, mem, path, nil)
	virtiotest.RestoreJSON(t, b.tr, data)
	if err := b.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if b.tr.InterruptStatus()&mmio.InterruptConfig == 0 {
		t.Fatal("no config interrupt for the new capacity")
	}
	var cfg [8]byte
	b.tr.Read(mmio.ConfigOffset, cfg[:])
	if got := binary.LittleEndian.Uint64(cfg[:]); got != 2*fileSize/SectorSize {
		t.Fatalf("capacity %d", got)
	}
	// Told once.
	b.tr.Suspend()
	virtiotest.Write32(b.tr, 0x64, mmio.InterruptConfig)
	b.tr.Resume()
	if b.tr.InterruptStatus()&mmio.InterruptConfig != 0 {
		t.Fatal("config interrupt again")
	}
}

// TestUpdateFileWhileSuspended: a new backing file set while the VM is
// paused is announced to the guest on resume.
func TestUpdateFileWhileSuspended(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	a := newTrRig(t, mem, tempDisk(t, fileSize), nil)
	a.live(virtiotest.RingAt(t, mem, ringBase, 16))
	a.tr.Suspend()
	if err := a.dev.UpdateFile(open(t, tempDisk(t, 2*fileSize), false)); err != nil {
		t.Fatal(err)
	}
	if a.tr.InterruptStatus() != 0 {
		t.Fatal("interrupt while suspended")
	}
	if err := a.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if a.tr.InterruptStatus()&mmio.InterruptConfig == 0 {
		t.Fatal("no config interrupt for the new file")
	}
}

// TestStateLimiter: the limiter's buckets and budget move with the
// snapshot; Limiter returns the restored one.
func TestStateLimiter(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, fileSize)
	l := ratelimit.New(ratelimit.NewTokenBucket(1<<20, 100, 1000), ratelimit.NewTokenBucket(100, 0, 1000))
	a := newTrRig(t, mem, path, l)
	l.ConsumeRequest(4096)
	data, err := a.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	b := newTrRig(t, mem, path, nil)
	old := b.dev.Limiter()
	if err := b.dev.RestoreState(data); err != nil {
		t.Fatal(err)
	}
	if b.dev.Limiter() == old {
		t.Fatal("limiter not replaced")
	}
	got, want := b.dev.Limiter().State(), l.State()
	for _, p := range [][2]*ratelimit.BucketState{{got.Bandwidth, want.Bandwidth}, {got.Ops, want.Ops}} {
		if p[0] == nil || p[1] == nil {
			t.Fatal("bucket lost")
		}
		g, w := *p[0], *p[1]
		g.ElapsedNs, w.ElapsedNs = 0, 0
		if g != w {
			t.Fatalf("bucket %+v, want %+v", g, w)
		}
	}
}

// TestRestoreCorrupt: a corrupt blob is an error, and so is restoring an
// active device.
func TestRestoreCorrupt(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	path := tempDisk(t, fileSize)
	a := newTrRig(t, mem, path, nil)
	for _, b := range []string{
		"", "null", "{", "[]", `{"capacity":-1,"rate_limiter":{}}`, `{"capacity":1}`, `{"capacity":1,"rate_limiter":null}`,
		`{"capacity":1,"rate_limiter":{},"x":0}`, `{"capacity":1,"rate_limiter":{}}x`,
		`{"capacity":1,"rate_limiter":{"Bandwidth":{"Size":0,"RefillTime":1}}}`,
	} {
		if err := a.dev.RestoreState([]byte(b)); err == nil {
			t.Errorf("restored %q", b)
		}
	}
	a.live(virtiotest.RingAt(t, mem, ringBase, 16))
	data, _ := json.Marshal(state{RateLimiter: &ratelimit.State{}})
	if err := a.dev.RestoreState(data); err == nil {
		t.Fatal("restored an active device")
	}
	a.dev.Close()
	if _, err := a.dev.SaveState(); err == nil {
		t.Fatal("saved a closed device")
	}
}
