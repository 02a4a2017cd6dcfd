package legacy

import (
	"sync"
	"time"

	"github.com/squib-vmm/squib/internal/devices"
)

// The CMOS RTC at its PC ports: index at 0x70, data at 0x71. Firecracker
// has no such device; see the package documentation for why squib does.
const (
	RTCBase = 0x70 // index port
	RTCSize = 2    // ports claimed on the bus
)

// CMOSSize is the number of CMOS bytes addressable through the index port
// (7 bits; bit 7 of the index is the NMI mask, which is ignored).
const CMOSSize = 128

// CMOS register indexes.
const (
	rtcSeconds    = 0x00
	rtcMinutes    = 0x02
	rtcHours      = 0x04
	rtcDayOfWeek  = 0x06
	rtcDayOfMonth = 0x07
	rtcMonth      = 0x08
	rtcYear       = 0x09
	rtcRegA       = 0x0a
	rtcRegB       = 0x0b
	rtcRegC       = 0x0c
	rtcRegD       = 0x0d
	rtcCentury    = 0x32 // where ACPI's FADT.century conventionally points

	regAUIP   = 0x80 // update in progress: never set, so readers never wait
	regBSet   = 0x80 // guest is setting the clock: updates frozen
	regBDM    = 0x04 // data mode: 1 = binary, 0 = BCD
	regB24h   = 0x02 // 24-hour mode
	regDVRT   = 0x80 // valid RAM and time
	hourPM    = 0x80 // PM flag of the hours register in 12-hour mode
	nmiMask   = 0x80 // index port bit, ignored
	rtcRegAV0 = 0x26 // 32.768 kHz time base, 1024 Hz rate: the PC default
)

// rtcFields is a broken-down guest time. While the guest holds regB.SET it
// writes the fields one by one, so they are kept unnormalised until SET is
// released (Linux writes the month before the day: normalising Feb 31 on
// the way would corrupt the date).
type rtcFields struct {
	sec, min, hour, mday, mon, year int
}

func fieldsOf(t time.Time) rtcFields {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return rtcFields{sec: s, min: mi, hour: h, mday: d, mon: int(mo), year: y}
}

func (f rtcFields) time() time.Time {
	return time.Date(f.year, time.Month(f.mon), f.mday, f.hour, f.min, f.sec, 0, time.UTC)
}

var _ devices.Device = (*RTC)(nil)

// RTC is a minimal MC146818 CMOS real-time clock. The time registers read
// the host's UTC clock plus an offset that guest writes adjust (so
// hwclock --systohc and the kernel's NTP sync behave, without touching the
// host); the day of the week is derived from the date and writes to it are
// ignored. Register A never shows update-in-progress, register D always
// reports valid RAM and time, register C reads 0: no periodic, alarm or
// update interrupt is ever raised, which a Linux guest only needs for
// /dev/rtc alarms and RTC_UIE (hwclock falls back to polling). Alarm
// registers and the rest of the CMOS are plain RAM.
type RTC struct {
	mu     sync.Mutex
	now    func() time.Time
	index  uint8
	ram    [CMOSSize]byte
	offset int64     // seconds
	frozen rtcFields // the clock while regB.SET is held
}

// NewRTC returns an RTC in 24-hour BCD mode, the PC default. now is the
// host clock (nil means time.Now); tests inject a fixed one.
func NewRTC(now func() time.Time) *RTC {
	if now == nil {
		now = time.Now
	}
	r := &RTC{now: now}
	r.ram[rtcRegA] = rtcRegAV0
	r.ram[rtcRegB] = regB24h
	return r
}

// running returns the guest clock from the host clock.
func (r *RTC) running() rtcFields {
	return fieldsOf(time.Unix(r.now().Unix()+r.offset, 0).UTC())
}

func (r *RTC) current() rtcFields {
	if r.ram[rtcRegB]&regBSet != 0 {
		return r.frozen
	}
	return r.running()
}

// Bounds on the guest clock. A guest writing silly values can move its
// clock by up to a few centuries per write; clamping keeps every state it
// can reach within what RestoreState accepts, so a guest cannot make its
// own snapshot unloadable.
const (
	maxRTCOffset = 1 << 40 // seconds, about 34,800 years either way
	maxRTCYear   = 1000000 // of the clock held while regB.SET is set
)

// commit makes f the guest clock from now on.
func (r *RTC) commit(f rtcFields) {
	r.offset = min(max(f.time().Unix()-r.now().Unix(), -maxRTCOffset), maxRTCOffset)
}

func (r *RTC) binary() bool { return r.ram[rtcRegB]&regBDM != 0 }

// encode renders v in the guest's data mode. Values come from a time or
// from a decoded byte, so they are never negative.
func (r *RTC) encode(v int) uint8 {
	if r.binary() {
		return uint8(v)
	}
	v %= 100
	return uint8(v/10<<4 | v%10)
}

func (r *RTC) decode(b uint8) int {
	if r.binary() {
		return int(b)
	}
	return int(b>>4)*10 + int(b&0x0f)
}

// Read implements devices.Device: offset 0 is the write-only index port
// (reads 0xFF, like an open bus), offset 1 the selected register.
func (r *RTC) Read(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	if offset != 1 {
		data[0] = 0xff
		return
	}
	r.mu.Lock()
	data[0] = r.readReg(r.index)
	r.mu.Unlock()
}

// Write implements devices.Device: offset 0 selects a register, offset 1
// writes it.
func (r *RTC) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch offset {
	case 0:
		r.index = data[0] &^ nmiMask
	case 1:
		r.writeReg(r.index, data[0])
	}
}

func (r *RTC) readReg(idx uint8) uint8 {
	switch idx {
	case rtcSeconds, rtcMinutes, rtcHours, rtcDayOfWeek, rtcDayOfMonth, rtcMonth, rtcYear, rtcCentury:
		f := r.current()
		switch idx {
		case rtcSeconds:
			return r.encode(f.sec)
		case rtcMinutes:
			return r.encode(f.min)
		case rtcHours:
			return r.encodeHours(f.hour)
		case rtcDayOfWeek:
			return r.encode(int(f.time().Weekday()) + 1) // Sunday = 1
		case rtcDayOfMonth:
			return r.encode(f.mday)
		case rtcMonth:
			return r.encode(f.mon)
		case rtcYear:
			return r.encode(mod(f.year, 100))
		default:
			return r.encode(max(f.year, 0) / 100)
		}
	case rtcRegA:
		return r.ram[rtcRegA] &^ regAUIP
	case rtcRegC:
		return 0 // no interrupt flags, ever
	case rtcRegD:
		return regDVRT
	}
	return r.ram[idx]
}

func (r *RTC) encodeHours(h int) uint8 {
	if r.ram[rtcRegB]&regB24h != 0 {
		return r.encode(h)
	}
	h = mod(h, 24)
	h12 := h % 12
	if h12 == 0 {
		h12 = 12
	}
	v := r.encode(h12)
	if h >= 12 {
		v |= hourPM
	}
	return v
}

func (r *RTC) decodeHours(b uint8) int {
	if r.ram[rtcRegB]&regB24h != 0 {
		return r.decode(b)
	}
	h := r.decode(b&^hourPM) % 12
	if b&hourPM != 0 {
		h += 12
	}
	return h
}

func (r *RTC) writeReg(idx, v uint8) {
	switch idx {
	case rtcSeconds, rtcMinutes, rtcHours, rtcDayOfMonth, rtcMonth, rtcYear, rtcCentury:
		f := r.current()
		switch idx {
		case rtcSeconds:
			f.sec = r.decode(v)
		case rtcMinutes:
			f.min = r.decode(v)
		case rtcHours:
			f.hour = r.decodeHours(v)
		case rtcDayOfMonth:
			f.mday = r.decode(v)
		case rtcMonth:
			f.mon = r.decode(v)
		case rtcYear:
			f.year = f.year - mod(f.year, 100) + r.decode(v)
		default:
			f.year = r.decode(v)*100 + mod(f.year, 100)
		}
		if r.ram[rtcRegB]&regBSet != 0 {
			f.year = min(max(f.year, -maxRTCYear), maxRTCYear)
			r.frozen = f
		} else {
			r.commit(f)
		}
	case rtcDayOfWeek:
		// Derived from the date.
	case rtcRegA:
		r.ram[rtcRegA] = v &^ regAUIP
	case rtcRegB:
		wasSet := r.ram[rtcRegB]&regBSet != 0
		if !wasSet && v&regBSet != 0 {
			r.frozen = r.running()
		}
		r.ram[rtcRegB] = v
		if wasSet && v&regBSet == 0 {
			r.commit(r.frozen)
		}
	case rtcRegC, rtcRegD:
		// Read-only.
	default:
		r.ram[idx] = v
	}
}

// mod is the non-negative remainder, for years before 0 that a guest can
// reach by writing silly values.
func mod(a, b int) int {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
