package balloon

import (
	"encoding/binary"
	"errors"

	"github.com/squib-vmm/squib/internal/vmm"
)

// Free page hinting command IDs in free_page_hint_cmd_id
// (VIRTIO_BALLOON_CMD_ID_*). Any other value is the ID of a hinting run.
const (
	// HintCmdStop: no run; also what the driver sends when it has hinted
	// everything it will for a run.
	HintCmdStop = 0
	// HintCmdDone: the host is finished with the hints, and the guest may
	// reuse the hinted pages.
	HintCmdDone = 1
)

// hintState is the free page hinting run (Firecracker's HintingState).
type hintState struct {
	hostCmd     uint32 // the command we put in the config space
	lastCmdID   uint32 // the last run ID we handed out
	guestCmd    uint32 // the last command ID the driver sent
	guestCmdSet bool   // whether it has sent one
	ackOnFinish bool   // answer the driver's STOP with DONE ourselves
}

// StartHinting starts a free page hinting run: it writes a new run ID
// (never 0 or 1) into free_page_hint_cmd_id and raises a config
// interrupt. The driver then reports free pages tagged with that ID, and
// the device discards them. With cmd.AcknowledgeOnStop unset or true, the
// device answers the driver's end of the run with DONE by itself, as
// PATCH /balloon/hinting/start does by default.
func (d *Device) StartHinting(cmd vmm.BalloonStartCmd) error {
	if !d.hinting {
		return ErrHintingNotEnabled
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.hint.lastCmdID + 1
	if id <= HintCmdDone {
		id = HintCmdDone + 1
	}
	// Recorded even when inactive, as Firecracker does.
	d.hint.ackOnFinish = cmd.AcknowledgeOnStop == nil || *cmd.AcknowledgeOnStop
	d.hint.lastCmdID = id
	return d.setHintCmdLocked(id)
}

// HintingStatus reports the command the host last set and the one the
// driver last sent (absent before the driver sent any).
func (d *Device) HintingStatus() (vmm.HintingStatus, error) {
	if !d.hinting {
		return vmm.HintingStatus{}, ErrHintingNotEnabled
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := vmm.HintingStatus{HostCmd: d.hint.hostCmd}
	if d.hint.guestCmdSet {
		g := d.hint.guestCmd
		st.GuestCmd = &g
	}
	return st, nil
}

// StopHinting ends the run: DONE tells the driver it may reuse the hinted
// pages.
func (d *Device) StopHinting() error {
	if !d.hinting {
		return ErrHintingNotEnabled
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.setHintCmdLocked(HintCmdDone)
}

// setHintCmdLocked publishes a host command in the config space and tells
// the driver (Firecracker's update_free_page_hint_cmd). d.mu is held.
func (d *Device) setHintCmdLocked(id uint32) error {
	if !d.activeLocked() {
		return ErrNotActivated
	}
	d.hint.hostCmd = id
	binary.LittleEndian.PutUint32(d.config[offHintCmd:], id)
	return d.triggerConfigLocked()
}

// processHinting handles the free page hinting queue (Firecracker's
// process_free_page_hinting_queue). The driver sends 4-byte buffers
// holding a command ID (the run it is answering, or STOP when it is done)
// and page-sized buffers of free memory. Free memory is discarded only
// while a run is on and the driver's last command ID is that run's:
// hints from an earlier run, or arriving after DONE or STOP, are stale.
func (w *worker) processHinting(qi int) {
	q := w.queues[qi]
	w.d.mu.Lock()
	host := w.d.hint.hostCmd
	w.d.mu.Unlock()
	usedAny, complete := false, false
	for {
		c := w.pop(qi, &usedAny)
		if c == nil {
			break
		}
		for _, desc := range c.Descriptors() {
			// A command ID is any 4-byte buffer, whatever its direction.
			if desc.Len == 4 {
				cmd, err := w.mem.ReadU32(desc.Addr)
				if err != nil {
					// Cannot happen: the queue checked the buffer.
					w.m.EventFails.Inc()
					continue
				}
				w.d.mu.Lock()
				w.d.hint.guestCmd, w.d.hint.guestCmdSet = cmd, true
				w.d.mu.Unlock()
				complete = cmd == HintCmdStop || cmd == HintCmdDone
				if cmd == HintCmdDone {
					// Not the driver's to send: taken as a STOP.
					log.RateLimited(&rlHint).Warnf("balloon hinting: Unexpected cmd from guest: %d", cmd)
				}
				continue
			}
			if host == HintCmdDone || host == HintCmdStop {
				continue // no run: drop hints still in flight
			}
			w.d.mu.Lock()
			guest, set := w.d.hint.guestCmd, w.d.hint.guestCmdSet
			w.d.mu.Unlock()
			if !set {
				log.RateLimited(&rlHint).Warnf("balloon hinting: received range with no command id.")
				continue
			}
			if guest != host {
				log.RateLimited(&rlHint).Infof("balloon hinting: Received chain from previous command ignoring.")
				continue
			}
			w.m.FreePageHintCount.Inc()
			if err := w.discard(desc.Addr, uint64(desc.Len)); err != nil {
				w.m.FreePageHintFails.Inc()
				log.RateLimited(&rlHint).Errorf("balloon hinting: failed to remove range: %v", err)
			} else {
				w.m.FreePageHintFreed.Add(uint64(desc.Len))
			}
		}
		w.addUsed(qi, c.Head, &usedAny)
	}
	w.signal(q, qi, usedAny)
	if complete {
		w.d.mu.Lock()
		var err error
		if w.d.hint.ackOnFinish {
			err = w.d.setHintCmdLocked(HintCmdDone)
		}
		w.d.mu.Unlock()
		if err != nil && !errors.Is(err, ErrNotActivated) {
			w.m.EventFails.Inc()
			log.RateLimited(&rlHint).Errorf("balloon: %v", err)
		}
	}
}

// processReporting handles the free page reporting queue (Firecracker's
// process_free_page_reporting_queue): every buffer of every chain is a
// block of free guest memory, which the device discards.
func (w *worker) processReporting(qi int) {
	q := w.queues[qi]
	usedAny := false
	for {
		c := w.pop(qi, &usedAny)
		if c == nil {
			break
		}
		for _, desc := range c.Descriptors() {
			w.m.FreePageReportCount.Inc()
			if err := w.discard(desc.Addr, uint64(desc.Len)); err != nil {
				w.m.FreePageReportFails.Inc()
				log.RateLimited(&rlReport).Errorf("balloon: failed to remove range: %v", err)
			} else {
				w.m.FreePageReportFreed.Add(uint64(desc.Len))
			}
		}
		w.addUsed(qi, c.Head, &usedAny)
	}
	w.signal(q, qi, usedAny)
}
