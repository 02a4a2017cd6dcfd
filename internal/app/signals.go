package app

import (
	"os"
	"syscall"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/metrics"
)

// handledSignals are the signals Firecracker intercepts. Go turns
// synchronous SIGBUS/SIGSEGV/SIGILL faults into panics; these entries catch
// the asynchronous ones (kill), which is what Firecracker's tests send.
var handledSignals = []os.Signal{
	syscall.SIGBUS, syscall.SIGSEGV, syscall.SIGXFSZ, syscall.SIGXCPU,
	syscall.SIGPIPE, syscall.SIGHUP, syscall.SIGILL, syscall.SIGSYS,
}

// onSignal records and logs sig and says whether squib must exit, with
// which code. SIGPIPE is only counted, as in Firecracker.
func onSignal(sig os.Signal, log logger.Handle) (int, bool) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return 0, false
	}
	m := &metrics.Default.Signals
	var code int
	switch s {
	case syscall.SIGBUS:
		m.Sigbus.Store(1)
		code = ExitSIGBUS
	case syscall.SIGSEGV:
		m.Sigsegv.Store(1)
		code = ExitSIGSEGV
	case syscall.SIGXFSZ:
		m.Sigxfsz.Store(1)
		code = ExitSIGXFSZ
	case syscall.SIGXCPU:
		m.Sigxcpu.Store(1)
		code = ExitSIGXCPU
	case syscall.SIGHUP:
		m.Sighup.Store(1)
		code = ExitSIGHUP
	case syscall.SIGILL:
		m.Sigill.Store(1)
		code = ExitSIGILL
	case syscall.SIGSYS:
		metrics.Default.Seccomp.NumFaults.Store(1)
		code = ExitBadSyscall
	case syscall.SIGPIPE:
		m.Sigpipe.Inc()
		log.Errorf("Received signal %d.", int(s))
		return 0, false
	default:
		return 0, false
	}
	log.Errorf("Shutting down VM after intercepting signal %d, code %d.", int(s), 0)
	metrics.Default.Write()
	return code, true
}
