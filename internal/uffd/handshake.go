package uffd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"slices"

	"golang.org/x/sys/unix"
)

// Region is one entry of the handshake's JSON array, Firecracker's
// GuestRegionUffdMapping: the guest memory region mapped at
// BaseHostVirtAddr in the VMM for Size bytes is backed by the memory file
// from Offset on, and is populated in pages of PageSize bytes.
type Region struct {
	// BaseHostVirtAddr is the region's address in the VMM's address
	// space, the one the userfaultfd reports faults in.
	BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
	// Size is the region's length in bytes.
	Size uint64 `json:"size"`
	// Offset is where the region's contents start in the memory file:
	// the sum of the sizes of the regions before it.
	Offset uint64 `json:"offset"`
	// PageSize is the granularity of faults: 4096, or 2 MiB for
	// hugetlbfs-backed memory.
	PageSize uint64 `json:"page_size"`
	// PageSizeKiB repeats PageSize, in bytes despite its name. Firecracker
	// still sends it (deprecated) and handlers written for it read it.
	PageSizeKiB uint64 `json:"page_size_kib"`
}

// End is the first VMM address after the region.
func (r Region) End() uint64 { return r.BaseHostVirtAddr + r.Size }

// MaxHandshake bounds the handshake message a handler accepts: far more
// than any real region list, small enough that a hostile peer cannot make
// the handler buffer without limit.
const MaxHandshake = 1 << 20

// MarshalRegions encodes the handshake payload.
func MarshalRegions(regions []Region) ([]byte, error) {
	if regions == nil {
		regions = []Region{}
	}
	return json.Marshal(regions)
}

// ParseRegions decodes and validates a handshake payload: a JSON array of
// at least one Region, each with a power-of-two page size of at least
// 4 KiB, a page-aligned base and size, no address or file range that
// wraps around, and no two regions overlapping in the VMM's address
// space. page_size_kib may be absent (a handler must not need it); when
// present it must equal page_size. Unknown keys are ignored, as
// Firecracker's own handler ignores them.
func ParseRegions(b []byte) ([]Region, error) {
	var raw []struct {
		Region
		PageSizeKiB *uint64 `json:"page_size_kib"`
	}
	// Go matches keys case-insensitively; the payload is the VMM's own
	// output, and the checks below catch any value that does not fit.
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("invalid uffd handshake: %w", err)
	}
	if raw == nil {
		return nil, errors.New("invalid uffd handshake: want a JSON array of regions")
	}
	if len(raw) == 0 {
		return nil, errors.New("invalid uffd handshake: no regions")
	}
	regions := make([]Region, len(raw))
	for i, e := range raw {
		r := e.Region
		r.PageSizeKiB = r.PageSize
		if e.PageSizeKiB != nil && *e.PageSizeKiB != r.PageSize {
			return nil, fmt.Errorf("invalid uffd handshake: region %d: page_size_kib %d differs from page_size %d",
				i, *e.PageSizeKiB, r.PageSize)
		}
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("invalid uffd handshake: region %d: %w", i, err)
		}
		regions[i] = r
	}
	byAddr := slices.Clone(regions)
	slices.SortFunc(byAddr, func(a, b Region) int {
		switch {
		case a.BaseHostVirtAddr < b.BaseHostVirtAddr:
			return -1
		case a.BaseHostVirtAddr > b.BaseHostVirtAddr:
			return 1
		}
		return 0
	})
	for i := 1; i < len(byAddr); i++ {
		if byAddr[i].BaseHostVirtAddr < byAddr[i-1].End() {
			return nil, fmt.Errorf("invalid uffd handshake: regions at %#x and %#x overlap",
				byAddr[i-1].BaseHostVirtAddr, byAddr[i].BaseHostVirtAddr)
		}
	}
	return regions, nil
}

func (r Region) check() error {
	ps := r.PageSize
	if ps < 4096 || bits.OnesCount64(ps) != 1 {
		return fmt.Errorf("page_size %d is not a power of two of at least 4096", ps)
	}
	if r.Size == 0 {
		return errors.New("size is 0")
	}
	if r.BaseHostVirtAddr%ps != 0 || r.Size%ps != 0 {
		return fmt.Errorf("base_host_virt_addr %#x or size %#x not a multiple of page_size %d",
			r.BaseHostVirtAddr, r.Size, ps)
	}
	if r.BaseHostVirtAddr+r.Size < r.BaseHostVirtAddr {
		return fmt.Errorf("base_host_virt_addr %#x + size %#x wraps around", r.BaseHostVirtAddr, r.Size)
	}
	if r.Offset+r.Size < r.Offset {
		return fmt.Errorf("offset %#x + size %#x wraps around", r.Offset, r.Size)
	}
	return nil
}

// ConnectError is the failure to connect to the handler's socket, kept
// apart from the failure to send so that the VMM can word each as
// Firecracker does.
type ConnectError struct{ Err error }

// Error words the failure for logs.
func (e *ConnectError) Error() string { return "connect to the uffd handler: " + e.Err.Error() }

// Unwrap returns the connect error.
func (e *ConnectError) Unwrap() error { return e.Err }

// Connect connects to the page-fault handler listening on socketPath and
// sends the handshake: one message whose payload is the JSON region list
// and whose SCM_RIGHTS carries uffd. It returns the connection, which the
// caller keeps open for as long as the memory is in use (Firecracker never
// closes it): closing it too early could let the hang-up overtake the
// message, and it is how the handler learns that the VMM is gone. A
// failure to connect is a *ConnectError.
func Connect(socketPath string, regions []Region, uffd int) (*net.UnixConn, error) {
	payload, err := MarshalRegions(regions)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socketPath, Net: "unix"})
	if err != nil {
		return nil, &ConnectError{Err: err}
	}
	n, oobn, err := conn.WriteMsgUnix(payload, unix.UnixRights(uffd), nil)
	if err == nil && (n != len(payload) || oobn == 0) {
		err = io.ErrShortWrite
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("send the uffd handshake: %w", err)
	}
	return conn, nil
}

// Handshake is what the handler receives: the region list and the
// userfaultfd. Uffd is a plain descriptor for the reason New gives; whoever
// holds the Handshake closes it (NewHandler takes it over).
type Handshake struct {
	Regions []Region
	Uffd    int
}

// Receive reads the handshake from a VMM's connection. The payload may in
// principle arrive in more than one read; the descriptor comes with the
// first byte, and reading stops at the end of the JSON array (the VMM
// sends nothing after it and keeps the connection open).
func Receive(conn *net.UnixConn) (*Handshake, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room for a few stray fds
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if errors.Is(err, io.EOF) {
		return nil, errors.New("receive the uffd handshake: the VMM closed the connection")
	}
	if err != nil {
		return nil, fmt.Errorf("receive the uffd handshake: %w", err)
	}
	fds, ferr := parseRights(oob[:oobn])
	uffd := -1
	for i, fd := range fds {
		if i == 0 {
			uffd = fd
		} else {
			unix.Close(fd) // only one descriptor belongs to the protocol
		}
	}
	fail := func(err error) (*Handshake, error) {
		if uffd >= 0 {
			unix.Close(uffd)
		}
		return nil, err
	}
	switch {
	case ferr != nil:
		return fail(fmt.Errorf("receive the uffd handshake: %w", ferr))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(errors.New("receive the uffd handshake: control message truncated"))
	case uffd < 0 && n == 0:
		return fail(errors.New("receive the uffd handshake: the VMM closed the connection"))
	case uffd < 0:
		return fail(errors.New("receive the uffd handshake: no userfaultfd came with the message"))
	case len(fds) > 1:
		return fail(fmt.Errorf("receive the uffd handshake: %d descriptors, want 1", len(fds)))
	}
	msg := json.RawMessage(buf[:n])
	if !json.Valid(msg) {
		// Not all of it came in the first read: let a decoder read on to
		// the end of the value.
		dec := json.NewDecoder(io.MultiReader(bytes.NewReader(buf[:n]), io.LimitReader(conn, MaxHandshake-int64(n))))
		if err := dec.Decode(&msg); err != nil {
			return fail(fmt.Errorf("invalid uffd handshake: %w", err))
		}
	}
	regions, err := ParseRegions(msg)
	if err != nil {
		return fail(err)
	}
	return &Handshake{Regions: regions, Uffd: uffd}, nil
}

// parseRights returns the descriptors in SCM_RIGHTS control messages.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		f, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, err
		}
		fds = append(fds, f...)
	}
	return fds, nil
}
