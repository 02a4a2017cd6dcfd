package legacy

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/squib-vmm/squib/internal/metrics"
)

func newTestI8042() (*I8042, *countIRQ, *atomic.Int64) {
	irq := &countIRQ{}
	resets := &atomic.Int64{}
	return NewI8042(irq, func() { resets.Add(1) }), irq, resets
}

func TestI8042Reset(t *testing.T) {
	d, _, resets := newTestI8042()
	m := &metrics.Default.I8042
	rc, wc := m.ResetCount.Count(), m.WriteCount.Count()
	wr(d, i8042OfsStatus, cmdResetCPU)
	if resets.Load() != 1 {
		t.Fatalf("reset callback called %d times", resets.Load())
	}
	if m.ResetCount.Count()-rc != 1 || m.WriteCount.Count()-wc != 1 {
		t.Fatal("reset_count/write_count not incremented")
	}
	// 0xFE on the data port is a keyboard command, not a reset.
	wr(d, i8042OfsData, cmdResetCPU)
	if resets.Load() != 1 {
		t.Fatal("data-port 0xFE reset the machine")
	}
	// A nil callback is allowed.
	NewI8042(nil, nil).Write(i8042OfsStatus, []byte{cmdResetCPU})
}

func TestI8042Commands(t *testing.T) {
	d, irq, _ := newTestI8042()
	runSteps(t, d, []step{
		r("status at reset", i8042OfsStatus, sbKbdEnabled),
		w("read CTR", i8042OfsStatus, cmdReadCTR),
		r("status OBF", i8042OfsStatus, sbKbdEnabled|sbOutDataAvail),
		r("CTR default", i8042OfsData, cbPostOK|cbKbdInt),
		r("status empty", i8042OfsStatus, sbKbdEnabled),
		r("empty data reads 0", i8042OfsData, 0),
		w("write CTR", i8042OfsStatus, cmdWriteCTR),
		r("expects argument", i8042OfsStatus, sbKbdEnabled|sbCmdData),
		w("CTR value", i8042OfsData, 0x52),
		r("argument taken", i8042OfsStatus, sbKbdEnabled),
		w("read CTR", i8042OfsStatus, cmdReadCTR),
		r("CTR back", i8042OfsData, 0x52),
		w("write outp", i8042OfsStatus, cmdWriteOutp),
		w("outp value", i8042OfsData, 0x33),
		w("read outp", i8042OfsStatus, cmdReadOutp),
		r("outp back", i8042OfsData, 0x33),
		w("restore CTR", i8042OfsStatus, cmdWriteCTR),
		w("CTR value", i8042OfsData, cbPostOK|cbKbdInt),
	})
	if irq.n.Load() != 0 {
		t.Fatalf("controller commands raised %d interrupts", irq.n.Load())
	}
	// A keyboard command is acked with 0xFA and an interrupt.
	wr(d, i8042OfsData, 0xff)
	if irq.n.Load() != 1 {
		t.Fatalf("kbd command: %d interrupts, want 1", irq.n.Load())
	}
	if got := rd(d, i8042OfsData); got != kbdAck {
		t.Fatalf("kbd ack %#x", got)
	}
}

func TestI8042CtrlAltDel(t *testing.T) {
	d, irq, _ := newTestI8042()
	m := &metrics.Default.I8042
	rc := m.ReadCount.Count()
	if err := d.SendCtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if irq.n.Load() != 3 {
		t.Fatalf("%d interrupts, want one per key", irq.n.Load())
	}
	for i, want := range []uint8{0x14, 0x11, 0xe0, 0x71} {
		if rd(d, i8042OfsStatus)&sbOutDataAvail == 0 {
			t.Fatalf("byte %d: OBF clear", i)
		}
		before := irq.n.Load()
		if got := rd(d, i8042OfsData); got != want {
			t.Fatalf("byte %d = %#x, want %#x", i, got, want)
		}
		// Reading raises the line again while bytes remain.
		wantIRQ := int64(1)
		if i == 3 {
			wantIRQ = 0
		}
		if n := irq.n.Load() - before; n != wantIRQ {
			t.Fatalf("byte %d: %d interrupts after read, want %d", i, n, wantIRQ)
		}
	}
	if rd(d, i8042OfsStatus)&sbOutDataAvail != 0 {
		t.Fatal("OBF set after the sequence")
	}
	if d := m.ReadCount.Count() - rc; d != 9 {
		t.Fatalf("read_count += %d, want 9", d)
	}
}

func TestI8042CtrlAltDelInterruptsDisabled(t *testing.T) {
	d, irq, _ := newTestI8042()
	wr(d, i8042OfsStatus, cmdWriteCTR)
	wr(d, i8042OfsData, cbPostOK) // keyboard interrupt off
	// Firecracker queues the keys, warns, and reports success.
	if err := d.SendCtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if irq.n.Load() != 0 {
		t.Fatalf("%d interrupts with kbd interrupts disabled", irq.n.Load())
	}
	for _, want := range []uint8{0x14, 0x11, 0xe0, 0x71} {
		if got := rd(d, i8042OfsData); got != want {
			t.Fatalf("polled %#x, want %#x", got, want)
		}
	}
	if irq.n.Load() != 0 {
		t.Fatal("data reads raised a disabled interrupt")
	}
}

func TestI8042CtrlAltDelErrors(t *testing.T) {
	d, _, _ := newTestI8042()
	for i := range i8042BufSize / 4 {
		if err := d.SendCtrlAltDel(); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := d.SendCtrlAltDel(); !errors.Is(err, ErrI8042BufferFull) {
		t.Fatalf("full buffer: %v", err)
	}
	rd(d, i8042OfsData)
	if err := d.SendCtrlAltDel(); !errors.Is(err, ErrI8042BufferFull) {
		t.Fatalf("3 bytes free: %v", err)
	}

	fail := errors.New("eventfd broken")
	d2 := NewI8042(&countIRQ{err: fail}, nil)
	var ke *KbdInterruptError
	err := d2.SendCtrlAltDel()
	if !errors.As(err, &ke) || !errors.Is(err, fail) {
		t.Fatalf("failing interrupt: %v", err)
	}
	if got, want := err.Error(), "Could not trigger keyboard interrupt: eventfd broken."; got != want {
		t.Fatalf("error text %q, want %q", got, want)
	}
}

func TestI8042BadAccess(t *testing.T) {
	d, _, resets := newTestI8042()
	m := &metrics.Default.I8042
	mr, mw := m.MissedReadCount.Count(), m.MissedWriteCount.Count()
	b := []byte{7, 7}
	d.Read(i8042OfsStatus, b)
	d.Read(1, b[:1])
	d.Write(i8042OfsStatus, []byte{cmdResetCPU, 0})
	d.Write(2, []byte{cmdResetCPU})
	d.Write(i8042OfsStatus, []byte{0xaa}) // unknown controller command
	if b[0] != 7 || b[1] != 7 {
		t.Fatal("bad read changed data")
	}
	if resets.Load() != 0 {
		t.Fatal("bad write reset the machine")
	}
	if d := m.MissedReadCount.Count() - mr; d != 2 {
		t.Fatalf("missed_read_count += %d", d)
	}
	if d := m.MissedWriteCount.Count() - mw; d != 3 {
		t.Fatalf("missed_write_count += %d", d)
	}
}
