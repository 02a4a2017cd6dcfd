package mmds

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
)

// Version is the MMDS version. The zero value is V1, Firecracker's default.
type Version uint32

const (
	// V1 serves guests without a session token (deprecated by Firecracker).
	V1 Version = iota
	// V2 requires a session token on every guest GET.
	V2
)

// String returns "V1" or "V2", the spelling used on the wire.
func (v Version) String() string {
	switch v {
	case V1:
		return "V1"
	case V2:
		return "V2"
	default:
		return fmt.Sprintf("Version(%d)", uint32(v))
	}
}

// ParseVersion parses "V1" or "V2" (case-sensitive, as serde's enum is).
func ParseVersion(s string) (Version, bool) {
	switch s {
	case "V1":
		return V1, true
	case "V2":
		return V2, true
	}
	return 0, false
}

// DefaultIPv4Address is the MMDS address used when PUT /mmds/config omits
// ipv4_address.
var DefaultIPv4Address = netip.AddrFrom4([4]byte{169, 254, 169, 254})

// Config is the typed body of PUT /mmds/config. Decoding JSON (and reporting
// serde-style errors for bad fields) is the caller's job.
type Config struct {
	// Version is the MMDS version; V1 when the field is omitted.
	Version Version
	// NetworkInterfaces are the IDs of the interfaces MMDS is enabled on;
	// required and non-empty.
	NetworkInterfaces []string
	// IPv4Address is the MMDS address; the zero Addr means "omitted", i.e.
	// DefaultIPv4Address.
	IPv4Address netip.Addr
	// IMDSCompat forces the IMDS text format for guests.
	IMDSCompat bool
}

// Config errors. Their texts are Firecracker's MmdsConfigError messages,
// without the API's "MMMDS config error: " prefix.
var (
	// ErrEmptyNetworkInterfaces is returned when network_interfaces is empty.
	ErrEmptyNetworkInterfaces = errors.New("The list of network interface IDs that allow forwarding MMDS requests is empty.")
	// ErrInvalidIPv4Address is returned when ipv4_address is not a usable
	// link-local address.
	ErrInvalidIPv4Address = errors.New("The MMDS IPv4 address is not link local.")
	// ErrUnknownNetworkInterface is returned when an ID names no configured
	// interface.
	ErrUnknownNetworkInterface = errors.New("The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.")
)

// IsLinkLocalValid reports whether a is acceptable as the MMDS address:
// 169.254.x.y with x neither 0 nor 255.
func IsLinkLocalValid(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return b[0] == 169 && b[1] == 254 && b[2] != 0 && b[2] != 255
}

// IPv4 returns the effective MMDS address: IPv4Address, or the default when
// it was omitted.
func (c Config) IPv4() netip.Addr {
	if !c.IPv4Address.IsValid() {
		return DefaultIPv4Address
	}
	return c.IPv4Address
}

// WithDefaults returns c with the default address filled in, the form
// /vm/config reports under "mmds-config".
func (c Config) WithDefaults() Config {
	c.IPv4Address = c.IPv4()
	c.NetworkInterfaces = slices.Clone(c.NetworkInterfaces)
	return c
}

// Validate checks c against the IDs of the network interfaces configured so
// far, in Firecracker's order: address first, then an empty list, then
// unknown IDs. It returns one of the Err* config errors or nil. A Version
// other than V1 and V2 cannot come out of ParseVersion and is not checked.
func (c Config) Validate(knownIfaceIDs []string) error {
	if !IsLinkLocalValid(c.IPv4()) {
		return ErrInvalidIPv4Address
	}
	if len(c.NetworkInterfaces) == 0 {
		return ErrEmptyNetworkInterfaces
	}
	for _, id := range c.NetworkInterfaces {
		if !slices.Contains(knownIfaceIDs, id) {
			return ErrUnknownNetworkInterface
		}
	}
	return nil
}

// Prefixes Firecracker puts in front of MMDS errors in API fault messages.
// "MMMDS" is Firecracker's own spelling and clients may match on it.
const (
	// DataErrorPrefix precedes data-store errors (400).
	DataErrorPrefix = "MMDS error: "
	// ConfigErrorPrefix precedes PUT /mmds/config errors (400).
	ConfigErrorPrefix = "MMMDS config error: "
	// LimitErrorPrefix precedes ErrLimitExceeded (413).
	LimitErrorPrefix = "MMDS limit exceeded error: "
)

// FaultMessage maps an error from Store.Put/Patch or Config.Validate to the
// HTTP status and fault_message text of Firecracker's API, e.g. 413 and
// "MMDS limit exceeded error: The MMDS patch request doesn't fit.". Other
// errors get 400 and the data-store prefix.
func FaultMessage(err error) (status int, message string) {
	switch {
	case errors.Is(err, ErrLimitExceeded):
		return http.StatusRequestEntityTooLarge, LimitErrorPrefix + ErrLimitExceeded.Error()
	case errors.Is(err, ErrEmptyNetworkInterfaces),
		errors.Is(err, ErrInvalidIPv4Address),
		errors.Is(err, ErrUnknownNetworkInterface):
		return http.StatusBadRequest, ConfigErrorPrefix + err.Error()
	default:
		return http.StatusBadRequest, DataErrorPrefix + err.Error()
	}
}
