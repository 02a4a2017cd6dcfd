package machine

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/loader"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/mmds/netstack"
	"github.com/squib-vmm/squib/internal/ratelimit"
	"github.com/squib-vmm/squib/internal/tap"
	"github.com/squib-vmm/squib/internal/virtio/balloon"
	"github.com/squib-vmm/squib/internal/virtio/block"
	vnet "github.com/squib-vmm/squib/internal/virtio/net"
	"github.com/squib-vmm/squib/internal/virtio/vsock"
	"github.com/squib-vmm/squib/internal/vmm"
)

// dupFile duplicates f's descriptor (close-on-exec) without touching its
// blocking mode, as f.Fd() would. Devices get duplicates so that the
// resources keep their own: a failed InstanceStart leaves them usable for
// a retry, as the controller promises.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// attachDevices creates the virtio devices the resources describe, in
// Firecracker's attach order (balloon, block, net, pmem, vsock, entropy,
// virtio-mem), which fixes their MMIO windows, GSIs and /dev/vdX names.
func (m *Machine) attachDevices(res *vmm.Resources, opts vmm.BuildOptions) error {
	if b := res.Balloon; b != nil {
		dev, err := balloon.New(balloon.Config{
			AmountMib:             *b.AmountMib,
			DeflateOnOOM:          *b.DeflateOnOOM,
			StatsPollingIntervalS: deref(b.StatsPollingIntervalS),
			FreePageHinting:       deref(b.FreePageHinting),
			FreePageReporting:     deref(b.FreePageReporting),
		})
		if err != nil {
			return fmt.Errorf("Cannot create the balloon device: %s", err)
		}
		if err := m.attachVirtio(dev); err != nil {
			return err
		}
		m.balloon = dev
		m.guestMemMib = res.Machine.MemSizeMib
	}
	for _, d := range res.Drives {
		f, err := dupFile(d.File)
		if err != nil {
			return err
		}
		cache := block.CacheUnsafe
		if d.Config.CacheType != nil && *d.Config.CacheType == "Writeback" {
			cache = block.CacheWriteback
		}
		dev, err := block.New(block.Config{
			ID:       *d.Config.DriveID,
			File:     f,
			ReadOnly: deref(d.Config.IsReadOnly),
			Cache:    cache,
			Limiter:  limiter(d.Config.RateLimiter),
		})
		if err != nil { // New closed f
			return fmt.Errorf("Unable to create the virtio block device: %s", err)
		}
		m.closers = append(m.closers, dev.Close)
		if err := m.attachVirtio(dev); err != nil {
			return err
		}
		m.drives = append(m.drives, driveSlot{dev: dev, readOnly: deref(d.Config.IsReadOnly)})
	}
	var mmdsIfaces []string
	var mmdsIP netip.Addr
	if res.Mmds != nil && opts.Mmds != nil {
		mmdsIfaces = res.Mmds.NetworkInterfaces
		mmdsIP = netip.AddrFrom4(*res.Mmds.IPv4Address)
	}
	for _, n := range res.Nets {
		f, err := dupFile(n.Tap.File)
		if err != nil {
			return err
		}
		cfg := vnet.Config{
			ID:        *n.Config.IfaceID,
			Backend:   vnet.NewTapBackend(&tap.Tap{File: f, Name: n.Tap.Name}),
			MTU:       n.Config.Mtu,
			RxLimiter: limiter(n.Config.RxRateLimiter),
			TxLimiter: limiter(n.Config.TxRateLimiter),
		}
		if n.Config.GuestMac != nil {
			mac := [6]byte(*n.Config.GuestMac)
			cfg.GuestMAC = &mac
		}
		if slices.Contains(mmdsIfaces, *n.Config.IfaceID) {
			cfg.MMDS = netstack.New(netstack.Config{IPv4: mmdsIP}, m.mmdsService(opts))
		}
		dev, err := vnet.New(cfg)
		if err != nil {
			cfg.Backend.Close()
			return fmt.Errorf("Could not create the network device: %s", err)
		}
		m.closers = append(m.closers, dev.Close)
		if err := m.attachVirtio(dev); err != nil {
			return err
		}
		m.nets = append(m.nets, dev)
	}
	if v := res.Vsock; v != nil {
		lf, err := v.Listener.File()
		if err != nil {
			return fmt.Errorf("Cannot create the vsock device: %s", err)
		}
		l, err := net.FileListener(lf)
		lf.Close()
		if err != nil {
			return fmt.Errorf("Cannot create the vsock device: %s", err)
		}
		dev, err := vsock.New(vsock.Config{GuestCID: *v.Config.GuestCID, UDSPath: *v.Config.UDSPath, Listener: l.(*net.UnixListener)})
		if err != nil {
			l.Close()
			return fmt.Errorf("Cannot create the vsock device: %s", err)
		}
		m.closers = append(m.closers, dev.Close)
		if err := m.attachVirtio(dev); err != nil {
			return err
		}
		m.vsock = dev
	}
	return nil
}

// mmdsService is the guest-facing MMDS handler every MMDS-enabled
// interface's network stack serves; one per VM, so that a token one
// interface issued is valid on another.
func (m *Machine) mmdsService(opts vmm.BuildOptions) *mmds.Service {
	if m.mmds == nil {
		mm := &metrics.Default.MMDS
		m.mmds = mmds.NewService(opts.Mmds, mmds.NewTokenAuthority(opts.InstanceID), mmds.Hooks{
			InvalidToken: mm.RxInvalidToken.Inc,
			NoToken:      mm.RxNoToken.Inc,
		})
	}
	return m.mmds
}

// rootArgs appends the root drive to the kernel command line as
// Firecracker does: root=PARTUUID=... or root=/dev/vda, then ro or rw. The
// root drive is always first (the resources keep it there), so it is vda.
func rootArgs(cmdline *loader.Cmdline, res *vmm.Resources) error {
	if len(res.Drives) == 0 || !*res.Drives[0].Config.IsRootDevice {
		return nil
	}
	d := res.Drives[0].Config
	root := "root=/dev/vda"
	if d.Partuuid != nil {
		root = "root=PARTUUID=" + *d.Partuuid
	}
	mode := "rw"
	if deref(d.IsReadOnly) {
		mode = "ro"
	}
	if err := cmdline.InsertStr(root); err != nil {
		return err
	}
	return cmdline.InsertStr(mode)
}

// limiter builds a device's rate limiter; never nil, so that a PATCH can
// add buckets to a device configured without any.
func limiter(rl *vmm.RateLimiter) *ratelimit.RateLimiter {
	if l := ratelimit.FromConfig(rl); l != nil {
		return l
	}
	return ratelimit.New(nil, nil)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// driveSlot is an attached block device.
type driveSlot struct {
	dev      *block.Device
	readOnly bool
}

func (m *Machine) drive(id string) *driveSlot {
	for i := range m.drives {
		if m.drives[i].dev.ID() == id {
			return &m.drives[i]
		}
	}
	return nil
}

// errNotFound is Firecracker's text for an update of a device the VM lacks.
var errNotFound = fmt.Errorf("Failed perform action on device: Device not found")

// UpdateDrive implements vmm.VM: PATCH /drives/{id} after boot swaps the
// backing file (the guest sees a config change with the new capacity)
// and/or replaces rate-limiter buckets.
func (m *Machine) UpdateDrive(id string, pathOnHost *string, rl *vmm.RateLimiter) error {
	d := m.drive(id)
	if d == nil {
		return errNotFound
	}
	if pathOnHost != nil {
		flag := os.O_RDWR
		if d.readOnly {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(*pathOnHost, flag|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("Virtio backend error: Error manipulating the backing file: %s %s", vmm.OSErrorText(err), *pathOnHost)
		}
		if err := d.dev.UpdateFile(f); err != nil { // it closed f
			return fmt.Errorf("Virtio backend error: Error manipulating the backing file: %s %s", err, *pathOnHost)
		}
	}
	if rl != nil {
		d.dev.Limiter().Update(rl.Bandwidth, rl.Ops)
	}
	return nil
}

// UpdateNet implements vmm.VM: PATCH /network-interfaces/{id} replaces
// rate-limiter buckets.
func (m *Machine) UpdateNet(id string, rx, tx *vmm.RateLimiter) error {
	for _, n := range m.nets {
		if n.ID() != id {
			continue
		}
		if rx != nil {
			n.RxLimiter().Update(rx.Bandwidth, rx.Ops)
		}
		if tx != nil {
			n.TxLimiter().Update(tx.Bandwidth, tx.Ops)
		}
		return nil
	}
	return errNotFound
}

// UpdateBalloon implements vmm.VM.
func (m *Machine) UpdateBalloon(mib uint32) error {
	if m.balloon == nil {
		return errNotFound
	}
	return m.balloon.UpdateAmount(mib, m.guestMemMib)
}

// UpdateBalloonStatsInterval implements vmm.VM.
func (m *Machine) UpdateBalloonStatsInterval(s uint16) error {
	if m.balloon == nil {
		return errNotFound
	}
	return m.balloon.UpdateStatsInterval(s)
}

// StartHinting implements vmm.VM.
func (m *Machine) StartHinting(cmd vmm.BalloonStartCmd) error {
	if m.balloon == nil {
		return errNotFound
	}
	return m.balloon.StartHinting(cmd)
}

// HintingStatus implements vmm.VM.
func (m *Machine) HintingStatus() (vmm.HintingStatus, error) {
	if m.balloon == nil {
		return vmm.HintingStatus{}, errNotFound
	}
	return m.balloon.HintingStatus()
}

// StopHinting implements vmm.VM.
func (m *Machine) StopHinting() error {
	if m.balloon == nil {
		return errNotFound
	}
	return m.balloon.StopHinting()
}

// BalloonStats implements vmm.VM; the device answers without waiting on
// its worker, so the API's fast path may call it.
func (m *Machine) BalloonStats() (vmm.BalloonStats, error) {
	if m.balloon == nil {
		return vmm.BalloonStats{}, errNotFound
	}
	return m.balloon.Stats()
}
