package balloon

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
	"github.com/squib-vmm/squib/internal/virtio/mmio"
	"github.com/squib-vmm/squib/internal/virtio/virtiotest"
	"github.com/squib-vmm/squib/internal/vmm"
)

// sdev is a balloon activated directly on driver-side rings, without a
// transport, so that a test can save and restore its queues as the
// transport does.
type sdev struct {
	t     *testing.T
	mem   *memory.Guest
	cfg   Config
	dev   *Device
	irq   *virtiotest.IRQ
	rings []*virtiotest.Ring
	qs    []*virtio.Queue
}

func newSdev(t *testing.T, cfg Config) *sdev {
	t.Helper()
	s := &sdev{t: t, mem: virtiotest.MemoryAt(t, 0, ramSize), cfg: cfg}
	s.dev = s.newDevice()
	for i := range s.dev.QueueMaxSizes() {
		r := virtiotest.RingAt(t, s.mem, ringBase+uint64(i)*ringStep, 256)
		s.rings = append(s.rings, r)
		s.qs = append(s.qs, r.InitQueue(t, false))
	}
	s.irq = &virtiotest.IRQ{}
	s.dev.AckFeatures(s.dev.AvailableFeatures())
	if err := s.dev.Activate(s.mem, s.qs, s.irq); err != nil {
		t.Fatal(err)
	}
	return s
}

// newDevice builds a device from the configuration, as the machine does
// for a restore; it is reset before the memory goes.
func (s *sdev) newDevice() *Device {
	s.t.Helper()
	d, err := New(s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { d.Reset() })
	return d
}

// post publishes a one-buffer chain on queue q and kicks it.
func (s *sdev) post(q int, addr uint64, n uint32) uint16 {
	s.t.Helper()
	h := s.rings[q].Add(s.t, virtiotest.Buffer{Addr: addr, Len: n})
	s.dev.QueueNotify(q)
	return h
}

func (s *sdev) writePFNs(addr uint64, pfns ...uint32) uint32 {
	s.t.Helper()
	b := make([]byte, 4*len(pfns))
	for i, p := range pfns {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(p), byte(p>>8), byte(p>>16), byte(p>>24)
	}
	virtiotest.WriteGuest(s.t, s.mem, addr, b)
	return uint32(len(b))
}

func (s *sdev) pageIs(pfn uint32, v byte) bool {
	s.t.Helper()
	return bytes.Count(virtiotest.ReadGuest(s.t, s.mem, uint64(pfn)*page, page), []byte{v}) == page
}

// postStats posts a statistics buffer and waits until the device has
// read it.
func (s *sdev) postStats(kv ...uint64) uint16 {
	s.t.Helper()
	b := statsBuf(kv...)
	virtiotest.WriteGuest(s.t, s.mem, bufBase+0x1000, b)
	h := s.post(s.dev.statsIdx, bufBase+0x1000, uint32(len(b)))
	virtiotest.Eventually(s.t, "the statistics to be read", func() bool {
		s.dev.mu.Lock()
		defer s.dev.mu.Unlock()
		for i := 0; i < len(kv); i += 2 {
			if st := s.dev.stats; st.present&(1<<kv[i]) == 0 || st.val[kv[i]] != kv[i+1] {
				return false
			}
		}
		return true
	})
	return h
}

// moveTo does what a snapshot and a restore do to the suspended device:
// its state and its queues' go to a new device from the same
// configuration, which is activated on them and suspended. The guest
// keeps its memory and rings.
func (s *sdev) moveTo() (*Device, *virtiotest.IRQ) {
	s.t.Helper()
	blob, err := s.dev.SaveState()
	if err != nil {
		s.t.Fatal(err)
	}
	d := s.newDevice()
	if err := d.RestoreState(blob); err != nil {
		s.t.Fatal(err)
	}
	qs := make([]*virtio.Queue, len(s.qs))
	for i, q := range s.qs {
		qs[i] = virtio.NewQueue(QueueSize)
		if err := qs[i].RestoreState(s.mem, q.SaveState()); err != nil {
			s.t.Fatal(err)
		}
	}
	irq := &virtiotest.IRQ{}
	d.AckFeatures(s.dev.AckedFeatures())
	if err := d.Activate(s.mem, qs, irq); err != nil {
		s.t.Fatal(err)
	}
	d.Suspend()
	s.dev, s.qs, s.irq = d, qs, irq
	return d, irq
}

func TestSuspendProcessesNothing(t *testing.T) {
	s := newSdev(t, Config{DeflateOnOOM: true})
	s.dev.Suspend()
	if !s.dev.Activated() || s.dev.life.Current() != nil {
		t.Fatalf("suspended: activated %v, worker %v", s.dev.Activated(), s.dev.life.Current())
	}
	virtiotest.WriteGuest(t, s.mem, pageBase, bytes.Repeat([]byte{0xa5}, page))
	s.post(InflateIndex, bufBase, s.writePFNs(bufBase, 0x100))
	s.post(DeflateIndex, bufBase+0x100, s.writePFNs(bufBase+0x100, 0x100))
	// No goroutine of the device exists to take them.
	for q := range 2 {
		if idx, _ := s.rings[q].UsedIdx(); idx != 0 {
			t.Fatalf("queue %d used while suspended", q)
		}
	}
	if !s.pageIs(0x100, 0xa5) || s.irq.Queues() != 0 {
		t.Fatal("the device worked while suspended")
	}
	if err := s.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	// Resume looks at every queue: the lost kicks do not matter.
	s.rings[InflateIndex].WaitUsed(t, 1)
	s.rings[DeflateIndex].WaitUsed(t, 1)
	if !s.pageIs(0x100, 0) {
		t.Fatal("inflate after resume did not discard")
	}
	// Suspend and Resume of an inactive device do nothing.
	s.dev.Reset()
	s.dev.Suspend()
	if err := s.dev.Resume(); err != nil || s.dev.Activated() {
		t.Fatalf("resume of a reset device: %v, activated %v", err, s.dev.Activated())
	}
}

// TestSuspendMidStream suspends and resumes the device over and over
// while the driver inflates: every chain the device popped is back by
// the time Suspend returns, and in the end every chain is returned once
// and every page discarded.
func TestSuspendMidStream(t *testing.T) {
	s := newSdev(t, Config{})
	const n = 200
	virtiotest.WriteGuest(t, s.mem, pageBase, bytes.Repeat([]byte{0xa5}, n*page))
	for i := range uint32(n) {
		s.writePFNs(bufBase+4*uint64(i), 0x100+i)
	}
	inflate := s.rings[InflateIndex]
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := inflate.AddChain(virtiotest.Buffer{Addr: bufBase + 4*uint64(i), Len: 4}); err != nil {
				errc <- err
				return
			}
			s.dev.QueueNotify(InflateIndex)
		}
		errc <- nil
	}()
	q := s.qs[InflateIndex]
	for range 100 {
		s.dev.Suspend()
		// Only the device touches its queue, and no goroutine of it runs.
		if st := q.SaveState(); st.NextAvail != st.NextUsed {
			t.Fatalf("suspended with %d chains popped and %d returned", st.NextAvail, st.NextUsed)
		}
		if err := s.dev.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var heads []int
	for _, u := range inflate.WaitUsed(t, n) {
		heads = append(heads, int(u.ID))
	}
	slices.Sort(heads)
	for i, h := range heads {
		if h != i {
			t.Fatalf("used heads %v, want 0..%d once each", heads, n-1)
		}
	}
	for i := range uint32(n) {
		if !s.pageIs(0x100+i, 0) {
			t.Fatalf("page %#x not discarded", 0x100+i)
		}
	}
}

// TestSuspendDefersAPI: what the API asks of the driver while the device
// is suspended reaches it on Resume, and the statistics buffer stays
// held across a plain pause.
func TestSuspendDefersAPI(t *testing.T) {
	s := newSdev(t, Config{AmountMib: 1, StatsPollingIntervalS: 3600, FreePageHinting: true})
	h := s.postStats(TagFreeMemory, 7)
	s.dev.Suspend()
	cfg0 := s.irq.Config()
	if err := s.dev.UpdateAmount(2, 16); err != nil {
		t.Fatal(err)
	}
	if err := s.dev.StartHinting(vmm.BalloonStartCmd{}); err != nil {
		t.Fatal(err)
	}
	if err := s.dev.UpdateStatsInterval(1800); err != nil {
		t.Fatal(err)
	}
	cfg := make([]byte, ConfigSize)
	s.dev.ReadConfig(0, cfg)
	if !bytes.Equal(cfg, []byte{0, 2, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0}) {
		t.Fatalf("config while suspended %x", cfg)
	}
	if s.irq.Config() != cfg0 {
		t.Fatal("config interrupt while suspended")
	}
	if idx, _ := s.rings[2].UsedIdx(); idx != 0 {
		t.Fatal("statistics buffer returned while suspended")
	}
	if st, err := s.dev.Stats(); err != nil || st.TargetMib != 2 || st.FreeMemory == nil || *st.FreeMemory != 7 {
		t.Fatalf("stats while suspended %+v, %v", st, err)
	}
	if err := s.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	// One config interrupt for both changes, and the interval change's
	// refresh returns the buffer held across the pause.
	if s.irq.Config() != cfg0+1 {
		t.Fatalf("%d config interrupts on resume, want 1", s.irq.Config()-cfg0)
	}
	if u := s.rings[2].WaitUsed(t, 1)[0]; u.ID != uint32(h) {
		t.Fatalf("stats used %+v, want head %d", u, h)
	}
}

// TestRestoreReturnsHeldStats restores a device holding the driver's
// statistics buffer into a new one: the next polling interval there
// returns that buffer, and everything else the driver and the API see
// carries over.
func TestRestoreReturnsHeldStats(t *testing.T) {
	s := newSdev(t, Config{AmountMib: 8, StatsPollingIntervalS: 3600, FreePageHinting: true, DeflateOnOOM: true})
	s.dev.WriteConfig(offActual, []byte{0, 1, 0, 0})
	h := s.postStats(TagTotalMemory, 1<<30, TagFreeMemory, 5)
	if err := s.dev.StartHinting(vmm.BalloonStartCmd{}); err != nil {
		t.Fatal(err)
	}
	cmd := make([]byte, 4)
	s.dev.ReadConfig(offHintCmd, cmd)
	virtiotest.WriteGuest(t, s.mem, bufBase+0x2000, cmd)
	hints := virtiotest.Track(&bm.FreePageHintCount)
	s.post(3, bufBase+0x2000, 4)
	s.rings[3].WaitUsed(t, 1)
	if hints.Get() != 0 {
		t.Fatal("hint count without pages")
	}
	s.dev.Suspend()
	// Polled every second from now on; the source device never resumes,
	// so the refresh this asks for never comes there.
	if err := s.dev.UpdateStatsInterval(1); err != nil {
		t.Fatal(err)
	}
	want, _ := s.dev.Stats()

	d, irq := s.moveTo()
	if got, _ := d.Stats(); statsDiff(got, want) != "" {
		t.Fatalf("restored stats: %s", statsDiff(got, want))
	}
	if hs, _ := d.HintingStatus(); hs.HostCmd != HintCmdDone || hs.GuestCmd == nil || *hs.GuestCmd != 2 {
		t.Fatalf("restored hinting %+v: want host DONE, guest 2", hs)
	}
	cfg := make([]byte, ConfigSize)
	d.ReadConfig(0, cfg)
	if !bytes.Equal(cfg, []byte{0, 8, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0}) {
		t.Fatalf("restored config %x", cfg)
	}
	if irq.Config() != 0 || irq.Queues() != 0 {
		t.Fatal("the restored device interrupted before resume")
	}
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
	if irq.Config() != 1 {
		t.Fatalf("%d config interrupts on resume: the driver must hear of DONE", irq.Config())
	}
	// The restored timer's first tick, a second on, returns the buffer.
	if u := s.rings[2].WaitUsed(t, 1)[0]; u.ID != uint32(h) {
		t.Fatalf("stats used %+v, want the held head %d", u, h)
	}
	// The driver reposts fresh numbers, and the rest works too.
	s.postStats(TagFreeMemory, 6)
	if st, _ := d.Stats(); *st.FreeMemory != 6 || *st.TotalMemory != 1<<30 || st.ActualPages != 256 {
		t.Fatalf("stats after the refresh %+v", st)
	}
	virtiotest.WriteGuest(t, s.mem, pageBase, bytes.Repeat([]byte{0xa5}, page))
	s.post(InflateIndex, bufBase, s.writePFNs(bufBase, 0x100))
	s.rings[InflateIndex].WaitUsed(t, 1)
	if !s.pageIs(0x100, 0) {
		t.Fatal("inflate on the restored device did not discard")
	}
}

func TestStateRoundTrip(t *testing.T) {
	cfg := Config{AmountMib: 3, StatsPollingIntervalS: 10, FreePageHinting: true, FreePageReporting: true}
	s := newSdev(t, cfg)
	s.dev.WriteConfig(offActual, []byte{0x40, 0, 0, 0})
	s.postStats(TagSwapIn, 1, TagDirectReclaim, 1<<60, TagHugetlbFail, 0)
	f := false
	if err := s.dev.StartHinting(vmm.BalloonStartCmd{AcknowledgeOnStop: &f}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.dev.SaveState(); !errors.Is(err, ErrRunning) {
		t.Fatalf("SaveState while running = %v", err)
	}
	s.dev.Suspend()
	// Changed while suspended: the refresh it asks for waits for Resume,
	// and the buffer stays held.
	if err := s.dev.UpdateStatsInterval(20); err != nil {
		t.Fatal(err)
	}
	blob, err := s.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	var st savedState
	if err := json.Unmarshal(blob, &st); err != nil {
		t.Fatal(err)
	}
	if st.NumPages != 3*256 || st.ActualPages != 0x40 || st.StatsPollingIntervalS != 20 || st.StatsDescIndex == nil ||
		len(st.LatestStats) != 3 || st.LatestStats["direct_reclaim"] != 1<<60 ||
		st.HintingState.HostCmd != 2 || st.HintingState.LastCmdID != 2 || st.HintingState.AcknowledgeOnFinish {
		t.Fatalf("saved %s", blob)
	}
	d := s.newDevice()
	if err := d.RestoreState(blob); err != nil {
		t.Fatal(err)
	}
	again, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, blob) {
		t.Fatalf("saved again:\n%s\nfirst:\n%s", again, blob)
	}
	// An inactive device saves too.
	fresh := s.newDevice()
	b, err := fresh.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.newDevice().RestoreState(b); err != nil {
		t.Fatalf("restoring a fresh device's state: %v", err)
	}
}

func TestRestoreStateErrors(t *testing.T) {
	cfg := Config{AmountMib: 1, StatsPollingIntervalS: 5, FreePageHinting: true}
	good := `{"num_pages":256,"actual_pages":0,"stats_polling_interval_s":5,"stats_desc_index":3,` +
		`"latest_stats":{"free_memory":1},"free_page_hinting":true,"free_page_reporting":false,` +
		`"hinting_state":{"host_cmd":0,"last_cmd_id":0,"guest_cmd":null,"acknowledge_on_finish":false}}`
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RestoreState([]byte(good)); err != nil {
		t.Fatalf("the good state: %v", err)
	}
	for _, c := range []struct{ name, data string }{
		{"empty", ""},
		{"null", "null"},
		{"truncated", good[:len(good)-1]},
		{"trailing data", good + "{}"},
		{"an array", "[]"},
		{"unknown field", strings.Replace(good, `"num_pages"`, `"pages":1,"num_pages"`, 1)},
		{"wrong type", strings.Replace(good, `"actual_pages":0`, `"actual_pages":"0"`, 1)},
		{"overflow", strings.Replace(good, `"num_pages":256`, `"num_pages":4294967296`, 1)},
		{"negative", strings.Replace(good, `"stats_desc_index":3`, `"stats_desc_index":-1`, 1)},
		{"stats buffer out of range", strings.Replace(good, `"stats_desc_index":3`, `"stats_desc_index":256`, 1)},
		{"unknown statistic", strings.Replace(good, `"free_memory"`, `"free_lunch"`, 1)},
		{"statistics off", strings.Replace(good, `"stats_polling_interval_s":5`, `"stats_polling_interval_s":0`, 1)},
		{"reporting on", strings.Replace(good, `"free_page_reporting":false`, `"free_page_reporting":true`, 1)},
		{"hinting off", strings.Replace(strings.Replace(good, `"free_page_hinting":true`, `"free_page_hinting":false`, 1), `"host_cmd":0`, `"host_cmd":2`, 1)},
	} {
		d, _ := New(cfg)
		before, _ := d.SaveState()
		if err := d.RestoreState([]byte(c.data)); !errors.Is(err, ErrState) {
			t.Errorf("%s: RestoreState = %v, want ErrState", c.name, err)
		}
		if after, _ := d.SaveState(); !bytes.Equal(after, before) {
			t.Errorf("%s: a refused state changed the device", c.name)
		}
	}
	// Statistics off in the snapshot and on in the configuration.
	off, _ := New(Config{FreePageHinting: true})
	b, _ := off.SaveState()
	if err := d.RestoreState(b); !errors.Is(err, ErrState) {
		t.Errorf("statistics mismatch: %v", err)
	}
	// Not on an active device, running or suspended.
	s := newSdev(t, cfg)
	if err := s.dev.RestoreState([]byte(good)); err == nil {
		t.Error("restored a running device")
	}
	s.dev.Suspend()
	if err := s.dev.RestoreState([]byte(good)); err == nil {
		t.Error("restored a suspended device")
	}
}

// TestResetWhileSuspended: a suspended device resets like a running one.
func TestResetWhileSuspended(t *testing.T) {
	s := newSdev(t, Config{AmountMib: 1, StatsPollingIntervalS: 3600})
	s.postStats(TagFreeMemory, 1)
	s.dev.Suspend()
	if err := s.dev.UpdateAmount(2, 16); err != nil {
		t.Fatal(err)
	}
	s.dev.Reset()
	if s.dev.Activated() {
		t.Fatal("active after reset")
	}
	if err := s.dev.UpdateAmount(3, 16); !errors.Is(err, ErrNotActivated) {
		t.Fatalf("UpdateAmount after reset = %v", err)
	}
	b, _ := s.dev.SaveState()
	var st savedState
	json.Unmarshal(b, &st)
	if st.StatsDescIndex != nil || st.LatestStats != nil || st.NumPages != 512 {
		t.Fatalf("state after reset %s", b)
	}
	// Activating again starts clean: no config interrupt is owed.
	irq := &virtiotest.IRQ{}
	for _, r := range s.rings {
		*r = *virtiotest.RingAt(t, s.mem, r.Desc, r.Size)
	}
	qs := []*virtio.Queue{s.rings[0].InitQueue(t, false), s.rings[1].InitQueue(t, false), s.rings[2].InitQueue(t, false)}
	if err := s.dev.Activate(s.mem, qs, irq); err != nil {
		t.Fatal(err)
	}
	s.dev.Suspend()
	s.dev.Resume()
	if irq.Config() != 0 {
		t.Fatal("a config interrupt from before the reset")
	}
}

// FuzzRestoreState feeds arbitrary bytes to RestoreState: it never
// panics, and a state it accepts saves back to a state that restores to
// the same.
func FuzzRestoreState(f *testing.F) {
	cfgs := []Config{
		{},
		{StatsPollingIntervalS: 5},
		{StatsPollingIntervalS: 1, FreePageHinting: true, FreePageReporting: true},
	}
	for _, c := range cfgs {
		d, _ := New(c)
		b, _ := d.SaveState()
		f.Add(b)
	}
	f.Add([]byte(`{"num_pages":256,"actual_pages":7,"stats_polling_interval_s":5,"stats_desc_index":3,` +
		`"latest_stats":{"free_memory":1,"swap_in":2},"free_page_hinting":false,"free_page_reporting":false,` +
		`"hinting_state":{"host_cmd":0,"last_cmd_id":0,"guest_cmd":null,"acknowledge_on_finish":false}}`))
	f.Add([]byte(`{"stats_polling_interval_s":1,"free_page_hinting":true,"free_page_reporting":true,` +
		`"hinting_state":{"host_cmd":5,"last_cmd_id":5,"guest_cmd":5,"acknowledge_on_finish":true}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range cfgs {
			d, _ := New(c)
			if d.RestoreState(data) != nil {
				continue
			}
			saved, err := d.SaveState()
			if err != nil {
				t.Fatal(err)
			}
			d2, _ := New(c)
			if err := d2.RestoreState(saved); err != nil {
				t.Fatalf("a saved state does not restore: %v\n%s", err, saved)
			}
			if again, _ := d2.SaveState(); !bytes.Equal(again, saved) {
				t.Fatalf("round trip:\n%s\n%s", saved, again)
			}
		}
	})
}

// TestSnapshotThroughMMIO moves a device holding the statistics buffer to
// a new one through the virtio-mmio transport; an interval change made
// while the restored VM is paused returns the buffer at once on resume.
func TestSnapshotThroughMMIO(t *testing.T) {
	cfg := Config{AmountMib: 4, StatsPollingIntervalS: 3600}
	r := newRig(t, cfg)
	r.init(256)
	r.wr(mmio.ConfigOffset+offActual, 0x200)
	b := statsBuf(TagAvailMemory, 77)
	virtiotest.WriteGuest(t, r.mem, bufBase, b)
	h := r.post(2, bufBase, uint32(len(b)), false)
	virtiotest.Eventually(t, "the report", func() bool { st, _ := r.dev.Stats(); return st.AvailableMemory != nil })

	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Reset() })
	tr, _ := virtiotest.NewTransport(t, r.mem, d)
	virtiotest.MoveState(t, r.tr, tr)
	r.dev, r.tr = d, tr
	if r.cfg(offActual) != 0x200 || r.cfg(offNumPages) != 4*256 {
		t.Fatalf("restored config: num_pages %d, actual %#x", r.cfg(offNumPages), r.cfg(offActual))
	}
	if err := d.UpdateStatsInterval(1800); err != nil {
		t.Fatal(err)
	}
	r.expectNoUsed(2)
	if err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if u := r.waitUsed(2, 1)[0]; u.ID != uint32(h) {
		t.Fatalf("stats used %+v, want the held head %d", u, h)
	}
	if st, _ := d.Stats(); *st.AvailableMemory != 77 || st.ActualPages != 0x200 {
		t.Fatalf("restored stats %+v", st)
	}
	r.fill(pageBase, page, 0xa5)
	r.post(InflateIndex, bufBase+0x100, r.writePFNs(bufBase+0x100, 0x100), false)
	r.waitUsed(InflateIndex, 1)
	if !r.pageIs(0x100, 0) {
		t.Fatal("inflate after the restore did not discard")
	}
}
