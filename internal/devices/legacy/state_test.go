package legacy

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

type portDevice interface {
	Read(uint64, []byte)
	Write(uint64, []byte)
}

// jsonRoundTrip encodes v and decodes it into a fresh T, as a snapshot
// file would.
func jsonRoundTrip[T any](t testing.TB, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return out
}

// probe runs the same port accesses on a device and returns what every
// read gave. Reads have side effects (IIR, RBR, the i8042 data port), so
// the two devices must be probed with the same sequence.
type probe []step

func (p probe) run(d portDevice) []uint8 {
	var got []uint8
	for _, s := range p {
		if s.write {
			wr(d, s.off, s.val)
		} else {
			got = append(got, rd(d, s.off))
		}
	}
	return got
}

// sameReads checks that restored answers every read of p as orig does.
func sameReads(t *testing.T, orig, restored portDevice, p probe) []uint8 {
	t.Helper()
	want, got := p.run(orig), p.run(restored)
	if !bytes.Equal(got, want) {
		t.Fatalf("restored device reads\n%x\nwant\n%x", got, want)
	}
	return want
}

// serialProbe reads every register, drains the FIFO, then reads the
// divisor latch and the loopback modem status.
func serialProbe() probe {
	var p probe
	for off := uint64(regIER); off <= regSCR; off++ {
		p = append(p, r("", off, 0))
	}
	for range SerialFIFOSize + 1 {
		p = append(p, r("", regLSR, 0), r("", regData, 0), r("", regIIR, 0))
	}
	return append(p,
		r("", regLCR, 0),
		w("", regLCR, 0x80|0x1b),
		r("", regData, 0), r("", regIER, 0),
		w("", regLCR, 0x1b),
		w("", regMCR, mcrLoop|mcrDTR|mcrOUT1),
		r("", regMSR, 0),
		w("", regMCR, mcrOUT2),
		r("", regMSR, 0),
	)
}

func TestSerialSaveRestore(t *testing.T) {
	irq := &countIRQ{}
	s := newTestSerial(t, SerialConfig{Interrupt: irq, Out: &syncBuf{}})
	runSteps(t, s, []step{
		w("DLAB", regLCR, 0x80),
		w("DLL", regData, 0x01),
		w("DLM", regIER, 0x02),
		w("LCR 7E1", regLCR, 0x1a),
		w("MCR", regMCR, mcrDTR|mcrRTS|mcrOUT2),
		w("SCR", regSCR, 0x5a),
		w("IER", regIER, ierRDA|ierTHRE),
		w("THR", regData, 'x'), // THR-empty interrupt pending
	})
	if err := s.EnqueueInput([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got := rd(s, regData); got != 'h' { // acknowledges received-data
		t.Fatalf("RBR %q", got)
	}
	if err := s.EnqueueInput([]byte("!")); err != nil { // raises it again
		t.Fatal(err)
	}
	st := s.SaveState()
	want := SerialState{
		DivisorLow: 1, DivisorHigh: 2, InterruptEnable: ierRDA | ierTHRE,
		InterruptIdentification: iirTHRE | iirRDA, LineControl: 0x1a,
		LineStatus: lsrTHRE | lsrTEMT | lsrDR, ModemControl: mcrDTR | mcrRTS | mcrOUT2,
		ModemStatus: defaultMSR, Scratch: 0x5a, InBuffer: []byte("ello!"),
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("state %+v\nwant  %+v", st, want)
	}

	irq2 := &countIRQ{}
	s2 := newTestSerial(t, SerialConfig{Interrupt: irq2, Out: &syncBuf{}})
	if err := s2.RestoreState(jsonRoundTrip(t, st)); err != nil {
		t.Fatal(err)
	}
	if n := irq2.n.Load(); n != 1 {
		t.Fatalf("restore raised %d interrupts, want 1", n)
	}
	if got := s2.SaveState(); !reflect.DeepEqual(got, st) {
		t.Fatalf("restored state %+v\nwant %+v", got, st)
	}
	if c := s2.FIFOCapacity(); c != SerialFIFOSize-5 {
		t.Fatalf("FIFO capacity %d", c)
	}
	reads := sameReads(t, s, s2, serialProbe())
	// The probe saw what was saved: IIR with both causes, then the FIFO
	// (read in the second of each LSR, RBR, IIR triple from index 7).
	var fifo []byte
	for i := 8; i < 8+3*5; i += 3 {
		fifo = append(fifo, reads[i])
	}
	if reads[1] != 0xc6 || string(fifo) != "ello!" {
		t.Fatalf("probe read %x", reads)
	}
	// Both go on alike: input, output, further interrupts.
	for _, d := range []*Serial{s, s2} {
		if err := d.EnqueueInput([]byte("more")); err != nil {
			t.Fatal(err)
		}
	}
	sameReads(t, s, s2, serialProbe())
	if !reflect.DeepEqual(s.SaveState(), s2.SaveState()) {
		t.Fatalf("states diverged: %+v vs %+v", s.SaveState(), s2.SaveState())
	}
}

func TestSerialRestoreInterrupt(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ier, iir uint8
		in       string
		want     int64
	}{
		{"nothing pending", ierRDA | ierTHRE, iirNone, "", 0},
		{"THR empty pending", ierTHRE, iirTHRE, "", 1},
		{"THR empty pending but disabled", 0, iirTHRE, "", 0},
		{"received data pending", ierRDA, iirRDA, "a", 1},
		{"received data pending but disabled", ierTHRE, iirRDA, "a", 0},
		{"both pending: one edge", ierRDA | ierTHRE, iirRDA | iirTHRE, "a", 1},
		{"data acknowledged, not yet read", ierRDA, iirNone, "a", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newTestSerial(t, SerialConfig{}).SaveState()
			st.InterruptEnable, st.InterruptIdentification, st.InBuffer = tc.ier, tc.iir, []byte(tc.in)
			if tc.in != "" {
				st.LineStatus |= lsrDR
			}
			irq := &countIRQ{}
			s := newTestSerial(t, SerialConfig{Interrupt: irq})
			if err := s.RestoreState(st); err != nil {
				t.Fatal(err)
			}
			if n := irq.n.Load(); n != tc.want {
				t.Fatalf("%d interrupts, want %d", n, tc.want)
			}
		})
	}

	// A failing line is reported, with the state loaded all the same.
	st := newTestSerial(t, SerialConfig{}).SaveState()
	st.InterruptEnable, st.InterruptIdentification = ierTHRE, iirTHRE
	s := newTestSerial(t, SerialConfig{Interrupt: &countIRQ{err: errors.New("broken")}})
	var ie *InterruptError
	if err := s.RestoreState(st); !errors.As(err, &ie) {
		t.Fatalf("RestoreState: %v, want *InterruptError", err)
	}
	if got := s.SaveState(); !reflect.DeepEqual(got, st) {
		t.Fatalf("state %+v not loaded", got)
	}
}

func TestSerialRestoreInvalid(t *testing.T) {
	good := func() SerialState {
		st := newTestSerial(t, SerialConfig{}).SaveState()
		st.InBuffer = []byte("ab")
		st.LineStatus |= lsrDR
		return st
	}
	for _, tc := range []struct {
		name string
		edit func(*SerialState)
	}{
		{"FIFO too large", func(s *SerialState) { s.InBuffer = make([]byte, SerialFIFOSize+1) }},
		{"IER high bits", func(s *SerialState) { s.InterruptEnable = 0x10 }},
		{"IIR zero", func(s *SerialState) { s.InterruptIdentification = 0 }},
		{"IIR with FIFO bits", func(s *SerialState) { s.InterruptIdentification = 0xc1 }},
		{"IIR none and THRE", func(s *SerialState) { s.InterruptIdentification = iirNone | iirTHRE }},
		{"IIR unknown cause", func(s *SerialState) { s.InterruptIdentification = 0x06 | 0x08 }},
		{"RDA pending, FIFO empty", func(s *SerialState) {
			s.InterruptIdentification, s.InBuffer, s.LineStatus = iirRDA, nil, defaultLSR
		}},
		{"LSR without DR, data buffered", func(s *SerialState) { s.LineStatus = defaultLSR }},
		{"LSR with DR, FIFO empty", func(s *SerialState) { s.InBuffer = nil }},
		{"LSR without THRE", func(s *SerialState) { s.LineStatus = lsrDR | lsrTEMT }},
		{"LSR error bits", func(s *SerialState) { s.LineStatus |= 0x1e }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := good()
			tc.edit(&st)
			irq := &countIRQ{}
			s := newTestSerial(t, SerialConfig{Interrupt: irq})
			before := s.SaveState()
			if err := s.RestoreState(st); err == nil {
				t.Fatalf("state %+v restored", st)
			}
			if got := s.SaveState(); !reflect.DeepEqual(got, before) || irq.n.Load() != 0 {
				t.Fatalf("failed restore changed the UART: %+v", got)
			}
			if _, err := NewSerial(SerialConfig{State: &st}); err == nil {
				t.Fatal("NewSerial accepted the state")
			}
		})
	}
	if err := newTestSerial(t, SerialConfig{}).RestoreState(good()); err != nil {
		t.Fatalf("good state: %v", err)
	}
	var st SerialState
	if err := json.Unmarshal([]byte(`{"scratch":256}`), &st); err == nil {
		t.Fatal("out-of-range register decoded")
	}
}

// i8042Probe reads status and drains the buffer, completes a pending
// command, then reads the command byte and output port back.
func i8042Probe() probe {
	p := probe{r("", i8042OfsStatus, 0)}
	for range i8042BufSize + 1 {
		p = append(p, r("", i8042OfsData, 0), r("", i8042OfsStatus, 0))
	}
	return append(p,
		w("", i8042OfsData, 0x03), // argument of a pending command, else a keyboard command
		r("", i8042OfsStatus, 0), r("", i8042OfsData, 0),
		w("", i8042OfsStatus, cmdReadCTR), r("", i8042OfsData, 0),
		w("", i8042OfsStatus, cmdReadOutp), r("", i8042OfsData, 0),
		r("", i8042OfsStatus, 0),
	)
}

func TestI8042SaveRestore(t *testing.T) {
	d, _, _ := newTestI8042()
	runSteps(t, d, []step{
		w("write CTR", i8042OfsStatus, cmdWriteCTR),
		w("CTR", i8042OfsData, 0x47),
		w("write output port", i8042OfsStatus, cmdWriteOutp),
		w("output port", i8042OfsData, 0xdf),
	})
	if err := d.SendCtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	runSteps(t, d, []step{
		r("Ctrl", i8042OfsData, 0x14),
		w("write output port, argument to come", i8042OfsStatus, cmdWriteOutp),
	})
	st := d.SaveState()
	want := I8042State{
		Status: sbKbdEnabled | sbOutDataAvail | sbCmdData, Control: 0x47,
		OutputPort: 0xdf, Command: cmdWriteOutp, Buffer: []byte{0x11, 0xe0, 0x71},
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("state %+v\nwant  %+v", st, want)
	}

	d2, irq2, _ := newTestI8042()
	if err := d2.RestoreState(jsonRoundTrip(t, st)); err != nil {
		t.Fatal(err)
	}
	if n := irq2.n.Load(); n != 1 {
		t.Fatalf("restore raised %d interrupts, want 1", n)
	}
	if got := d2.SaveState(); !reflect.DeepEqual(got, st) {
		t.Fatalf("restored state %+v\nwant %+v", got, st)
	}
	reads := sameReads(t, d, d2, i8042Probe())
	if !bytes.Equal(reads[:7], []byte{0x19, 0x11, 0x19, 0xe0, 0x19, 0x71, 0x18}) {
		t.Fatalf("probe read %x", reads)
	}
	if !reflect.DeepEqual(d.SaveState(), d2.SaveState()) {
		t.Fatal("states diverged")
	}
	// Ctrl-Alt-Del still fits and arrives in both.
	for _, d := range []*I8042{d, d2} {
		if err := d.SendCtrlAltDel(); err != nil {
			t.Fatal(err)
		}
	}
	sameReads(t, d, d2, i8042Probe())
}

func TestI8042RestoreInterrupt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		control uint8
		buf     []byte
		want    int64
	}{
		{"empty", cbKbdInt, nil, 0},
		{"data, interrupt enabled", cbKbdInt | cbPostOK, []byte{0xfa}, 1},
		{"data, interrupt disabled", cbPostOK, []byte{0xfa}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := I8042State{Status: sbKbdEnabled, Control: tc.control, Buffer: tc.buf}
			if len(tc.buf) > 0 {
				st.Status |= sbOutDataAvail
			}
			d, irq, _ := newTestI8042()
			if err := d.RestoreState(st); err != nil {
				t.Fatal(err)
			}
			if n := irq.n.Load(); n != tc.want {
				t.Fatalf("%d interrupts, want %d", n, tc.want)
			}
		})
	}
	d := NewI8042(&countIRQ{err: errors.New("broken")}, nil)
	var ke *KbdInterruptError
	st := I8042State{Status: sbKbdEnabled | sbOutDataAvail, Control: cbKbdInt, Buffer: []byte{1}}
	if err := d.RestoreState(st); !errors.As(err, &ke) {
		t.Fatalf("RestoreState: %v, want *KbdInterruptError", err)
	}
	if got := rd(d, i8042OfsStatus); got != sbKbdEnabled|sbOutDataAvail {
		t.Fatalf("state not loaded: status %#x", got)
	}
}

func TestI8042RestoreInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   I8042State
	}{
		{"buffer too large", I8042State{Status: sbOutDataAvail, Buffer: make([]byte, i8042BufSize+1)}},
		{"unknown status bit", I8042State{Status: sbKbdEnabled | 0x02}},
		{"data available, buffer empty", I8042State{Status: sbOutDataAvail}},
		{"buffer without data available", I8042State{Buffer: []byte{1}}},
		{"unknown command", I8042State{Command: 0x42}},
		{"argument awaited, no command", I8042State{Status: sbCmdData}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, irq, _ := newTestI8042()
			before := d.SaveState()
			if err := d.RestoreState(tc.st); err == nil {
				t.Fatalf("state %+v restored", tc.st)
			}
			if got := d.SaveState(); !reflect.DeepEqual(got, before) || irq.n.Load() != 0 {
				t.Fatalf("failed restore changed the controller: %+v", got)
			}
		})
	}
}

// rtcProbe reads the selected register, then every register in turn.
func rtcProbe() probe {
	p := probe{r("", 1, 0), r("", 0, 0)}
	for idx := range uint8(CMOSSize) {
		p = append(p, w("", 0, idx), r("", 1, 0))
	}
	return p
}

func TestRTCSaveRestore(t *testing.T) {
	t0 := time.Date(2026, 8, 21, 12, 34, 56, 0, time.UTC)
	r, clk := newTestRTC(t0)
	setCMOS(r, rtcRegA, regAUIP|0x2f) // UIP is not writable
	setCMOS(r, rtcRegB, regB24h)
	setCMOS(r, rtcMinutes, 0x07) // guest clock 12:07:56 + 1 year
	setCMOS(r, rtcYear, 0x27)
	setCMOS(r, 0x01, 0x30) // alarm seconds
	setCMOS(r, 0x40, 0x99) // plain CMOS RAM
	wr(r, 0, 0x80|0x40)    // select with NMI mask
	st := r.SaveState()
	if st.Index != 0x40 || st.CMOS[0x40] != 0x99 || st.CMOS[rtcRegA] != 0x2f || st.Held != nil {
		t.Fatalf("state %+v", st)
	}

	r2, clk2 := newTestRTC(t0)
	if err := r2.RestoreState(jsonRoundTrip(t, st)); err != nil {
		t.Fatal(err)
	}
	if got := r2.SaveState(); !reflect.DeepEqual(got, st) {
		t.Fatalf("restored state %+v\nwant %+v", got, st)
	}
	reads := sameReads(t, r, r2, rtcProbe())
	if reads[0] != 0x99 || reads[2+rtcMinutes] != 0x07 || reads[2+rtcYear] != 0x27 {
		t.Fatalf("probe read %x", reads)
	}
	// The clocks keep running alike.
	clk.advance(90 * time.Second)
	clk2.advance(90 * time.Second)
	sameReads(t, r, r2, rtcProbe())

	// Wall-clock based: restored later, the guest sees the time elapsed.
	r3, _ := newTestRTC(t0.Add(time.Hour))
	if err := r3.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	if h, m := cmos(r3, rtcHours), cmos(r3, rtcMinutes); h != 0x13 || m != 0x07 {
		t.Fatalf("an hour later the guest reads %02x:%02x, want 13:07", h, m)
	}
}

func TestRTCSaveRestoreWhileSetting(t *testing.T) {
	t0 := time.Date(2026, 8, 21, 12, 34, 56, 0, time.UTC)
	r, clk := newTestRTC(t0)
	setCMOS(r, rtcRegB, regBSet|regB24h|regBDM)
	setCMOS(r, rtcMonth, 2)
	setCMOS(r, rtcDayOfMonth, 31) // Feb 31 held unnormalised
	setCMOS(r, rtcHours, 200)     // garbage a guest may write
	st := r.SaveState()
	wantHeld := RTCTime{Second: 56, Minute: 34, Hour: 200, Day: 31, Month: 2, Year: 2026}
	if st.Held == nil || *st.Held != wantHeld {
		t.Fatalf("held %+v, want %+v", st.Held, wantHeld)
	}
	r2, clk2 := newTestRTC(t0.Add(time.Hour)) // the held clock does not run
	if err := r2.RestoreState(jsonRoundTrip(t, st)); err != nil {
		t.Fatal(err)
	}
	if got := r2.SaveState(); !reflect.DeepEqual(got, st) {
		t.Fatalf("restored state %+v\nwant %+v", got, st)
	}
	clk.advance(time.Hour)
	sameReads(t, r, r2, rtcProbe())
	// Releasing SET commits the held time in both.
	setCMOS(r, rtcHours, 9)
	setCMOS(r2, rtcHours, 9)
	setCMOS(r, rtcRegB, regB24h|regBDM)
	setCMOS(r2, rtcRegB, regB24h|regBDM)
	clk.advance(time.Minute)
	clk2.advance(time.Minute)
	reads := sameReads(t, r, r2, rtcProbe())
	if reads[2+rtcMonth] != 3 || reads[2+rtcDayOfMonth] != 3 || reads[2+rtcHours] != 9 {
		t.Fatalf("committed date %d-%d %d:..", reads[2+rtcMonth], reads[2+rtcDayOfMonth], reads[2+rtcHours])
	}
}

func TestRTCRestoreInvalid(t *testing.T) {
	good := func() RTCState {
		r, _ := newTestRTC(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		return r.SaveState()
	}
	setB := func(st *RTCState) { st.CMOS[rtcRegB] |= regBSet }
	for _, tc := range []struct {
		name string
		edit func(*RTCState)
	}{
		{"index with NMI bit", func(s *RTCState) { s.Index = 0x80 }},
		{"CMOS missing", func(s *RTCState) { s.CMOS = nil }},
		{"CMOS short", func(s *RTCState) { s.CMOS = s.CMOS[:CMOSSize-1] }},
		{"CMOS long", func(s *RTCState) { s.CMOS = append(s.CMOS, 0) }},
		{"seconds stored", func(s *RTCState) { s.CMOS[rtcSeconds] = 1 }},
		{"century stored", func(s *RTCState) { s.CMOS[rtcCentury] = 0x20 }},
		{"register C stored", func(s *RTCState) { s.CMOS[rtcRegC] = 0x80 }},
		{"register D stored", func(s *RTCState) { s.CMOS[rtcRegD] = regDVRT }},
		{"update in progress", func(s *RTCState) { s.CMOS[rtcRegA] |= regAUIP }},
		{"offset too far ahead", func(s *RTCState) { s.OffsetSeconds = maxRTCOffset + 1 }},
		{"offset too far behind", func(s *RTCState) { s.OffsetSeconds = -maxRTCOffset - 1 }},
		{"SET without held time", setB},
		{"held time without SET", func(s *RTCState) { s.Held = &RTCTime{Day: 1, Month: 1} }},
		{"held field negative", func(s *RTCState) { setB(s); s.Held = &RTCTime{Second: -1} }},
		{"held field too large", func(s *RTCState) { setB(s); s.Held = &RTCTime{Month: 256} }},
		{"held year too large", func(s *RTCState) { setB(s); s.Held = &RTCTime{Year: maxRTCYear + 1} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := good()
			tc.edit(&st)
			r, _ := newTestRTC(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			before := r.SaveState()
			if err := r.RestoreState(st); err == nil {
				t.Fatalf("state %+v restored", st)
			}
			if got := r.SaveState(); !reflect.DeepEqual(got, before) {
				t.Fatalf("failed restore changed the RTC: %+v", got)
			}
		})
	}
}

// A guest writing absurd dates can move its clock far, but never into a
// state its snapshot cannot be restored from.
func TestRTCGuestClockStaysRestorable(t *testing.T) {
	roundTrip := func(what string, r *RTC) {
		t.Helper()
		st := r.SaveState()
		if err := r.RestoreState(st); err != nil {
			t.Fatalf("%s: %v (%+v)", what, err, st.Held)
		}
	}
	const binary = regB24h | regBDM
	r, _ := newTestRTC(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	setCMOS(r, rtcRegB, binary)
	setCMOS(r, rtcCentury, 0xff)
	setCMOS(r, rtcMonth, 0xff)
	roundTrip("far future", r)

	// While SET is held each year write can add two centuries.
	setCMOS(r, rtcRegB, regBSet|binary)
	for range 10000 {
		setCMOS(r, rtcYear, 0xff)
	}
	roundTrip("far future, SET held", r)
	setCMOS(r, rtcRegB, binary)
	roundTrip("far future committed", r)

	// Month 0 takes the committed year down by one, after which a year
	// write takes it down a century.
	for range 1000 {
		setCMOS(r, rtcRegB, regBSet|binary)
		setCMOS(r, rtcYear, 0)
		setCMOS(r, rtcMonth, 0)
		setCMOS(r, rtcRegB, binary)
	}
	roundTrip("far past", r)
	if st := r.SaveState(); st.OffsetSeconds != -maxRTCOffset {
		t.Fatalf("offset %d, want the bound", st.OffsetSeconds)
	}
}
