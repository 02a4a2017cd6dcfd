package balloon

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/squib-vmm/squib/internal/virtio"
)

// ErrRunning is returned by SaveState while the device's worker runs: a
// snapshot is taken of a suspended (or inactive) device.
var ErrRunning = errors.New("balloon: device not suspended")

// ErrState wraps every reason RestoreState refuses a saved state.
var ErrState = errors.New("balloon: invalid saved state")

// tagNames names the statistics tags in a saved state, as GET
// /balloon/statistics does.
var tagNames = [numTags]string{
	TagSwapIn:        "swap_in",
	TagSwapOut:       "swap_out",
	TagMajorFaults:   "major_faults",
	TagMinorFaults:   "minor_faults",
	TagFreeMemory:    "free_memory",
	TagTotalMemory:   "total_memory",
	TagAvailMemory:   "available_memory",
	TagDiskCaches:    "disk_caches",
	TagHugetlbAlloc:  "hugetlb_allocations",
	TagHugetlbFail:   "hugetlb_failures",
	TagOOMKill:       "oom_kill",
	TagAllocStall:    "alloc_stall",
	TagAsyncScan:     "async_scan",
	TagDirectScan:    "direct_scan",
	TagAsyncReclaim:  "async_reclaim",
	TagDirectReclaim: "direct_reclaim",
}

// savedState is the device's own state in a snapshot, what Firecracker's
// BalloonState keeps besides the queues, plus the configured queue
// layout so that a device configured differently refuses it.
type savedState struct {
	// NumPages and ActualPages are the configuration space as the driver
	// sees it (the hinting command is HintingState.HostCmd).
	NumPages    uint32 `json:"num_pages"`
	ActualPages uint32 `json:"actual_pages"`
	// StatsPollingIntervalS is the interval, possibly changed since boot;
	// statistics are on with it or off with it.
	StatsPollingIntervalS uint16 `json:"stats_polling_interval_s"`
	// StatsDescIndex is the head of the statistics buffer the device
	// holds, to return at the next interval; null when none.
	StatsDescIndex *uint16 `json:"stats_desc_index"`
	// LatestStats are the values the driver reported, by name.
	LatestStats       map[string]uint64 `json:"latest_stats,omitempty"`
	FreePageHinting   bool              `json:"free_page_hinting"`
	FreePageReporting bool              `json:"free_page_reporting"`
	HintingState      savedHinting      `json:"hinting_state"`
}

// savedHinting is hintState.
type savedHinting struct {
	HostCmd             uint32  `json:"host_cmd"`
	LastCmdID           uint32  `json:"last_cmd_id"`
	GuestCmd            *uint32 `json:"guest_cmd"`
	AcknowledgeOnFinish bool    `json:"acknowledge_on_finish"`
}

// SaveState implements virtio.Snapshotter: the configuration space, the
// polling interval, the statistics buffer held and the latest values,
// and the hinting run. The device must be suspended or inactive.
func (d *Device) SaveState() ([]byte, error) {
	var data []byte
	var err error
	if xerr := d.life.Exclusive(func(running *worker) {
		if running != nil {
			err = ErrRunning
			return
		}
		d.mu.Lock()
		s := d.savedLocked()
		d.mu.Unlock()
		data, err = json.Marshal(s)
	}); xerr != nil {
		return nil, xerr
	}
	return data, err
}

func (d *Device) savedLocked() savedState {
	s := savedState{
		NumPages:              d.u32Locked(offNumPages),
		ActualPages:           d.u32Locked(offActual),
		StatsPollingIntervalS: d.interval,
		FreePageHinting:       d.hinting,
		FreePageReporting:     d.reporting,
		HintingState: savedHinting{
			HostCmd:             d.hint.hostCmd,
			LastCmdID:           d.hint.lastCmdID,
			AcknowledgeOnFinish: d.hint.ackOnFinish,
		},
	}
	if d.statsHeld {
		h := d.statsHead
		s.StatsDescIndex = &h
	}
	for t, name := range tagNames {
		if d.stats.present&(1<<t) != 0 {
			if s.LatestStats == nil {
				s.LatestStats = make(map[string]uint64)
			}
			s.LatestStats[name] = d.stats.val[t]
		}
	}
	if d.hint.guestCmdSet {
		g := d.hint.guestCmd
		s.HintingState.GuestCmd = &g
	}
	return s
}

// RestoreState implements virtio.Snapshotter, on a new device that is not
// active, configured with the same queues (statistics, hinting and
// reporting on or off as in the snapshot). The saved polling interval
// replaces the configured one. When the device is next activated, a
// hinting run is over (DONE), as in Firecracker. A malformed state is an
// error wrapping ErrState, and changes nothing.
func (d *Device) RestoreState(data []byte) error {
	s, err := decodeState(data)
	if err != nil {
		return err
	}
	if (s.StatsPollingIntervalS > 0) != (d.statsIdx >= 0) || s.FreePageHinting != d.hinting || s.FreePageReporting != d.reporting {
		return fmt.Errorf("%w: statistics %v, hinting %v, reporting %v; the device has %v, %v, %v", ErrState,
			s.StatsPollingIntervalS > 0, s.FreePageHinting, s.FreePageReporting, d.statsIdx >= 0, d.hinting, d.reporting)
	}
	var stats guestStats
	for name, v := range s.LatestStats {
		t := tagIndex(name)
		if t < 0 {
			return fmt.Errorf("%w: unknown statistic %q", ErrState, name)
		}
		stats.val[t] = v
		stats.present |= 1 << t
	}
	var aerr error
	if xerr := d.life.Exclusive(func(*worker) {
		if d.life.Active() {
			aerr = errors.New("balloon: cannot restore the state of an active device")
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		binary.LittleEndian.PutUint32(d.config[offNumPages:], s.NumPages)
		binary.LittleEndian.PutUint32(d.config[offActual:], s.ActualPages)
		binary.LittleEndian.PutUint32(d.config[offHintCmd:], s.HintingState.HostCmd)
		d.interval = s.StatsPollingIntervalS
		d.statsHeld = s.StatsDescIndex != nil
		d.statsHead = 0
		if d.statsHeld {
			d.statsHead = *s.StatsDescIndex
		}
		d.stats = stats
		d.hint = hintState{
			hostCmd:     s.HintingState.HostCmd,
			lastCmdID:   s.HintingState.LastCmdID,
			ackOnFinish: s.HintingState.AcknowledgeOnFinish,
		}
		if g := s.HintingState.GuestCmd; g != nil {
			d.hint.guestCmd, d.hint.guestCmdSet = *g, true
		}
		d.restored = true
	}); xerr != nil {
		return xerr
	}
	return aerr
}

func tagIndex(name string) int {
	for t, n := range tagNames {
		if n == name {
			return t
		}
	}
	return -1
}

// decodeState parses and checks a saved state: one JSON object with the
// fields of savedState and no others, and values a device could have
// saved.
func decodeState(data []byte) (*savedState, error) {
	s, err := virtio.DecodeState[savedState](data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrState, err)
	}
	switch {
	case (s.StatsDescIndex != nil || len(s.LatestStats) > 0) && s.StatsPollingIntervalS == 0:
		return nil, fmt.Errorf("%w: statistics saved with statistics off", ErrState)
	case s.StatsDescIndex != nil && *s.StatsDescIndex >= QueueSize:
		return nil, fmt.Errorf("%w: statistics buffer %d in a queue of %d", ErrState, *s.StatsDescIndex, QueueSize)
	case !s.FreePageHinting && s.HintingState != (savedHinting{}):
		return nil, fmt.Errorf("%w: a hinting state without hinting", ErrState)
	}
	return s, nil
}
