// Package balloon is the virtio memory balloon device (virtio-balloon,
// device ID 5), as Firecracker's devices/virtio/balloon implements it. The
// host sets a target size; the guest driver inflates the balloon towards
// it by handing pages over, and the device gives those pages' memory back
// to the host (memory.Guest.Discard, i.e. MADV_DONTNEED), so a later
// guest access finds a zero page.
//
// Queues, QueueSize each, in this order: inflate, deflate, then
// statistics (when stats_polling_interval_s > 0), free page hinting (when
// enabled) and free page reporting (when enabled). Features: VERSION_1,
// plus DEFLATE_ON_OOM, STATS_VQ, FREE_PAGE_HINT and REPORTING as
// configured. The configuration space is num_pages (the target in 4 KiB
// pages), actual (written by the driver) and free_page_hint_cmd_id.
//
//   - Inflate: each buffer is an array of le32 4 KiB page frame numbers.
//     PFNs are gathered, sorted into ranges and discarded; pages outside
//     guest RAM are skipped with a log line. Deflate buffers are returned
//     unread: a discarded page simply refaults.
//   - Statistics: the driver keeps one buffer of packed {le16 tag, le64
//     value} entries posted. The device parses it, keeps it, and every
//     polling interval returns it, which asks the driver to refill and
//     repost it. Tags 0-15 map to GET /balloon/statistics; a tag not in a
//     report keeps its previous value.
//   - Free page reporting: every buffer is free guest memory, discarded.
//   - Free page hinting (developer preview): the host starts a run by
//     writing a run ID to free_page_hint_cmd_id; the driver answers with
//     that ID, hints free pages (discarded while the run is on) and ends
//     with STOP, which the device acknowledges with DONE unless asked not
//     to.
//
// A worker goroutine started by Activate owns the queues and the polling
// timer. The API methods (UpdateAmount, UpdateStatsInterval, Stats,
// StartHinting, HintingStatus, StopHinting, Config) may be called from any
// goroutine; they share only a small locked state with the worker and
// never wait for it. Errors carry Firecracker's texts.
//
// Snapshots (virtio.Snapshotter): Suspend stops the worker once every
// chain it popped is returned, and the polling timer with it; the held
// statistics buffer stays with the device, and API changes made while
// suspended reach the driver on Resume (one config interrupt, an
// immediate statistics refresh). SaveState keeps what Firecracker's
// BalloonState keeps: num_pages, actual, the polling interval, the held
// statistics buffer's head, the latest values and the hinting run, plus
// which optional queues exist, so that a device configured with other
// queues refuses the state. After a restore the held buffer is returned
// at the next interval, and a hinting run is ended with DONE as in
// Firecracker.
//
// Differences from Firecracker, all on paths only a broken or hostile
// driver takes:
//   - A malformed chain (the queue refuses it: buffer outside guest RAM,
//     loop, all buffers empty...) is returned with length 0 and counted in
//     balloon.event_fails, and processing goes on; a corrupt avail index
//     stops processing of that queue until the next notification, where
//     Firecracker panics.
//   - An inflate buffer of more than MaxPagesInDesc PFNs is returned to
//     the driver unread; Firecracker never returns it.
//   - A statistics buffer whose length is not a multiple of 10 has its
//     trailing partial entry ignored; Firecracker reads a whole entry
//     there, past the buffer's end.
//   - Of a range of consecutive inflated PFNs that lies partly outside
//     guest RAM, every page inside RAM is discarded; Firecracker stops at
//     the range's first page outside RAM.
package balloon
