package balloon

import (
	"encoding/binary"

	"github.com/squib-vmm/squib/internal/vmm"
)

// Statistics tags (VIRTIO_BALLOON_S_*, include/uapi/linux/virtio_balloon.h).
// Tags 10 and up came with Linux 6.12.
const (
	TagSwapIn        = 0
	TagSwapOut       = 1
	TagMajorFaults   = 2
	TagMinorFaults   = 3
	TagFreeMemory    = 4
	TagTotalMemory   = 5
	TagAvailMemory   = 6
	TagDiskCaches    = 7
	TagHugetlbAlloc  = 8
	TagHugetlbFail   = 9
	TagOOMKill       = 10
	TagAllocStall    = 11
	TagAsyncScan     = 12
	TagDirectScan    = 13
	TagAsyncReclaim  = 14
	TagDirectReclaim = 15
	numTags          = 16
)

const (
	// StatSize is one packed virtio_balloon_stat: {le16 tag, le64 val}.
	StatSize = 10
	// MaxStatsDescLen bounds the statistics buffer the device parses
	// (Firecracker's MAX_STATS_DESC_LEN: room for 256 tags, far more than
	// any kernel reports), so a guest cannot make it walk gigabytes. A
	// longer buffer is still held and returned, just not read.
	MaxStatsDescLen = 256 * StatSize
)

// guestStats is what the driver has reported so far: the latest value of
// each known tag, and which tags it has reported at all (a tag never
// reported is absent from GET /balloon/statistics).
type guestStats struct {
	val     [numTags]uint64
	present uint16 // bit t: tag t reported
}

// update applies the whole entries of a statistics buffer in order, so
// the last occurrence of a tag wins and a tag the buffer lacks keeps its
// old value. A trailing partial entry is ignored. It returns how many
// entries had a tag it does not know.
func (s *guestStats) update(buf []byte) (unknown int) {
	for len(buf) >= StatSize {
		tag := binary.LittleEndian.Uint16(buf[0:2])
		v := binary.LittleEndian.Uint64(buf[2:10])
		buf = buf[StatSize:]
		if tag >= numTags {
			unknown++
			continue
		}
		s.val[tag] = v
		s.present |= 1 << tag
	}
	return unknown
}

// fill sets out's guest-reported members, each to a fresh pointer so the
// caller owns what it gets.
func (s *guestStats) fill(out *vmm.BalloonStats) {
	fields := [numTags]**uint64{
		TagSwapIn:        &out.SwapIn,
		TagSwapOut:       &out.SwapOut,
		TagMajorFaults:   &out.MajorFaults,
		TagMinorFaults:   &out.MinorFaults,
		TagFreeMemory:    &out.FreeMemory,
		TagTotalMemory:   &out.TotalMemory,
		TagAvailMemory:   &out.AvailableMemory,
		TagDiskCaches:    &out.DiskCaches,
		TagHugetlbAlloc:  &out.HugetlbAllocations,
		TagHugetlbFail:   &out.HugetlbFailures,
		TagOOMKill:       &out.OOMKill,
		TagAllocStall:    &out.AllocStall,
		TagAsyncScan:     &out.AsyncScan,
		TagDirectScan:    &out.DirectScan,
		TagAsyncReclaim:  &out.AsyncReclaim,
		TagDirectReclaim: &out.DirectReclaim,
	}
	for t, f := range fields {
		if s.present&(1<<t) != 0 {
			v := s.val[t]
			*f = &v
		}
	}
}

// processStats takes the driver's statistics buffers (Firecracker's
// process_stats_queue). A compliant driver keeps exactly one buffer
// posted: the device reads it, holds it, and returns it only when it
// wants fresh numbers (statsTick). A second buffer while one is held makes
// the device return the older one.
func (w *worker) processStats(qi int) {
	w.m.StatsUpdatesCount.Inc()
	q := w.queues[qi]
	usedAny := false
	for {
		c := w.pop(qi, &usedAny)
		if c == nil {
			break
		}
		if w.statsHeld {
			log.RateLimited(&rlStats).Errorf("balloon: driver is not compliant, more than one stats buffer received")
			w.addUsed(qi, w.statsHead, &usedAny)
			w.statsHeld = false
		}
		// Only the first descriptor counts, as in Firecracker: Linux posts
		// the array as one buffer.
		d0 := c.Descriptors()[0]
		w.statsHead, w.statsHeld = c.Head, true
		if d0.Len > MaxStatsDescLen {
			log.RateLimited(&rlStats).Warnf("balloon: stats descriptor too large: %d > %d, skipping", d0.Len, MaxStatsDescLen)
			continue
		}
		n := uint64(d0.Len) / StatSize * StatSize
		src, err := w.mem.Slice(d0.Addr, n) // inside RAM: the queue checked it
		if err != nil {
			log.RateLimited(&rlStats).Errorf("balloon: %v", err)
			w.m.EventFails.Inc()
			continue
		}
		// Copy first: the guest may rewrite the buffer while it is parsed.
		buf := w.statsBuf[:n]
		copy(buf, src)
		w.d.mu.Lock()
		unknown := w.d.stats.update(buf)
		w.d.mu.Unlock()
		if unknown > 0 {
			w.m.StatsUpdateFails.Add(uint64(unknown))
			log.Debugf("balloon: %d stats updates with an unknown tag", unknown)
		}
	}
	w.signal(q, qi, usedAny)
}

// statsTick returns the held statistics buffer, which asks the driver for
// fresh numbers (Firecracker's trigger_stats_update): it refills the
// buffer and posts it again.
func (w *worker) statsTick() {
	qi := w.d.statsIdx
	if qi < 0 {
		return
	}
	if !w.statsHeld {
		log.RateLimited(&rlStats).Errorf("Failed to update balloon stats, missing descriptor.")
		return
	}
	usedAny := false
	w.addUsed(qi, w.statsHead, &usedAny)
	w.statsHeld = false
	w.signal(w.queues[qi], qi, usedAny)
}
