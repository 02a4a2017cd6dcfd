// Package tap opens Linux TAP devices the way Firecracker does, so that a
// network interface's backend is checked when the interface is configured
// rather than when the guest boots.
package tap

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Error is a failure to open a TAP, worded as Firecracker's TapError.
type Error struct {
	Msg string
	Err error
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// Tap is an open TAP device with the virtio-net header enabled.
type Tap struct {
	File *os.File
	Name string
}

// VnetHdrLen is the size of struct virtio_net_hdr_v1, which the guest's
// virtio-net driver puts in front of every frame, and which the TAP is set
// to carry.
const VnetHdrLen = 12

// Open attaches to the TAP named name with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR
// and sets the vnet header size. errText renders an OS error for messages.
func Open(name string, errText func(error) string) (*Tap, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, &Error{Msg: "Invalid interface name"}
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &Error{Msg: "Couldn't open /dev/net/tun: " + errText(err), Err: err}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, &Error{Msg: "Invalid interface name", Err: err}
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, &Error{Msg: fmt.Sprintf("Error while creating ifreq structure: %s. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.", errText(err), name), Err: err}
	}
	if err := setVnetHdrSize(fd, VnetHdrLen); err != nil {
		unix.Close(fd)
		return nil, &Error{Msg: "Error while setting size of the vnet header: " + errText(err), Err: err}
	}
	return &Tap{File: os.NewFile(uintptr(fd), "/dev/net/tun:"+name), Name: name}, nil
}

// Close releases the TAP (the interface itself stays, as it was made by the
// host's administrator).
func (t *Tap) Close() error { return t.File.Close() }
