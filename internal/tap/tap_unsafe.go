package tap

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// setVnetHdrSize issues TUNSETVNETHDRSZ. The kernel only reads the int the
// pointer names, during the call, and size lives on this frame until the
// syscall returns, so the pointer is valid throughout.
func setVnetHdrSize(fd int, size int32) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.TUNSETVNETHDRSZ), uintptr(unsafe.Pointer(&size)))
	if errno != 0 {
		return errno
	}
	return nil
}
