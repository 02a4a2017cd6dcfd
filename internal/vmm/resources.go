package vmm

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/squib-vmm/squib/internal/mmds"

	"github.com/squib-vmm/squib/internal/tap"
)

// MaxVcpus is the largest vCPU count Firecracker (and squib) supports.
const MaxVcpus = 32

// Resources is everything configured before boot, with the host resources
// (files, TAPs, sockets) opened when they were PUT, as Firecracker does, so a
// bad path fails its PUT rather than the boot. Only the controller goroutine
// touches it.
type Resources struct {
	// Machine is the machine configuration in effect (defaults until set).
	Machine MachineState
	// MachineApplied records that a machine configuration was set (PUT,
	// PATCH, config file), which GET /machine-config reports.
	MachineApplied bool
	// CPUConfig is the custom CPU template, if any.
	CPUConfig *CPUConfig
	// Boot is the boot source, with its files open.
	Boot *BootResource
	// Drives lists the block devices, the root device first.
	Drives []*DriveResource
	// Nets lists the network interfaces in the order they were added.
	Nets []*NetResource
	// Vsock is the vsock device, with its Unix socket bound.
	Vsock *VsockResource
	// Balloon is the balloon configuration.
	Balloon *Balloon
	// Entropy is the entropy device configuration.
	Entropy *Entropy
	// Serial is the serial console configuration (opened at boot).
	Serial *Serial
	// Pmem lists the pmem devices (files opened at boot).
	Pmem []*Pmem
	// Hotplug is the memory hot-plug region.
	Hotplug *MemoryHotplugConfig
	// Mmds is the MMDS configuration.
	Mmds *MmdsConfig
	// BootSpecific records that a resource which forbids a later snapshot
	// load was configured (Firecracker's boot_path).
	BootSpecific bool
}

// MachineState is the machine configuration with defaults resolved.
type MachineState struct {
	VcpuCount       uint8
	MemSizeMib      uint64
	Smt             bool
	CPUTemplate     CPUTemplate // "" when none
	TrackDirtyPages bool
	HugePages       HugePages
}

// DefaultMachine is the machine used when none is configured.
var DefaultMachine = MachineState{VcpuCount: 1, MemSizeMib: 128, HugePages: HugePagesNone}

// Model renders the machine configuration in the API's shape.
func (m MachineState) Model() *MachineConfig {
	vc, mem, smt, tdp, hp := m.VcpuCount, m.MemSizeMib, m.Smt, m.TrackDirtyPages, m.HugePages
	mc := &MachineConfig{VcpuCount: &vc, MemSizeMib: &mem, Smt: &smt, TrackDirtyPages: &tdp, HugePages: &hp}
	if m.CPUTemplate != "" {
		t := m.CPUTemplate
		mc.CPUTemplate = &t
	}
	return mc
}

// BootResource is a boot source with its kernel and initrd open.
type BootResource struct {
	Config BootSource
	Kernel *os.File
	Initrd *os.File
}

// DriveResource is a block device with its backing file open.
type DriveResource struct {
	Config Drive
	File   *os.File
}

// NetResource is a network interface with its TAP open.
type NetResource struct {
	Config NetworkInterface
	Tap    *tap.Tap
}

// VsockResource is a vsock device with its host socket listening.
type VsockResource struct {
	Config   Vsock
	Listener *net.UnixListener
}

// NewResources returns the resources of a fresh VM.
func NewResources() *Resources {
	return &Resources{Machine: DefaultMachine}
}

// Close releases every host resource held; used when squib exits before
// booting.
func (r *Resources) Close() {
	if r.Boot != nil {
		r.Boot.close()
	}
	for _, d := range r.Drives {
		d.File.Close()
	}
	for _, n := range r.Nets {
		n.Tap.Close()
	}
	if r.Vsock != nil {
		r.Vsock.close()
	}
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}

func (b *BootResource) close() {
	closeFile(b.Kernel)
	closeFile(b.Initrd)
}

func (v *VsockResource) close() {
	// The listener removes the socket file it created when closed; keep
	// that, Firecracker also unlinks the old uds_path on replacement.
	v.Listener.Close()
}

// UpdateMachine validates and applies a machine-config update. Nothing
// changes unless every value is valid.
func (r *Resources) UpdateMachine(u MachineConfigUpdate) error {
	m := r.Machine
	if u.VcpuCount != nil {
		m.VcpuCount = *u.VcpuCount
	}
	if u.MemSizeMib != nil {
		m.MemSizeMib = *u.MemSizeMib
	}
	if u.Smt != nil {
		m.Smt = *u.Smt
	}
	if u.TrackDirtyPages != nil {
		m.TrackDirtyPages = *u.TrackDirtyPages
	}
	if u.HugePages != nil {
		m.HugePages = *u.HugePages
	}
	if u.CPUTemplate != nil {
		m.CPUTemplate = *u.CPUTemplate
		if m.CPUTemplate == "None" {
			m.CPUTemplate = ""
		}
	}
	if m.VcpuCount == 0 || m.VcpuCount > MaxVcpus || (m.Smt && m.VcpuCount > 1 && m.VcpuCount%2 == 1) {
		return errorf(PrefixMachine, "The number of vCPUs must be greater than 0, less than %d and must be 1 or an even number if SMT is enabled.", MaxVcpus)
	}
	if m.MemSizeMib == 0 || (m.HugePages != HugePagesNone && m.MemSizeMib%2 != 0) {
		return errorf(PrefixMachine, "The memory size (MiB) is either 0, or not a multiple of the configured page size.")
	}
	if r.Balloon != nil && uint64(*r.Balloon.AmountMib) > m.MemSizeMib {
		return errorf(PrefixMachine, "The memory size (MiB) is smaller than the previously set balloon device target size.")
	}
	if u.CPUTemplate != nil {
		// A static template replaces a custom one, and vice versa.
		r.CPUConfig = nil
	}
	r.Machine = m
	r.MachineApplied = true
	return nil
}

// SetBootSource opens the kernel and initrd and replaces the boot source.
func (r *Resources) SetBootSource(b BootSource) error {
	args := DefaultBootArgs
	if b.BootArgs != nil {
		args = *b.BootArgs
	}
	if err := validateCmdline(args); err != nil {
		return errorf(PrefixBootSource, "The kernel command line is invalid: %s", err)
	}
	kernel, err := os.Open(*b.KernelImagePath)
	if err != nil {
		return errorf(PrefixBootSource, "The kernel file cannot be opened: %s", OSErrorText(err))
	}
	res := &BootResource{Config: b, Kernel: kernel}
	if b.InitrdPath != nil {
		res.Initrd, err = os.Open(*b.InitrdPath)
		if err != nil {
			kernel.Close()
			return errorf(PrefixBootSource, "The initrd file cannot be opened due to invalid path or invalid permissions. %s", OSErrorText(err))
		}
	}
	if r.Boot != nil {
		r.Boot.close()
	}
	r.Boot = res
	return nil
}

// InsertDrive adds or replaces a block device, opening its backing file.
func (r *Resources) InsertDrive(d Drive, pmemRoot bool) error {
	id := *d.DriveID
	idx := slices.IndexFunc(r.Drives, func(x *DriveResource) bool { return *x.Config.DriveID == id })
	if *d.IsRootDevice {
		if pmemRoot {
			return errorf(PrefixDrive, "Attempt to add block as a root device while the root device defined as a pmem device")
		}
		for i, x := range r.Drives {
			if *x.Config.IsRootDevice && i != idx {
				return errorf(PrefixDrive, "A root block device already exists!")
			}
		}
	}
	isVirtio := d.PathOnHost != nil && d.Socket == nil
	isVhost := d.Socket != nil && d.IsReadOnly == nil && d.PathOnHost == nil && d.RateLimiter == nil && d.IOEngine == nil
	switch {
	case isVhost:
		// squib has no vhost-user transport; say so instead of accepting a
		// device that could never work.
		return errorf(PrefixDrive, "Unable to create the vhost-user block device: vhost-user is not supported by squib.")
	case !isVirtio:
		return errorf(PrefixDrive, "Unable to create the virtio block device: Invalid block config.")
	}
	if d.IOEngine != nil && *d.IOEngine == "Async" {
		return errorf(PrefixDrive, "Unable to create the virtio block device: the Async (io_uring) engine is not supported by squib; use Sync.")
	}
	// Normalise to the shape GET /vm/config reports.
	if d.CacheType == nil {
		c := CacheType("Unsafe")
		d.CacheType = &c
	}
	if d.IsReadOnly == nil {
		f := false
		d.IsReadOnly = &f
	}
	if d.IOEngine == nil {
		e := IOEngine("Sync")
		d.IOEngine = &e
	}
	d.RateLimiter = d.RateLimiter.normalized()
	flag := os.O_RDWR
	if *d.IsReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(*d.PathOnHost, flag, 0)
	if err != nil {
		return errorf(PrefixDrive, "Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: %s %s", OSErrorText(err), *d.PathOnHost)
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return errorf(PrefixDrive, "Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: Is a directory (os error 21) %s", *d.PathOnHost)
	}
	nr := &DriveResource{Config: d, File: f}
	if idx >= 0 {
		r.Drives[idx].File.Close()
		r.Drives = slices.Delete(r.Drives, idx, idx+1)
	}
	if *d.IsRootDevice {
		// The root device always comes first: it becomes /dev/vda.
		r.Drives = slices.Insert(r.Drives, 0, nr)
	} else {
		r.Drives = append(r.Drives, nr)
	}
	return nil
}

func (r *Resources) rootDrive() bool {
	return slices.ContainsFunc(r.Drives, func(d *DriveResource) bool { return *d.Config.IsRootDevice })
}

func (r *Resources) rootPmem() bool {
	return slices.ContainsFunc(r.Pmem, func(p *Pmem) bool { return p.RootDevice != nil && *p.RootDevice })
}

// InsertPmem adds or replaces a pmem device. Its file is opened at boot, as
// in Firecracker.
func (r *Resources) InsertPmem(p Pmem) error {
	idx := slices.IndexFunc(r.Pmem, func(x *Pmem) bool { return *x.ID == *p.ID })
	f := false
	if p.RootDevice == nil {
		p.RootDevice = &f
	}
	if p.ReadOnly == nil {
		p.ReadOnly = &f
	}
	p.RateLimiter = p.RateLimiter.normalized()
	if *p.RootDevice {
		if r.rootDrive() {
			return errorf(PrefixPmem, "Attempt to add pmem as a root device while the root device defined as a block device")
		}
		for i, x := range r.Pmem {
			if *x.RootDevice && i != idx {
				return errorf(PrefixPmem, "A root pmem device already exist")
			}
		}
	}
	if idx >= 0 {
		r.Pmem[idx] = &p
	} else {
		r.Pmem = append(r.Pmem, &p)
	}
	return nil
}

// InsertNet adds or replaces a network interface, opening its TAP.
func (r *Resources) InsertNet(n NetworkInterface) error {
	id := *n.IfaceID
	if n.GuestMac != nil {
		for _, x := range r.Nets {
			if x.Config.GuestMac != nil && *x.Config.GuestMac == *n.GuestMac && *x.Config.IfaceID != id {
				return errorf(PrefixNetwork, "The MAC address is already in use: %s", n.GuestMac)
			}
		}
	}
	if n.Mtu != nil && *n.Mtu < 68 {
		return errorf(PrefixNetwork, "Could not create the network device: MTU %d is out of range [68, 65535]", *n.Mtu)
	}
	// Firecracker drops the old device before opening the new TAP, so that
	// re-PUTting an interface with the same TAP works.
	if idx := slices.IndexFunc(r.Nets, func(x *NetResource) bool { return *x.Config.IfaceID == id }); idx >= 0 {
		r.Nets[idx].Tap.Close()
		r.Nets = slices.Delete(r.Nets, idx, idx+1)
		if r.Mmds != nil {
			// An MMDS configuration naming the dropped interface must be
			// re-PUT after it, as in Firecracker.
			r.Mmds.NetworkInterfaces = slices.DeleteFunc(r.Mmds.NetworkInterfaces, func(s string) bool { return s == id })
		}
	}
	t, err := tap.Open(*n.HostDevName, OSErrorText)
	if err != nil {
		return errorf(PrefixNetwork, "Could not create the network device: Open tap device failed: %s", err)
	}
	n.RxRateLimiter = n.RxRateLimiter.normalized()
	n.TxRateLimiter = n.TxRateLimiter.normalized()
	r.Nets = append(r.Nets, &NetResource{Config: n, Tap: t})
	return nil
}

// SetVsock binds the vsock's Unix socket and replaces the device. A
// replacement on a new path keeps the old device if the new bind fails.
func (r *Resources) SetVsock(v Vsock) error {
	if r.Vsock != nil && *r.Vsock.Config.UDSPath == *v.UDSPath {
		// Same path: the old socket must go before the new bind.
		r.Vsock.close()
		os.Remove(*v.UDSPath)
		r.Vsock = nil
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: *v.UDSPath, Net: "unix"})
	if err != nil {
		return errorf(PrefixVsock, "Cannot create backend for vsock device: Error binding to the host-side Unix socket: %s", OSErrorText(err))
	}
	if r.Vsock != nil {
		r.Vsock.close()
		os.Remove(*r.Vsock.Config.UDSPath)
	}
	v.VsockID = nil
	r.Vsock = &VsockResource{Config: v, Listener: l}
	return nil
}

// SetBalloon validates and replaces the balloon configuration.
func (r *Resources) SetBalloon(b Balloon) error {
	if uint64(*b.AmountMib) > r.Machine.MemSizeMib {
		return errorf(PrefixBalloonConfig, "Amount of pages requested is too large.")
	}
	var zero16 uint16
	f := false
	if b.StatsPollingIntervalS == nil {
		b.StatsPollingIntervalS = &zero16
	}
	if b.FreePageHinting == nil {
		b.FreePageHinting = &f
	}
	if b.FreePageReporting == nil {
		b.FreePageReporting = &f
	}
	r.Balloon = &b
	return nil
}

// SetHotplug validates and replaces the memory hot-plug configuration.
func (r *Resources) SetHotplug(h MemoryHotplugConfig) error {
	block, slot := uint32(2), uint32(128)
	if h.BlockSizeMib != nil {
		block = *h.BlockSizeMib
	}
	if h.SlotSizeMib != nil {
		slot = *h.SlotSizeMib
	}
	total := *h.TotalSizeMib
	switch {
	case block < 2:
		return errorf(PrefixHotplugConfig, "Block size must not be lower than 2 MiB")
	case block&(block-1) != 0:
		return errorf(PrefixHotplugConfig, "Block size must be a power of 2")
	case slot < 128:
		return errorf(PrefixHotplugConfig, "Slot size must not be lower than 128 MiB")
	case slot%block != 0:
		return errorf(PrefixHotplugConfig, "Slot size must be a multiple of block size (%d MiB)", block)
	case total < slot:
		return errorf(PrefixHotplugConfig, "Total size must not be lower than slot size (%d MiB)", slot)
	case total%slot != 0:
		return errorf(PrefixHotplugConfig, "Total size must be a multiple of slot size (%d MiB)", slot)
	}
	h.BlockSizeMib, h.SlotSizeMib = &block, &slot
	r.Hotplug = &h
	return nil
}

// SetMmdsConfig validates the MMDS configuration against the configured
// interfaces (in Firecracker's order) and stores it with defaults filled in.
func (r *Resources) SetMmdsConfig(c MmdsConfig) error {
	if c.IPv4Address == nil {
		c.IPv4Address = &IPv4{169, 254, 169, 254}
	}
	if c.Version == nil {
		v := MmdsVersion("V1")
		c.Version = &v
	}
	if c.ImdsCompat == nil {
		f := false
		c.ImdsCompat = &f
	}
	known := make([]string, len(r.Nets))
	for i, n := range r.Nets {
		known[i] = *n.Config.IfaceID
	}
	if err := c.storeConfig().Validate(known); err != nil {
		return mmdsError(err)
	}
	c.NetworkInterfaces = slices.Clone(c.NetworkInterfaces)
	r.Mmds = &c
	return nil
}

// storeConfig converts the API model (defaults filled in) to the MMDS
// package's configuration.
func (c *MmdsConfig) storeConfig() mmds.Config {
	v, _ := mmds.ParseVersion(string(*c.Version))
	return mmds.Config{
		Version:           v,
		NetworkInterfaces: c.NetworkInterfaces,
		IPv4Address:       netip.AddrFrom4(*c.IPv4Address),
		IMDSCompat:        *c.ImdsCompat,
	}
}

// CheckKernelImage reports whether the boot source is configured; the
// builder does the rest.
func (r *Resources) CheckKernelImage() error {
	if r.Boot == nil {
		return errorf(PrefixStart, "Cannot start microvm without kernel configuration.")
	}
	return nil
}

// Snapshot renders the configuration as GET /vm/config and the config file
// show it.
func (r *Resources) Snapshot() *FullVMConfig {
	c := &FullVMConfig{
		Balloon:           r.Balloon,
		Drives:            []Drive{},
		NetworkInterfaces: []NetworkInterface{},
		Pmem:              []Pmem{},
		Entropy:           r.Entropy,
		MemoryHotplug:     r.Hotplug,
		MmdsConfig:        r.Mmds,
		MachineConfig:     r.Machine.Model(),
	}
	if c.Entropy != nil {
		c.Entropy = &Entropy{RateLimiter: c.Entropy.RateLimiter.normalized()}
	}
	if r.Boot != nil {
		b := r.Boot.Config
		c.BootSource = &b
	}
	for _, d := range r.Drives {
		c.Drives = append(c.Drives, d.Config)
	}
	for _, n := range r.Nets {
		c.NetworkInterfaces = append(c.NetworkInterfaces, n.Config)
	}
	for _, p := range r.Pmem {
		c.Pmem = append(c.Pmem, *p)
	}
	if r.Vsock != nil {
		v := r.Vsock.Config
		c.Vsock = &v
	}
	return c
}

// FullVMConfig is GET /vm/config's answer and the config file's shape, with
// Firecracker's key order.
type FullVMConfig struct {
	Balloon           *Balloon             `json:"balloon"`
	Drives            []Drive              `json:"drives" squib:"required"`
	BootSource        *BootSource          `json:"boot-source" squib:"required"`
	CPUConfig         *CPUConfig           `json:"cpu-config"`
	Logger            *LoggerConfig        `json:"logger"`
	MachineConfig     *MachineConfig       `json:"machine-config"`
	Metrics           *MetricsConfig       `json:"metrics"`
	MmdsConfig        *MmdsConfig          `json:"mmds-config"`
	NetworkInterfaces []NetworkInterface   `json:"network-interfaces"`
	Vsock             *Vsock               `json:"vsock"`
	Entropy           *Entropy             `json:"entropy"`
	Pmem              []Pmem               `json:"pmem"`
	MemoryHotplug     *MemoryHotplugConfig `json:"memory-hotplug"`
}

// ErrNoKVM is wrapped by the builder's error when /dev/kvm is missing.
var ErrNoKVM = errors.New("/dev/kvm is not available")
