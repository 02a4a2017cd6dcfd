package machine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/devices"
	"github.com/squib-vmm/squib/internal/devices/boottimer"
	"github.com/squib-vmm/squib/internal/devices/legacy"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/loader"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/memory"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/virtio/rng"
	"github.com/squib-vmm/squib/internal/vmm"
)

// KVMDevice is the hypervisor device the builder opens first.
const KVMDevice = "/dev/kvm"

// Builder builds VMs on Linux KVM. It implements vmm.Builder.
type Builder struct {
	// Device is the KVM device path; empty means KVMDevice.
	Device string
	// Stdin and Stdout are the serial console's ends when no
	// serial_out_path is configured (Firecracker uses its own stdio).
	Stdin  io.Reader
	Stdout io.Writer
}

var log = logger.For("main", "machine")

// requiredCaps are the capabilities Firecracker refuses to run without.
var requiredCaps = []struct {
	cap  int
	name string
}{
	{kvm.CapIRQChip, "KVM_CAP_IRQCHIP"},
	{kvm.CapIOEventFD, "KVM_CAP_IOEVENTFD"},
	{kvm.CapIRQFD, "KVM_CAP_IRQFD"},
	{kvm.CapUserMemory, "KVM_CAP_USER_MEMORY"},
	{kvm.CapSetTSSAddr, "KVM_CAP_SET_TSS_ADDR"},
	{kvm.CapPIT2, "KVM_CAP_PIT2"},
	{kvm.CapPITState2, "KVM_CAP_PIT_STATE2"},
	{kvm.CapAdjustClock, "KVM_CAP_ADJUST_CLOCK"},
	{kvm.CapDebugRegs, "KVM_CAP_DEBUGREGS"},
	{kvm.CapMPState, "KVM_CAP_MP_STATE"},
	{kvm.CapVCPUEvents, "KVM_CAP_VCPU_EVENTS"},
	{kvm.CapXCRs, "KVM_CAP_XCRS"},
	{kvm.CapXSAVE, "KVM_CAP_XSAVE"},
	{kvm.CapExtCPUID, "KVM_CAP_EXT_CPUID"},
	{kvm.CapImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"},
}

func (b *Builder) device() string {
	if b.Device == "" {
		return KVMDevice
	}
	return b.Device
}

// startErr is an InstanceStart failure with Firecracker's prefix.
func startErr(format string, args ...any) error {
	return &vmm.Error{Msg: vmm.PrefixStart + fmt.Sprintf(format, args...)}
}

// openKVM opens the hypervisor and checks it can run a Firecracker guest.
func (b *Builder) openKVM() (*kvm.System, error) {
	sys, err := kvm.Open(b.device())
	if err != nil {
		return nil, fmt.Errorf("Cannot open %s: %s. squib boots guests on KVM; on a host without it, run them inside the KVM sandbox (make demo, make test).", b.device(), vmm.OSErrorText(errors.Unwrap(err)))
	}
	if v, err := sys.APIVersion(); err != nil || v != 12 {
		sys.Close()
		return nil, fmt.Errorf("KVM API version %d is not 12 (%v)", v, err)
	}
	for _, c := range requiredCaps {
		if n, err := sys.CheckExtension(c.cap); err != nil || n == 0 {
			sys.Close()
			return nil, fmt.Errorf("Missing KVM capability: %s", c.name)
		}
	}
	return sys, nil
}

// unsupported names configured devices this build cannot attach yet, so
// InstanceStart fails clearly instead of booting a guest without them.
func unsupported(res *vmm.Resources) string {
	switch {
	case len(res.Pmem) > 0:
		return "pmem"
	case res.Hotplug != nil:
		return "memory hot-plug"
	}
	return ""
}

// Build creates the VM, loads the kernel and starts the vCPUs.
func (b *Builder) Build(ctx context.Context, res *vmm.Resources, opts vmm.BuildOptions) (vmm.VM, error) {
	start := boottimer.Now()
	if what := unsupported(res); what != "" {
		return nil, startErr("squib cannot attach %s yet; remove them from the configuration to boot.", what)
	}
	if opts.EnablePCI {
		return nil, startErr("the PCI transport (--enable-pci) is not supported by squib yet.")
	}
	m, err := b.newMachine()
	if err != nil {
		return nil, startErr("%s", err)
	}
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()
	if err := m.create(res, anonymousMemory); err != nil {
		return nil, startErr("%s", err)
	}
	if err := m.setupDevices(b, res, opts, start); err != nil {
		return nil, startErr("%s", err)
	}
	if err := m.loadGuest(res, opts); err != nil {
		return nil, err
	}
	if err := m.startVCPUs(int(res.Machine.VcpuCount), res.Machine.Smt, nil); err != nil {
		return nil, startErr("%s", err)
	}
	ok = true
	log.Infof("Successfully started microvm")
	// Building touched large temporary buffers (CPUID, tables); hand the
	// freed heap back now so the VMM's resident size stays small for the
	// guest's whole life.
	debug.FreeOSMemory()
	return m, nil
}

// newMachine opens KVM for a new machine; the caller releases it on
// failure.
func (b *Builder) newMachine() (*Machine, error) {
	sys, err := b.openKVM()
	if err != nil {
		return nil, err
	}
	m := &Machine{sys: sys, done: make(chan struct{}), log: log}
	m.cond.L = &m.mu
	return m, nil
}

// create opens the VM, its interrupt controllers and guest memory, in
// Firecracker's order (irqchip and PIT before any vCPU).
func (m *Machine) create(res *vmm.Resources, newMem memFactory) error {
	cpuid, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	m.cpuid = cpuid
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return err
	}
	if err := m.vm.SetTSSAddr(x86.KVMTSSAddr); err != nil {
		return err
	}
	if err := m.vm.CreateIRQChip(); err != nil {
		return err
	}
	if err := m.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return err
	}
	memBytes := res.Machine.MemSizeMib << 20
	if memBytes>>20 != res.Machine.MemSizeMib {
		return fmt.Errorf("Invalid Memory Configuration: Cannot create mmap region: %s", vmm.OSErrorText(errENOMEM))
	}
	if m.mem, err = newMem(ramLayout(memBytes), memory.Options{HugePages: hugePages(res.Machine.HugePages)}); err != nil {
		return err
	}
	var flags uint32
	if res.Machine.TrackDirtyPages {
		flags = kvm.MemLogDirtyPages
		// squib's own writes to guest memory (virtio rings, received data)
		// bypass KVM's log; the memory records them for diff snapshots.
		m.mem.TrackDirty(true)
		m.trackDirty = true
	}
	for i, r := range m.mem.Regions() {
		if err := m.vm.SetUserMemoryRegion(uint32(i), flags, r.Start, uint64(len(r.Mem)), r.HostAddress()); err != nil {
			return err
		}
	}
	return nil
}

// memFactory maps guest RAM: anonymous at boot, from a snapshot's memory
// file or through a page-fault handler at restore.
type memFactory func(layout []memory.Layout, opts memory.Options) (*memory.Guest, error)

func anonymousMemory(layout []memory.Layout, opts memory.Options) (*memory.Guest, error) {
	g, err := memory.New(layout, opts)
	if err != nil {
		return nil, fmt.Errorf("Invalid Memory Configuration: %s", rustErr(err))
	}
	return g, nil
}

// ramLayout is the x86 RAM layout of memBytes of guest memory.
func ramLayout(memBytes uint64) []memory.Layout {
	var layout []memory.Layout
	for _, r := range x86.RAMRegions(memBytes) {
		layout = append(layout, memory.Layout{Start: r.Start, Size: r.Size})
	}
	return layout
}

func hugePages(h vmm.HugePages) memory.HugePages {
	switch h {
	case vmm.HugePages2M:
		return memory.HugePages2M
	case vmm.HugePagesTransparent:
		return memory.HugePagesTransparent
	}
	return memory.HugePagesNone
}

// serialLimiter returns the output limiter of PUT /serial's rate_limiter.
// It returns a plain nil when nothing is limited: a nil *ByteLimiter in the
// interface would be called, and crash, on every output byte.
func serialLimiter(s *vmm.Serial) legacy.OutputLimiter {
	if s == nil {
		return nil
	}
	if b := ratelimit.BucketFromConfig(s.RateLimiter); b != nil {
		return ratelimit.NewByteLimiter(b)
	}
	return nil
}

// setupDevices puts the legacy devices on the port-I/O bus (and the boot
// timer on the MMIO bus) with their interrupts.
func (m *Machine) setupDevices(b *Builder, res *vmm.Resources, opts vmm.BuildOptions, start boottimer.Timestamp) error {
	serialIRQ, err := newIRQLine(m.vm, x86.SerialIRQ)
	if err != nil {
		return err
	}
	m.irqs = append(m.irqs, serialIRQ)
	kbdIRQ, err := newIRQLine(m.vm, x86.I8042IRQ)
	if err != nil {
		return err
	}
	m.irqs = append(m.irqs, kbdIRQ)

	var out io.Writer = b.Stdout
	var in io.Reader = b.Stdin
	if res.Serial != nil && res.Serial.SerialOutPath != nil {
		// Opened now, not at PUT /serial: Firecracker's order.
		f, err := os.OpenFile(*res.Serial.SerialOutPath, os.O_CREATE|os.O_RDWR|unixNonblock, 0o644)
		if err != nil {
			return fmt.Errorf("Failed to open the serial output file %s: %s", *res.Serial.SerialOutPath, vmm.OSErrorText(err))
		}
		m.serialOut = f
		out, in = f, nil // with a path, stdin is not attached
	}
	if m.serial, err = legacy.NewSerial(legacy.SerialConfig{Interrupt: serialIRQ, Out: out, Limiter: serialLimiter(res.Serial)}); err != nil {
		return err
	}
	if in != nil {
		go m.serial.PumpInput(in)
	}
	m.i8042 = legacy.NewI8042(kbdIRQ, func() {
		log.Infof("Received the i8042 CPU reset request (guest reboot).")
		m.exitWith(0)
	})
	m.rtc = legacy.NewRTC(nil)
	m.mmdsStore = opts.Mmds
	for _, d := range []struct {
		dev        devices.Device
		base, size uint64
	}{
		{m.serial, legacy.SerialBase, legacy.SerialSize},
		{m.i8042, legacy.I8042Base, legacy.I8042Size},
		{m.rtc, legacy.RTCBase, legacy.RTCSize},
	} {
		if err := m.pio.Insert(d.dev, d.base, d.size); err != nil {
			return err
		}
	}
	// Virtio devices, in Firecracker's attach order (balloon, block, net,
	// pmem, vsock, entropy, virtio-mem).
	if err := m.attachDevices(res, opts); err != nil {
		return err
	}
	if res.Entropy != nil {
		var lim rng.Limiter
		if l := ratelimit.FromConfig(res.Entropy.RateLimiter); l != nil {
			lim = ratelimit.DeviceLimiter{L: l}
		}
		if err := m.attachVirtio(rng.New(lim)); err != nil {
			return fmt.Errorf("Could not create Entropy device: %s", err)
		}
	}
	if opts.BootTimer {
		if err := m.mmio.Insert(boottimer.New(start), boottimer.Base, boottimer.Size); err != nil {
			return err
		}
	}
	return nil
}

// loadGuest loads the kernel and initrd and writes the command line and
// boot tables, in Firecracker's order.
func (m *Machine) loadGuest(res *vmm.Resources, opts vmm.BuildOptions) error {
	boot := res.Boot
	kfi, err := boot.Kernel.Stat()
	if err != nil {
		return startErr("Cannot load kernel due to invalid memory configuration or invalid kernel image: %s", vmm.OSErrorText(err))
	}
	k, err := loader.Load(m.mem, boot.Kernel, kfi.Size())
	if err != nil {
		return startErr("Cannot load kernel due to invalid memory configuration or invalid kernel image: %s", err)
	}
	m.kernel = k
	var initrdAddr, initrdSize uint64
	if boot.Initrd != nil {
		ifi, err := boot.Initrd.Stat()
		if err != nil {
			return startErr("Cannot load initrd: %s", vmm.OSErrorText(err))
		}
		lowEnd := m.mem.Regions()[0].End()
		initrdAddr, err = loader.LoadInitrd(m.mem, boot.Initrd, ifi.Size(), lowEnd, k.RuntimeEnd)
		if err != nil {
			return startErr("Cannot load initrd due to an invalid memory configuration: %s", err)
		}
		initrdSize = uint64(ifi.Size())
	}

	args := vmm.DefaultBootArgs
	if boot.Config.BootArgs != nil {
		args = *boot.Config.BootArgs
	}
	cmdline, err := loader.ParseCmdline(args, x86.CmdlineMaxSize)
	if err != nil {
		return startErr("Invalid kernel command line: %s", err)
	}
	if !opts.EnablePCI {
		if err := cmdline.InsertStr("pci=off"); err != nil {
			return startErr("Invalid kernel command line: %s", err)
		}
	}
	if err := rootArgs(cmdline, res); err != nil {
		return startErr("Invalid kernel command line: %s", err)
	}
	virtioDevs, err := m.announceVirtio(cmdline)
	if err != nil {
		return startErr("Invalid kernel command line: %s", err)
	}
	cmdSize, err := loader.LoadCmdline(m.mem, x86.CmdlineStart, cmdline)
	if err != nil {
		return startErr("Invalid kernel command line: %s", err)
	}

	n := int(res.Machine.VcpuCount)
	mpEnd, err := x86.WriteMPTable(m.mem, n)
	if err != nil {
		return startErr("Cannot write the MP table: %s", err)
	}
	if err := x86.WriteACPITables(m.mem, mpEnd, x86.ACPIConfig{CPUCount: n, VirtioMMIO: virtioDevs}); err != nil {
		return startErr("Cannot write the ACPI tables: %s", err)
	}
	if k.PVHEntry != 0 {
		err = x86.WritePVHInfo(m.mem, x86.PVHConfig{InitrdAddr: initrdAddr, InitrdSize: initrdSize})
	} else {
		err = x86.WriteZeroPage(m.mem, x86.ZeroPageConfig{SetupHeader: k.SetupHeader, CmdlineSize: uint32(cmdSize), InitrdAddr: initrdAddr, InitrdSize: initrdSize})
	}
	if err != nil {
		return startErr("Cannot write the boot parameters: %s", err)
	}
	if err := x86.WriteBootGDT(m.mem, k.PVHEntry != 0); err != nil {
		return startErr("%s", err)
	}
	if k.PVHEntry == 0 {
		if err := x86.WriteIdentityPageTables(m.mem); err != nil {
			return startErr("%s", err)
		}
	}
	return nil
}

// rustErr renders an error whose cause is an errno the way Firecracker's
// messages show it.
func rustErr(err error) string {
	var inner error = err
	for errors.Unwrap(inner) != nil {
		inner = errors.Unwrap(inner)
	}
	if inner != err {
		msg := err.Error()
		if i := len(msg) - len(inner.Error()); i >= 0 && msg[i:] == inner.Error() {
			return msg[:i] + vmm.OSErrorText(inner)
		}
	}
	return err.Error()
}
