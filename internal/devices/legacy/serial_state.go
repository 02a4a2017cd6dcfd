package legacy

import "fmt"

// SerialState is the guest-visible state of the UART, for snapshots: its
// registers, the causes of interrupt the guest has not yet acknowledged,
// and the bytes received but not yet read. Output queued for the host
// writer is not part of it (the guest counts it as sent); Flush before
// saving to keep it.
type SerialState struct {
	// DivisorLow and DivisorHigh are the divisor latch (DLL, DLM).
	DivisorLow  uint8 `json:"divisor_low"`
	DivisorHigh uint8 `json:"divisor_high"`
	// InterruptEnable is IER; only its low nibble exists.
	InterruptEnable uint8 `json:"interrupt_enable"`
	// InterruptIdentification holds the pending causes as IIR bits 0-2,
	// without the FIFO bits reads add: 0x01 (none pending), or 0x02
	// (THR empty) and/or 0x04 (received data).
	InterruptIdentification uint8 `json:"interrupt_identification"`
	LineControl             uint8 `json:"line_control"`
	// LineStatus is LSR: THR empty and transmitter empty always, data
	// ready exactly when InBuffer is not empty.
	LineStatus   uint8 `json:"line_status"`
	ModemControl uint8 `json:"modem_control"`
	ModemStatus  uint8 `json:"modem_status"`
	Scratch      uint8 `json:"scratch"`
	// InBuffer is the receive FIFO, oldest byte first, at most
	// SerialFIFOSize bytes.
	InBuffer []byte `json:"in_buffer"`
}

// SaveState returns the UART's registers and receive FIFO for a snapshot.
// Call it with the vCPUs paused, so that the state is not torn between
// accesses.
func (s *Serial) SaveState() SerialState {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := make([]byte, s.n)
	for i := range in {
		in[i] = s.fifo[(s.head+i)%SerialFIFOSize]
	}
	return SerialState{
		DivisorLow: s.dll, DivisorHigh: s.dlm, InterruptEnable: s.ier,
		InterruptIdentification: s.iir, LineControl: s.lcr, LineStatus: s.lsr,
		ModemControl: s.mcr, ModemStatus: s.msr, Scratch: s.scr, InBuffer: in,
	}
}

// validate rejects states the UART cannot reach: restoring one would show
// the guest a register combination its driver was never written for (an
// LSR without THR empty, for one, would hang it waiting to transmit).
func (st *SerialState) validate() error {
	if len(st.InBuffer) > SerialFIFOSize {
		return fmt.Errorf("serial state: receive FIFO holds %d bytes, more than %d", len(st.InBuffer), SerialFIFOSize)
	}
	if st.InterruptEnable&^ierValid != 0 {
		return fmt.Errorf("serial state: IER %#02x has bits outside %#02x", st.InterruptEnable, ierValid)
	}
	switch st.InterruptIdentification {
	case iirNone, iirTHRE, iirRDA, iirTHRE | iirRDA:
	default:
		return fmt.Errorf("serial state: invalid pending interrupt identification %#02x", st.InterruptIdentification)
	}
	// Received-data is raised by a push and cleared by any RBR read, the
	// only thing that empties the FIFO.
	if st.InterruptIdentification&iirRDA != 0 && len(st.InBuffer) == 0 {
		return fmt.Errorf("serial state: received-data interrupt pending with an empty FIFO")
	}
	want := uint8(defaultLSR)
	if len(st.InBuffer) > 0 {
		want |= lsrDR
	}
	if st.LineStatus != want {
		return fmt.Errorf("serial state: LSR %#02x inconsistent with %d buffered bytes (want %#02x)", st.LineStatus, len(st.InBuffer), want)
	}
	return nil
}

// RestoreState loads a state from SaveState into a UART fresh from
// NewSerial, before any vCPU runs. An invalid state is refused with an
// error and leaves the UART as it was.
//
// The interrupt line is edge-signalled and the interrupt controller is
// restored on its own, so an edge the guest had not yet acknowledged
// (a cause pending in IIR and enabled in IER) is signalled again;
// otherwise the guest could wait for it forever. If that fails the state
// stays loaded and an *InterruptError is returned.
func (s *Serial) RestoreState(st SerialState) error {
	if err := st.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dll, s.dlm, s.ier, s.iir = st.DivisorLow, st.DivisorHigh, st.InterruptEnable, st.InterruptIdentification
	s.lcr, s.lsr, s.mcr, s.msr, s.scr = st.LineControl, st.LineStatus, st.ModemControl, st.ModemStatus, st.Scratch
	s.fifo = [SerialFIFOSize]byte{}
	s.head, s.n = 0, copy(s.fifo[:], st.InBuffer)
	// One edge covers both causes: the guest's handler reads IIR once.
	if (s.ier&ierTHRE != 0 && s.iir&iirTHRE != 0) || (s.ier&ierRDA != 0 && s.iir&iirRDA != 0) {
		return s.trigger()
	}
	return nil
}
