package api

import (
	"net/http"

	"github.com/squib-vmm/squib/internal/metrics"
)

// requestCounters names the metrics counters Firecracker keeps for a
// request: how many arrived, and how many failed (fails is nil for GETs).
func requestCounters(m *metrics.Metrics, method, first, second string) (count, fails *metrics.IncMetric) {
	switch method {
	case http.MethodGet:
		g := &m.GetAPIRequests
		switch {
		case first == "":
			return &g.InstanceInfoCount, nil
		case first == "machine-config":
			return &g.MachineCfgCount, nil
		case first == "mmds":
			return &g.MMDSCount, nil
		case first == "version":
			return &g.VmmVersionCount, nil
		case first == "hotplug" && second == "memory":
			return &g.HotplugMemoryCount, nil
		}
	case http.MethodPut:
		p := &m.PutAPIRequests
		switch first {
		case "actions":
			return &p.ActionsCount, &p.ActionsFails
		case "boot-source":
			return &p.BootSourceCount, &p.BootSourceFails
		case "drives":
			return &p.DriveCount, &p.DriveFails
		case "logger":
			return &p.LoggerCount, &p.LoggerFails
		case "machine-config":
			return &p.MachineCfgCount, &p.MachineCfgFails
		case "cpu-config":
			return &p.CPUCfgCount, &p.CPUCfgFails
		case "metrics":
			return &p.MetricsCount, &p.MetricsFails
		case "network-interfaces":
			return &p.NetworkCount, &p.NetworkFails
		case "mmds":
			return &p.MMDSCount, &p.MMDSFails
		case "vsock":
			return &p.VsockCount, &p.VsockFails
		case "pmem":
			return &p.PmemCount, &p.PmemFails
		case "serial":
			return &p.SerialCount, &p.SerialFails
		case "hotplug":
			return &p.HotplugMemoryCount, &p.HotplugMemoryFails
		}
	case http.MethodPatch:
		p := &m.PatchAPIRequests
		switch first {
		case "drives":
			return &p.DriveCount, &p.DriveFails
		case "network-interfaces":
			return &p.NetworkCount, &p.NetworkFails
		case "machine-config":
			return &p.MachineCfgCount, &p.MachineCfgFails
		case "mmds":
			return &p.MMDSCount, &p.MMDSFails
		case "hotplug":
			return &p.HotplugMemoryCount, &p.HotplugMemoryFails
		case "pmem":
			return &p.PmemCount, &p.PmemFails
		}
	}
	return nil, nil
}
