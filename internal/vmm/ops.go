package vmm

import "time"

// Op names one kind of request the controller executes.
type Op int

// The operations, one per mutating endpoint (and the few reads that need
// the running VM).
const (
	OpPutBootSource Op = iota
	OpPutCPUConfig
	OpPutMachineConfig
	OpPatchMachineConfig
	OpPutDrive
	OpPatchDrive
	OpDeleteDrive
	OpPutPmem
	OpPatchPmem
	OpDeletePmem
	OpPutNet
	OpPatchNet
	OpDeleteNet
	OpPutVsock
	OpPutEntropy
	OpPutSerial
	OpPutLogger
	OpPutMetrics
	OpPutMmds
	OpPatchMmds
	OpPutMmdsConfig
	OpPutBalloon
	OpPatchBalloon
	OpPatchBalloonStats
	OpHintingStart
	OpHintingStatus
	OpHintingStop
	OpPutHotplug
	OpPatchHotplug
	OpPatchVM
	OpInstanceStart
	OpFlushMetrics
	OpSendCtrlAltDel
	OpSnapshotCreate
	OpSnapshotLoad
	numOps
)

// Class groups operations that share a timeout.
type Class int

// Timeout classes.
const (
	// ClassConfig is pre-boot configuration and runtime device updates:
	// quick, bounded work (opening a file, binding a socket).
	ClassConfig Class = iota
	// ClassAction is InstanceStart, pause/resume and the other actions,
	// which involve the hypervisor.
	ClassAction
	// ClassSnapshot is snapshot create and load, whose duration grows with
	// guest memory.
	ClassSnapshot
)

// DefaultTimeouts are the per-class limits on how long an API call waits
// for the controller (docs/api.md explains the choice).
var DefaultTimeouts = map[Class]time.Duration{
	ClassConfig:   10 * time.Second,
	ClassAction:   60 * time.Second,
	ClassSnapshot: 15 * time.Minute,
}

// phase says when an operation is allowed.
type phase int

const (
	preOnly phase = iota
	postOnly
	anyPhase
)

type opInfo struct {
	name  string
	class Class
	phase phase
	// bootSpecific marks configuration that forbids a later snapshot load.
	bootSpecific bool
}

var ops = [numOps]opInfo{
	OpPutBootSource:      {"PUT /boot-source", ClassConfig, preOnly, true},
	OpPutCPUConfig:       {"PUT /cpu-config", ClassConfig, preOnly, false},
	OpPutMachineConfig:   {"PUT /machine-config", ClassConfig, preOnly, true},
	OpPatchMachineConfig: {"PATCH /machine-config", ClassConfig, preOnly, true},
	OpPutDrive:           {"PUT /drives", ClassConfig, anyPhase, true},
	OpPatchDrive:         {"PATCH /drives", ClassConfig, postOnly, false},
	OpDeleteDrive:        {"DELETE /drives", ClassConfig, postOnly, false},
	OpPutPmem:            {"PUT /pmem", ClassConfig, anyPhase, true},
	OpPatchPmem:          {"PATCH /pmem", ClassConfig, postOnly, false},
	OpDeletePmem:         {"DELETE /pmem", ClassConfig, postOnly, false},
	OpPutNet:             {"PUT /network-interfaces", ClassConfig, anyPhase, true},
	OpPatchNet:           {"PATCH /network-interfaces", ClassConfig, postOnly, false},
	OpDeleteNet:          {"DELETE /network-interfaces", ClassConfig, postOnly, false},
	OpPutVsock:           {"PUT /vsock", ClassConfig, preOnly, true},
	OpPutEntropy:         {"PUT /entropy", ClassConfig, preOnly, true},
	OpPutSerial:          {"PUT /serial", ClassConfig, preOnly, false},
	OpPutLogger:          {"PUT /logger", ClassConfig, preOnly, false},
	OpPutMetrics:         {"PUT /metrics", ClassConfig, preOnly, false},
	OpPutMmds:            {"PUT /mmds", ClassConfig, anyPhase, false},
	OpPatchMmds:          {"PATCH /mmds", ClassConfig, anyPhase, false},
	OpPutMmdsConfig:      {"PUT /mmds/config", ClassConfig, preOnly, true},
	OpPutBalloon:         {"PUT /balloon", ClassConfig, preOnly, true},
	OpPatchBalloon:       {"PATCH /balloon", ClassConfig, postOnly, false},
	OpPatchBalloonStats:  {"PATCH /balloon/statistics", ClassConfig, postOnly, false},
	OpHintingStart:       {"PATCH /balloon/hinting/start", ClassConfig, postOnly, false},
	OpHintingStatus:      {"GET /balloon/hinting/status", ClassConfig, postOnly, false},
	OpHintingStop:        {"PATCH /balloon/hinting/stop", ClassConfig, postOnly, false},
	OpPutHotplug:         {"PUT /hotplug/memory", ClassConfig, preOnly, true},
	OpPatchHotplug:       {"PATCH /hotplug/memory", ClassConfig, postOnly, false},
	OpPatchVM:            {"PATCH /vm", ClassAction, postOnly, false},
	OpInstanceStart:      {"InstanceStart", ClassAction, preOnly, false},
	OpFlushMetrics:       {"FlushMetrics", ClassAction, postOnly, false},
	OpSendCtrlAltDel:     {"SendCtrlAltDel", ClassAction, postOnly, false},
	OpSnapshotCreate:     {"PUT /snapshot/create", ClassSnapshot, postOnly, false},
	OpSnapshotLoad:       {"PUT /snapshot/load", ClassSnapshot, preOnly, false},
}

// String names the operation as a request line.
func (o Op) String() string { return ops[o].name }

// Class is the operation's timeout class.
func (o Op) Class() Class { return ops[o].class }

// CheckPhase returns the phase error for running op in a VM that has
// (started) or has not been started, or nil. The API calls it against the
// published view to reject early; the controller calls it again with
// authority.
func (o Op) CheckPhase(started bool) error {
	switch p := ops[o].phase; {
	case p == preOnly && started:
		return errNotAfter
	case p == postOnly && !started:
		return errNotBefore
	}
	return nil
}
