package vmm

import (
	"os"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/squib-vmm/squib/internal/jsonx"
)

// ConfigFile is the --config-file document: the shape of GET /vm/config,
// with unknown top-level keys ignored and cpu-config given either inline or
// as the path of a template file.
type ConfigFile struct {
	Balloon           *Balloon             `json:"balloon"`
	Drives            []Drive              `json:"drives" squib:"required"`
	BootSource        *BootSource          `json:"boot-source" squib:"required"`
	CPUConfig         jsontext.Value       `json:"cpu-config"`
	Logger            *LoggerConfig        `json:"logger"`
	MachineConfig     *MachineConfig       `json:"machine-config"`
	Metrics           *MetricsConfig       `json:"metrics"`
	MmdsConfig        *MmdsConfig          `json:"mmds-config"`
	NetworkInterfaces []NetworkInterface   `json:"network-interfaces"`
	Vsock             *Vsock               `json:"vsock"`
	Entropy           *Entropy             `json:"entropy"`
	Pmem              []Pmem               `json:"pmem"`
	MemoryHotplug     *MemoryHotplugConfig `json:"memory-hotplug"`
	_                 jsonx.Lenient
}

// ParseConfigFile decodes a config file and returns the requests that apply
// it, in Firecracker's order (logger, metrics, machine-config, cpu-config,
// boot-source, drives, network-interfaces, vsock, balloon, mmds-config,
// entropy, pmem, memory-hotplug). InstanceStart is not included.
func ParseConfigFile(data []byte) ([]Request, error) {
	var f ConfigFile
	if err := jsonx.Decode(data, &f); err != nil {
		return nil, err
	}
	var reqs []Request
	add := func(op Op, id string, body any) { reqs = append(reqs, Request{Op: op, ID: id, Body: body}) }
	if f.Logger != nil {
		add(OpPutLogger, "", f.Logger)
	}
	if f.Metrics != nil {
		add(OpPutMetrics, "", f.Metrics)
	}
	if f.MachineConfig != nil {
		u := f.MachineConfig.AsUpdate()
		add(OpPutMachineConfig, "", &u)
	}
	if len(f.CPUConfig) > 0 && f.CPUConfig.Kind() != 'n' {
		cpu, err := parseCPUConfig(f.CPUConfig)
		if err != nil {
			return nil, err
		}
		add(OpPutCPUConfig, "", cpu)
	}
	add(OpPutBootSource, "", f.BootSource)
	for i := range f.Drives {
		add(OpPutDrive, *f.Drives[i].DriveID, &f.Drives[i])
	}
	for i := range f.NetworkInterfaces {
		add(OpPutNet, *f.NetworkInterfaces[i].IfaceID, &f.NetworkInterfaces[i])
	}
	if f.Vsock != nil {
		add(OpPutVsock, "", f.Vsock)
	}
	if f.Balloon != nil {
		add(OpPutBalloon, "", f.Balloon)
	}
	if f.MmdsConfig != nil {
		add(OpPutMmdsConfig, "", f.MmdsConfig)
	}
	if f.Entropy != nil {
		add(OpPutEntropy, "", f.Entropy)
	}
	for i := range f.Pmem {
		add(OpPutPmem, *f.Pmem[i].ID, &f.Pmem[i])
	}
	if f.MemoryHotplug != nil {
		add(OpPutHotplug, "", f.MemoryHotplug)
	}
	return reqs, nil
}

// parseCPUConfig accepts an inline template or the path of a template file.
func parseCPUConfig(v jsontext.Value) (*CPUConfig, error) {
	data := []byte(v)
	if v.Kind() == '"' {
		var path string
		if err := jsonx.Decode(v, &path); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, &Error{Msg: "Unable to open or read from the CPU template file " + path + ": " + OSErrorText(err)}
		}
		data = b
	}
	var c CPUConfig
	if err := jsonx.Decode(data, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
