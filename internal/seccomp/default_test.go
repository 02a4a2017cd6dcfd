package seccomp

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestDefaultFilter: the embedded filter parses and compiles, allows what
// squib does and traps the rest.
func TestDefaultFilter(t *testing.T) {
	f := Default()
	prog := mustCompile(t, f)
	if f.cats[0].defaultAction.Kind != actTrap || f.cats[0].filterAction.Kind != actAllow {
		t.Fatalf("actions: %v / %v", f.cats[0].defaultAction, f.cats[0].filterAction)
	}
	const kvmRun, kvmCreateVM, kvmClockCtrl = 0xae80, 0xae01, 0xaead
	for _, tc := range []struct {
		name string
		in   input
		want uint32
	}{
		{"KVM_RUN", call(unix.SYS_IOCTL, 12, kvmRun), unix.SECCOMP_RET_ALLOW},
		{"KVM_KVMCLOCK_CTRL", call(unix.SYS_IOCTL, 12, kvmClockCtrl), unix.SECCOMP_RET_ALLOW},
		{"KVM_CREATE_VM", call(unix.SYS_IOCTL, 3, kvmCreateVM), unix.SECCOMP_RET_ALLOW},
		{"TIOCSTI", call(unix.SYS_IOCTL, 0, unix.TIOCSTI), unix.SECCOMP_RET_TRAP},
		{"futex", call(unix.SYS_FUTEX), unix.SECCOMP_RET_ALLOW},
		{"read", call(unix.SYS_READ), unix.SECCOMP_RET_ALLOW},
		{"mmap rw", call(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS), unix.SECCOMP_RET_ALLOW},
		{"mmap exec", call(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS), unix.SECCOMP_RET_TRAP},
		{"execve", call(unix.SYS_EXECVE), unix.SECCOMP_RET_TRAP},
		{"ptrace", call(unix.SYS_PTRACE), unix.SECCOMP_RET_TRAP},
		{"getppid", call(unix.SYS_GETPPID), unix.SECCOMP_RET_TRAP},
		{"i386", input{nr: unix.SYS_READ, arch: unix.AUDIT_ARCH_I386}, unix.SECCOMP_RET_KILL_PROCESS},
	} {
		if got := run(t, prog, tc.in); got != tc.want {
			t.Errorf("%s: got %#x, want %#x", tc.name, got, tc.want)
		}
	}
	for _, c := range f.cats[0].rules {
		if c.Nr == unix.SYS_IOCTL && len(c.Conds) == 0 {
			t.Error("an ioctl rule without a request number")
		}
	}
	if len(f.cats[1].rules)+len(f.cats[2].rules) != 0 {
		t.Error("the default keeps its list in vmm")
	}
	t.Logf("default filter: %d rules, %d instructions", len(f.cats[0].rules), len(prog))
}
