// Command squib-guest-tool runs inside the test guest (it is statically
// linked into the guest initramfs as /bin/squib-guest-tool) and does what
// busybox cannot: talk AF_VSOCK, and push bulk TCP for the throughput
// benchmark.
//
//	squib-guest-tool vsock-echo PORT N          accept N connections on vsock PORT, echo each until EOF
//	squib-guest-tool vsock-dial CID PORT MSG    connect to CID:PORT, send MSG, print as many bytes of reply
//	squib-guest-tool tcp-send ADDR MIB          send MIB MiB to ADDR over TCP, print MiB/s
//	squib-guest-tool read-rate FILE MIB         read MIB MiB from FILE (a block device) with 1 MiB O_DIRECT reads, print MiB/s
//	squib-guest-tool write-rate FILE MIB        write MIB MiB to FILE with O_DIRECT and fsync it, print MiB/s
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch a := os.Args[2:]; os.Args[1] {
	case "vsock-echo":
		need(a, 2)
		err = vsockEcho(num(a[0]), int(num(a[1])))
	case "vsock-dial":
		need(a, 3)
		err = vsockDial(num(a[0]), num(a[1]), a[2])
	case "tcp-send":
		need(a, 2)
		err = tcpSend(a[0], int(num(a[1])))
	case "read-rate":
		need(a, 2)
		err = rate(a[0], int(num(a[1])), false)
	case "write-rate":
		need(a, 2)
		err = rate(a[0], int(num(a[1])), true)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "squib-guest-tool:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: squib-guest-tool vsock-echo|vsock-dial|tcp-send|read-rate|write-rate ARGS")
	os.Exit(2)
}

func need(a []string, n int) {
	if len(a) != n {
		usage()
	}
}

func num(s string) uint32 {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		usage()
	}
	return uint32(v)
}

// vsockFile wraps a connected AF_VSOCK socket; blocking I/O is fine in a
// one-shot tool.
func vsockFile(fd int) *os.File { return os.NewFile(uintptr(fd), "vsock") }

func vsockEcho(port uint32, n int) error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		return err
	}
	if err := unix.Listen(fd, 4); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		c, _, err := unix.Accept(fd)
		if err != nil {
			return err
		}
		f := vsockFile(c)
		_, err = io.Copy(f, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func vsockDial(cid, port uint32, msg string) error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		return err
	}
	f := vsockFile(fd)
	defer f.Close()
	if _, err := io.WriteString(f, msg); err != nil {
		return err
	}
	// Read back exactly the echo: Firecracker's vsock (and squib's) does
	// not pass a half-close on to the host socket, so the peer never sees
	// EOF before we close.
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(f, b); err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func tcpSend(addr string, mib int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for i := 0; i < mib; i++ {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	// the receiver closes after counting everything: the time includes delivery
	io.Copy(io.Discard, c)
	c.Close()
	fmt.Printf("%.1f\n", float64(mib)/time.Since(start).Seconds())
	return nil
}

// rate times mib 1 MiB O_DIRECT reads or writes of a block device: direct
// I/O keeps the guest's page cache and writeback pacing out of the figure,
// so it measures the device.
func rate(path string, mib int, write bool) error {
	flag := os.O_RDONLY
	if write {
		flag = os.O_WRONLY
	}
	f, err := os.OpenFile(path, flag|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// O_DIRECT wants an aligned buffer; an anonymous mapping is page aligned
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	start := time.Now()
	for i := 0; i < mib; i++ {
		if write {
			_, err = f.Write(buf)
		} else {
			_, err = io.ReadFull(f, buf)
		}
		if err != nil {
			return err
		}
	}
	if write {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	fmt.Printf("%.1f\n", float64(mib)/time.Since(start).Seconds())
	return nil
}
