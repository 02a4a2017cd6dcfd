package block

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/virtio"
)

// Request types (virtio_blk_outhdr.type) the device serves.
const (
	TypeIn    = 0 // VIRTIO_BLK_T_IN: read from the disk
	TypeOut   = 1 // VIRTIO_BLK_T_OUT: write to the disk
	TypeFlush = 4 // VIRTIO_BLK_T_FLUSH
	TypeGetID = 8 // VIRTIO_BLK_T_GET_ID
)

// Request status codes, the byte the device writes last.
const (
	StatusOK     = 0 // VIRTIO_BLK_S_OK
	StatusIOErr  = 1 // VIRTIO_BLK_S_IOERR
	StatusUnsupp = 2 // VIRTIO_BLK_S_UNSUPP
)

const (
	// SectorShift and SectorSize: the guest addresses the disk in
	// 512-byte sectors whatever the host's block size.
	SectorShift = 9
	SectorSize  = 1 << SectorShift
	// IDBytes is the length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
	IDBytes = 20
	// headerLen is sizeof(struct virtio_blk_outhdr).
	headerLen = 16
)

// Parse errors, named after Firecracker's VirtioBlockError variants so the
// logs read the same.
var (
	errHeader        = errors.New("DescriptorLengthTooSmall: request header shorter than 16 bytes")
	errNoStatus      = errors.New("UnexpectedReadOnlyDescriptor: no writable status byte")
	errTooShort      = errors.New("DescriptorChainTooShort: request without data")
	errReadOnlyData  = errors.New("UnexpectedReadOnlyDescriptor: device-readable data for a request that fills it")
	errWriteOnlyData = errors.New("UnexpectedWriteOnlyDescriptor: device-writable data for a write request")
	errDataLen       = errors.New("InvalidDataLength")
	errOffset        = errors.New("InvalidOffset")
)

// errReadOnly is the I/O error of a write to a read-only drive. The
// backing file of such a drive is normally opened O_RDONLY, so the write
// would fail anyway (EBADF, as in Firecracker); the check makes it so
// whatever mode the caller opened the file in.
var errReadOnly = errors.New("write to a read-only drive")

// request is a parsed request header with the length of its data: the
// device-writable bytes before the status byte for IN and GET_ID, the
// device-readable bytes after the header for OUT.
type request struct {
	typ     uint32
	sector  uint64
	dataLen uint32
}

// typeName names a request type as Firecracker's RequestType debug form.
func typeName(t uint32) string {
	switch t {
	case TypeIn:
		return "In"
	case TypeOut:
		return "Out"
	case TypeFlush:
		return "Flush"
	case TypeGetID:
		return "GetDeviceID"
	}
	return fmt.Sprintf("Unsupported(%d)", t)
}

// parse reads and checks the request a chain carries against a disk of
// nsectors sectors (Firecracker's Request::parse). An error means the
// chain is returned unused, without a status.
func parse(c *virtio.DescriptorChain, nsectors uint64) (request, error) {
	var req request
	if c.ReadableLen() < headerLen {
		return req, errHeader
	}
	var h [headerLen]byte
	// Reader.Read fills h unless guest memory faults; called directly, not
	// through io.ReadFull, so that neither escapes to the heap.
	r := c.Reader()
	if n, err := r.Read(h[:]); err != nil || n != headerLen {
		return req, fmt.Errorf("%w: read %d bytes: %v", errHeader, n, err)
	}
	req.typ = binary.LittleEndian.Uint32(h[0:4])
	req.sector = binary.LittleEndian.Uint64(h[8:16])
	if c.WritableLen() == 0 {
		return req, errNoStatus
	}
	out := c.ReadableLen() - headerLen // data the device reads
	in := c.WritableLen() - 1          // data the device writes
	switch req.typ {
	case TypeIn, TypeGetID:
		if out != 0 {
			return req, errReadOnlyData
		}
		req.dataLen = in
	case TypeOut:
		if in != 0 {
			return req, errWriteOnlyData
		}
		req.dataLen = out
	case TypeFlush:
		// Any data is ignored: Firecracker accepts a flush with or without
		// a data descriptor of either direction.
		return req, nil
	default:
		// Only a flush may come without data, even an unsupported request.
		if in == 0 && out == 0 {
			return req, errTooShort
		}
		return req, nil
	}
	if req.dataLen == 0 {
		return req, errTooShort
	}
	if req.typ == TypeGetID {
		if req.dataLen < IDBytes {
			return req, errDataLen
		}
		return req, nil
	}
	if req.dataLen%SectorSize != 0 {
		return req, errDataLen
	}
	top := req.sector + uint64(req.dataLen>>SectorShift)
	if top < req.sector || top > nsectors {
		return req, errOffset
	}
	return req, nil
}

// dataBuffers appends to dst the host slices of guest memory holding n
// bytes of descs' buffers, after the first skip bytes. The chain was
// validated when popped, so every buffer lies in guest RAM; the check is
// kept so that a fault can never become a panic.
func dataBuffers(dst [][]byte, mem *memory.Guest, descs []virtio.Descriptor, skip, n uint32) ([][]byte, error) {
	for _, d := range descs {
		if n == 0 {
			break
		}
		l := d.Len
		if skip >= l {
			skip -= l
			continue
		}
		k := min(l-skip, n)
		b, err := mem.Slice(d.Addr+uint64(skip), uint64(k))
		if err != nil {
			return dst, err
		}
		dst = append(dst, b)
		skip = 0
		n -= k
	}
	if n != 0 {
		return dst, io.ErrUnexpectedEOF
	}
	return dst, nil
}

// statusByte returns the chain's last writable byte, where the status
// goes.
func statusByte(mem *memory.Guest, c *virtio.DescriptorChain) ([]byte, error) {
	ws := c.Writable()
	for i := len(ws) - 1; i >= 0; i-- {
		if d := ws[i]; d.Len > 0 {
			return mem.Slice(d.Addr+uint64(d.Len-1), 1)
		}
	}
	return nil, errNoStatus
}

// readAt fills bufs, in order, from f at off: the Sync engine's
// read_exact, straight into guest memory. A short read (the file shrank
// under the guest) is an error.
func readAt(f *os.File, bufs [][]byte, off int64) error {
	for _, b := range bufs {
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// writeAt writes bufs, in order, to f at off (write_all).
func writeAt(f *os.File, bufs [][]byte, off int64) error {
	for _, b := range bufs {
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// execute serves a parsed request on disk dk, writes its status and
// returns the used length (Firecracker's Request::process and
// PendingRequest::finish with the Sync engine).
func (w *worker) execute(c *virtio.DescriptorChain, req request, dk *disk) uint32 {
	var (
		status = byte(StatusOK)
		toMem  uint32 // data bytes written to the guest
		err    error
	)
	switch req.typ {
	case TypeIn:
		start := time.Now()
		w.iov, err = dataBuffers(w.iov[:0], w.mem, c.Writable(), 0, req.dataLen)
		if err == nil {
			err = readAt(dk.file, w.iov, int64(req.sector<<SectorShift))
		}
		w.m.ReadAgg.RecordSince(start)
		if err == nil {
			w.m.ReadBytes.Add(uint64(req.dataLen))
			w.m.ReadCount.Inc()
			toMem = req.dataLen
		}
	case TypeOut:
		start := time.Now()
		if w.readOnly {
			err = errReadOnly
		} else {
			w.iov, err = dataBuffers(w.iov[:0], w.mem, c.Readable(), headerLen, req.dataLen)
			if err == nil {
				err = writeAt(dk.file, w.iov, int64(req.sector<<SectorShift))
			}
		}
		w.m.WriteAgg.RecordSince(start)
		if err == nil {
			w.m.WriteBytes.Add(uint64(req.dataLen))
			w.m.WriteCount.Inc()
		}
	case TypeFlush:
		if err = dk.flush(); err == nil {
			w.m.FlushCount.Inc()
		}
	case TypeGetID:
		w.iov, err = dataBuffers(w.iov[:0], w.mem, c.Writable(), 0, IDBytes)
		if err == nil {
			id := dk.id[:]
			for _, b := range w.iov {
				id = id[copy(b, id):]
			}
			toMem = IDBytes
			// Firecracker compares the id's length with the whole
			// buffer's: a driver that offers more than 20 bytes gets
			// the id and IOERR.
			if req.dataLen != IDBytes {
				err = fmt.Errorf("PartialTransfer { completed: %d, expected: %d }", IDBytes, req.dataLen)
			}
		}
	default:
		status = StatusUnsupp
		w.m.InvalidReqsCount.Inc()
		log.RateLimited(&rlUnsupported).Errorf("Received unsupported virtio block request: %d", req.typ)
	}
	if err != nil {
		status = StatusIOErr
		w.m.InvalidReqsCount.Inc()
		log.RateLimited(&rlExecute).Errorf("Failed to execute %s virtio block request: %v", typeName(req.typ), err)
	}
	sb, serr := statusByte(w.mem, c)
	if serr != nil {
		// Firecracker discards a chain whose status it cannot write.
		log.RateLimited(&rlStatus).Errorf("Failed to write virtio block status: %v", serr)
		return 0
	}
	sb[0] = status
	return toMem + 1
}
