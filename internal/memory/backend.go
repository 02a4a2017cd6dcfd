package memory

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/uffd"
)

// ErrHugetlbfsFile is Firecracker's refusal to map a hugetlbfs snapshot
// from its memory file.
var ErrHugetlbfsFile = errors.New("Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd.")

// snapshotPageSize is the page a region of a snapshot backend must be a
// whole number of, so that every region starts page aligned in the memory
// file and the fault handler serves whole pages.
func snapshotPageSize(opts Options) uint64 {
	if opts.HugePages == HugePages2M {
		return 2 << 20
	}
	return DiscardPageSize
}

// checkSnapshotLayout checks what the snapshot backends rely on: regions
// in ascending guest-address order, not overlapping, each a whole number
// of pages. It returns the total size (the memory file's).
func checkSnapshotLayout(layout []Layout, opts Options) (uint64, error) {
	ps := snapshotPageSize(opts)
	var total, end uint64
	for i, l := range layout {
		if l.Size == 0 {
			continue
		}
		if l.Size%ps != 0 {
			return 0, fmt.Errorf("guest memory region %d: size %#x is not a multiple of the %d-byte page", i, l.Size, ps)
		}
		if l.Start+l.Size < l.Start || (total > 0 && l.Start < end) {
			return 0, fmt.Errorf("guest memory region %d at %#x: regions must be in ascending, non-overlapping guest-address order", i, l.Start)
		}
		end = l.Start + l.Size
		if total+l.Size < total {
			return 0, fmt.Errorf("guest memory region %d: total size overflows", i)
		}
		total += l.Size
	}
	return total, nil
}

// NewFromFile maps guest memory from a snapshot memory file: each region
// is a private (copy-on-write) mapping of the file, region i from the sum
// of the sizes of the regions before it, so the file must be exactly the
// sum of the region sizes, regions in guest-address order. Nothing is
// copied: the kernel reads pages in as they are touched, so restore time
// does not grow with memory size, and the guest's writes never reach the
// file. The mapping holds its own reference to the file, so the caller
// may close f; it must not modify the file while the Guest lives, as
// pages not yet written would see the change. Hugetlbfs memory cannot be
// restored this way (ErrHugetlbfsFile): use NewUffd.
func NewFromFile(layout []Layout, f *os.File, opts Options) (*Guest, error) {
	if opts.HugePages == HugePages2M {
		return nil, ErrHugetlbfsFile
	}
	total, err := checkSnapshotLayout(layout, opts)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("memory file: %w", err)
	}
	if uint64(st.Size()) != total {
		return nil, fmt.Errorf("memory file %s is %d bytes, but the guest memory it should hold is %d bytes",
			f.Name(), st.Size(), total)
	}
	fd := int(f.Fd())
	return newGuest(layout, opts, true, func(l Layout, off uint64) ([]byte, error) {
		return unix.Mmap(fd, int64(off), int(l.Size), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	})
}

// uffdError words a Uffd backend failure as Firecracker's
// GuestMemoryFromUffdError inside its restore error.
func uffdError(what string, err error) error {
	return fmt.Errorf("Error creating guest memory from uffd: %s: %s", what, logger.OSErrorText(err))
}

// NewUffd maps guest memory for a snapshot restored through a page-fault
// handler (Firecracker's Uffd backend): anonymous private memory, as New,
// registered with a fresh userfaultfd in MISSING mode, after which the
// handler listening on socketPath receives the region list and the
// userfaultfd (uffd.Connect) and fills every page on first touch. The
// connection stays open until Close, so the handler can tell when the VMM
// is gone. Balloon discards (Discard) reach the handler as remove events.
//
// The errors read as Firecracker's, e.g. "Error creating guest memory
// from uffd: Failed to connect to UDS Unix stream: No such file or
// directory (os error 2)".
func NewUffd(layout []Layout, socketPath string, opts Options) (*Guest, error) {
	if _, err := checkSnapshotLayout(layout, opts); err != nil {
		return nil, err
	}
	g, err := New(layout, opts)
	if err != nil {
		return nil, err
	}
	fd, err := uffd.New(uffd.FeatureEventRemove)
	if err != nil {
		g.Close()
		return nil, uffdError("Failed to UFFD object", err)
	}
	g.release = append(g.release, func() error { return unix.Close(fd) })
	ps := snapshotPageSize(opts)
	var off uint64
	mappings := make([]uffd.Region, 0, len(g.regions))
	for _, r := range g.regions {
		base, size := uint64(r.HostAddress()), uint64(len(r.Mem))
		if _, err := uffd.Register(fd, base, size, uffd.RegisterModeMissing); err != nil {
			g.Close()
			return nil, uffdError("Failed to register memory address range with the userfaultfd object", err)
		}
		mappings = append(mappings, uffd.Region{
			BaseHostVirtAddr: base, Size: size, Offset: off, PageSize: ps, PageSizeKiB: ps,
		})
		off += size
	}
	conn, err := uffd.Connect(socketPath, mappings, fd)
	if err != nil {
		g.Close()
		if ce, ok := errors.AsType[*uffd.ConnectError](err); ok {
			return nil, uffdError("Failed to connect to UDS Unix stream", connectErrno(socketPath, ce.Err))
		}
		return nil, uffdError("Failed to sends file descriptor", err)
	}
	g.release = append(g.release, conn.Close)
	return g, nil
}

// connectErrno reduces a dial error to its errno, so that it renders as
// Rust's io::Error does; a path too long for sun_path gets Rust's own
// wording rather than Go's EINVAL.
func connectErrno(path string, err error) error {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return errors.New("path must be shorter than SUN_LEN")
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
