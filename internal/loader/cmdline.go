package loader

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/squib-vmm/squib/internal/memory"
)

// initArgsSeparator splits kernel parameters from the arguments the kernel
// passes on to init. Tokens the VMM adds must stay before it, or the
// kernel would hand them to init instead of parsing them.
const initArgsSeparator = " -- "

// Command-line errors. Both are wrapped with the detail.
var (
	// ErrCmdlineTooLarge means the command line, NUL included, would
	// exceed its capacity.
	ErrCmdlineTooLarge = errors.New("kernel command line too long")
	// ErrCmdlineInvalid means a string that cannot go on a command line.
	ErrCmdlineInvalid = errors.New("invalid kernel command line")
)

// Cmdline builds a kernel command line within a size limit. It keeps the
// boot arguments apart from the init arguments so that tokens inserted
// later land before the " -- " separator, as in Firecracker.
type Cmdline struct {
	boot     string
	init     string
	capacity int
}

// NewCmdline returns an empty command line holding at most capacity bytes,
// the terminating NUL included (x86.CmdlineMaxSize for a guest).
func NewCmdline(capacity int) (*Cmdline, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("%w: capacity %d", ErrCmdlineInvalid, capacity)
	}
	return &Cmdline{capacity: capacity}, nil
}

// ParseCmdline splits a user's boot_args at the first " -- " outside
// double quotes into boot and init arguments, trimming each. Like
// Firecracker, it checks only the size and leaves the content to the
// kernel, except for NUL, which a C string cannot carry.
func ParseCmdline(s string, capacity int) (*Cmdline, error) {
	c, err := NewCmdline(capacity)
	if err != nil {
		return nil, err
	}
	if strings.IndexByte(s, 0) >= 0 {
		return nil, fmt.Errorf("%w: contains a NUL byte", ErrCmdlineInvalid)
	}
	boot, init := s, ""
	for i := 0; ; {
		j := strings.Index(s[i:], initArgsSeparator)
		if j < 0 {
			break
		}
		if strings.Count(s[:i+j], `"`)%2 == 0 {
			boot, init = s[:i+j], s[i+j+len(initArgsSeparator):]
			break
		}
		i += j + 1
	}
	c.boot, c.init = strings.TrimSpace(boot), strings.TrimSpace(init)
	if n := c.Size(); n > capacity {
		return nil, fmt.Errorf("%w: %d bytes with the NUL, limit %d", ErrCmdlineTooLarge, n, capacity)
	}
	return c, nil
}

// Capacity is the size limit, NUL included.
func (c *Cmdline) Capacity() int { return c.capacity }

// Size is the length of AsCString's result: the command line plus its NUL.
func (c *Cmdline) Size() int {
	n := len(c.boot) + 1
	if c.init != "" {
		n += len(initArgsSeparator) + len(c.init)
	}
	return n
}

// InsertStr appends s, trimmed, to the boot arguments (before any " -- ").
// s must be printable ASCII; an empty s is a no-op.
func (c *Cmdline) InsertStr(s string) error {
	s = strings.TrimSpace(s)
	if err := checkPrintable(s); err != nil {
		return err
	}
	if s == "" {
		return nil
	}
	return c.appendTo(&c.boot, s, " ")
}

// InsertInitArgs appends s, trimmed, to the init arguments after " -- ".
func (c *Cmdline) InsertInitArgs(s string) error {
	s = strings.TrimSpace(s)
	if err := checkPrintable(s); err != nil {
		return err
	}
	if s == "" {
		return nil
	}
	return c.appendTo(&c.init, s, " ")
}

// Insert appends key=val to the boot arguments. The key may not contain
// spaces or '='; a value with spaces must be wholly double quoted, and may
// not have quotes elsewhere, so that the kernel parses it back as one
// parameter.
func (c *Cmdline) Insert(key, val string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrCmdlineInvalid)
	}
	if err := checkPrintable(key); err != nil {
		return err
	}
	if strings.ContainsAny(key, " =") {
		return fmt.Errorf("%w: key %q contains a space or '='", ErrCmdlineInvalid, key)
	}
	if err := checkPrintable(val); err != nil {
		return err
	}
	quoted := len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"'
	if len(val) >= 3 && strings.Contains(val[1:len(val)-1], `"`) {
		return fmt.Errorf("%w: value %q has a quote inside it", ErrCmdlineInvalid, val)
	}
	if strings.Contains(val, " ") && !quoted {
		return fmt.Errorf("%w: value %q has spaces but is not quoted", ErrCmdlineInvalid, val)
	}
	return c.InsertStr(key + "=" + val)
}

// AddVirtioMMIODevice inserts the VirtioMMIOToken announcing one
// virtio-mmio device into the boot arguments.
func (c *Cmdline) AddVirtioMMIODevice(size, base uint64, irq uint32) error {
	if size == 0 {
		return fmt.Errorf("%w: zero-sized virtio-mmio device", ErrCmdlineInvalid)
	}
	return c.InsertStr(VirtioMMIOToken(size, base, irq))
}

// appendTo adds s to *part, with sep when *part is not empty, if the
// result still fits.
func (c *Cmdline) appendTo(part *string, s, sep string) error {
	grow := len(s)
	switch {
	case *part != "":
		grow += len(sep)
	case part == &c.init:
		grow += len(initArgsSeparator) // the first init argument brings " -- "
	}
	if c.Size()+grow > c.capacity {
		return fmt.Errorf("%w: adding %q needs %d bytes, limit %d", ErrCmdlineTooLarge, s, c.Size()+grow, c.capacity)
	}
	if *part != "" {
		*part += sep
	}
	*part += s
	return nil
}

// String returns the command line without the NUL.
func (c *Cmdline) String() string {
	if c.init == "" {
		return c.boot
	}
	return c.boot + initArgsSeparator + c.init
}

// AsCString returns the command line with its terminating NUL, as it goes
// into guest memory. Init arguments without any boot argument are an
// error: the kernel would not see a separator before them.
func (c *Cmdline) AsCString() ([]byte, error) {
	if c.boot == "" && c.init != "" {
		return nil, fmt.Errorf("%w: init arguments without boot arguments", ErrCmdlineInvalid)
	}
	s := c.String()
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b, nil
}

// LoadCmdline writes the command line with its NUL at gpa (normally
// x86.CmdlineStart) and returns the bytes written, NUL included: the
// zero page's cmdline_size.
func LoadCmdline(mem *memory.Guest, gpa uint64, c *Cmdline) (int, error) {
	b, err := c.AsCString()
	if err != nil {
		return 0, err
	}
	if err := mem.WriteAt(b, gpa); err != nil {
		return 0, fmt.Errorf("writing the kernel command line: %w", err)
	}
	return len(b), nil
}

// VirtioMMIOToken is the kernel parameter announcing one virtio-mmio
// device, e.g. "virtio_mmio.device=4K@0xc0001000:5": size with a K, M or G
// suffix when it is a multiple, base in lowercase hex, irq in decimal.
func VirtioMMIOToken(size, base uint64, irq uint32) string {
	return "virtio_mmio.device=" + sizeString(size) + "@0x" +
		strconv.FormatUint(base, 16) + ":" + strconv.FormatUint(uint64(irq), 10)
}

// sizeString prints size with the largest binary suffix that divides it.
func sizeString(size uint64) string {
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if size%(1<<u.shift) == 0 {
			return strconv.FormatUint(size>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(size, 10)
}

// checkPrintable accepts only printable ASCII: anything else could be
// misread by the kernel's parser or end the C string early.
func checkPrintable(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return fmt.Errorf("%w: byte %#x at %d is not printable ASCII", ErrCmdlineInvalid, s[i], i)
		}
	}
	return nil
}
