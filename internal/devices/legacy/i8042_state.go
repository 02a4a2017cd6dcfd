package legacy

import "fmt"

// I8042State is the keyboard controller's guest-visible state, for
// snapshots.
type I8042State struct {
	// Status is the status register (port 0x64 reads).
	Status uint8 `json:"status"`
	// Control is the controller command byte (commands 0x20/0x60).
	Control uint8 `json:"control"`
	// OutputPort is the output port (commands 0xD0/0xD1).
	OutputPort uint8 `json:"output_port"`
	// Command is the last command that takes an argument (0x60 or 0xD1),
	// 0 if none was ever written; the next port 0x60 write is its
	// argument while Status has the command/data bit.
	Command uint8 `json:"command"`
	// Buffer is the output buffer, oldest byte first, at most 16 bytes.
	Buffer []byte `json:"buffer"`
}

// SaveState returns the controller's state for a snapshot. Call it with
// the vCPUs paused.
func (d *I8042) SaveState() I8042State {
	d.mu.Lock()
	defer d.mu.Unlock()
	buf := make([]byte, d.n)
	for i := range buf {
		buf[i] = d.buf[(d.head+i)%i8042BufSize]
	}
	return I8042State{Status: d.status, Control: d.control, OutputPort: d.outp, Command: d.cmd, Buffer: buf}
}

// validate rejects states the controller cannot reach.
func (st *I8042State) validate() error {
	if len(st.Buffer) > i8042BufSize {
		return fmt.Errorf("i8042 state: output buffer holds %d bytes, more than %d", len(st.Buffer), i8042BufSize)
	}
	if bad := st.Status &^ (sbOutDataAvail | sbCmdData | sbKbdEnabled); bad != 0 {
		return fmt.Errorf("i8042 state: status %#02x has unknown bits %#02x", st.Status, bad)
	}
	if (st.Status&sbOutDataAvail != 0) != (len(st.Buffer) > 0) {
		return fmt.Errorf("i8042 state: status %#02x inconsistent with %d buffered bytes", st.Status, len(st.Buffer))
	}
	switch st.Command {
	case cmdWriteCTR, cmdWriteOutp:
	case 0:
		if st.Status&sbCmdData != 0 {
			return fmt.Errorf("i8042 state: awaiting a command argument with no command")
		}
	default:
		return fmt.Errorf("i8042 state: invalid pending command %#02x", st.Command)
	}
	return nil
}

// RestoreState loads a state from SaveState into a controller fresh from
// NewI8042, before any vCPU runs. An invalid state is refused with an
// error and leaves the controller as it was.
//
// As on a real 8042, IRQ 1 is asserted while the output buffer is full
// and the command byte enables it; the line here is edge-signalled and
// the interrupt controller is restored on its own, so it is signalled
// again when the restored buffer holds data with the interrupt enabled,
// lest the guest wait forever for bytes already queued. If that fails
// the state stays loaded and a *KbdInterruptError is returned.
func (d *I8042) RestoreState(st I8042State) error {
	if err := st.validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status, d.control, d.outp, d.cmd = st.Status, st.Control, st.OutputPort, st.Command
	d.buf = [i8042BufSize]byte{}
	d.head, d.n = 0, copy(d.buf[:], st.Buffer)
	if d.n > 0 && d.control&cbKbdInt != 0 && d.irq != nil {
		if err := d.irq.Trigger(); err != nil {
			return &KbdInterruptError{Err: err}
		}
	}
	return nil
}
