package legacy

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is an injectable host clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestRTC(t time.Time) (*RTC, *fakeClock) {
	c := &fakeClock{t: t}
	return NewRTC(c.now), c
}

// cmos reads CMOS register idx the way Linux's CMOS_READ does.
func cmos(r *RTC, idx uint8) uint8 {
	wr(r, 0, idx)
	return rd(r, 1)
}

func setCMOS(r *RTC, idx, v uint8) {
	wr(r, 0, idx)
	wr(r, 1, v)
}

func TestRTCRead(t *testing.T) {
	// A Friday, in a non-UTC zone: the RTC must show UTC.
	host := time.Date(2026, 8, 21, 14, 34, 56, 700_000_000, time.FixedZone("CEST", 2*3600))
	tests := []struct {
		name  string
		regB  uint8
		regs  map[uint8]uint8
		clock time.Time
	}{
		{"BCD 24h", regB24h, map[uint8]uint8{
			rtcSeconds: 0x56, rtcMinutes: 0x34, rtcHours: 0x12, rtcDayOfWeek: 0x06,
			rtcDayOfMonth: 0x21, rtcMonth: 0x08, rtcYear: 0x26, rtcCentury: 0x20,
		}, host},
		{"binary 24h", regB24h | regBDM, map[uint8]uint8{
			rtcSeconds: 56, rtcMinutes: 34, rtcHours: 12, rtcDayOfWeek: 6,
			rtcDayOfMonth: 21, rtcMonth: 8, rtcYear: 26, rtcCentury: 20,
		}, host},
		{"BCD 12h noon", 0, map[uint8]uint8{rtcHours: 0x12 | hourPM}, host},
		{"BCD 12h 3pm", 0, map[uint8]uint8{rtcHours: 0x03 | hourPM}, host.Add(3 * time.Hour)},
		{"BCD 12h midnight", 0, map[uint8]uint8{rtcHours: 0x12, rtcDayOfWeek: 0x07}, host.Add(12 * time.Hour)},
		{"binary 12h 11pm", regBDM, map[uint8]uint8{rtcHours: 11 | hourPM}, host.Add(11 * time.Hour)},
		{"BCD new year", regB24h, map[uint8]uint8{
			rtcSeconds: 0x00, rtcMinutes: 0x00, rtcHours: 0x00, rtcDayOfWeek: 0x06,
			rtcDayOfMonth: 0x01, rtcMonth: 0x01, rtcYear: 0x00, rtcCentury: 0x21,
		}, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRTC(tc.clock)
			setCMOS(r, rtcRegB, tc.regB)
			for idx, want := range tc.regs {
				if got := cmos(r, idx); got != want {
					t.Errorf("register %#x = %#02x, want %#02x", idx, got, want)
				}
			}
		})
	}
}

func TestRTCStatusRegisters(t *testing.T) {
	r, _ := newTestRTC(time.Now())
	checks := []struct {
		idx, want uint8
	}{
		{rtcRegA, rtcRegAV0}, // UIP clear
		{rtcRegB, regB24h},   // 24h BCD
		{rtcRegC, 0},
		{rtcRegD, regDVRT},
		{rtcRegD | nmiMask, regDVRT}, // NMI-mask bit of the index ignored
	}
	for _, c := range checks {
		if got := cmos(r, c.idx); got != c.want {
			t.Errorf("register %#x = %#x, want %#x", c.idx, got, c.want)
		}
	}
	setCMOS(r, rtcRegA, 0xff) // UIP is read-only
	setCMOS(r, rtcRegC, 0xff)
	setCMOS(r, rtcRegD, 0x00)
	if a, c, d := cmos(r, rtcRegA), cmos(r, rtcRegC), cmos(r, rtcRegD); a != 0x7f || c != 0 || d != regDVRT {
		t.Fatalf("after writes A=%#x C=%#x D=%#x", a, c, d)
	}
	if got := rd(r, 0); got != 0xff {
		t.Fatalf("index port read %#x", got)
	}
	// Alarms and the rest of the CMOS are RAM.
	for _, idx := range []uint8{0x01, 0x03, 0x05, 0x0e, 0x40, 0x7f} {
		setCMOS(r, idx, idx^0x5a)
		if got := cmos(r, idx); got != idx^0x5a {
			t.Errorf("RAM %#x = %#x", idx, got)
		}
	}
	// Wide accesses are ignored.
	b := []byte{1, 2}
	r.Read(1, b)
	r.Write(0, []byte{rtcSeconds, 0})
	if b[0] != 1 || b[1] != 2 {
		t.Fatal("wide read changed data")
	}
}

// TestRTCSetTime follows Linux's mc146818_set_time: SET on, year, month,
// day, hours, minutes, seconds, SET off.
func TestRTCSetTime(t *testing.T) {
	r, clk := newTestRTC(time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC))
	setCMOS(r, rtcRegB, regB24h|regBSet)
	for _, kv := range [][2]uint8{
		{rtcYear, 0x27}, {rtcMonth, 0x02}, {rtcDayOfMonth, 0x15}, // Jan 31 -> Feb must not overflow to March
		{rtcHours, 0x01}, {rtcMinutes, 0x02}, {rtcSeconds, 0x03},
	} {
		setCMOS(r, kv[0], kv[1])
	}
	if got := cmos(r, rtcMonth); got != 0x02 {
		t.Fatalf("frozen month %#x", got)
	}
	clk.advance(5 * time.Second) // frozen while SET
	if got := cmos(r, rtcSeconds); got != 0x03 {
		t.Fatalf("clock ran while SET: seconds %#x", got)
	}
	setCMOS(r, rtcRegB, regB24h)
	clk.advance(10 * time.Second)
	want := map[uint8]uint8{
		rtcSeconds: 0x13, rtcMinutes: 0x02, rtcHours: 0x01, rtcDayOfMonth: 0x15,
		rtcMonth: 0x02, rtcYear: 0x27, rtcCentury: 0x20, rtcDayOfWeek: 0x02, // Monday
	}
	for idx, w := range want {
		if got := cmos(r, idx); got != w {
			t.Errorf("register %#x = %#x, want %#x", idx, got, w)
		}
	}

	// A direct write without SET shifts the clock at once; binary mode.
	setCMOS(r, rtcRegB, regB24h|regBDM)
	setCMOS(r, rtcMinutes, 30)
	if got := cmos(r, rtcMinutes); got != 30 {
		t.Fatalf("minutes %d", got)
	}
	st := r.SaveState()
	r2, _ := newTestRTC(clk.now())
	if err := r2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	if got := cmos(r2, rtcMinutes); got != 30 || cmos(r2, rtcYear) != 27 {
		t.Fatalf("restored minutes %d", got)
	}
}

func isBCD(v uint8) bool { return v&0x0f <= 9 && v>>4 <= 9 }

func TestRTCGarbageWritesStayBCD(t *testing.T) {
	r, _ := newTestRTC(time.Date(2026, 8, 21, 12, 0, 0, 0, time.UTC))
	for _, idx := range []uint8{rtcSeconds, rtcMinutes, rtcHours, rtcDayOfMonth, rtcMonth, rtcYear, rtcCentury} {
		setCMOS(r, idx, 0xff)
	}
	for _, idx := range []uint8{rtcSeconds, rtcMinutes, rtcHours, rtcDayOfWeek, rtcDayOfMonth, rtcMonth, rtcYear, rtcCentury} {
		if v := cmos(r, idx); !isBCD(v) {
			t.Errorf("register %#x = %#x, not BCD", idx, v)
		}
	}
}
