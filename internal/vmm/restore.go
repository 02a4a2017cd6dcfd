package vmm

import (
	"errors"
	"net"
	"os"
	"slices"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// RestoreResources rebuilds the resources of a snapshotted VM from the
// configuration saved in its state file (GET /vm/config's shape), applying
// the load request's overrides, and opens their host resources again:
// drive files, TAPs (network_overrides may rename them) and the vsock
// socket (vsock_override may move it). The boot source is kept as a record
// only: a restored guest needs no kernel. serial is the serial console
// configured before the load, as Firecracker uses its own stdio for a
// restored guest unless told otherwise.
func RestoreResources(config []byte, p *SnapshotLoadParams, serial *Serial) (res *Resources, err error) {
	var cfg FullVMConfig
	if err := jsonx.Decode(config, &cfg); err != nil {
		return nil, errors.New("the snapshot's VM configuration is invalid: " + err.Error())
	}
	if cfg.MachineConfig == nil || cfg.MachineConfig.VcpuCount == nil || cfg.MachineConfig.MemSizeMib == nil {
		return nil, errors.New("the snapshot's VM configuration has no machine configuration")
	}
	r := NewResources()
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if err := r.UpdateMachine(cfg.MachineConfig.AsUpdate()); err != nil {
		return nil, err
	}
	r.MachineApplied = true
	r.Machine.TrackDirtyPages = p.TrackDirtyPages != nil && *p.TrackDirtyPages || p.EnableDiffSnapshots != nil && *p.EnableDiffSnapshots
	if h := p.HugePages; h != nil && *h != "Snapshot" {
		r.Machine.HugePages = HugePages(*h)
	}
	if r.Machine.HugePages == HugePages2M && (p.MemBackend == nil || *p.MemBackend.BackendType != "Uffd") {
		return nil, errors.New("Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd.")
	}
	r.CPUConfig = cfg.CPUConfig
	if cfg.BootSource != nil {
		r.Boot = &BootResource{Config: *cfg.BootSource}
	}
	for _, d := range cfg.Drives {
		if err := r.InsertDrive(d, false); err != nil {
			return nil, err
		}
	}
	for _, o := range p.NetworkOverrides {
		i := slices.IndexFunc(cfg.NetworkInterfaces, func(n NetworkInterface) bool { return *n.IfaceID == *o.IfaceID })
		if i < 0 {
			return nil, errors.New("Unknown Network Device.")
		}
		name := *o.HostDevName
		cfg.NetworkInterfaces[i].HostDevName = &name
	}
	for _, n := range cfg.NetworkInterfaces {
		if err := r.InsertNet(n); err != nil {
			return nil, err
		}
	}
	if o := p.VsockOverride; o != nil {
		if cfg.Vsock == nil {
			return nil, errors.New("Unknown Vsock Device.")
		}
		path := *o.UDSPath
		cfg.Vsock.UDSPath = &path
	}
	if cfg.Vsock != nil {
		removeStaleSocket(*cfg.Vsock.UDSPath)
		if err := r.SetVsock(*cfg.Vsock); err != nil {
			return nil, err
		}
	}
	if cfg.Balloon != nil {
		if err := r.SetBalloon(*cfg.Balloon); err != nil {
			return nil, err
		}
	}
	if cfg.MmdsConfig != nil {
		if err := r.SetMmdsConfig(*cfg.MmdsConfig); err != nil {
			return nil, err
		}
	}
	if cfg.Entropy != nil {
		e := *cfg.Entropy
		e.RateLimiter = e.RateLimiter.normalized()
		r.Entropy = &e
	}
	if len(cfg.Pmem) > 0 || cfg.MemoryHotplug != nil {
		return nil, errors.New("the snapshot has pmem or memory hot-plug devices, which squib does not support")
	}
	r.Serial = serial
	return r, nil
}

// removeStaleSocket removes a Unix socket file nobody listens on: the
// socket of the snapshotted process, which exited without unlinking it.
// A socket still in use stays, and the bind then reports it.
func removeStaleSocket(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return
	}
	os.Remove(path)
}
