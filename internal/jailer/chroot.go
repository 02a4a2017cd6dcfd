package jailer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/logger"
)

// jailFolders are the directories made inside the jail, mode 0700 and owned
// by the jailed user: the root (so that the VMM can create files there),
// /dev and /dev/net for the device nodes, /run for the API socket.
var jailFolders = []string{"/", "/dev", "/dev/net", "/run"}

// device is a character device node the jail gets.
type device struct {
	path         string
	major, minor uint32
	// optional devices only warn when they cannot be made.
	optional bool
}

// hostDevices lists the nodes to make in the jail, with the host's device
// numbers where the host has the node and the standard numbers (those
// Firecracker hard-codes) otherwise. /dev/userfaultfd has a dynamic minor,
// read from /proc/misc, and is left out when the host kernel lacks it.
func hostDevices(procMisc string) []device {
	devs := []device{
		hostDevice("/dev/net/tun", 10, 200),
		hostDevice("/dev/kvm", 10, 232),
		hostDevice("/dev/urandom", 1, 9),
	}
	devs[2].optional = true
	if minor, ok := miscMinor(procMisc, "userfaultfd"); ok {
		devs = append(devs, device{path: "/dev/userfaultfd", major: 10, minor: minor})
	}
	return devs
}

func hostDevice(path string, major, minor uint32) device {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
		major, minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	}
	return device{path: path, major: major, minor: minor}
}

// miscMinor finds a misc device's minor number in /proc/misc ("257 name").
func miscMinor(procMisc, name string) (uint32, bool) {
	b, err := os.ReadFile(procMisc)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] == name {
			n, err := strconv.ParseUint(f[0], 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}

// copyExecFile copies the VMM binary into the jail, owned by the jailed
// user. It is a copy, never a link: two VMMs then share no page of their
// binary, and the jailed user may own it. The destination is opened
// without following a symbolic link, and one with more than one link
// (a hard link planted in the jail) is refused before anything is written
// to it.
func copyExecFile(src, dst string, uid, gid uint32, u *undo) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("Failed to open %s: %s", src, logger.OSErrorText(err))
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("Cannot get metadata for a file: %s: %s", src, logger.OSErrorText(err))
	}
	_, lerr := os.Lstat(dst)
	existed := lerr == nil
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("Failed to open %s: %s", dst, logger.OSErrorText(err))
	}
	if !existed {
		u.remove(dst)
	}
	// Closed before exec: a binary open for writing cannot be executed.
	defer out.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(out.Fd()), &st); err != nil {
		return fmt.Errorf("Cannot get metadata for a file: %s: %s", dst, logger.OSErrorText(err))
	}
	if st.Nlink > 1 {
		return fmt.Errorf("Detected hard link at: %s", dst)
	}
	if err := out.Chown(int(uid), int(gid)); err != nil {
		return fmt.Errorf("Failed to change owner for %s: %s", dst, logger.OSErrorText(err))
	}
	err = out.Truncate(0)
	if err == nil {
		_, err = io.Copy(out, in)
	}
	if err == nil {
		// chown cleared any set-id bits; the mode is the source's.
		err = out.Chmod(fi.Mode().Perm())
	}
	if err == nil {
		err = out.Close()
	}
	if err != nil {
		return fmt.Errorf("Failed to copy %s to %s: %s", src, dst, logger.OSErrorText(err))
	}
	return nil
}

// pivotInto makes dir the root of a new mount namespace, for the calling
// thread only (see doc.go): unshare(CLONE_NEWNS), make every mount a slave
// so nothing propagates back to the host, bind-mount dir onto itself
// (pivot_root needs new_root to be a mount point), pivot_root into it and
// detach the old root, so that no path leads out of the jail.
func pivotInto(dir string, u *undo) error {
	wrap := func(msg string, err error) error {
		return fmt.Errorf("%s: %s (jail root %s)", msg, logger.OSErrorText(err), dir)
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return wrap("Failed to unshare into new mount namespace", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return wrap("Failed to change the propagation type to slave", err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return wrap("Failed to bind mount the jail root directory", err)
	}
	if err := unix.Chdir(dir); err != nil {
		return wrap("Failed to change current directory", err)
	}
	if err := unix.Mkdir("old_root", 0o600); err != nil {
		return wrap("Failed to create the jail root directory before pivoting root", err)
	}
	u.remove(filepath.Join(dir, "old_root"))
	if err := unix.PivotRoot(".", "old_root"); err != nil {
		werr := wrap("Failed to pivot root", err)
		if err == unix.EINVAL {
			werr = fmt.Errorf("%w\nHint: pivot_root cannot move the initial ramfs; if / is the initramfs, run the jailer with a bind mount as its root, e.g. unshare -m sh -c 'mount --rbind / /mnt && exec chroot /mnt squib-jailer ...'", werr)
		}
		return werr
	}
	if err := unix.Chdir("/"); err != nil {
		return wrap("Failed to chdir into chroot directory", err)
	}
	if err := unix.Unmount("old_root", unix.MNT_DETACH); err != nil {
		return wrap("Failed to unmount the old jail root", err)
	}
	if err := unix.Rmdir("old_root"); err != nil {
		return wrap("Failed to remove old jail root directory", err)
	}
	return nil
}

// makeJailFolders creates jailFolders inside the jail (after pivotInto),
// with mode 0700 and the jailed owner. host is the jail root's host path,
// for undo, which runs outside the jail.
func makeJailFolders(host string, uid, gid uint32, u *undo) error {
	for _, f := range jailFolders {
		if err := os.Mkdir(f, 0o700); err == nil {
			u.remove(filepath.Join(host, f))
		} else if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("Failed to create directory %s: %s (jail root %s)", f, logger.OSErrorText(err), host)
		}
		if err := os.Chmod(f, 0o700); err != nil {
			return fmt.Errorf("Failed to change permissions on %s: %s (jail root %s)", f, logger.OSErrorText(err), host)
		}
		if err := os.Chown(f, int(uid), int(gid)); err != nil {
			return fmt.Errorf("Failed to change owner for %s: %s (jail root %s)", f, logger.OSErrorText(err), host)
		}
	}
	return nil
}

// makeDevices creates the device nodes inside the jail, mode 0600 and owned
// by the jailed user, who has no other way to reach /dev/kvm and the rest.
// A missing optional node (/dev/urandom) is a warning on stdout, as in
// Firecracker: without it only MMDS version 2 is unavailable.
func makeDevices(devs []device, host string, uid, gid uint32, u *undo, stdout io.Writer) error {
	for _, d := range devs {
		err := makeDevice(d, host, uid, gid, u)
		if err != nil && d.optional {
			fmt.Fprintf(stdout, "Warning! Could not create %s device inside jailer: %s.\n", d.path, err)
			fmt.Fprintln(stdout, "MMDS version 2 will not be available to use.")
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func makeDevice(d device, host string, uid, gid uint32, u *undo) error {
	if err := unix.Mknod(d.path, unix.S_IFCHR|0o600, int(unix.Mkdev(d.major, d.minor))); err != nil {
		return fmt.Errorf("Failed to create %s via mknod inside the jail: %s (jail root %s)", d.path, logger.OSErrorText(err), host)
	}
	u.remove(filepath.Join(host, d.path))
	if err := os.Chown(d.path, int(uid), int(gid)); err != nil {
		return fmt.Errorf("Failed to change owner for %s: %s (jail root %s)", d.path, logger.OSErrorText(err), host)
	}
	return nil
}

// mkdirAllTracked is os.MkdirAll that records each directory it creates,
// so that undo removes exactly those, deepest first.
func mkdirAllTracked(path string, perm os.FileMode, u *undo) error {
	var missing []string
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		err := os.Mkdir(missing[i], perm)
		if err == nil {
			u.remove(missing[i])
			continue
		}
		// Another jailer may have created a shared parent meanwhile.
		if errors.Is(err, os.ErrExist) {
			if fi, serr := os.Stat(missing[i]); serr == nil && fi.IsDir() {
				continue
			}
		}
		return fmt.Errorf("Failed to create directory %s: %s", path, logger.OSErrorText(err))
	}
	return nil
}
