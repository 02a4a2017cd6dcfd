package logger

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sink is an output for log or metrics lines, opened and written the way
// Firecracker treats --log-path and --metrics-path. A nil *Sink, or one from
// StdoutSink, writes to the process's standard output.
type Sink struct {
	f  *os.File        // nil means os.Stdout, looked up at write time
	rc syscall.RawConn // cached: SyscallConn allocates on every call
}

// OpenSink opens path like Firecracker's open_file_nonblock: created if
// missing (mode 0666 before umask), read-write, O_NONBLOCK, neither truncated
// nor in append mode. Read-write lets a FIFO open without a reader attached
// (write-only would fail with ENXIO); writes start at offset 0 of an existing
// regular file and overwrite what is there. The error is the *os.PathError
// from the open; render it with OSErrorText.
func OpenSink(path string) (*Sink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_NONBLOCK, 0o666)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Sink{f: f, rc: rc}, nil
}

// StdoutSink returns a sink writing to standard output, the logger's
// default target.
func StdoutSink() *Sink { return nil }

// Name returns the path the sink was opened with, or "/dev/stdout".
func (s *Sink) Name() string {
	if s == nil || s.f == nil {
		return "/dev/stdout"
	}
	return s.f.Name()
}

// Write writes b with one write(2) call, continuing only after a short
// write (Rust's write_all). It never parks the goroutine: a full pipe fails
// with EAGAIN at once, as in Firecracker, instead of blocking a vCPU or the
// API until a reader drains the FIFO. Going through RawConn rather than
// os.File.Write is what keeps Go's poller from waiting for writability.
func (s *Sink) Write(b []byte) error {
	var rc syscall.RawConn
	if s != nil {
		rc = s.rc
	}
	if rc == nil {
		var err error
		if rc, err = os.Stdout.SyscallConn(); err != nil {
			return err
		}
	}
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, e := unix.Write(int(fd), b)
			if e == unix.EINTR {
				continue
			}
			if e != nil {
				werr = e
				return true
			}
			if n <= 0 {
				werr = io.ErrShortWrite
				return true
			}
			b = b[n:]
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

// Close closes the underlying file; closing the stdout sink does nothing.
// A Write racing with Close either completes or fails with os.ErrClosed.
func (s *Sink) Close() error {
	if s == nil || s.f == nil {
		return nil
	}
	return s.f.Close()
}

// isClosed reports whether err came from writing to a sink closed by a
// concurrent reconfiguration.
func isClosed(err error) bool { return errors.Is(err, os.ErrClosed) }
