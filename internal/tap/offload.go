package tap

import "golang.org/x/sys/unix"

// TUNSETOFFLOAD flags (linux/if_tun.h TUN_F_*): the offloads the reader of
// the TAP accepts, so the kernel may hand it frames with partial checksums
// or GSO frames described by the vnet header instead of doing the work
// itself.
const (
	OffloadCSUM   = 0x01 // TUN_F_CSUM: partial checksums are fine
	OffloadTSO4   = 0x02 // TUN_F_TSO4: TCPv4 segmentation offload
	OffloadTSO6   = 0x04 // TUN_F_TSO6: TCPv6 segmentation offload
	OffloadTSOECN = 0x08 // TUN_F_TSO_ECN: TSO with ECN bits
	OffloadUFO    = 0x10 // TUN_F_UFO: UDP fragmentation offload
)

// SetOffload issues TUNSETOFFLOAD with flags (Offload* bits), as
// Firecracker's Tap::set_offload does when the guest's driver activates the
// device. The ioctl takes the flags by value.
func (t *Tap) SetOffload(flags uint) error {
	rc, err := t.File.SyscallConn()
	if err != nil {
		return err
	}
	// Control rather than File.Fd: Fd would switch the descriptor to
	// blocking mode and take it off the poller, breaking read deadlines.
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, int(flags))
	}); err != nil {
		return err
	}
	return ioErr
}
