// Package block is the virtio block device (virtio-blk, device ID 2) backed
// by a host file, as Firecracker's devices/virtio/block/virtio implements it
// with its default Sync I/O engine: one queue of up to 256 descriptors,
// VIRTIO_F_VERSION_1 and VIRTIO_RING_F_EVENT_IDX offered, plus
// VIRTIO_BLK_F_FLUSH with the Writeback cache type and VIRTIO_BLK_F_RO for
// a read-only drive. The configuration space is the capacity alone: a
// little-endian u64 count of 512-byte sectors, the backing file's size
// rounded down (a partial last sector is not visible to the guest).
//
// A request is a descriptor chain holding a 16-byte header (type u32,
// reserved u32, sector u64) in its first device-readable bytes, then the
// data, then a status byte, the chain's last device-writable byte. The
// device serves VIRTIO_BLK_T_IN (pread straight into the guest's buffers),
// VIRTIO_BLK_T_OUT (pwrite straight from them), VIRTIO_BLK_T_FLUSH
// (fdatasync of the backing file, whatever the cache type) and
// VIRTIO_BLK_T_GET_ID (20 bytes: st_dev, st_rdev and st_ino of the backing
// file in decimal, concatenated, cut or zero-padded to 20, as kvmtool and
// Firecracker do); any other type gets VIRTIO_BLK_S_UNSUPP. I/O errors,
// and writes to a read-only drive, get VIRTIO_BLK_S_IOERR. The used length
// is what Firecracker reports: the status byte plus, for a successful IN,
// the data read, and for GET_ID the 20 id bytes (with IOERR if the
// driver's buffer is not exactly 20 bytes, a Firecracker quirk kept here).
//
// A chain that cannot be parsed (header cut short, no status byte, data in
// the wrong direction, a data length that is not a whole number of
// sectors, a range past the end of the disk, a chain the queue rejects...)
// is returned with used length 0 and no status written, and counted in
// execute_fails, as Firecracker does.
//
// The optional rate limiter is charged one op per parsed request, and for
// IN and OUT also the data length in bytes (the op is refunded if the
// bytes are refused). A refused request goes back on the queue, the device
// stops processing and waits for the limiter's Unblocked wake-up; queue
// notifications that arrive while the limiter is blocked are counted in
// rate_limiter_throttled_events and otherwise ignored.
//
// The device's worker goroutine, started at activation, stands in for
// Firecracker's VMM thread: it owns the queue and does all the I/O, so a
// slow disk never holds up a vCPU. UpdateFile (PATCH /drives) swaps the
// backing file between two requests, never during one.
//
// Snapshots (virtio.Snapshotter): Suspend waits for the request in flight
// and returns it to the driver, so the device holds nothing; its saved
// state is the rate limiter's and the capacity the guest saw. A device
// restored onto a backing file of another size shows the file's capacity
// and raises a configuration interrupt on Resume, as after a PATCH (which,
// on a suspended device, is announced on Resume too).
//
// Differences from Firecracker, all on paths no Linux driver takes:
//   - The chain's layout is free, as virtio 1.x requires of a device: the
//     header may span descriptors, the data may take several, and the
//     status is the last writable byte. Firecracker takes exactly header,
//     data and status descriptors (reading 16 header bytes whatever the
//     header descriptor's length, and the status from the third
//     descriptor's first byte). For the three-descriptor chains Linux sends
//     the outcome is the same.
//   - A request other than FLUSH with no data at all is a parse error, as
//     Firecracker's missing data descriptor is; an empty data descriptor,
//     which Firecracker serves as a zero-length transfer, is one too.
//   - A chain with a buffer outside guest RAM (or another fault the queue
//     checks) is a parse error here; Firecracker fails only when it
//     touches the buffer, with IOERR for a bad data buffer.
//   - FLUSH uses fdatasync where Firecracker calls fsync (sync_all): both
//     make the written data durable, which is all the guest can observe.
//   - update_fails counts failed UpdateFile calls; Firecracker never
//     increments it.
//   - A corrupt avail index stops processing and is counted in
//     event_fails; Firecracker panics.
package block
