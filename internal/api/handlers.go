package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/squib-vmm/squib/internal/jsonx"
	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/vmm"
)

var (
	errNoBalloonPre  = "Balloon config error: No balloon device found."
	errDeviceMissing = "Internal VMM error: Failed perform action on device: Device not found"
)

// routeGet serves the GET endpoints. All but the hinting status answer
// from the published view and never wait on the controller.
func (s *Server) routeGet(ctx context.Context, r *request, first, second string) (response, bool) {
	v := s.ctrl.View()
	switch first {
	case "":
		return ok200(s.ctrl.InstanceInfo(v)), true
	case "version":
		return ok200(vmm.VersionJSON()), true
	case "machine-config":
		return ok200(v.MachineConfig), true
	case "vm":
		if second == "config" {
			return ok200(v.VMConfig), true
		}
	case "mmds":
		if v.Started && !v.MmdsAttached {
			return fault(vmm.PrefixMmds + mmds.ErrNotInitialized.Error()), true
		}
		return ok200(s.store.Get()), true
	case "balloon":
		switch second {
		case "":
			switch {
			case v.Balloon != nil:
				return ok200(v.Balloon), true
			case v.Started:
				return fault(errDeviceMissing), true
			}
			return fault(errNoBalloonPre), true
		case "statistics":
			switch {
			case !v.Started:
				return fault(vmm.MsgNotSupportedBeforeStart), true
			case v.Balloon == nil:
				return fault(errDeviceMissing), true
			case !v.BalloonStatsEnabled:
				return fault("Internal VMM error: Balloon: Received stats query when stats are disabled."), true
			}
			st, err := v.VM.BalloonStats()
			if err != nil {
				return fault(vmm.PrefixInternal + err.Error()), true
			}
			return ok200(mustJSON(st)), true
		case "hinting":
			if third, _ := r.token(2); third == "status" {
				return s.dispatch(ctx, vmm.Request{Op: vmm.OpHintingStatus}), true
			}
		}
	case "hotplug":
		if second == "memory" {
			switch {
			case !v.Started:
				return fault(vmm.MsgNotSupportedBeforeStart), true
			case !v.Hotplug:
				return fault(errDeviceMissing), true
			}
			st, err := v.VM.HotplugStatus()
			if err != nil {
				return fault(vmm.PrefixInternal + err.Error()), true
			}
			return ok200(mustJSON(st)), true
		}
	}
	return response{}, false
}

// routeMutation serves PUT, PATCH and DELETE.
func (s *Server) routeMutation(ctx context.Context, r *request, first, second string) (response, bool) {
	m := r.method
	switch {
	case m == http.MethodPut && first == "actions":
		return s.putActions(ctx, r), true
	case m == http.MethodPut && first == "boot-source":
		return body[vmm.BootSource](s, ctx, r, vmm.OpPutBootSource, nil), true
	case m == http.MethodPut && first == "cpu-config":
		return body[vmm.CPUConfig](s, ctx, r, vmm.OpPutCPUConfig, nil), true
	case first == "machine-config" && (m == http.MethodPut || m == http.MethodPatch):
		return s.machineConfig(ctx, r), true
	case first == "drives":
		return s.device(ctx, r, devDrive), true
	case first == "pmem":
		return s.device(ctx, r, devPmem), true
	case first == "network-interfaces":
		return s.device(ctx, r, devNet), true
	case m == http.MethodPut && first == "vsock":
		return body[vmm.Vsock](s, ctx, r, vmm.OpPutVsock, func(v *vmm.Vsock) string {
			r.deprecated = v.VsockID != nil
			if r.deprecated {
				s.log.Warnf("PUT /vsock: vsock_id field is deprecated.")
			}
			return ""
		}), true
	case m == http.MethodPut && first == "entropy":
		return body[vmm.Entropy](s, ctx, r, vmm.OpPutEntropy, nil), true
	case m == http.MethodPut && first == "serial":
		return body[vmm.Serial](s, ctx, r, vmm.OpPutSerial, nil), true
	case m == http.MethodPut && first == "logger":
		return body[vmm.LoggerConfig](s, ctx, r, vmm.OpPutLogger, nil), true
	case m == http.MethodPut && first == "metrics":
		return body[vmm.MetricsConfig](s, ctx, r, vmm.OpPutMetrics, nil), true
	case first == "mmds":
		return s.mmds(ctx, r, second)
	case first == "balloon":
		return s.balloon(ctx, r, second)
	case first == "hotplug" && second == "memory":
		switch m {
		case http.MethodPut:
			return body[vmm.MemoryHotplugConfig](s, ctx, r, vmm.OpPutHotplug, nil), true
		case http.MethodPatch:
			return body[vmm.MemoryHotplugSizeUpdate](s, ctx, r, vmm.OpPatchHotplug, nil), true
		}
	case m == http.MethodPatch && first == "vm":
		return body[vmm.VMUpdate](s, ctx, r, vmm.OpPatchVM, nil), true
	case m == http.MethodPut && first == "snapshot":
		switch second {
		case "create":
			return body[vmm.SnapshotCreateParams](s, ctx, r, vmm.OpSnapshotCreate, nil), true
		case "load":
			return body[vmm.SnapshotLoadParams](s, ctx, r, vmm.OpSnapshotLoad, func(p *vmm.SnapshotLoadParams) string {
				r.deprecated = p.MemFilePath != nil || p.EnableDiffSnapshots != nil
				if r.deprecated {
					s.log.Warnf("PUT /snapshot/load: mem_file_path and enable_diff_snapshots fields are deprecated.")
				}
				if msg := p.CheckMemSource(); msg != "" {
					return deserializeMsg(msg)
				}
				return ""
			}), true
		}
	}
	return response{}, false
}

// body decodes the request body into a T, runs check (which may reject
// with a full message), and dispatches op.
func body[T any](s *Server, ctx context.Context, r *request, op vmm.Op, check func(*T) string) response {
	v := new(T)
	if resp, ok := decode(r.body, v); !ok {
		return resp
	}
	if check != nil {
		if msg := check(v); msg != "" {
			return fault(msg)
		}
	}
	return s.dispatch(ctx, vmm.Request{Op: op, Body: v})
}

func (s *Server) putActions(ctx context.Context, r *request) response {
	var a vmm.InstanceActionInfo
	if resp, ok := decode(r.body, &a); !ok {
		return resp
	}
	op := map[vmm.ActionType]vmm.Op{
		vmm.ActionInstanceStart:  vmm.OpInstanceStart,
		vmm.ActionFlushMetrics:   vmm.OpFlushMetrics,
		vmm.ActionSendCtrlAltDel: vmm.OpSendCtrlAltDel,
	}[*a.ActionType]
	return s.dispatch(ctx, vmm.Request{Op: op})
}

func (s *Server) machineConfig(ctx context.Context, r *request) response {
	var u vmm.MachineConfigUpdate
	if r.method == http.MethodPut {
		var m vmm.MachineConfig
		if resp, ok := decode(r.body, &m); !ok {
			return resp
		}
		u = m.AsUpdate()
	} else {
		if resp, ok := decode(r.body, &u); !ok {
			return resp
		}
		if u.Empty() {
			return fault("Empty PATCH request.")
		}
	}
	r.deprecated = u.CPUTemplate != nil
	if r.deprecated {
		s.log.Warnf("%s /machine-config: cpu_template field is deprecated.", r.method)
	}
	op := vmm.OpPutMachineConfig
	if r.method == http.MethodPatch {
		op = vmm.OpPatchMachineConfig
	}
	return s.dispatch(ctx, vmm.Request{Op: op, Body: &u})
}

// devKind describes one of the ID-addressed device families.
type devKind struct {
	put, patch, del vmm.Op
	newPut          func() any
	newPatch        func() any
	// bodyID extracts the ID from a decoded body.
	bodyID func(any) string
	// mismatch is Firecracker's message for a path/body ID mismatch.
	mismatch func(path, body string) string
}

var (
	sameIDMsg = func(string, string) string { return "The id from the path does not match the id from the body!" }
	devDrive  = devKind{
		put: vmm.OpPutDrive, patch: vmm.OpPatchDrive, del: vmm.OpDeleteDrive,
		newPut: func() any { return new(vmm.Drive) }, newPatch: func() any { return new(vmm.DriveUpdate) },
		bodyID: func(v any) string {
			switch d := v.(type) {
			case *vmm.Drive:
				return *d.DriveID
			case *vmm.DriveUpdate:
				return *d.DriveID
			}
			return ""
		},
		mismatch: sameIDMsg,
	}
	devPmem = devKind{
		put: vmm.OpPutPmem, patch: vmm.OpPatchPmem, del: vmm.OpDeletePmem,
		newPut: func() any { return new(vmm.Pmem) }, newPatch: func() any { return new(vmm.PmemUpdate) },
		bodyID: func(v any) string {
			switch d := v.(type) {
			case *vmm.Pmem:
				return *d.ID
			case *vmm.PmemUpdate:
				return *d.ID
			}
			return ""
		},
		mismatch: sameIDMsg,
	}
	devNet = devKind{
		put: vmm.OpPutNet, patch: vmm.OpPatchNet, del: vmm.OpDeleteNet,
		newPut: func() any { return new(vmm.NetworkInterface) }, newPatch: func() any { return new(vmm.NetworkInterfaceUpdate) },
		bodyID: func(v any) string {
			switch d := v.(type) {
			case *vmm.NetworkInterface:
				return *d.IfaceID
			case *vmm.NetworkInterfaceUpdate:
				return *d.IfaceID
			}
			return ""
		},
		mismatch: func(p, b string) string {
			return fmt.Sprintf("The id from the path [%s] does not match the id from the body [%s]!", p, b)
		},
	}
)

// device serves PUT/PATCH/DELETE of drives, pmem and network interfaces:
// ID check, then decode, then path/body ID match, as Firecracker orders them.
func (s *Server) device(ctx context.Context, r *request, k devKind) response {
	id, present := r.token(1)
	if resp, ok := checkID(id, present); !ok {
		return resp
	}
	var v any
	var op vmm.Op
	switch r.method {
	case http.MethodDelete:
		return s.dispatch(ctx, vmm.Request{Op: k.del, ID: id})
	case http.MethodPut:
		v, op = k.newPut(), k.put
	default:
		v, op = k.newPatch(), k.patch
	}
	if resp, ok := decode(r.body, v); !ok {
		return resp
	}
	if b := k.bodyID(v); b != id {
		return fault(k.mismatch(id, b))
	}
	return s.dispatch(ctx, vmm.Request{Op: op, ID: id, Body: v})
}

func (s *Server) mmds(ctx context.Context, r *request, second string) (response, bool) {
	switch {
	case second == "config" && r.method == http.MethodPut:
		return body[vmm.MmdsConfig](s, ctx, r, vmm.OpPutMmdsConfig, func(c *vmm.MmdsConfig) string {
			r.deprecated = c.Version == nil || *c.Version == "V1"
			if r.deprecated {
				s.log.Warnf("PUT /mmds/config: V1 is deprecated. Use V2 instead.")
			}
			return ""
		}), true
	case second == "" && (r.method == http.MethodPut || r.method == http.MethodPatch):
		// The data store takes any JSON value; only its syntax is checked
		// here, the store re-parses it.
		probe := jsontext.Value(r.body).Clone()
		if err := probe.Compact(); err != nil {
			return fault(deserializeMsg(syntaxDetail(err))), true
		}
		op := vmm.OpPutMmds
		if r.method == http.MethodPatch {
			op = vmm.OpPatchMmds
		}
		return s.dispatch(ctx, vmm.Request{Op: op, Body: r.body}), true
	}
	return response{}, false
}

func syntaxDetail(err error) string {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}

func (s *Server) balloon(ctx context.Context, r *request, second string) (response, bool) {
	switch r.method {
	case http.MethodPut:
		return body[vmm.Balloon](s, ctx, r, vmm.OpPutBalloon, nil), true
	case http.MethodPatch:
		switch second {
		case "statistics":
			return body[vmm.BalloonStatsUpdate](s, ctx, r, vmm.OpPatchBalloonStats, nil), true
		case "hinting":
			switch third, _ := r.token(2); third {
			case "start":
				var cmd vmm.BalloonStartCmd
				if len(r.body) > 0 {
					if resp, ok := decode(r.body, &cmd); !ok {
						return resp, true
					}
				}
				return s.dispatch(ctx, vmm.Request{Op: vmm.OpHintingStart, Body: &cmd}), true
			case "stop":
				return s.dispatch(ctx, vmm.Request{Op: vmm.OpHintingStop}), true
			}
			return response{}, false
		}
		// Firecracker treats any other sub-path as PATCH /balloon.
		return body[vmm.BalloonUpdate](s, ctx, r, vmm.OpPatchBalloon, nil), true
	}
	return response{}, false
}

func mustJSON(v any) []byte {
	b, err := jsonx.Marshal(v)
	if err != nil {
		return []byte("{}")
	}
	return b
}
