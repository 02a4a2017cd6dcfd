package uffd

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Handler serves a guest's page faults from a snapshot memory file: a
// missing page is copied from the file (UFFDIO_COPY), and a page the VMM
// has discarded (UFFD_EVENT_REMOVE, the balloon) is zero-filled from then
// on, as the file's contents no longer apply to it.
type Handler struct {
	regions []Region
	fd      int        // the userfaultfd
	mem     []byte     // the memory file, mapped read-only
	removed [][]uint64 // per region, 1 bit per page; nil until a remove
	zero    []byte     // a zero page for regions whose pages exceed 4 KiB
	log     *log.Logger
	stats   Stats
	buf     []byte
}

// Stats counts what a Handler did.
type Stats struct {
	// Faults is the number of page faults served.
	Faults uint64
	// Zeroed is how many of them were answered with zeroes.
	Zeroed uint64
	// Removes is the number of remove events seen.
	Removes uint64
}

// errPeerGone ends Serve without error: the VMM's address space is gone.
var errPeerGone = errors.New("the VMM's address space is gone")

// NewHandler prepares to serve the regions of hs from mem, the memory
// file, which must hold every region's [offset, offset+size). The Handler
// owns hs.Uffd from here on. logger may be nil.
func NewHandler(hs *Handshake, mem *os.File, logger *log.Logger) (*Handler, error) {
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	fail := func(err error) (*Handler, error) {
		unix.Close(hs.Uffd)
		return nil, err
	}
	st, err := mem.Stat()
	if err != nil {
		return fail(fmt.Errorf("memory file: %w", err))
	}
	size := uint64(st.Size())
	for i, r := range hs.Regions {
		if r.Offset > size || r.Size > size-r.Offset {
			return fail(fmt.Errorf("region %d: file range [%#x, +%#x) lies beyond the memory file's %d bytes",
				i, r.Offset, r.Size, size))
		}
	}
	if size == 0 || size > uint64(^uint(0)>>1) {
		return fail(fmt.Errorf("memory file: cannot map %d bytes", size))
	}
	m, err := unix.Mmap(int(mem.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return fail(fmt.Errorf("memory file: mmap: %w", err))
	}
	h := &Handler{
		regions: hs.Regions,
		fd:      hs.Uffd,
		mem:     m,
		removed: make([][]uint64, len(hs.Regions)),
		log:     logger,
		buf:     make([]byte, 64*MsgSize),
	}
	// Events are read until EAGAIN. The VMM creates the descriptor
	// non-blocking; make sure of it (the flag is shared with the VMM, which
	// wants it too).
	if err := unix.SetNonblock(h.fd, true); err != nil {
		h.Close()
		return nil, fmt.Errorf("userfaultfd: %w", err)
	}
	return h, nil
}

// Close unmaps the memory file and closes the userfaultfd.
func (h *Handler) Close() error {
	var err error
	if h.mem != nil {
		err = unix.Munmap(h.mem)
		h.mem = nil
	}
	if h.zero != nil {
		unix.Munmap(h.zero)
		h.zero = nil
	}
	if h.fd >= 0 {
		if e := unix.Close(h.fd); err == nil {
			err = e
		}
		h.fd = -1
	}
	return err
}

// Stats returns the counts so far. It must not be called while Serve
// runs.
func (h *Handler) Stats() Stats { return h.stats }

// Serve handles faults until peer, the VMM's connection, hangs up (nil)
// or something fails.
func (h *Handler) Serve(peer *net.UnixConn) error {
	// A duplicate of the connection's descriptor, to poll it alongside the
	// userfaultfd: the connection carries nothing after the handshake,
	// only the hang-up matters. (peer.File would do, but its Fd would put
	// the shared file description into blocking mode under net's poller.)
	rc, err := peer.SyscallConn()
	if err != nil {
		return err
	}
	pfd := -1
	if cerr := rc.Control(func(fd uintptr) {
		pfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("dup the VMM connection: %w", err)
	}
	defer unix.Close(pfd)
	fds := []unix.PollFd{
		{Fd: int32(h.fd), Events: unix.POLLIN},
		{Fd: int32(pfd), Events: unix.POLLRDHUP},
	}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("poll: %w", err)
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			if err := h.drain(); err != nil {
				if err == errPeerGone {
					return nil
				}
				return err
			}
		} else if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			return fmt.Errorf("userfaultfd: poll events %#x", fds[0].Revents)
		}
		if fds[1].Revents != 0 {
			return nil
		}
	}
}

// drain reads every queued event and serves it. Remove events are applied
// before the faults read with them: a fault may be queued before the
// remove that precedes it in time (the vCPU and the balloon run on
// different threads), and zeroing a page the guest has just given up is
// right either way. While a remove is queued the kernel refuses
// UFFDIO_COPY with EAGAIN; such faults are kept and retried after reading
// on.
func (h *Handler) drain() error {
	var pending []Msg
	for {
		n0 := len(pending)
		var err error
		if pending, err = h.read(pending); err != nil {
			return err
		}
		for _, m := range pending[n0:] {
			switch m.Event {
			case EventRemove:
				h.stats.Removes++
				h.markRemoved(m.Start, m.End)
			case EventPagefault:
			default:
				// Only page faults and removes were asked for.
				h.log.Printf("ignoring unexpected userfaultfd event %#x", m.Event)
			}
		}
		var again []Msg
		for _, m := range pending {
			if m.Event != EventPagefault {
				continue
			}
			done, err := h.serve(m.Address)
			if err != nil {
				return err
			}
			if !done {
				again = append(again, m)
			}
		}
		if len(again) == 0 {
			return nil
		}
		pending = again
		// The remove that blocks the copies may still be on its way into
		// the queue: wait for it (briefly) rather than spin.
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}, 1)
	}
}

// read appends every message available on the userfaultfd.
func (h *Handler) read(msgs []Msg) ([]Msg, error) {
	for {
		n, err := unix.Read(h.fd, h.buf)
		switch {
		case err == unix.EAGAIN:
			return msgs, nil
		case err == unix.EINTR:
			continue
		case err != nil:
			return msgs, fmt.Errorf("read userfaultfd: %w", err)
		case n == 0:
			return msgs, nil
		}
		for off := 0; off+MsgSize <= n; off += MsgSize {
			m, _ := DecodeMsg(h.buf[off : off+MsgSize])
			msgs = append(msgs, m)
		}
	}
}

// region returns the index of the region holding addr, or -1.
func (h *Handler) region(addr uint64) int {
	for i, r := range h.regions {
		if addr >= r.BaseHostVirtAddr && addr-r.BaseHostVirtAddr < r.Size {
			return i
		}
	}
	return -1
}

// markRemoved records that the pages of [start, end) no longer hold the
// file's contents.
func (h *Handler) markRemoved(start, end uint64) {
	for i, r := range h.regions {
		lo, hi := max(start, r.BaseHostVirtAddr), min(end, r.End())
		if lo >= hi {
			continue
		}
		ps := r.PageSize
		if h.removed[i] == nil {
			h.removed[i] = make([]uint64, (r.Size/ps+63)/64)
		}
		for p := (lo - r.BaseHostVirtAddr) / ps; p <= (hi-1-r.BaseHostVirtAddr)/ps; p++ {
			h.removed[i][p/64] |= 1 << (p % 64)
		}
	}
}

// serve resolves the fault at addr. It reports false when the kernel asks
// for a retry (EAGAIN).
func (h *Handler) serve(addr uint64) (bool, error) {
	i := h.region(addr)
	if i < 0 {
		return false, fmt.Errorf("page fault at %#x outside every region", addr)
	}
	r := h.regions[i]
	ps := r.PageSize
	page := addr &^ (ps - 1)
	off := page - r.BaseHostVirtAddr
	p := off / ps
	var err error
	zero := h.removed[i] != nil && h.removed[i][p/64]&(1<<(p%64)) != 0
	switch {
	case zero && ps == 4096:
		_, err = ZeroPage(h.fd, page, ps, 0)
	case zero:
		// UFFDIO_ZEROPAGE does not work on hugetlbfs: copy zeroes.
		if h.zero == nil {
			if h.zero, err = unix.Mmap(-1, 0, int(ps), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
				return false, fmt.Errorf("map a zero page: %w", err)
			}
		}
		_, err = Copy(h.fd, page, AddressOf(h.zero[:ps]), ps, 0)
	default:
		src := r.Offset + off
		_, err = Copy(h.fd, page, AddressOf(h.mem[src:src+ps]), ps, 0)
	}
	switch err {
	case nil:
	case unix.EEXIST:
		// Already there: another fault on the same page was served
		// first. Make sure nobody stays asleep on it.
		if err := Wake(h.fd, page, ps); err != nil && err != unix.ESRCH {
			return false, fmt.Errorf("UFFDIO_WAKE %#x: %w", page, err)
		}
	case unix.EAGAIN:
		return false, nil
	case unix.ESRCH:
		return false, errPeerGone
	default:
		return false, fmt.Errorf("fill page %#x: %w", page, err)
	}
	h.stats.Faults++
	if zero {
		h.stats.Zeroed++
	}
	return true, nil
}

// ServeListener accepts one VMM on l, closes l, receives the handshake
// and serves the VMM's faults from mem until the VMM hangs up.
func ServeListener(l *net.UnixListener, mem *os.File, logger *log.Logger) error {
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	conn, err := l.AcceptUnix()
	l.Close()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer conn.Close()
	hs, err := Receive(conn)
	if err != nil {
		return err
	}
	h, err := NewHandler(hs, mem, logger)
	if err != nil {
		return err
	}
	defer h.Close()
	var total uint64
	for _, r := range hs.Regions {
		total += r.Size
	}
	logger.Printf("serving %d region(s), %d MiB in pages of %d bytes, from %s",
		len(hs.Regions), total>>20, hs.Regions[0].PageSize, mem.Name())
	err = h.Serve(conn)
	s := h.Stats()
	if err != nil {
		logger.Printf("stopping after %d faults (%d zero-filled, %d removes): %v", s.Faults, s.Zeroed, s.Removes, err)
		return err
	}
	logger.Printf("VMM hung up; served %d faults (%d zero-filled, %d removes)", s.Faults, s.Zeroed, s.Removes)
	return nil
}

// ListenAndServe is the page-fault handler program: it opens the memory
// file, listens on socketPath, and serves the first VMM that connects
// until it hangs up.
func ListenAndServe(socketPath, memPath string, logger *log.Logger) error {
	mem, err := os.Open(memPath)
	if err != nil {
		return err
	}
	defer mem.Close()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socketPath, Net: "unix"})
	if err != nil {
		return err
	}
	return ServeListener(l, mem, logger)
}
