package vmm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// The types in this file are Firecracker's API and config-file models. Each
// is decoded with jsonx (strict: unknown members rejected unless the type
// carries jsonx.Lenient; `squib:"required"` members must be present) and
// encoded for GET responses in Firecracker's key order with nulls, which is
// why optional members are pointers without omitempty.

// TokenBucket is one bucket of a rate limiter. Unknown members are ignored,
// as in Firecracker.
type TokenBucket struct {
	Size         *uint64 `json:"size" squib:"required"`
	OneTimeBurst *uint64 `json:"one_time_burst"`
	RefillTime   *uint64 `json:"refill_time" squib:"required"`
	_            jsonx.Lenient
}

// enabled reports whether the bucket limits anything: Firecracker treats a
// size or refill time of 0 as "no bucket".
func (b *TokenBucket) enabled() bool {
	return b != nil && b.Size != nil && b.RefillTime != nil && *b.Size != 0 && *b.RefillTime != 0
}

// normalized returns the bucket as GET reports it: nil when disabled, a
// one_time_burst of 0 shown as null.
func (b *TokenBucket) normalized() *TokenBucket {
	if !b.enabled() {
		return nil
	}
	n := &TokenBucket{Size: b.Size, RefillTime: b.RefillTime, OneTimeBurst: b.OneTimeBurst}
	if n.OneTimeBurst != nil && *n.OneTimeBurst == 0 {
		n.OneTimeBurst = nil
	}
	return n
}

// RateLimiter limits bandwidth (bytes) and operations.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth"`
	Ops       *TokenBucket `json:"ops"`
}

// normalized returns the limiter as GET reports it: nil when no bucket is
// enabled.
func (r *RateLimiter) normalized() *RateLimiter {
	if r == nil {
		return nil
	}
	n := &RateLimiter{Bandwidth: r.Bandwidth.normalized(), Ops: r.Ops.normalized()}
	if n.Bandwidth == nil && n.Ops == nil {
		return nil
	}
	return n
}

// merged applies a PATCH of rate limiters: an absent bucket is kept, a
// present one replaces (and a disabled one removes) the old.
func (r *RateLimiter) merged(update *RateLimiter) *RateLimiter {
	if update == nil {
		return r
	}
	out := &RateLimiter{}
	if r != nil {
		*out = *r
	}
	if update.Bandwidth != nil {
		out.Bandwidth = update.Bandwidth
	}
	if update.Ops != nil {
		out.Ops = update.Ops
	}
	return out.normalized()
}

// MachineConfig is the body of PUT /machine-config and the machine-config
// of the config file and of GET /vm/config.
type MachineConfig struct {
	VcpuCount       *uint8       `json:"vcpu_count" squib:"required"`
	MemSizeMib      *uint64      `json:"mem_size_mib" squib:"required"`
	Smt             *bool        `json:"smt"`
	CPUTemplate     *CPUTemplate `json:"cpu_template,omitempty"`
	TrackDirtyPages *bool        `json:"track_dirty_pages"`
	HugePages       *HugePages   `json:"huge_pages"`
}

// MachineConfigUpdate is the body of PATCH /machine-config: every member
// optional.
type MachineConfigUpdate struct {
	VcpuCount       *uint8       `json:"vcpu_count"`
	MemSizeMib      *uint64      `json:"mem_size_mib"`
	Smt             *bool        `json:"smt"`
	CPUTemplate     *CPUTemplate `json:"cpu_template"`
	TrackDirtyPages *bool        `json:"track_dirty_pages"`
	HugePages       *HugePages   `json:"huge_pages"`
}

// Empty reports whether the update changes nothing (Firecracker rejects an
// empty PATCH).
func (u *MachineConfigUpdate) Empty() bool {
	return u.VcpuCount == nil && u.MemSizeMib == nil && u.Smt == nil && u.CPUTemplate == nil &&
		u.TrackDirtyPages == nil && u.HugePages == nil
}

// AsUpdate turns a PUT body into an update. Firecracker resets omitted
// smt, track_dirty_pages and huge_pages on PUT but keeps an omitted
// cpu_template.
func (m *MachineConfig) AsUpdate() MachineConfigUpdate {
	f := false
	none := HugePagesNone
	u := MachineConfigUpdate{VcpuCount: m.VcpuCount, MemSizeMib: m.MemSizeMib, Smt: m.Smt,
		CPUTemplate: m.CPUTemplate, TrackDirtyPages: m.TrackDirtyPages, HugePages: m.HugePages}
	if u.Smt == nil {
		u.Smt = &f
	}
	if u.TrackDirtyPages == nil {
		u.TrackDirtyPages = &f
	}
	if u.HugePages == nil {
		u.HugePages = &none
	}
	return u
}

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath *string `json:"kernel_image_path" squib:"required"`
	InitrdPath      *string `json:"initrd_path"`
	BootArgs        *string `json:"boot_args"`
}

// DefaultBootArgs is the kernel command line used when boot_args is omitted.
const DefaultBootArgs = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

// MaxCmdlineLen is the largest kernel command line Firecracker accepts on
// x86_64, in bytes.
const MaxCmdlineLen = 2048

// validateCmdline checks a kernel command line as Firecracker's Cmdline
// builder does: printable ASCII, within the size limit.
func validateCmdline(s string) error {
	if len(s) >= MaxCmdlineLen {
		return fmt.Errorf("Command line string is too long")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("String contains invalid characters")
		}
	}
	return nil
}

// Drive is the body of PUT /drives/{id}.
type Drive struct {
	DriveID      *string      `json:"drive_id" squib:"required"`
	Partuuid     *string      `json:"partuuid"`
	IsRootDevice *bool        `json:"is_root_device" squib:"required"`
	CacheType    *CacheType   `json:"cache_type"`
	IsReadOnly   *bool        `json:"is_read_only"`
	PathOnHost   *string      `json:"path_on_host"`
	RateLimiter  *RateLimiter `json:"rate_limiter"`
	IOEngine     *IOEngine    `json:"io_engine"`
	Socket       *string      `json:"socket"`
}

// DriveUpdate is the body of PATCH /drives/{id}.
type DriveUpdate struct {
	DriveID     *string      `json:"drive_id" squib:"required"`
	PathOnHost  *string      `json:"path_on_host"`
	RateLimiter *RateLimiter `json:"rate_limiter"`
}

// NetworkInterface is the body of PUT /network-interfaces/{id}.
type NetworkInterface struct {
	IfaceID       *string      `json:"iface_id" squib:"required"`
	HostDevName   *string      `json:"host_dev_name" squib:"required"`
	GuestMac      *MAC         `json:"guest_mac"`
	Mtu           *uint16      `json:"mtu"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter"`
}

// NetworkInterfaceUpdate is the body of PATCH /network-interfaces/{id}.
type NetworkInterfaceUpdate struct {
	IfaceID       *string      `json:"iface_id" squib:"required"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter"`
}

// MAC is an Ethernet address, written xx:xx:xx:xx:xx:xx.
type MAC [6]byte

// ParseMAC parses a MAC address in Firecracker's accepted form: six pairs of
// hex digits separated by colons.
func ParseMAC(s string) (MAC, bool) {
	var m MAC
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return m, false
	}
	for i, p := range parts {
		if len(p) != 2 {
			return m, false
		}
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return m, false
		}
		m[i] = byte(v)
	}
	return m, true
}

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// UnmarshalJSON parses the colon form, with Firecracker's error text.
func (m *MAC) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err == nil {
		if v, ok := ParseMAC(s); ok {
			*m = v
			return nil
		}
	}
	return &jsonx.ValueError{Msg: "The provided MAC address is invalid."}
}

// MarshalJSON writes the lower-case colon form.
func (m MAC) MarshalJSON() ([]byte, error) { return []byte(`"` + m.String() + `"`), nil }

// Vsock is the body of PUT /vsock.
type Vsock struct {
	GuestCID *uint32 `json:"guest_cid" squib:"required"`
	UDSPath  *string `json:"uds_path" squib:"required"`
	// VsockID is deprecated and never echoed.
	VsockID *string `json:"vsock_id,omitempty"`
}

// Entropy is the body of PUT /entropy.
type Entropy struct {
	RateLimiter *RateLimiter `json:"rate_limiter"`
}

// Serial is the body of PUT /serial.
type Serial struct {
	SerialOutPath *string      `json:"serial_out_path"`
	RateLimiter   *TokenBucket `json:"rate_limiter"`
}

// LoggerConfig is the body of PUT /logger.
type LoggerConfig struct {
	LogPath       *string   `json:"log_path"`
	Level         *LogLevel `json:"level"`
	ShowLevel     *bool     `json:"show_level"`
	ShowLogOrigin *bool     `json:"show_log_origin"`
	Module        *string   `json:"module"`
}

// LogLevel is a level name, accepted case-insensitively.
type LogLevel string

var logLevels = []string{"Off", "Trace", "Debug", "Info", "Warn", "Error"}

// UnmarshalJSON accepts Firecracker's level names in any case, and
// "Warning" as Warn.
func (l *LogLevel) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return &jsonx.ValueError{Msg: "invalid type: " + string(b) + ", expected a string"}
	}
	if strings.EqualFold(s, "warning") {
		*l = "Warn"
		return nil
	}
	for _, v := range logLevels {
		if strings.EqualFold(s, v) {
			*l = LogLevel(v)
			return nil
		}
	}
	return &jsonx.VariantError{Got: s, Variants: logLevels}
}

// MetricsConfig is the body of PUT /metrics. Unknown members are ignored,
// as in Firecracker.
type MetricsConfig struct {
	MetricsPath *string           `json:"metrics_path" squib:"required"`
	EmitID      *bool             `json:"emit_id"`
	Properties  map[string]string `json:"properties"`
	_           jsonx.Lenient
}

// MmdsConfig is the body of PUT /mmds/config and the mmds-config of the
// config file.
type MmdsConfig struct {
	Version           *MmdsVersion `json:"version"`
	NetworkInterfaces []string     `json:"network_interfaces" squib:"required"`
	IPv4Address       *IPv4        `json:"ipv4_address"`
	ImdsCompat        *bool        `json:"imds_compat"`
}

// IPv4 is a dotted-quad IPv4 address.
type IPv4 [4]byte

func (ip IPv4) String() string { return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], ip[3]) }

// UnmarshalJSON parses a dotted quad.
func (ip *IPv4) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err == nil {
		parts := strings.Split(s, ".")
		if len(parts) == 4 {
			ok := true
			for i, p := range parts {
				v, err := strconv.ParseUint(p, 10, 8)
				if err != nil || p == "" || (len(p) > 1 && p[0] == '0') {
					ok = false
					break
				}
				ip[i] = byte(v)
			}
			if ok {
				return nil
			}
		}
	}
	return &jsonx.ValueError{Msg: "invalid IPv4 address syntax"}
}

// MarshalJSON writes the dotted quad.
func (ip IPv4) MarshalJSON() ([]byte, error) { return []byte(`"` + ip.String() + `"`), nil }

// Balloon is the body of PUT /balloon and GET /balloon.
type Balloon struct {
	AmountMib             *uint32 `json:"amount_mib" squib:"required"`
	DeflateOnOOM          *bool   `json:"deflate_on_oom" squib:"required"`
	StatsPollingIntervalS *uint16 `json:"stats_polling_interval_s"`
	FreePageHinting       *bool   `json:"free_page_hinting"`
	FreePageReporting     *bool   `json:"free_page_reporting"`
}

// BalloonUpdate is the body of PATCH /balloon.
type BalloonUpdate struct {
	AmountMib *uint32 `json:"amount_mib" squib:"required"`
}

// BalloonStatsUpdate is the body of PATCH /balloon/statistics.
type BalloonStatsUpdate struct {
	StatsPollingIntervalS *uint16 `json:"stats_polling_interval_s" squib:"required"`
}

// BalloonStartCmd is the optional body of PATCH /balloon/hinting/start.
type BalloonStartCmd struct {
	AcknowledgeOnStop *bool `json:"acknowledge_on_stop"`
	_                 jsonx.Lenient
}

// BalloonStats is the answer of GET /balloon/statistics; the guest-reported
// members are present only once the guest has reported them.
type BalloonStats struct {
	TargetPages        uint32  `json:"target_pages"`
	ActualPages        uint32  `json:"actual_pages"`
	TargetMib          uint32  `json:"target_mib"`
	ActualMib          uint32  `json:"actual_mib"`
	SwapIn             *uint64 `json:"swap_in,omitempty"`
	SwapOut            *uint64 `json:"swap_out,omitempty"`
	MajorFaults        *uint64 `json:"major_faults,omitempty"`
	MinorFaults        *uint64 `json:"minor_faults,omitempty"`
	FreeMemory         *uint64 `json:"free_memory,omitempty"`
	TotalMemory        *uint64 `json:"total_memory,omitempty"`
	AvailableMemory    *uint64 `json:"available_memory,omitempty"`
	DiskCaches         *uint64 `json:"disk_caches,omitempty"`
	HugetlbAllocations *uint64 `json:"hugetlb_allocations,omitempty"`
	HugetlbFailures    *uint64 `json:"hugetlb_failures,omitempty"`
	OOMKill            *uint64 `json:"oom_kill,omitempty"`
	AllocStall         *uint64 `json:"alloc_stall,omitempty"`
	AsyncScan          *uint64 `json:"async_scan,omitempty"`
	DirectScan         *uint64 `json:"direct_scan,omitempty"`
	AsyncReclaim       *uint64 `json:"async_reclaim,omitempty"`
	DirectReclaim      *uint64 `json:"direct_reclaim,omitempty"`
}

// HintingStatus is the answer of GET /balloon/hinting/status.
type HintingStatus struct {
	HostCmd  uint32  `json:"host_cmd"`
	GuestCmd *uint32 `json:"guest_cmd"`
}

// MemoryHotplugConfig is the body of PUT /hotplug/memory.
type MemoryHotplugConfig struct {
	TotalSizeMib *uint32 `json:"total_size_mib" squib:"required"`
	BlockSizeMib *uint32 `json:"block_size_mib"`
	SlotSizeMib  *uint32 `json:"slot_size_mib"`
}

// MemoryHotplugSizeUpdate is the body of PATCH /hotplug/memory.
type MemoryHotplugSizeUpdate struct {
	RequestedSizeMib *uint32 `json:"requested_size_mib" squib:"required"`
}

// MemoryHotplugStatus is the answer of GET /hotplug/memory.
type MemoryHotplugStatus struct {
	BlockSizeMib     uint32 `json:"block_size_mib"`
	TotalSizeMib     uint32 `json:"total_size_mib"`
	SlotSizeMib      uint32 `json:"slot_size_mib"`
	PluggedSizeMib   uint32 `json:"plugged_size_mib"`
	RequestedSizeMib uint32 `json:"requested_size_mib"`
}

// Pmem is the body of PUT /pmem/{id}.
type Pmem struct {
	ID          *string      `json:"id" squib:"required"`
	PathOnHost  *string      `json:"path_on_host" squib:"required"`
	RootDevice  *bool        `json:"root_device"`
	ReadOnly    *bool        `json:"read_only"`
	RateLimiter *RateLimiter `json:"rate_limiter"`
}

// PmemUpdate is the body of PATCH /pmem/{id}.
type PmemUpdate struct {
	ID          *string      `json:"id" squib:"required"`
	RateLimiter *RateLimiter `json:"rate_limiter"`
}

// VMUpdate is the body of PATCH /vm.
type VMUpdate struct {
	State *VMState `json:"state" squib:"required"`
}

// InstanceActionInfo is the body of PUT /actions.
type InstanceActionInfo struct {
	ActionType *ActionType `json:"action_type" squib:"required"`
}

// SnapshotCreateParams is the body of PUT /snapshot/create.
type SnapshotCreateParams struct {
	SnapshotType *SnapshotType `json:"snapshot_type"`
	SnapshotPath *string       `json:"snapshot_path" squib:"required"`
	MemFilePath  *string       `json:"mem_file_path" squib:"required"`
}

// MemBackend names a snapshot's memory source.
type MemBackend struct {
	BackendType *MemBackendType `json:"backend_type" squib:"required"`
	BackendPath *string         `json:"backend_path" squib:"required"`
}

// NetworkOverride renames the TAP behind a restored interface.
type NetworkOverride struct {
	IfaceID     *string `json:"iface_id" squib:"required"`
	HostDevName *string `json:"host_dev_name" squib:"required"`
	_           jsonx.Lenient
}

// VsockOverride replaces a restored vsock's Unix socket path.
type VsockOverride struct {
	UDSPath *string `json:"uds_path" squib:"required"`
	_       jsonx.Lenient
}

// SnapshotLoadParams is the body of PUT /snapshot/load.
type SnapshotLoadParams struct {
	SnapshotPath        *string            `json:"snapshot_path" squib:"required"`
	MemFilePath         *string            `json:"mem_file_path"`
	MemBackend          *MemBackend        `json:"mem_backend"`
	EnableDiffSnapshots *bool              `json:"enable_diff_snapshots"`
	TrackDirtyPages     *bool              `json:"track_dirty_pages"`
	ResumeVM            *bool              `json:"resume_vm"`
	NetworkOverrides    []NetworkOverride  `json:"network_overrides"`
	VsockOverride       *VsockOverride     `json:"vsock_override"`
	ClockRealtime       *bool              `json:"clock_realtime"`
	HugePages           *SnapshotHugePages `json:"huge_pages"`
}

// CheckMemSource enforces that exactly one memory source is given, with
// Firecracker's (deserialization-error) texts.
func (p *SnapshotLoadParams) CheckMemSource() string {
	switch {
	case p.MemFilePath != nil && p.MemBackend != nil:
		return "too many fields: either `mem_backend` or `mem_file_path` exclusively is required"
	case p.MemFilePath == nil && p.MemBackend == nil:
		return "missing field: either `mem_backend` or `mem_file_path` is required"
	}
	return ""
}

// InstanceInfo is the answer of GET /.
type InstanceInfo struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
	AppName    string `json:"app_name"`
	// InProgress names the mutating request the VMM is executing (say
	// "PUT /snapshot/load"), so a client polling GET / during a long
	// operation can tell it is under way. squib's addition: absent when
	// the VMM is idle, so the answer is then exactly Firecracker's.
	InProgress string `json:"in_progress,omitzero"`
}

// Instance states reported by GET /.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)
