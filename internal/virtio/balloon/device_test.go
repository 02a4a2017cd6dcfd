package balloon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
	"github.com/squib-vmm/squib/internal/vmm"
)

const (
	ramSize  = 0x1000000 // 16 MiB: PFNs 0..0xfff
	ringBase = 0x10000   // queue i's ring at ringBase + i*ringStep
	ringStep = 0x2000
	bufBase  = 0x40000  // driver buffers (PFN lists, stats, commands)
	pageBase = 0x100000 // pages the tests balloon, from PFN 0x100 on
	page     = 4096
)

const (
	sAck  = virtio.StatusAcknowledge
	sDrv  = sAck | virtio.StatusDriver
	sFeat = sDrv | virtio.StatusFeaturesOK
	sLive = sFeat | virtio.StatusDriverOK
)

// bm is the metrics group the device counts in. Tests compare deltas and
// do not run in parallel.
var bm = &metrics.Default.Balloon

type rig struct {
	t     *testing.T
	mem   *memory.Guest
	dev   *Device
	line  *virtiotest.Line
	tr    *mmio.Transport
	rings []*virtiotest.Ring
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, l := virtiotest.NewTransport(t, mem, dev)
	// Stop the worker before the memory it uses is unmapped.
	t.Cleanup(func() { dev.Reset() })
	return &rig{t: t, mem: mem, dev: dev, line: l, tr: tr}
}

func (r *rig) rd(off uint64) uint32    { return virtiotest.Read32(r.tr, off) }
func (r *rig) wr(off uint64, v uint32) { virtiotest.Write32(r.tr, off, v) }

// init brings the device up as Linux's virtio_balloon does: every offered
// feature acknowledged, every queue set up with a fresh ring of size
// entries, DRIVER_OK.
func (r *rig) init(size uint16) {
	r.t.Helper()
	if r.rd(0x08) != 5 {
		r.t.Fatalf("device id %d", r.rd(0x08))
	}
	offered := virtiotest.Negotiate(r.tr, nil)
	if r.dev.AckedFeatures() != offered {
		r.t.Fatalf("acked %#x, offered %#x", r.dev.AckedFeatures(), offered)
	}
	r.rings = nil
	for i := range r.tr.NumQueues() {
		ring := virtiotest.RingAt(r.t, r.mem, ringBase+uint64(i)*ringStep, size)
		r.wr(0x30, uint32(i))
		if m := r.rd(0x34); m != QueueSize {
			r.t.Fatalf("queue %d num max %d", i, m)
		}
		virtiotest.SetupQueue(r.tr, uint32(i), ring)
		r.rings = append(r.rings, ring)
	}
	r.wr(0x70, sLive)
	if r.rd(0x70) != sLive || !r.dev.Activated() {
		r.t.Fatalf("status %#x after DRIVER_OK", r.rd(0x70))
	}
}

func (r *rig) kick(q int) { r.wr(0x50, uint32(q)) }

// post publishes a one-buffer chain on queue q and kicks it.
func (r *rig) post(q int, addr uint64, n uint32, writable bool) uint16 {
	r.t.Helper()
	h, err := r.rings[q].AddChain(virtiotest.Buffer{Addr: addr, Len: n, Writable: writable})
	if err != nil {
		r.t.Fatal(err)
	}
	r.kick(q)
	return h
}

// waitUsed waits for n used entries on queue q and returns them.
func (r *rig) waitUsed(q, n int) []virtiotest.Used {
	r.t.Helper()
	var out []virtiotest.Used
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n {
		u, ok, err := r.rings[q].PopUsed()
		if err != nil {
			r.t.Fatal(err)
		}
		if ok {
			out = append(out, u)
			continue
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("queue %d: got %d used entries, want %d: %+v", q, len(out), n, out)
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

// expectNoUsed checks that queue q returns nothing within a short while.
func (r *rig) expectNoUsed(q int) {
	r.t.Helper()
	time.Sleep(20 * time.Millisecond)
	if u, ok, _ := r.rings[q].PopUsed(); ok {
		r.t.Fatalf("queue %d: unexpected used entry %+v", q, u)
	}
}

// writePFNs writes a PFN array at addr and returns its length in bytes.
func (r *rig) writePFNs(addr uint64, pfns ...uint32) uint32 {
	r.t.Helper()
	b := make([]byte, 4*len(pfns))
	for i, p := range pfns {
		binary.LittleEndian.PutUint32(b[4*i:], p)
	}
	if err := r.mem.WriteAt(b, addr); err != nil {
		r.t.Fatal(err)
	}
	return uint32(len(b))
}

func (r *rig) fill(addr uint64, n int, v byte) {
	r.t.Helper()
	virtiotest.WriteGuest(r.t, r.mem, addr, bytes.Repeat([]byte{v}, n))
}

// pageIs reports whether every byte of the page at PFN pfn is v.
func (r *rig) pageIs(pfn uint32, v byte) bool {
	r.t.Helper()
	b := make([]byte, page)
	if err := r.mem.ReadAt(b, uint64(pfn)*page); err != nil {
		r.t.Fatal(err)
	}
	return bytes.Count(b, []byte{v}) == page
}

// cfg reads the le32 at offset off of the configuration space through
// the transport, as the driver does.
func (r *rig) cfg(off uint64) uint32 { return r.rd(mmio.ConfigOffset + off) }

// ackIRQ acknowledges and returns the pending interrupt-status bits.
func (r *rig) ackIRQ() uint32 {
	s := r.rd(0x60)
	r.wr(0x64, s)
	return s
}

func TestIdentity(t *testing.T) {
	v1 := uint64(1) << virtio.FeatureVersion1
	for _, c := range []struct {
		cfg      Config
		features uint64
		queues   int
		statsIdx int
	}{
		{Config{}, v1, 2, -1},
		{Config{DeflateOnOOM: true}, v1 | 1<<2, 2, -1},
		{Config{StatsPollingIntervalS: 5}, v1 | 1<<1, 3, 2},
		{Config{FreePageHinting: true}, v1 | 1<<3, 3, -1},
		{Config{FreePageReporting: true}, v1 | 1<<5, 3, -1},
		{Config{DeflateOnOOM: true, StatsPollingIntervalS: 1, FreePageHinting: true, FreePageReporting: true}, v1 | 1<<1 | 1<<2 | 1<<3 | 1<<5, 5, 2},
	} {
		d, err := New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if d.DeviceType() != virtio.TypeBalloon || d.DeviceType() != 5 {
			t.Fatalf("device type %v", d.DeviceType())
		}
		if d.AvailableFeatures() != c.features {
			t.Errorf("%+v: features %#x, want %#x", c.cfg, d.AvailableFeatures(), c.features)
		}
		if s := d.QueueMaxSizes(); len(s) != c.queues || slices.ContainsFunc(s, func(n uint16) bool { return n != 256 }) {
			t.Errorf("%+v: queues %v", c.cfg, s)
		}
		if d.statsIdx != c.statsIdx {
			t.Errorf("%+v: stats queue %d", c.cfg, d.statsIdx)
		}
		if d.Activated() {
			t.Fatal("active when new")
		}
		d.QueueNotify(0) // ignored before activation
	}
	// The queue order with everything on: inflate, deflate, stats, hint,
	// report.
	d, _ := New(Config{StatsPollingIntervalS: 1, FreePageHinting: true, FreePageReporting: true})
	if !slices.Equal(d.kinds, []queueKind{kindInflate, kindDeflate, kindStats, kindHint, kindReport}) {
		t.Fatalf("queue kinds %v", d.kinds)
	}
	d, _ = New(Config{FreePageHinting: true, FreePageReporting: true})
	if !slices.Equal(d.kinds, []queueKind{kindInflate, kindDeflate, kindHint, kindReport}) {
		t.Fatalf("queue kinds %v", d.kinds)
	}
	d, _ = New(Config{StatsPollingIntervalS: 1, FreePageReporting: true})
	if !slices.Equal(d.kinds, []queueKind{kindInflate, kindDeflate, kindStats, kindReport}) {
		t.Fatalf("queue kinds %v", d.kinds)
	}
}

func TestConfigSpace(t *testing.T) {
	d, err := New(Config{AmountMib: 16})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	d.ReadConfig(0, got)
	want := []byte{0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("config %x, want %x", got, want)
	}
	// The driver writes actual.
	d.WriteConfig(4, []byte{0x34, 0x12, 0, 0})
	d.ReadConfig(4, got[:4])
	if binary.LittleEndian.Uint32(got) != 0x1234 {
		t.Fatalf("actual %x", got[:4])
	}
	// Writes that do not fit are dropped whole.
	d.WriteConfig(8, []byte{1, 2, 3, 4, 5})
	d.WriteConfig(12, []byte{1})
	d.WriteConfig(^uint64(0), []byte{1})
	d.ReadConfig(0, got[:12])
	if !bytes.Equal(got[:12], []byte{0, 0x10, 0, 0, 0x34, 0x12, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("config %x after bad writes", got[:12])
	}
	c := d.Config()
	if *c.AmountMib != 16 || *c.DeflateOnOOM || *c.StatsPollingIntervalS != 0 || *c.FreePageHinting || *c.FreePageReporting {
		t.Fatalf("Config() = %+v", c)
	}
}

func TestNewTooLarge(t *testing.T) {
	if _, err := New(Config{AmountMib: 1<<24 - 1}); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{AmountMib: 1 << 24})
	if err == nil || err.Error() != "Balloon: Requested memory should be less than 16777215MiB" {
		t.Fatalf("New(16 TiB) = %v", err)
	}
}

func TestInflateDiscards(t *testing.T) {
	r := newRig(t, Config{AmountMib: 1})
	r.init(256)
	inflates := virtiotest.Track(&bm.InflateCount)
	r.fill(pageBase, 8*page, 0xa5)
	// Unsorted, with a duplicate: pages 0x100, 0x101, 0x103 and 0x105.
	n := r.writePFNs(bufBase, 0x103, 0x100, 0x105, 0x101, 0x100)
	h := r.post(InflateIndex, bufBase, n, false)
	if u := r.waitUsed(InflateIndex, 1)[0]; u != (virtiotest.Used{ID: uint32(h)}) {
		t.Fatalf("used %+v", u)
	}
	for pfn := uint32(0x100); pfn < 0x108; pfn++ {
		wantZero := pfn == 0x100 || pfn == 0x101 || pfn == 0x103 || pfn == 0x105
		if wantZero && !r.pageIs(pfn, 0) {
			t.Errorf("page %#x not discarded", pfn)
		}
		if !wantZero && !r.pageIs(pfn, 0xa5) {
			t.Errorf("page %#x changed", pfn)
		}
	}
	if r.ackIRQ()&mmio.InterruptUsedRing == 0 {
		t.Fatal("no used-ring interrupt")
	}
	// At least one: the transport's look at every queue on activation
	// may count too.
	if inflates.Get() < 1 {
		t.Fatalf("inflate_count grew by %d", inflates.Get())
	}
	// A discarded page is usable again.
	r.fill(pageBase, page, 7)
	if !r.pageIs(0x100, 7) {
		t.Fatal("discarded page not writable")
	}
}

func TestInflateInvalid(t *testing.T) {
	r := newRig(t, Config{})
	r.init(256)
	fails := virtiotest.Track(&bm.EventFails)
	r.fill(pageBase, 4*page, 0xa5)
	// PFNs outside RAM around a good one; the last RAM page and the one
	// after it form one range.
	n := r.writePFNs(bufBase, 0xffffffff, ramSize/page, 0x100, 1<<20, ramSize/page-1, 0x80000000)
	r.fill(ramSize-page, page, 0xa5)
	r.post(InflateIndex, bufBase, n, false)
	r.waitUsed(InflateIndex, 1)
	if !r.pageIs(0x100, 0) || !r.pageIs(ramSize/page-1, 0) {
		t.Fatal("valid PFNs next to invalid ones not discarded")
	}
	if !r.pageIs(0x101, 0xa5) {
		t.Fatal("page not listed was discarded")
	}

	// Buffers the device must not read: writable, not a whole number of
	// PFNs, more than 256 PFNs. Each is returned all the same.
	n = r.writePFNs(bufBase, 0x101)
	r.post(InflateIndex, bufBase, n, true)
	r.post(InflateIndex, bufBase, n+2, false)
	big := make([]uint32, MaxPagesInDesc+1)
	for i := range big {
		big[i] = 0x101
	}
	r.post(InflateIndex, bufBase+0x1000, r.writePFNs(bufBase+0x1000, big...), false)
	// A buffer outside RAM is a malformed chain, returned empty.
	r.post(InflateIndex, ramSize-2, 4, false)
	used := r.waitUsed(InflateIndex, 4)
	for _, u := range used {
		if u.Len != 0 {
			t.Fatalf("used %+v", u)
		}
	}
	if !r.pageIs(0x101, 0xa5) {
		t.Fatal("an ignored buffer's PFN was discarded")
	}
	if fails.Get() != 1 {
		t.Fatalf("event_fails grew by %d, want 1 (the malformed chain)", fails.Get())
	}
	if !r.dev.Activated() {
		t.Fatal("device stopped")
	}
}

func TestInflateMany(t *testing.T) {
	r := newRig(t, Config{})
	// All chains are there before activation, so one pass sees more PFNs
	// than the compaction buffer holds.
	ring := virtiotest.RingAt(t, r.mem, ringBase, 256)
	const bufs = 12
	r.fill(pageBase, (bufs*MaxPagesInDesc+1)*page, 0xa5) // 12*256 PFNs > 2048
	for i := range bufs {
		pfns := make([]uint32, MaxPagesInDesc)
		for j := range pfns {
			// Interleaved so that compaction has work: buffer i holds
			// every 12th page.
			pfns[j] = 0x100 + uint32(j*bufs+i)
		}
		addr := bufBase + uint64(i)*0x1000
		n := r.writePFNs(addr, pfns...)
		if _, err := ring.AddChain(virtiotest.Buffer{Addr: addr, Len: n}); err != nil {
			t.Fatal(err)
		}
	}
	// init would lay out (and zero) a fresh ring: keep the prepared one.
	r.initWith(map[int]*virtiotest.Ring{InflateIndex: ring}, 256)
	// The driver may reuse a page once its buffer is returned, so the
	// pages must be gone by the time the used entries show.
	r.waitUsed(InflateIndex, bufs)
	for pfn := uint32(0x100); pfn < 0x100+bufs*MaxPagesInDesc; pfn++ {
		if !r.pageIs(pfn, 0) {
			t.Fatalf("page %#x not discarded", pfn)
		}
	}
	if !r.pageIs(0x100+bufs*MaxPagesInDesc, 0xa5) {
		t.Fatal("page after the list discarded")
	}
}

// initWith is init with some queues' rings already laid out.
func (r *rig) initWith(prepared map[int]*virtiotest.Ring, size uint16) {
	r.t.Helper()
	virtiotest.Negotiate(r.tr, func(uint64) uint64 { return 1 << virtio.FeatureVersion1 })
	r.rings = nil
	for i := range r.tr.NumQueues() {
		ring := prepared[i]
		if ring == nil {
			ring = virtiotest.RingAt(r.t, r.mem, ringBase+uint64(i)*ringStep, size)
		}
		virtiotest.SetupQueue(r.tr, uint32(i), ring)
		r.rings = append(r.rings, ring)
	}
	r.wr(0x70, sLive)
	if !r.dev.Activated() {
		r.t.Fatal("not activated")
	}
}

func TestDeflateAcked(t *testing.T) {
	r := newRig(t, Config{DeflateOnOOM: true})
	r.init(256)
	deflates := virtiotest.Track(&bm.DeflateCount)
	r.fill(pageBase, page, 0xa5)
	n := r.writePFNs(bufBase, 0x100)
	h := r.post(DeflateIndex, bufBase, n, false)
	if u := r.waitUsed(DeflateIndex, 1)[0]; u != (virtiotest.Used{ID: uint32(h)}) {
		t.Fatalf("used %+v", u)
	}
	if !r.pageIs(0x100, 0xa5) {
		t.Fatal("deflate touched the page")
	}
	if r.ackIRQ()&mmio.InterruptUsedRing == 0 {
		t.Fatal("no used-ring interrupt")
	}
	if deflates.Get() < 1 {
		t.Fatalf("deflate_count grew by %d", deflates.Get())
	}
	r.expectNoUsed(InflateIndex)
}

func TestUpdateAmount(t *testing.T) {
	r := newRig(t, Config{AmountMib: 1})
	if err := r.dev.UpdateAmount(2, 4); !errors.Is(err, ErrNotActivated) || err.Error() != "Balloon: Device not activated yet." {
		t.Fatalf("UpdateAmount before activation = %v", err)
	}
	r.init(256)
	r.ackIRQ()
	if r.cfg(0) != 256 {
		t.Fatalf("num_pages %d, want 256", r.cfg(0))
	}
	if err := r.dev.UpdateAmount(3, 4); err != nil {
		t.Fatal(err)
	}
	if r.cfg(0) != 3*256 {
		t.Fatalf("num_pages %d after update", r.cfg(0))
	}
	if r.ackIRQ()&mmio.InterruptConfig == 0 {
		t.Fatal("no config interrupt")
	}
	if got := *r.dev.Config().AmountMib; got != 3 {
		t.Fatalf("Config().AmountMib = %d", got)
	}
	// The whole of guest memory may be ballooned, no more.
	if err := r.dev.UpdateAmount(4, 4); err != nil {
		t.Fatal(err)
	}
	r.ackIRQ()
	err := r.dev.UpdateAmount(5, 4)
	if err == nil || err.Error() != "Balloon: Requested memory should be less than 5MiB" {
		t.Fatalf("UpdateAmount(5) = %v", err)
	}
	if r.cfg(0) != 4*256 || r.rd(0x60) != 0 {
		t.Fatal("a refused update changed the config or interrupted")
	}
	// A target whose page count overflows.
	err = r.dev.UpdateAmount(1<<24, 1<<30)
	if err == nil || err.Error() != "Balloon: Requested memory should be less than 16777215MiB" {
		t.Fatalf("UpdateAmount(16 TiB) = %v", err)
	}
}

func TestActualInStats(t *testing.T) {
	r := newRig(t, Config{AmountMib: 2, StatsPollingIntervalS: 3600})
	r.init(256)
	// virtio_balloon's update_balloon_size writes actual.
	r.wr(mmio.ConfigOffset+4, 300)
	st, err := r.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := vmm.BalloonStats{TargetPages: 512, ActualPages: 300, TargetMib: 2, ActualMib: 1}
	if st != want {
		t.Fatalf("Stats() = %+v, want %+v", st, want)
	}
}

// statsBuf encodes packed {le16 tag, le64 val} entries.
func statsBuf(kv ...uint64) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = binary.LittleEndian.AppendUint16(b, uint16(kv[i]))
		b = binary.LittleEndian.AppendUint64(b, kv[i+1])
	}
	return b
}

func ptr(v uint64) *uint64 { return &v }

func TestStats(t *testing.T) {
	r := newRig(t, Config{StatsPollingIntervalS: 1})
	r.init(256)
	const sq = 2
	updates, fails := virtiotest.Track(&bm.StatsUpdatesCount), virtiotest.Track(&bm.StatsUpdateFails)
	st, err := r.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st != (vmm.BalloonStats{}) {
		t.Fatalf("stats before any report: %+v", st)
	}

	// The driver's first report: every tag, plus one the device does not
	// know. (Tags 0..15 are written as 100+tag.)
	var kv []uint64
	for tag := range uint64(16) {
		kv = append(kv, tag, 100+tag)
	}
	kv = append(kv, 99, 1)
	b := statsBuf(kv...)
	if err := r.mem.WriteAt(b, bufBase); err != nil {
		t.Fatal(err)
	}
	h := r.post(sq, bufBase, uint32(len(b)), false)
	virtiotest.Eventually(t, "first report", func() bool {
		st, _ := r.dev.Stats()
		return st.DirectReclaim != nil
	})
	st, _ = r.dev.Stats()
	want := vmm.BalloonStats{
		SwapIn: ptr(100), SwapOut: ptr(101), MajorFaults: ptr(102), MinorFaults: ptr(103),
		FreeMemory: ptr(104), TotalMemory: ptr(105), AvailableMemory: ptr(106), DiskCaches: ptr(107),
		HugetlbAllocations: ptr(108), HugetlbFailures: ptr(109), OOMKill: ptr(110), AllocStall: ptr(111),
		AsyncScan: ptr(112), DirectScan: ptr(113), AsyncReclaim: ptr(114), DirectReclaim: ptr(115),
	}
	if diff := statsDiff(st, want); diff != "" {
		t.Fatal(diff)
	}
	if fails.Get() != 1 || updates.Get() < 1 {
		t.Fatalf("stats_update_fails +%d, stats_updates_count +%d", fails.Get(), updates.Get())
	}

	// After the interval the device hands the buffer back for a refresh.
	if u := r.waitUsed(sq, 1)[0]; u != (virtiotest.Used{ID: uint32(h)}) {
		t.Fatalf("used %+v", u)
	}
	// The refreshed report has two tags, one of them changed (and the last
	// of a repeated tag counts, plus a trailing partial entry that is
	// ignored): the rest keep their values.
	b = append(statsBuf(TagFreeMemory, 1, TagSwapIn, 7, TagFreeMemory, 4000), 1, 2, 3)
	if err := r.mem.WriteAt(b, bufBase); err != nil {
		t.Fatal(err)
	}
	r.post(sq, bufBase, uint32(len(b)), false)
	virtiotest.Eventually(t, "second report", func() bool {
		st, _ := r.dev.Stats()
		return st.FreeMemory != nil && *st.FreeMemory == 4000
	})
	st, _ = r.dev.Stats()
	want.SwapIn, want.FreeMemory = ptr(7), ptr(4000)
	if diff := statsDiff(st, want); diff != "" {
		t.Fatal(diff)
	}
	// And it is returned again.
	r.waitUsed(sq, 1)
	// The snapshot is the caller's: later reports do not change it.
	*st.SwapIn = 1
	if st2, _ := r.dev.Stats(); *st2.SwapIn != 7 {
		t.Fatal("Stats shares its values with the caller")
	}
}

func statsDiff(got, want vmm.BalloonStats) string {
	g, w := []*uint64{got.SwapIn, got.SwapOut, got.MajorFaults, got.MinorFaults, got.FreeMemory, got.TotalMemory,
		got.AvailableMemory, got.DiskCaches, got.HugetlbAllocations, got.HugetlbFailures, got.OOMKill,
		got.AllocStall, got.AsyncScan, got.DirectScan, got.AsyncReclaim, got.DirectReclaim},
		[]*uint64{want.SwapIn, want.SwapOut, want.MajorFaults, want.MinorFaults, want.FreeMemory, want.TotalMemory,
			want.AvailableMemory, want.DiskCaches, want.HugetlbAllocations, want.HugetlbFailures, want.OOMKill,
			want.AllocStall, want.AsyncScan, want.DirectScan, want.AsyncReclaim, want.DirectReclaim}
	for i := range g {
		switch {
		case (g[i] == nil) != (w[i] == nil):
			return fmt.Sprintf("tag %d: present %v, want %v", i, g[i] != nil, w[i] != nil)
		case g[i] != nil && *g[i] != *w[i]:
			return fmt.Sprintf("tag %d: %d, want %d", i, *g[i], *w[i])
		}
	}
	if got.TargetPages != want.TargetPages || got.ActualPages != want.ActualPages {
		return fmt.Sprintf("sizes %d/%d, want %d/%d", got.TargetPages, got.ActualPages, want.TargetPages, want.ActualPages)
	}
	return ""
}

func TestStatsProtocol(t *testing.T) {
	// An hour's interval: the timer never fires here, only interval
	// changes and extra buffers return anything.
	r := newRig(t, Config{StatsPollingIntervalS: 3600})
	r.init(256)
	const sq = 2
	b := statsBuf(TagTotalMemory, 1<<30)
	if err := r.mem.WriteAt(b, bufBase); err != nil {
		t.Fatal(err)
	}
	h1 := r.post(sq, bufBase, uint32(len(b)), false)
	virtiotest.Eventually(t, "report", func() bool { st, _ := r.dev.Stats(); return st.TotalMemory != nil })
	r.expectNoUsed(sq)

	// A second buffer makes the device give the first one back.
	h2 := r.post(sq, bufBase, uint32(len(b)), false)
	if u := r.waitUsed(sq, 1)[0]; u.ID != uint32(h1) {
		t.Fatalf("used %+v, want head %d", u, h1)
	}
	// Setting the same interval does nothing; a new one asks for a refresh
	// at once.
	if err := r.dev.UpdateStatsInterval(3600); err != nil {
		t.Fatal(err)
	}
	r.expectNoUsed(sq)
	if err := r.dev.UpdateStatsInterval(1800); err != nil {
		t.Fatal(err)
	}
	if u := r.waitUsed(sq, 1)[0]; u.ID != uint32(h2) {
		t.Fatalf("used %+v, want head %d", u, h2)
	}
	if got := *r.dev.Config().StatsPollingIntervalS; got != 1800 {
		t.Fatalf("interval %d", got)
	}
	err := r.dev.UpdateStatsInterval(0)
	if !errors.Is(err, ErrStatsStateChange) || err.Error() != "Balloon: Statistics cannot be enabled/disabled after activation." {
		t.Fatalf("UpdateStatsInterval(0) = %v", err)
	}

	// An oversized buffer is held (and returned later) but not read.
	big := make([]byte, MaxStatsDescLen+StatSize)
	copy(big, statsBuf(TagTotalMemory, 5))
	if err := r.mem.WriteAt(big, bufBase); err != nil {
		t.Fatal(err)
	}
	h3 := r.post(sq, bufBase, uint32(len(big)), false)
	r.expectNoUsed(sq)
	if st, _ := r.dev.Stats(); *st.TotalMemory != 1<<30 {
		t.Fatal("oversized stats buffer was parsed")
	}
	if err := r.dev.UpdateStatsInterval(900); err != nil {
		t.Fatal(err)
	}
	if u := r.waitUsed(sq, 1)[0]; u.ID != uint32(h3) {
		t.Fatalf("used %+v, want head %d", u, h3)
	}
}

func TestStatsDisabled(t *testing.T) {
	r := newRig(t, Config{})
	_, err := r.dev.Stats()
	if !errors.Is(err, ErrStatsDisabled) || err.Error() != "Balloon: Received stats query when stats are disabled." {
		t.Fatalf("Stats() = %v", err)
	}
	if err := r.dev.UpdateStatsInterval(0); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.UpdateStatsInterval(1); !errors.Is(err, ErrStatsStateChange) {
		t.Fatalf("UpdateStatsInterval(1) = %v", err)
	}
	r.init(256)
	if len(r.rings) != 2 {
		t.Fatalf("%d queues without statistics", len(r.rings))
	}
	if _, err := r.dev.Stats(); !errors.Is(err, ErrStatsDisabled) {
		t.Fatalf("Stats() = %v", err)
	}
}

func TestHintingDisabled(t *testing.T) {
	r := newRig(t, Config{})
	r.init(256)
	want := "Balloon: Attempting to use hinting when not enabled"
	if err := r.dev.StartHinting(vmm.BalloonStartCmd{}); err == nil || err.Error() != want {
		t.Fatalf("StartHinting = %v", err)
	}
	if _, err := r.dev.HintingStatus(); !errors.Is(err, ErrHintingNotEnabled) {
		t.Fatalf("HintingStatus = %v", err)
	}
	if err := r.dev.StopHinting(); !errors.Is(err, ErrHintingNotEnabled) {
		t.Fatalf("StopHinting = %v", err)
	}
}

// hintChain posts a chain on the hinting queue: a 4-byte command ID
// buffer when cmd is non-nil, then a page of free memory at pfn when pfn
// is non-zero, all device-writable as Linux sends them.
func (r *rig) hintChain(q int, cmd *uint32, pfn uint32) {
	r.t.Helper()
	var bufs []virtiotest.Buffer
	if cmd != nil {
		if err := r.mem.WriteU32(bufBase, *cmd); err != nil {
			r.t.Fatal(err)
		}
		bufs = append(bufs, virtiotest.Buffer{Addr: bufBase, Len: 4, Writable: true})
	}
	if pfn != 0 {
		bufs = append(bufs, virtiotest.Buffer{Addr: uint64(pfn) * page, Len: page, Writable: true})
	}
	if _, err := r.rings[q].AddChain(bufs...); err != nil {
		r.t.Fatal(err)
	}
	r.kick(q)
	r.waitUsed(q, 1)
}

func u32p(v uint32) *uint32 { return &v }

func TestHinting(t *testing.T) {
	r := newRig(t, Config{FreePageHinting: true})
	// Before activation the status answers, but a run cannot start.
	if st, err := r.dev.HintingStatus(); err != nil || st.HostCmd != 0 || st.GuestCmd != nil {
		t.Fatalf("HintingStatus = %+v, %v", st, err)
	}
	if err := r.dev.StartHinting(vmm.BalloonStartCmd{}); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("StartHinting before activation = %v", err)
	}
	r.init(256)
	const hq = 2
	r.ackIRQ()
	hints, freed := virtiotest.Track(&bm.FreePageHintCount), virtiotest.Track(&bm.FreePageHintFreed)
	r.fill(pageBase, 16*page, 0xa5)

	// Hints before any run are dropped.
	r.hintChain(hq, u32p(2), 0x100)
	if !r.pageIs(0x100, 0xa5) {
		t.Fatal("hint outside a run discarded")
	}

	// Start a run: ID 3, since the StartHinting before activation used
	// up 2, as in Firecracker.
	if err := r.dev.StartHinting(vmm.BalloonStartCmd{}); err != nil {
		t.Fatal(err)
	}
	run := r.cfg(8)
	if run != 3 {
		t.Fatalf("run id %d, want 3", run)
	}
	if r.ackIRQ()&mmio.InterruptConfig == 0 {
		t.Fatal("no config interrupt for the run")
	}
	st, _ := r.dev.HintingStatus()
	if st.HostCmd != run || st.GuestCmd == nil || *st.GuestCmd != 2 {
		t.Fatalf("status %+v", st)
	}
	// The driver answers with the run ID and hints; a hint tagged with
	// another ID is stale.
	r.hintChain(hq, u32p(run+1), 0x101)
	if !r.pageIs(0x101, 0xa5) {
		t.Fatal("stale hint discarded")
	}
	r.hintChain(hq, u32p(run), 0x102)
	r.hintChain(hq, nil, 0x103)
	if !r.pageIs(0x102, 0) || !r.pageIs(0x103, 0) {
		t.Fatal("hints of the run not discarded")
	}
	if hints.Get() != 2 || freed.Get() != 2*page {
		t.Fatalf("free_page_hint_count +%d, freed +%d", hints.Get(), freed.Get())
	}
	// STOP from the driver ends the run; the device acknowledges with
	// DONE, and hints after it are dropped.
	r.hintChain(hq, u32p(HintCmdStop), 0)
	virtiotest.Eventually(t, "DONE", func() bool { return r.cfg(8) == HintCmdDone })
	st, _ = r.dev.HintingStatus()
	if st.HostCmd != HintCmdDone || *st.GuestCmd != HintCmdStop {
		t.Fatalf("status after STOP %+v", st)
	}
	r.hintChain(hq, nil, 0x104)
	if !r.pageIs(0x104, 0xa5) {
		t.Fatal("hint after DONE discarded")
	}

	// A run that must not be acknowledged automatically: STOP leaves the
	// run ID until StopHinting.
	no := false
	if err := r.dev.StartHinting(vmm.BalloonStartCmd{AcknowledgeOnStop: &no}); err != nil {
		t.Fatal(err)
	}
	run2 := r.cfg(8)
	if run2 != run+1 {
		t.Fatalf("second run id %d after %d", run2, run)
	}
	r.hintChain(hq, u32p(run2), 0x105)
	r.hintChain(hq, u32p(HintCmdStop), 0)
	if !r.pageIs(0x105, 0) {
		t.Fatal("hint of the second run not discarded")
	}
	time.Sleep(20 * time.Millisecond)
	if st, _ := r.dev.HintingStatus(); st.HostCmd != run2 {
		t.Fatalf("host cmd %d after STOP without ack", st.HostCmd)
	}
	r.ackIRQ()
	if err := r.dev.StopHinting(); err != nil {
		t.Fatal(err)
	}
	if r.cfg(8) != HintCmdDone || r.ackIRQ()&mmio.InterruptConfig == 0 {
		t.Fatal("StopHinting did not publish DONE")
	}

	// An unaligned hint fails to discard and is counted.
	hfails := virtiotest.Track(&bm.FreePageHintFails)
	if err := r.dev.StartHinting(vmm.BalloonStartCmd{}); err != nil {
		t.Fatal(err)
	}
	run3 := r.cfg(8)
	if err := r.mem.WriteU32(bufBase, run3); err != nil {
		t.Fatal(err)
	}
	if _, err := r.rings[hq].AddChain(virtiotest.Buffer{Addr: bufBase, Len: 4, Writable: true},
		virtiotest.Buffer{Addr: pageBase + 6*page + 1, Len: page, Writable: true}); err != nil {
		t.Fatal(err)
	}
	r.kick(hq)
	r.waitUsed(hq, 1)
	if hfails.Get() != 1 || !r.pageIs(0x106, 0xa5) {
		t.Fatalf("free_page_hint_fails +%d", hfails.Get())
	}
}

func TestFreePageReporting(t *testing.T) {
	r := newRig(t, Config{StatsPollingIntervalS: 3600, FreePageReporting: true})
	r.init(256)
	const rq = 3 // after inflate, deflate, stats
	count, freed, fails := virtiotest.Track(&bm.FreePageReportCount), virtiotest.Track(&bm.FreePageReportFreed), virtiotest.Track(&bm.FreePageReportFails)
	r.fill(pageBase, 8*page, 0xa5)
	// One report of three blocks, as a scatter list.
	h, err := r.rings[rq].AddChain(
		virtiotest.Buffer{Addr: pageBase, Len: 2 * page, Writable: true},
		virtiotest.Buffer{Addr: pageBase + 3*page, Len: page, Writable: true},
		virtiotest.Buffer{Addr: pageBase + 5*page + 8, Len: page - 8, Writable: true}, // unaligned
	)
	if err != nil {
		t.Fatal(err)
	}
	r.kick(rq)
	if u := r.waitUsed(rq, 1)[0]; u != (virtiotest.Used{ID: uint32(h)}) {
		t.Fatalf("used %+v", u)
	}
	for pfn, wantZero := range map[uint32]bool{0x100: true, 0x101: true, 0x102: false, 0x103: true, 0x104: false, 0x105: false} {
		if wantZero != r.pageIs(pfn, 0) {
			t.Errorf("page %#x: discarded %v, want %v", pfn, !wantZero, wantZero)
		}
	}
	if count.Get() != 3 || freed.Get() != 3*page || fails.Get() != 1 {
		t.Fatalf("free_page_report_count +%d, freed +%d, fails +%d", count.Get(), freed.Get(), fails.Get())
	}
}

func TestReset(t *testing.T) {
	r := newRig(t, Config{AmountMib: 2, StatsPollingIntervalS: 3600, FreePageHinting: true})
	base := runtime.NumGoroutine()
	r.init(256)
	w := r.dev.life.Current()
	// Leave state behind: actual, a report, a hinting run.
	r.wr(mmio.ConfigOffset+4, 512)
	b := statsBuf(TagTotalMemory, 9)
	if err := r.mem.WriteAt(b, bufBase+0x1000); err != nil {
		t.Fatal(err)
	}
	r.post(2, bufBase+0x1000, uint32(len(b)), false)
	virtiotest.Eventually(t, "report", func() bool { st, _ := r.dev.Stats(); return st.TotalMemory != nil })
	if err := r.dev.StartHinting(vmm.BalloonStartCmd{}); err != nil {
		t.Fatal(err)
	}
	r.hintChain(3, u32p(r.cfg(8)), 0)

	r.wr(0x70, 0)
	if r.rd(0x70) != 0 {
		t.Fatal("reset refused")
	}
	if w.Running() != 0 {
		t.Fatal("Reset returned before the worker exited")
	}
	if r.dev.Activated() || r.dev.AckedFeatures() != 0 {
		t.Fatal("still active after reset")
	}
	virtiotest.WaitGoroutines(t, base)
	cfg := make([]byte, ConfigSize)
	r.dev.ReadConfig(0, cfg)
	if !bytes.Equal(cfg, []byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("config after reset %x: want the target only", cfg)
	}
	st, err := r.dev.Stats()
	if err != nil || st != (vmm.BalloonStats{TargetPages: 512, TargetMib: 2}) {
		t.Fatalf("stats after reset %+v, %v", st, err)
	}
	if hs, _ := r.dev.HintingStatus(); hs.HostCmd != 0 || hs.GuestCmd != nil {
		t.Fatalf("hinting after reset %+v", hs)
	}
	if err := r.dev.UpdateAmount(1, 4); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("UpdateAmount after reset = %v", err)
	}
	r.dev.QueueNotify(0) // goes nowhere
	if runtime.NumGoroutine() > base {
		t.Fatal("a kick after reset started a goroutine")
	}

	// The driver starts over.
	r.init(64)
	r.fill(pageBase, page, 0xa5)
	r.post(InflateIndex, bufBase, r.writePFNs(bufBase, 0x100), false)
	r.waitUsed(InflateIndex, 1)
	if !r.pageIs(0x100, 0) {
		t.Fatal("inflate after reset did not discard")
	}
	if err := r.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	virtiotest.WaitGoroutines(t, base)
}

// TestConcurrentAPI runs the API methods from several goroutines while
// the driver inflates, the guest reports statistics and the device is
// reset and restarted; the race detector checks the sharing.
func TestConcurrentAPI(t *testing.T) {
	r := newRig(t, Config{AmountMib: 1, StatsPollingIntervalS: 1, FreePageHinting: true})
	r.init(256)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.dev.Stats()
				r.dev.Config()
				r.dev.HintingStatus()
				r.dev.UpdateAmount(2, 4)
				r.dev.StartHinting(vmm.BalloonStartCmd{})
				r.dev.UpdateStatsInterval(2)
				r.dev.UpdateStatsInterval(1)
				r.dev.StopHinting()
				for i := range 4 {
					r.dev.QueueNotify(i)
				}
				runtime.Gosched()
			}
		})
	}
	b := statsBuf(TagFreeMemory, 1)
	for range 5 {
		for i := range 8 {
			r.post(InflateIndex, bufBase, r.writePFNs(bufBase, 0x100+uint32(i)), false)
			r.waitUsed(InflateIndex, 1)
		}
		r.mem.WriteAt(b, bufBase+0x1000)
		r.post(2, bufBase+0x1000, uint32(len(b)), false)
		r.wr(0x70, 0) // reset while the API runs
		r.init(256)
	}
	close(stop)
	wg.Wait()
}

type nopIRQ struct{}

func (nopIRQ) TriggerQueue(int) error { return nil }
func (nopIRQ) TriggerConfig() error   { return nil }

func TestActivateErrors(t *testing.T) {
	mem := virtiotest.MemoryAt(t, 0, ramSize)
	d, _ := New(Config{StatsPollingIntervalS: 1})
	fails := virtiotest.Track(&bm.ActivateFails)
	qs := func(n int) []*virtio.Queue {
		out := make([]*virtio.Queue, n)
		for i := range out {
			out[i] = virtio.NewQueue(QueueSize)
		}
		return out
	}
	if d.Activate(mem, qs(2), nopIRQ{}) == nil {
		t.Fatal("activated with 2 queues of 3")
	}
	if d.Activate(nil, qs(3), nopIRQ{}) == nil || d.Activate(mem, qs(3), nil) == nil {
		t.Fatal("activated without memory or interrupt")
	}
	if d.Activate(mem, []*virtio.Queue{nil, nil, nil}, nopIRQ{}) == nil {
		t.Fatal("activated with nil queues")
	}
	if err := d.Activate(mem, qs(3), nopIRQ{}); err != nil {
		t.Fatal(err)
	}
	if d.Activate(mem, qs(3), nopIRQ{}) == nil {
		t.Fatal("activated twice")
	}
	d.Reset()
	if fails.Get() != 5 {
		t.Fatalf("activate_fails +%d, want 5", fails.Get())
	}
}

func TestCompactPFNs(t *testing.T) {
	for _, c := range []struct {
		in   []uint32
		want []pfnRange
	}{
		{nil, nil},
		{[]uint32{5}, []pfnRange{{5, 1}}},
		{[]uint32{3, 1, 2, 2, 7, 8, 0xffffffff, 0xfffffffe}, []pfnRange{{1, 3}, {7, 2}, {0xfffffffe, 2}}},
		{[]uint32{4, 4, 4}, []pfnRange{{4, 1}}},
	} {
		if got := compactPFNs(slices.Clone(c.in)); !slices.Equal(got, c.want) {
			t.Errorf("compactPFNs(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
