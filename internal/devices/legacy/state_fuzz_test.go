package legacy

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"
	"time"
)

// The FuzzXxxRestoreState targets feed JSON to RestoreState, as a snapshot
// file would: a state is either refused, leaving the device untouched, or
// loaded exactly, after which the device works without panicking.

func addJSONSeed(f *testing.F, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
}

// pokeAll reads every port, writes a few values, and reads again.
func pokeAll(d portDevice, size uint64) {
	for pass := range 2 {
		for off := range size + 1 {
			rd(d, off)
		}
		for off := range size {
			wr(d, off, uint8(0x5a+pass+int(off)))
		}
	}
}

func FuzzSerialRestoreState(f *testing.F) {
	s, err := NewSerial(SerialConfig{})
	if err != nil {
		f.Fatal(err)
	}
	addJSONSeed(f, s.SaveState())
	wr(s, regIER, ierRDA|ierTHRE)
	wr(s, regData, 'x')
	_ = s.EnqueueInput([]byte("abc"))
	addJSONSeed(f, s.SaveState())
	f.Add([]byte(`{"line_status":97,"in_buffer":"` + string(bytes.Repeat([]byte("QUFB"), 22)) + `"}`))
	f.Add([]byte(`{"interrupt_identification":4,"line_status":96}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st SerialState
		if json.Unmarshal(data, &st) != nil {
			return
		}
		s, err := NewSerial(SerialConfig{Interrupt: &countIRQ{}, Out: io.Discard, OutputBuffer: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fresh := s.SaveState()
		if err := s.RestoreState(st); err != nil {
			if got := s.SaveState(); !reflect.DeepEqual(got, fresh) {
				t.Fatalf("refused state %+v changed the UART to %+v", st, got)
			}
		} else {
			got := s.SaveState()
			if !bytes.Equal(got.InBuffer, st.InBuffer) {
				t.Fatalf("FIFO %x, restored %x", got.InBuffer, st.InBuffer)
			}
			got.InBuffer = st.InBuffer
			if !reflect.DeepEqual(got, st) {
				t.Fatalf("state %+v, restored %+v", got, st)
			}
		}
		pokeAll(s, SerialSize)
		_ = s.EnqueueInput([]byte("in"))
		pokeAll(s, SerialSize)
	})
}

func FuzzI8042RestoreState(f *testing.F) {
	d := NewI8042(nil, nil)
	addJSONSeed(f, d.SaveState())
	_ = d.SendCtrlAltDel()
	wr(d, i8042OfsStatus, cmdWriteOutp)
	addJSONSeed(f, d.SaveState())
	f.Add([]byte(`{"status":17,"buffer":"AAAAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Add([]byte(`{"status":24,"command":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st I8042State
		if json.Unmarshal(data, &st) != nil {
			return
		}
		d := NewI8042(&countIRQ{}, func() {})
		fresh := d.SaveState()
		if err := d.RestoreState(st); err != nil {
			if got := d.SaveState(); !reflect.DeepEqual(got, fresh) {
				t.Fatalf("refused state %+v changed the controller to %+v", st, got)
			}
		} else {
			got := d.SaveState()
			if !bytes.Equal(got.Buffer, st.Buffer) {
				t.Fatalf("buffer %x, restored %x", got.Buffer, st.Buffer)
			}
			got.Buffer = st.Buffer
			if !reflect.DeepEqual(got, st) {
				t.Fatalf("state %+v, restored %+v", got, st)
			}
		}
		pokeAll(d, I8042Size)
		_ = d.SendCtrlAltDel()
		pokeAll(d, I8042Size)
	})
}

func FuzzRTCRestoreState(f *testing.F) {
	clk := &fakeClock{t: time.Date(2026, 8, 21, 12, 34, 56, 0, time.UTC)}
	r := NewRTC(clk.now)
	addJSONSeed(f, r.SaveState())
	setCMOS(r, rtcRegB, regBSet|regB24h)
	setCMOS(r, rtcDayOfMonth, 0x31)
	addJSONSeed(f, r.SaveState())
	f.Add([]byte(`{"index":127,"cmos":"` + string(bytes.Repeat([]byte("AAAA"), 43)) + `","offset_seconds":-1099511627776}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st RTCState
		if json.Unmarshal(data, &st) != nil {
			return
		}
		clk := &fakeClock{t: time.Date(2026, 8, 21, 12, 34, 56, 0, time.UTC)}
		r := NewRTC(clk.now)
		fresh := r.SaveState()
		if err := r.RestoreState(st); err != nil {
			if got := r.SaveState(); !reflect.DeepEqual(got, fresh) {
				t.Fatalf("refused state %+v changed the RTC to %+v", st, got)
			}
		} else if got := r.SaveState(); !reflect.DeepEqual(got, st) {
			t.Fatalf("state %+v, restored %+v", got, st)
		}
		// Every register reads sanely; then clear SET and read again.
		for idx := range uint8(CMOSSize) {
			wr(r, 0, idx)
			checkRTCRead(t, idx, r.ram[rtcRegB], rd(r, 1))
		}
		setCMOS(r, rtcRegB, regB24h)
		clk.advance(time.Hour)
		for idx := range uint8(CMOSSize) {
			wr(r, 0, idx)
			checkRTCRead(t, idx, r.ram[rtcRegB], rd(r, 1))
		}
		if err := NewRTC(clk.now).RestoreState(r.SaveState()); err != nil {
			t.Fatalf("state reached after a restore is refused: %v", err)
		}
	})
}
