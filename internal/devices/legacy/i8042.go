package legacy

import (
	"errors"
	"sync"

	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/metrics"
)

// The i8042 as Firecracker wires it: ports 0x60..0x64 claimed as one range,
// data at +0, status/command at +4.
const (
	I8042Base = 0x60 // first port
	I8042Size = 5    // ports claimed on the bus
	I8042IRQ  = 1    // GSI of the keyboard interrupt
)

const (
	i8042OfsData   = 0
	i8042OfsStatus = 4

	// Controller commands, written to port 0x64.
	cmdReadCTR   = 0x20 // next data read returns the control register
	cmdWriteCTR  = 0x60 // next data write sets the control register
	cmdReadOutp  = 0xd0 // next data read returns the output port
	cmdWriteOutp = 0xd1 // next data write sets the output port
	cmdResetCPU  = 0xfe // pulse the CPU reset line

	// Status register bits.
	sbOutDataAvail = 0x01 // a byte waits at port 0x60
	sbCmdData      = 0x08 // the next port 0x60 write is a command argument
	sbKbdEnabled   = 0x10

	// Control register bits.
	cbKbdInt = 0x01 // keyboard interrupt enabled
	cbPostOK = 0x04 // system flag: POST passed

	// Scan code set 2 make codes; an extended key's prefix is in the
	// high byte.
	keyCtrl = 0x0014
	keyAlt  = 0x0011
	keyDel  = 0xe071

	// kbdAck is what the emulated keyboard answers to any command.
	kbdAck = 0xfa

	i8042BufSize = 16
)

// ErrI8042BufferFull is returned by SendCtrlAltDel when the 16-byte output
// buffer lacks room for the 4-byte sequence. The text is Firecracker's,
// which the API wraps in its own error message.
var ErrI8042BufferFull = errors.New("i8042 internal buffer full.") //nolint:staticcheck // Firecracker's wording

// errKbdIntDisabled reports that the guest has masked keyboard interrupts
// in the control register. Firecracker only warns about it: the bytes stay
// queued for a polling guest, and SendCtrlAltDel still succeeds.
var errKbdIntDisabled = errors.New("keyboard interrupt disabled by guest driver")

// KbdInterruptError is returned by SendCtrlAltDel when the keyboard
// Interrupt fails.
type KbdInterruptError struct{ Err error }

// Error returns Firecracker's wording.
func (e *KbdInterruptError) Error() string {
	return "Could not trigger keyboard interrupt: " + e.Err.Error() + "."
}

// Unwrap returns the Interrupt's error.
func (e *KbdInterruptError) Unwrap() error { return e.Err }

var (
	kbdDisabledLimiter logger.RateLimiter
	kbdFailLimiter     logger.RateLimiter
)

var _ devices.Device = (*I8042)(nil)

// I8042 is the PS/2 controller, emulating just enough for a guest to reboot
// the machine (which Firecracker turns into a VMM exit) and to receive
// Ctrl-Alt-Del.
type I8042 struct {
	mu      sync.Mutex
	status  uint8
	control uint8
	outp    uint8
	cmd     uint8 // last command that takes an argument
	buf     [i8042BufSize]byte
	head, n int

	irq   devices.Interrupt
	reset func()
}

// NewI8042 returns a controller that raises kbdIRQ (IRQ 1; nil for none)
// and calls reset when the guest writes 0xFE to port 0x64. reset runs on
// the vCPU goroutine, outside the device lock; it should only signal the
// VMM (Firecracker writes its exit eventfd), not stop vCPUs itself.
func NewI8042(kbdIRQ devices.Interrupt, reset func()) *I8042 {
	return &I8042{
		status:  sbKbdEnabled,
		control: cbPostOK | cbKbdInt,
		irq:     kbdIRQ,
		reset:   reset,
	}
}

// SendCtrlAltDel queues the make codes of Ctrl, Alt and Del (0x14, 0x11,
// 0xE0 0x71) and raises the keyboard interrupt after each key. As in
// Firecracker, if the guest disabled keyboard interrupts the codes are
// queued all the same, a warning is logged and no error is returned; it
// fails with ErrI8042BufferFull when fewer than 4 bytes are free, or with
// a *KbdInterruptError.
func (d *I8042) SendCtrlAltDel() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i8042BufSize-d.n < 4 {
		return ErrI8042BufferFull
	}
	for _, k := range [...]uint16{keyCtrl, keyAlt, keyDel} {
		if err := d.triggerKey(k, mainLog); err != nil {
			return err
		}
	}
	return nil
}

func (d *I8042) triggerKey(key uint16, log logger.Handle) error {
	if key&0xff00 != 0 {
		if i8042BufSize-d.n < 2 {
			return ErrI8042BufferFull
		}
		if err := d.push(uint8(key >> 8)); err != nil {
			return err
		}
	}
	if err := d.push(uint8(key)); err != nil {
		return err
	}
	if err := d.triggerKbd(log); err != nil && !errors.Is(err, errKbdIntDisabled) {
		return err
	}
	return nil
}

func (d *I8042) triggerKbd(log logger.Handle) error {
	if d.control&cbKbdInt == 0 {
		log.RateLimited(&kbdDisabledLimiter).Warnf("Failed to trigger i8042 kbd interrupt (disabled by guest OS)")
		return errKbdIntDisabled
	}
	if d.irq == nil {
		return nil
	}
	if err := d.irq.Trigger(); err != nil {
		return &KbdInterruptError{Err: err}
	}
	return nil
}

// push appends a byte. Data-available is set even when the buffer is full
// (it is non-empty then anyway), as in Firecracker.
func (d *I8042) push(b uint8) error {
	d.status |= sbOutDataAvail
	if d.n == i8042BufSize {
		return ErrI8042BufferFull
	}
	d.buf[(d.head+d.n)%i8042BufSize] = b
	d.n++
	return nil
}

func (d *I8042) pop() (uint8, bool) {
	if d.n == 0 {
		return 0, false
	}
	b := d.buf[d.head]
	d.head = (d.head + 1) % i8042BufSize
	d.n--
	if d.n == 0 {
		d.status &^= sbOutDataAvail
	}
	return b, true
}

// flush empties the buffer so that a command's reply is the next byte read.
func (d *I8042) flush() {
	d.head, d.n = 0, 0
	d.status &^= sbOutDataAvail
}

// Read implements devices.Device: status at +4, buffered data at +0 (0
// when empty). Other offsets and sizes count i8042.missed_read_count.
func (d *I8042) Read(offset uint64, data []byte) {
	if len(data) != 1 {
		metrics.Default.I8042.MissedReadCount.Inc()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch offset {
	case i8042OfsStatus:
		data[0] = d.status
	case i8042OfsData:
		data[0], _ = d.pop()
		// More bytes queued: interrupt again so the guest comes back for
		// the next one.
		if d.status&sbOutDataAvail != 0 {
			var ke *KbdInterruptError
			if err := d.triggerKbd(vcpuLog); errors.As(err, &ke) {
				vcpuLog.RateLimited(&kbdFailLimiter).Warnf("Failed to trigger i8042 kbd interrupt %v", ke.Err)
			}
		}
	default:
		metrics.Default.I8042.MissedReadCount.Inc()
		return
	}
	metrics.Default.I8042.ReadCount.Add(uint64(len(data)))
}

// Write implements devices.Device: commands at +4, command arguments and
// keyboard commands at +0. Unknown commands, other offsets and sizes count
// i8042.missed_write_count.
func (d *I8042) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		metrics.Default.I8042.MissedWriteCount.Inc()
		return
	}
	m := &metrics.Default.I8042
	v := data[0]
	d.mu.Lock()
	ok, reset := true, false
	switch {
	case offset == i8042OfsStatus && v == cmdResetCPU:
		reset = true
	case offset == i8042OfsStatus && v == cmdReadCTR:
		d.flush()
		_ = d.push(d.control) // cannot fail: just flushed
	case offset == i8042OfsStatus && v == cmdWriteCTR:
		d.flush()
		d.status |= sbCmdData
		d.cmd = v
	case offset == i8042OfsStatus && v == cmdReadOutp:
		d.flush()
		_ = d.push(d.outp)
	case offset == i8042OfsStatus && v == cmdWriteOutp:
		// Unlike cmdWriteCTR, Firecracker does not flush here.
		d.status |= sbCmdData
		d.cmd = v
	case offset == i8042OfsData && d.status&sbCmdData != 0:
		switch d.cmd {
		case cmdWriteCTR:
			d.control = v
		case cmdWriteOutp:
			d.outp = v
		}
		d.status &^= sbCmdData
	case offset == i8042OfsData:
		// A command for the keyboard itself: a dumb keyboard acks all.
		d.flush()
		_ = d.push(kbdAck)
		var ke *KbdInterruptError
		if err := d.triggerKbd(vcpuLog); errors.As(err, &ke) {
			vcpuLog.RateLimited(&kbdFailLimiter).Warnf("Failed to trigger i8042 kbd interrupt %v", ke.Err)
		}
	default:
		ok = false
	}
	d.mu.Unlock()
	if reset {
		// Outside the lock: the callback belongs to the VMM.
		if d.reset != nil {
			d.reset()
		}
		m.ResetCount.Inc()
	}
	if ok {
		m.WriteCount.Inc()
	} else {
		m.MissedWriteCount.Inc()
	}
}
