package vmm

import (
	"bytes"
	"strconv"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// variant decodes a JSON string that must be one of variants, reporting
// serde's "unknown variant" text otherwise.
func variant(b []byte, variants []string) (string, error) {
	b = bytes.TrimSpace(b)
	s, err := strconv.Unquote(string(b))
	if err != nil || len(b) == 0 || b[0] != '"' {
		return "", &jsonx.ValueError{Msg: "invalid type: " + string(b) + ", expected a string naming one of the variants"}
	}
	for _, v := range variants {
		if s == v {
			return s, nil
		}
	}
	return "", &jsonx.VariantError{Got: s, Variants: variants}
}

// CPUTemplate is a static CPU template name (deprecated by Firecracker in
// favour of /cpu-config, still accepted).
type CPUTemplate string

var cpuTemplates = []string{"C3", "T2", "T2S", "None", "T2CL", "T2A"}

// UnmarshalJSON accepts only Firecracker's x86_64 template names.
func (t *CPUTemplate) UnmarshalJSON(b []byte) error {
	s, err := variant(b, cpuTemplates)
	*t = CPUTemplate(s)
	return err
}

// HugePages selects how guest memory is backed.
type HugePages string

// Huge page modes.
const (
	HugePagesNone        HugePages = "None"
	HugePagesTransparent HugePages = "Transparent"
	HugePages2M          HugePages = "2M"
)

// UnmarshalJSON accepts None, Transparent and 2M.
func (h *HugePages) UnmarshalJSON(b []byte) error {
	s, err := variant(b, []string{"None", "Transparent", "2M"})
	*h = HugePages(s)
	return err
}

// CacheType is a block device's cache mode.
type CacheType string

// UnmarshalJSON accepts Unsafe and Writeback.
func (c *CacheType) UnmarshalJSON(b []byte) error {
	s, err := variant(b, []string{"Unsafe", "Writeback"})
	*c = CacheType(s)
	return err
}

// IOEngine is a block device's I/O engine.
type IOEngine string

// UnmarshalJSON accepts Sync and Async.
func (e *IOEngine) UnmarshalJSON(b []byte) error {
	s, err := variant(b, []string{"Sync", "Async"})
	*e = IOEngine(s)
	return err
}

// MmdsVersion is the MMDS protocol version.
type MmdsVersion string

// UnmarshalJSON accepts V1 and V2.
func (v *MmdsVersion) UnmarshalJSON(b []byte) error {
	s, err := variant(b, []string{"V1", "V2"})
	*v = MmdsVersion(s)
	return err
}

// ActionType is an action of PUT /actions.
type ActionType string

// Actions.
const (
	ActionInstanceStart  ActionType = "InstanceStart"
	ActionFlushMetrics   ActionType = "FlushMetrics"
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
)

// UnmarshalJSON accepts the three action names.
func (a *ActionType) UnmarshalJSON(b []byte) error {
	s, err := variant(b, []string{"FlushMetrics", "InstanceStart", "SendCtrlAltDel"})
	*a = ActionType(s)
	return err
}

// VMState is the target of PATCH /vm.
type VMState string

// VM states a client can request.
const (
	VMPaused  VMState = "Paused"
	VMResumed VMState = "Resumed"
)

// UnmarshalJSON accepts Paused and Resumed.
func (s *VMState) UnmarshalJSON(b []byte) error {
	v, err := variant(b, []string{"Paused", "Resumed"})
	*s = VMState(v)
	return err
}

// SnapshotType is Full or Diff.
type SnapshotType string

// UnmarshalJSON accepts Full and Diff.
func (t *SnapshotType) UnmarshalJSON(b []byte) error {
	v, err := variant(b, []string{"Full", "Diff"})
	*t = SnapshotType(v)
	return err
}

// MemBackendType is where a restored guest's memory comes from.
type MemBackendType string

// UnmarshalJSON accepts File and Uffd.
func (t *MemBackendType) UnmarshalJSON(b []byte) error {
	v, err := variant(b, []string{"File", "Uffd"})
	*t = MemBackendType(v)
	return err
}

// SnapshotHugePages is the huge_pages choice of a snapshot load.
type SnapshotHugePages string

// UnmarshalJSON accepts Snapshot, None, Transparent and 2M.
func (h *SnapshotHugePages) UnmarshalJSON(b []byte) error {
	v, err := variant(b, []string{"Snapshot", "None", "Transparent", "2M"})
	*h = SnapshotHugePages(v)
	return err
}
