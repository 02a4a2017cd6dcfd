package jailer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/squib-vmm/squib/internal/logger"
)

// Limits are the resource limits the jailer sets (soft and hard alike)
// before exec; the VMM inherits them.
type Limits struct {
	// FileSize is RLIMIT_FSIZE in bytes; nil leaves the inherited limit.
	FileSize *uint64
	// NoFile is RLIMIT_NOFILE.
	NoFile uint64
}

// parseLimits reads --resource-limit values: fsize=<bytes>, no-file=<n>.
// Like Firecracker it parses the value before it looks at the name.
func parseLimits(args []string) (Limits, error) {
	l := Limits{NoFile: defaultNoFile}
	for _, arg := range args {
		name, value, ok := strings.Cut(arg, "=")
		if !ok {
			return Limits{}, fmt.Errorf("Invalid format for resources limits: %s", arg)
		}
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return Limits{}, fmt.Errorf("Invalid limit value for resource: %s: %s", value, rustParseIntError(value, err))
		}
		switch name {
		case "fsize":
			l.FileSize = &n
		case "no-file":
			l.NoFile = n
		default:
			return Limits{}, fmt.Errorf("Invalid resource argument: %s", name)
		}
	}
	return l, nil
}

// rustParseIntError words a number parse failure as Rust's ParseIntError
// does, since the message is Firecracker's.
func rustParseIntError(s string, err error) string {
	switch {
	case s == "":
		return "cannot parse integer from empty string"
	case errors.Is(err, strconv.ErrRange):
		return "number too large to fit in target type"
	}
	return "invalid digit found in string"
}

// install sets the limits on this process.
func (l Limits) install() error {
	if l.FileSize != nil {
		if err := setLimit(syscall.RLIMIT_FSIZE, *l.FileSize); err != nil {
			return fmt.Errorf("Failed to set limit for resource: size of file: %s", logger.OSErrorText(err))
		}
	}
	if err := setLimit(syscall.RLIMIT_NOFILE, l.NoFile); err != nil {
		return fmt.Errorf("Failed to set limit for resource: number of file descriptors: %s", logger.OSErrorText(err))
	}
	return nil
}

// setLimit uses the syscall package's Setrlimit, not x/sys/unix's raw call:
// for RLIMIT_NOFILE it also tells the Go runtime not to restore the limit
// it found at start-up in the processes it starts.
func setLimit(resource int, v uint64) error {
	return syscall.Setrlimit(resource, &syscall.Rlimit{Cur: v, Max: v})
}
