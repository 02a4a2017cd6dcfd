package vmm

import (
	"fmt"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/mmds"
)

// Phase errors, verbatim from Firecracker (clients compare them).
const (
	MsgNotSupportedBeforeStart = "The requested operation is not supported before starting the microVM."
	MsgNotSupportedAfterStart  = "The requested operation is not supported after starting the microVM."
)

// Category prefixes Firecracker puts in front of a VMM error. The MMDS config
// prefix carries Firecracker's own typo because clients match on it.
const (
	PrefixBalloonConfig = "Balloon config error: "
	PrefixBalloonUpdate = "Balloon update error: "
	PrefixBootSource    = "Boot source error: "
	PrefixCreateSnap    = "Create snapshot error: "
	PrefixCPUConfig     = "Configure CPU error: "
	PrefixDrive         = "Drive config error: "
	PrefixEntropy       = "Entropy config error: "
	PrefixPmem          = "Pmem config error: "
	PrefixHotplugConfig = "Memory hotplug config error: "
	PrefixHotplugUpdate = "Memory hotplug update error: "
	PrefixInternal      = "Internal VMM error: "
	PrefixLoadSnap      = "Load snapshot error: "
	PrefixLogger        = "Logger error: "
	PrefixMachine       = "Machine config error: "
	PrefixMetrics       = "Metrics error: "
	PrefixMmds          = "MMDS error: "
	PrefixMmdsConfig    = "MMMDS config error: "
	PrefixMmdsLimit     = "MMDS limit exceeded error: "
	PrefixNetwork       = "Network config error: "
	PrefixStart         = "Start microvm error: "
	PrefixVsock         = "Vsock config error: "
	PrefixSerial        = "Serial config error: "
	PrefixUnsupported   = "The requested operation is not supported: "
)

// Error is a failed request: the message is sent as fault_message.
type Error struct {
	// Msg is the full client-visible text, prefix included.
	Msg string
	// TooLarge marks the MMDS size-limit failure, which Firecracker answers
	// with 413 instead of 400.
	TooLarge bool
	// Fatal asks the process to exit after the answer is sent, as
	// Firecracker does after a failed snapshot load.
	Fatal bool
}

func (e *Error) Error() string { return e.Msg }

// errorf builds an *Error with a category prefix.
func errorf(prefix, format string, args ...any) *Error {
	return &Error{Msg: prefix + fmt.Sprintf(format, args...)}
}

// errNotBefore and errNotAfter are the phase errors.
var (
	errNotBefore = &Error{Msg: MsgNotSupportedBeforeStart}
	errNotAfter  = &Error{Msg: MsgNotSupportedAfterStart}
)

// OSErrorText renders an OS error as Rust's io::Error displays it ("No
// such file or directory (os error 2)"): Firecracker's messages embed that
// form and clients match on it.
func OSErrorText(err error) string { return logger.OSErrorText(err) }

// mmdsError turns an MMDS store or configuration error into the API's
// error, keeping Firecracker's 413 for the size limit.
func mmdsError(err error) *Error {
	status, msg := mmds.FaultMessage(err)
	return &Error{Msg: msg, TooLarge: status == 413}
}
