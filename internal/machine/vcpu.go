package machine

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/metrics"
)

// kickSignal interrupts KVM_RUN. Go's runtime reserves 32-34; from 35 up
// it installs a handler that ignores an unrequested signal, which is what
// a kick needs: the handler's only effect is KVM_RUN returning EINTR.
const kickSignal = unix.Signal(35)

const defaultFlushTimeout = 2 * time.Second

// vcpu is one vCPU goroutine's shared state.
type vcpu struct {
	m   *Machine
	id  int
	fd  *kvm.VCPU
	log logger.Handle
	// tid is the OS thread the goroutine is locked to (0 until known).
	tid atomic.Int32
	// stopping asks the loop to end at its next exit.
	stopping atomic.Bool
	// exited is set, under m.mu, when the goroutine has ended.
	exited bool
	// fdMu guards closed: kvm_run is unmapped by Close, so a kick must
	// never touch it afterwards.
	fdMu   sync.Mutex
	closed bool
	// saved is the state a restored vCPU starts from instead of the boot
	// state; nil at boot.
	saved *vcpuState
}

// kick makes the vCPU leave KVM_RUN soon: immediate_exit covers the window
// before it enters, the signal covers the time inside.
func (v *vcpu) kick() {
	v.fdMu.Lock()
	defer v.fdMu.Unlock()
	if v.fd == nil || v.closed {
		return
	}
	v.fd.RunData().SetImmediateExit(true)
	if tid := v.tid.Load(); tid != 0 {
		unix.Tgkill(unix.Getpid(), int(tid), kickSignal)
	}
}

func (v *vcpu) stop() {
	v.stopping.Store(true)
	v.kick()
}

// startVCPUs creates and configures every vCPU on its own locked thread,
// then lets them run. It returns once all are configured, or the first
// configuration error.
func (m *Machine) startVCPUs(n int, smt bool, saved []vcpuState) error {
	ready := make(chan error, n)
	for i := range n {
		v := &vcpu{m: m, id: i, log: logger.For(fmt.Sprintf("fc_vcpu %d", i), "machine")}
		if saved != nil {
			v.saved = &saved[i]
		}
		m.vcpus = append(m.vcpus, v)
	}
	start := make(chan struct{})
	for _, v := range m.vcpus {
		m.wg.Add(1)
		go v.run(n, smt, ready, start)
	}
	var first error
	for range n {
		if err := <-ready; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for _, v := range m.vcpus {
			v.stopping.Store(true)
		}
		close(start)
		m.wg.Wait()
		return first
	}
	close(start)
	return nil
}

// run is a vCPU goroutine: it owns its OS thread for its whole life.
func (v *vcpu) run(n int, smt bool, ready chan<- error, start <-chan struct{}) {
	defer v.m.wg.Done()
	defer func() {
		v.m.mu.Lock()
		v.exited = true
		v.m.cond.Broadcast()
		v.m.mu.Unlock()
	}()
	// Never unlocked: the thread ends with the goroutine, so no other
	// goroutine ever runs on a thread that issued vCPU ioctls.
	runtime.LockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	err := v.configure(n, smt)
	ready <- err
	<-start
	if err != nil || v.stopping.Load() {
		v.close()
		return
	}
	code := v.loop()
	v.close()
	if code >= 0 {
		v.m.exitWith(code)
	}
}

func (v *vcpu) close() {
	v.fdMu.Lock()
	defer v.fdMu.Unlock()
	if v.fd != nil && !v.closed {
		v.closed = true
		v.fd.Close()
	}
}

// configure sets the boot state, in Firecracker's order: CPUID first
// (KVM derives the set of MSRs from it), then MSRs, registers, FPU,
// special registers and the LAPIC.
func (v *vcpu) configure(n int, smt bool) error {
	fd, err := v.m.vm.CreateVCPU(v.id)
	if err != nil {
		return err
	}
	v.fdMu.Lock()
	v.fd = fd
	v.fdMu.Unlock()
	if v.saved != nil {
		if err := restoreVCPU(fd, v.saved); err != nil {
			return fmt.Errorf("Cannot restore vCPU %d: %s", v.id, err)
		}
		return nil
	}
	if err := fd.SetCPUID2(x86.NormalizeCPUID(v.m.cpuid, v.id, n, smt)); err != nil {
		return err
	}
	msrs := x86.BootMSRs()
	if written, err := fd.SetMSRs(msrs); err != nil {
		return err
	} else if written != len(msrs) {
		return fmt.Errorf("KVM_SET_MSRS: only %d of %d boot MSRs were written (MSR %#x refused)", written, len(msrs), msrs[written].Index)
	}
	k := v.m.kernel
	pvh := k.PVHEntry != 0
	entry := k.Entry
	if pvh {
		entry = k.PVHEntry
	}
	regs := x86.BootRegs(entry, pvh)
	if err := fd.SetRegs(&regs); err != nil {
		return err
	}
	fpu := x86.BootFPU()
	if err := fd.SetFPU(&fpu); err != nil {
		return err
	}
	sregs, err := fd.GetSregs()
	if err != nil {
		return err
	}
	x86.ConfigureSregs(&sregs, pvh)
	if err := fd.SetSregs(&sregs); err != nil {
		return err
	}
	lapic, err := fd.GetLAPIC()
	if err != nil {
		return err
	}
	x86.ConfigureLAPIC(&lapic)
	return fd.SetLAPIC(&lapic)
}

// park holds the vCPU while the VM is paused. It reports false when the
// vCPU must stop instead. pendingIO says the last exit was port or MMIO
// I/O, which KVM completes only on the next KVM_RUN: before parking, an
// immediate-exit KVM_RUN completes it, so that the state a snapshot reads
// is consistent (KVM's documented rule for saving state).
func (v *vcpu) park(pendingIO bool) bool {
	m := v.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.paused {
		return !v.stopping.Load()
	}
	if pendingIO {
		rd := v.fd.RunData()
		rd.SetImmediateExit(true)
		if err := v.fd.Run(); err != nil && !errors.Is(err, unix.EINTR) {
			v.log.Warnf("Completing pending I/O before the pause failed: %v", err)
		}
		rd.SetImmediateExit(false)
	}
	// Tell the guest's kvmclock it was paused, so its watchdogs do not
	// fire on resume (Firecracker does the same; failure is not fatal).
	if err := v.fd.KVMClockCtrl(); err != nil && !errors.Is(err, unix.EINVAL) {
		metrics.Default.Vcpu.KvmclockCtrlFails.Inc()
	}
	m.parked++
	m.cond.Broadcast()
	for m.paused && !v.stopping.Load() {
		m.cond.Wait()
	}
	m.parked--
	return !v.stopping.Load()
}

// loop runs the guest until it stops; it returns the exit code the VM's
// end calls for, or -1 when it was asked to stop from outside.
func (v *vcpu) loop() int {
	rd := v.fd.RunData()
	vm := &metrics.Default.Vcpu
	pendingIO := false
	for {
		if v.stopping.Load() {
			return -1
		}
		if !v.park(pendingIO) {
			return -1
		}
		err := v.fd.Run()
		pendingIO = false
		if err != nil {
			switch {
			case errors.Is(err, unix.EINTR):
				// A kick, or a signal Go's runtime sent (preemption).
				rd.SetImmediateExit(false)
				continue
			case errors.Is(err, unix.EAGAIN):
				continue
			case errors.Is(err, unix.ENOSYS):
				vm.Failures.Inc()
				v.log.Errorf("Received ENOSYS error because KVM failed to emulate an instruction.")
				return 1
			}
			vm.Failures.Inc()
			v.log.Errorf("Failure during vcpu run: %s", err)
			return 1
		}
		switch reason := rd.ExitReason(); reason {
		case kvm.ExitIO:
			pendingIO = true
			dir, size, port, count, data := rd.IO()
			for i := uint32(0); i < count && int(size)*int(i+1) <= len(data); i++ {
				chunk := data[int(size)*int(i) : int(size)*int(i+1)]
				if dir == kvm.ExitIOIn {
					clear(chunk)
					v.m.pio.Read(uint64(port), chunk)
					vm.ExitIOIn.Inc()
				} else {
					v.m.pio.Write(uint64(port), chunk)
					vm.ExitIOOut.Inc()
				}
			}
		case kvm.ExitMMIO:
			pendingIO = true
			addr, data, isWrite := rd.MMIO()
			if isWrite {
				v.m.mmio.Write(addr, data)
				vm.ExitMMIOWrite.Inc()
			} else {
				clear(data)
				v.m.mmio.Read(addr, data)
				vm.ExitMMIORead.Inc()
			}
		case kvm.ExitIntr:
			rd.SetImmediateExit(false)
		case kvm.ExitSystemEvent:
			typ, flags := rd.SystemEvent()
			if typ == kvm.SystemEventShutdown || typ == kvm.SystemEventReset {
				v.log.Infof("Received KVM_SYSTEM_EVENT: type: %d, event: [%d]", typ, flags)
				return 0
			}
			vm.Failures.Inc()
			v.log.Errorf("Received KVM_SYSTEM_EVENT signal type: %d, flag: %d", typ, flags)
			return 1
		case kvm.ExitFailEntry:
			reason, cpu := rd.FailEntry()
			vm.Failures.Inc()
			v.log.Errorf("Received KVM_EXIT_FAIL_ENTRY signal: hardware entry failure reason %#x on cpu %d", reason, cpu)
			return 1
		case kvm.ExitInternalError:
			sub, data := rd.InternalError()
			vm.Failures.Inc()
			v.log.Errorf("Received KVM_EXIT_INTERNAL_ERROR signal: suberror %d, data %x", sub, data)
			return 1
		default:
			// HLT (impossible with the in-kernel irqchip), SHUTDOWN (a
			// triple fault) and anything unexpected end the VM with an
			// error, as in Firecracker.
			vm.Failures.Inc()
			v.log.Errorf("Unexpected exit reason on vcpu run: %s", kvm.ExitReasonName(reason))
			return 1
		}
	}
}
