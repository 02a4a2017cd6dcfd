package machine

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/arch/x86"
	"github.com/squib-vmm/squib/internal/kvm"
	"github.com/squib-vmm/squib/internal/memory"
)

// Probe checks that the KVM at device can run a 64-bit guest: it enters
// long mode with paging exactly as a Linux boot does, and the guest writes
// to a port. Some nested hosts expose a /dev/kvm that runs real-mode code
// but hangs as soon as paging is on; the test harness uses Probe to decide
// between running guests directly and inside the nested sandbox.
func Probe(device string, timeout time.Duration) error {
	b := &Builder{Device: device}
	sys, err := b.openKVM()
	if err != nil {
		return err
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return err
	}
	defer vm.Close()
	if err := vm.SetTSSAddr(x86.KVMTSSAddr); err != nil {
		return err
	}
	if err := vm.CreateIRQChip(); err != nil {
		return err
	}
	mem, err := memory.New([]memory.Layout{{Start: 0, Size: 4 << 20}}, memory.Options{})
	if err != nil {
		return err
	}
	defer mem.Close()
	r := mem.Regions()[0]
	if err := vm.SetUserMemoryRegion(0, 0, r.Start, uint64(len(r.Mem)), r.HostAddress()); err != nil {
		return err
	}
	if err := x86.WriteBootGDT(mem, false); err != nil {
		return err
	}
	if err := x86.WriteIdentityPageTables(mem); err != nil {
		return err
	}
	// mov dx,0x3f8; mov al,'K'; out dx,al; jmp $-... (spin writing 'K').
	code := []byte{0x66, 0xba, 0xf8, 0x03, 0xb0, 'K', 0xee, 0xeb, 0xfd}
	const entry = 0x100000
	if err := mem.WriteAt(code, entry); err != nil {
		return err
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		return err
	}

	result := make(chan error, 1)
	tid := make(chan int, 1)
	var vcpuFD *kvm.VCPU
	go func() {
		runtime.LockOSThread()
		tid <- unix.Gettid()
		result <- func() error {
			v, err := vm.CreateVCPU(0)
			if err != nil {
				return err
			}
			vcpuFD = v
			defer v.Close()
			if err := v.SetCPUID2(x86.NormalizeCPUID(cpuid, 0, 1, false)); err != nil {
				return err
			}
			regs := x86.BootRegs(entry, false)
			if err := v.SetRegs(&regs); err != nil {
				return err
			}
			s, err := v.GetSregs()
			if err != nil {
				return err
			}
			x86.ConfigureSregs(&s, false)
			if err := v.SetSregs(&s); err != nil {
				return err
			}
			if err := v.Run(); err != nil {
				if errors.Is(err, unix.EINTR) {
					return fmt.Errorf("a 64-bit guest made no progress in %v: this KVM cannot run Linux guests", timeout)
				}
				return err
			}
			if reason := v.RunData().ExitReason(); reason != kvm.ExitIO {
				return fmt.Errorf("a 64-bit guest exited with %s instead of port I/O", kvm.ExitReasonName(reason))
			}
			return nil
		}()
	}()
	t := <-tid
	select {
	case err := <-result:
		return err
	case <-time.After(timeout):
		// Kick the vCPU out of KVM_RUN; its Run then reports EINTR.
		for range 50 {
			unix.Tgkill(unix.Getpid(), t, kickSignal)
			select {
			case err := <-result:
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
		_ = vcpuFD
		return fmt.Errorf("a 64-bit guest made no progress in %v and could not be stopped", timeout)
	}
}
