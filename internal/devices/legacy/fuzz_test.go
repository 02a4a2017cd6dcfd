package legacy

import (
	"io"
	"testing"
	"time"
)

// The fuzz targets read their input as 3-byte operations (kind, offset,
// value) and check the device's invariants after each one.

func FuzzSerial(f *testing.F) {
	f.Add([]byte{1, regIER, ierRDA | ierTHRE, 2, 0, 70, 0, regData, 0, 1, regMCR, mcrLoop, 1, regData, 'x'})
	f.Add([]byte{1, regLCR, 0x80, 1, regData, 1, 0, regData, 0, 1, regLCR, 3, 1, regData, 'a', 0, regIIR, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s, err := NewSerial(SerialConfig{Interrupt: &countIRQ{}, Out: io.Discard, Limiter: &allowN{100}, OutputBuffer: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := 0; i+2 < len(ops); i += 3 {
			kind, off, v := ops[i]%4, uint64(ops[i+1]%10), ops[i+2]
			switch kind {
			case 0:
				b := []byte{0}
				s.Read(off, b)
				if off == regIIR {
					if low := b[0] &^ iirFIFO; low != iirNone && low != iirTHRE && low != iirRDA && low != iirTHRE|iirRDA {
						t.Fatalf("IIR read %#x", b[0])
					}
				}
			case 1:
				s.Write(off, []byte{v})
			case 2:
				_ = s.EnqueueInput(make([]byte, v%(SerialFIFOSize+8)))
			case 3:
				s.Read(off, make([]byte, 1+int(v%3))) // wide and odd sizes
			}
			s.mu.Lock()
			n, lsr, iir := s.n, s.lsr, s.iir
			s.mu.Unlock()
			if n < 0 || n > SerialFIFOSize {
				t.Fatalf("FIFO holds %d bytes", n)
			}
			if (lsr&lsrDR != 0) != (n > 0) {
				t.Fatalf("LSR %#x with %d bytes queued", lsr, n)
			}
			if iir != iirNone && iir != iirTHRE && iir != iirRDA && iir != iirTHRE|iirRDA {
				t.Fatalf("IIR state %#x", iir)
			}
			if c := s.FIFOCapacity(); c != SerialFIFOSize-n {
				t.Fatalf("capacity %d with %d queued", c, n)
			}
		}
	})
}

func FuzzI8042(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 4, 0, 1, 4, cmdWriteCTR, 1, 0, 0, 2, 0, 0, 1, 4, cmdResetCPU})
	f.Add([]byte{1, 4, cmdReadCTR, 0, 0, 0, 1, 4, cmdWriteOutp, 1, 0, 0x55, 1, 4, cmdReadOutp, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var resets int
		d := NewI8042(&countIRQ{}, func() { resets++ })
		wantResets := 0
		for i := 0; i+2 < len(ops); i += 3 {
			kind, off, v := ops[i]%4, uint64(ops[i+1]%6), ops[i+2]
			switch kind {
			case 0:
				d.Read(off, []byte{0})
			case 1:
				d.Write(off, []byte{v})
				if off == i8042OfsStatus && v == cmdResetCPU {
					wantResets++
				}
			case 2:
				_ = d.SendCtrlAltDel()
			case 3:
				d.Write(off, make([]byte, 2+int(v%2)))
			}
			d.mu.Lock()
			n, status := d.n, d.status
			d.mu.Unlock()
			if n < 0 || n > i8042BufSize {
				t.Fatalf("buffer holds %d bytes", n)
			}
			if (status&sbOutDataAvail != 0) != (n > 0) {
				t.Fatalf("status %#x with %d bytes buffered", status, n)
			}
		}
		if resets != wantResets {
			t.Fatalf("%d resets, want %d", resets, wantResets)
		}
	})
}

func FuzzRTC(f *testing.F) {
	f.Add([]byte{1, 0, rtcRegB, 1, 1, regBSet | regB24h, 1, 0, rtcMonth, 1, 1, 0x99, 1, 0, rtcRegB, 1, 1, 0, 0, 1, 0})
	f.Add([]byte{1, 0, rtcCentury, 1, 1, 0xff, 1, 0, rtcYear, 1, 1, 0x00, 0, 1, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clk := &fakeClock{t: time.Date(2026, 8, 21, 12, 34, 56, 0, time.UTC)}
		r := NewRTC(clk.now)
		for i := 0; i+2 < len(ops); i += 3 {
			kind, off, v := ops[i]%4, uint64(ops[i+1]%3), ops[i+2]
			switch kind {
			case 0:
				d := []byte{0}
				r.Read(off, d)
				if off == 1 {
					r.mu.Lock()
					idx, regB := r.index, r.ram[rtcRegB]
					r.mu.Unlock()
					checkRTCRead(t, idx, regB, d[0])
				}
			case 1:
				r.Write(off, []byte{v})
			case 2:
				clk.advance(time.Duration(v) * time.Hour * 24)
			case 3:
				r.Write(off, []byte{v, v})
			}
		}
		// Every register stays readable and sane whatever came before.
		for idx := range uint8(CMOSSize) {
			wr(r, 0, idx)
			checkRTCRead(t, idx, r.ram[rtcRegB], rd(r, 1))
		}
	})
}

func checkRTCRead(t *testing.T, idx, regB, v uint8) {
	t.Helper()
	switch idx {
	case rtcRegA:
		if v&regAUIP != 0 {
			t.Fatalf("UIP set: %#x", v)
		}
	case rtcRegC:
		if v != 0 {
			t.Fatalf("register C %#x", v)
		}
	case rtcRegD:
		if v != regDVRT {
			t.Fatalf("register D %#x", v)
		}
	case rtcSeconds, rtcMinutes, rtcDayOfWeek, rtcDayOfMonth, rtcMonth, rtcYear, rtcCentury, rtcHours:
		if regB&regBDM != 0 {
			return
		}
		if idx == rtcHours && regB&regB24h == 0 {
			v &^= hourPM
		}
		if !isBCD(v) {
			t.Fatalf("register %#x = %#x is not BCD", idx, v)
		}
	}
}
