package legacy

import "fmt"

// RTCState is the RTC's state for snapshots. The guest clock is kept as an
// offset from the host's UTC clock, so after a restore it reads the time
// the guest had set plus the wall-clock time elapsed since the snapshot,
// as a battery-backed RTC would.
type RTCState struct {
	// Index is the selected CMOS register (0-127; the NMI-mask bit is not
	// kept).
	Index uint8 `json:"index"`
	// CMOS is the CMOSSize bytes of CMOS. The clock registers (0x00-0x09
	// and the century at 0x32) and registers C and D are computed on
	// every read and are 0 here; register A never has update-in-progress.
	CMOS []byte `json:"cmos"`
	// OffsetSeconds is the guest clock minus the host's UTC clock.
	OffsetSeconds int64 `json:"offset_seconds"`
	// Held is the clock the guest is writing, present exactly while it
	// has the SET bit of register B: the clock is frozen then and takes
	// this value when SET is cleared.
	Held *RTCTime `json:"held,omitempty"`
}

// RTCTime is a broken-down guest time as the guest wrote it: plain
// integers (not BCD), the hour in 0-23 form, not yet normalised (a month
// of 2 with a day of 31 is kept as such until the guest clears SET).
type RTCTime struct {
	Second int `json:"second"`
	Minute int `json:"minute"`
	Hour   int `json:"hour"`
	Day    int `json:"day"`
	Month  int `json:"month"`
	Year   int `json:"year"`
}

// SaveState returns the RTC's state for a snapshot.
func (r *RTC) SaveState() RTCState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := RTCState{Index: r.index, CMOS: append([]byte(nil), r.ram[:]...), OffsetSeconds: r.offset}
	if r.ram[rtcRegB]&regBSet != 0 {
		f := r.frozen
		st.Held = &RTCTime{Second: f.sec, Minute: f.min, Hour: f.hour, Day: f.mday, Month: f.mon, Year: f.year}
	}
	return st
}

// computedCMOS lists the registers the RTC computes rather than stores.
var computedCMOS = [...]uint8{
	rtcSeconds, rtcMinutes, rtcHours, rtcDayOfWeek, rtcDayOfMonth, rtcMonth,
	rtcYear, rtcCentury, rtcRegC, rtcRegD,
}

// validate rejects states the RTC cannot reach.
func (st *RTCState) validate() error {
	if st.Index >= CMOSSize {
		return fmt.Errorf("rtc state: index %#02x out of range", st.Index)
	}
	if len(st.CMOS) != CMOSSize {
		return fmt.Errorf("rtc state: CMOS has %d bytes, want %d", len(st.CMOS), CMOSSize)
	}
	for _, idx := range computedCMOS {
		if st.CMOS[idx] != 0 {
			return fmt.Errorf("rtc state: computed register %#02x stored as %#02x, want 0", idx, st.CMOS[idx])
		}
	}
	if st.CMOS[rtcRegA]&regAUIP != 0 {
		return fmt.Errorf("rtc state: register A %#02x has update-in-progress set", st.CMOS[rtcRegA])
	}
	if st.OffsetSeconds < -maxRTCOffset || st.OffsetSeconds > maxRTCOffset {
		return fmt.Errorf("rtc state: clock offset %d s out of range", st.OffsetSeconds)
	}
	set := st.CMOS[rtcRegB]&regBSet != 0
	switch {
	case set && st.Held == nil:
		return fmt.Errorf("rtc state: register B has SET but no held time")
	case !set && st.Held != nil:
		return fmt.Errorf("rtc state: held time without SET in register B")
	case set:
		h := st.Held
		// Each field comes from a time or from one decoded byte.
		for _, v := range [...]int{h.Second, h.Minute, h.Hour, h.Day, h.Month} {
			if v < 0 || v > 0xff {
				return fmt.Errorf("rtc state: held time %+v has a field out of range", *h)
			}
		}
		if h.Year < -maxRTCYear || h.Year > maxRTCYear {
			return fmt.Errorf("rtc state: held year %d out of range", h.Year)
		}
	}
	return nil
}

// RestoreState loads a state from SaveState into an RTC fresh from NewRTC.
// An invalid state is refused with an error and leaves the RTC as it was.
// The RTC raises no interrupts, so there is nothing to signal again.
func (r *RTC) RestoreState(st RTCState) error {
	if err := st.validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index, r.offset = st.Index, st.OffsetSeconds
	copy(r.ram[:], st.CMOS)
	r.frozen = rtcFields{}
	if h := st.Held; h != nil {
		r.frozen = rtcFields{sec: h.Second, min: h.Minute, hour: h.Hour, mday: h.Day, mon: h.Month, year: h.Year}
	}
	return nil
}
