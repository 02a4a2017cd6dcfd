package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// transcript mimics strace -f -X raw -s 0: a shell that forks, a child that
// runs squib, squib's threads (one of them cloned before its parent's clone
// returns), a vCPU thread entering KVM_RUN, and a process squib does not
// own.
const transcript = `100 execve("/usr/bin/squib-tests.test", [...], 0x7ffe /* 5 vars */) = 0
100 clone(child_stack=NULL, flags=0x1200011, child_tidptr=0x7f) = 101
100 wait4(-1,  <unfinished ...>
101 execve("/bin/sh", [...], 0x7ff /* 5 vars */) = 0
101 execve("/usr/bin/squib", [...], 0x7ff /* 5 vars */ <unfinished ...>
100 <... wait4 resumed>0x7ffc, 0, NULL) = 101
101 <... execve resumed>) = 0
101 openat(-100, "", 0x80000) = 3
101 clone(child_stack=0x3000, flags=0xd0f00 <unfinished ...>
102 gettid( <unfinished ...>
101 <... clone resumed>, tls=0x3010) = 102
102 <... gettid resumed>) = 102
102 ioctl(4, 0xae01, 0) = 5
102 ioctl(7, 0xae80, 0) = 0
101 ioctl(1, 0x5401, 0x7ffd) = -1 ENOTTY (Inappropriate ioctl for device)
102 --- SIGURG {si_signo=SIGURG, si_code=SI_TKILL, si_pid=101, si_uid=0} ---
102 rt_sigreturn({mask=[]}) = 0
102 +++ exited with 0 +++
101 exit_group(0) = ?
101 +++ exited with 0 +++
100 futex(0x5d0458, 0x81, 1) = 0
`

func TestAggregate(t *testing.T) {
	a := newAgg("/usr/bin/squib")
	for _, l := range strings.Split(transcript, "\n") {
		a.line(l)
	}
	var b strings.Builder
	if err := a.write(&b); err != nil {
		t.Fatal(err)
	}
	want := `# /usr/bin/squib: 1 processes, 21 trace lines
ioctl 0x5401 1 1
ioctl 0xae01 1 0
ioctl 0xae80 1 1
syscall clone 1 0
syscall exit_group 1 1
syscall gettid 1 0
syscall ioctl 3 2
syscall openat 1 0
syscall rt_sigreturn 1 1
# end
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestAggregateRealStrace runs a Go program and a child under the host's
// strace, when there is one, and checks that the child's calls are kept
// apart.
func TestAggregateRealStrace(t *testing.T) {
	st, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("no strace here")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "trace")
	// sh runs `true` (its own image) then execs `ls` (the image we count)
	cmd := exec.Command(st, "-f", "-q", "-X", "raw", "-s", "0", "-o", out, "sh", "-c", "true; exec ls /")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("strace does not work here: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	a := newAgg(ls)
	for _, l := range strings.Split(string(data), "\n") {
		a.line(l)
	}
	res := a.result()
	if a.execs != 1 || res["syscall getdents64"] == nil || res["syscall exit_group"] == nil {
		t.Fatalf("ls not found in the trace: %d execs, %v\n%s", a.execs, res, data)
	}
	if res["syscall wait4"] != nil {
		t.Errorf("the shell's wait4 was counted for ls")
	}
}
