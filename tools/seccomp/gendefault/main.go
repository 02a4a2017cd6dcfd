// Command gendefault writes squib's default seccomp filter,
// internal/seccomp/default.json, from tools/seccomp/traced.txt (what
// squib was seen to call, see trace.sh) and the short lists below of calls
// a traced run may miss. Run it from the repository root; -check compares
// instead of writing.
//
// The filter is in Firecracker's format with its default filters' actions
// (trap what is not allowed, allow what is). Every ioctl is allowed for
// its request numbers only, as in Firecracker's filters; mmap and mprotect
// only without PROT_EXEC, since neither Go nor squib ever maps code at run
// time. squib merges the three categories into one process-wide filter
// (internal/seccomp/doc.go), so the whole list goes in "vmm" and "api" and
// "vcpu" stay empty.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/squib-vmm/squib/internal/seccomp"
)

// runtimeSyscalls are syscalls the Go runtime, or squib through it, makes
// in rare situations a traced run need not hit. Each says why.
var runtimeSyscalls = map[string]string{
	"restart_syscall":   "the kernel restarts an interrupted nanosleep or futex wait with it after SIGSTOP/SIGCONT (a debugger, a job-control stop)",
	"rt_sigaction":      "the Go runtime resets a handler to SIG_DFL before dying of a fatal signal, and os/signal installs handlers for Notify calls made after the filter",
	"rt_sigprocmask":    "the Go runtime blocks signals around thread creation and in its crash path",
	"sigaltstack":       "the Go runtime gives every new thread a signal stack and removes it when a thread exits",
	"rt_sigreturn":      "the end of every signal handler: preemption (SIGURG), vCPU kicks, os/signal",
	"clone":             "the Go runtime starts OS threads whenever a goroutine blocks in a syscall and no idle thread is left",
	"exit":              "the Go runtime ends the thread of a goroutine that exits while locked to it (vCPU goroutines)",
	"exit_group":        "process exit",
	"futex":             "the Go runtime's locks, notes and thread parking",
	"nanosleep":         "the Go runtime's usleep (sysmon, spinning threads)",
	"sched_yield":       "the Go runtime's osyield in contended locks",
	"gettid":            "the Go runtime records each thread's id when it starts",
	"getpid":            "the Go runtime signals its own threads with tgkill(getpid(), tid, sig)",
	"tgkill":            "goroutine preemption (SIGURG) and vCPU kicks",
	"madvise":           "the Go runtime returns freed memory to the kernel (scavenger, debug.FreeOSMemory); the balloon device discards guest pages",
	"mmap":              "the Go runtime grows the heap and goroutine stacks",
	"munmap":            "the Go runtime frees large allocations and stacks",
	"epoll_pwait":       "the Go netpoller waits on every pollable fd",
	"epoll_ctl":         "the Go netpoller registers every fd it opens (sockets, a drive opened by PATCH)",
	"clock_gettime":     "the Go runtime's clock: the vDSO answers without a syscall except where the clock source is not vDSO-capable, as in the nested sandbox",
	"sched_getaffinity": "the Go runtime re-reads the CPU set to adjust GOMAXPROCS (Go 1.25 and later)",
	"write":             "crash output, logs and metrics",
	"read":              "the Go runtime reads cgroup CPU limits; the API socket and devices read too",
	// The Uffd snapshot load: strace cannot follow it (a traced page-fault
	// handler and a traced VMM deadlock), so it is listed here.
	"userfaultfd": "a Uffd snapshot load creates its userfaultfd with the system call where /dev/userfaultfd is absent (kernels before 6.1)",
	"mincore":     "a Diff snapshot of a VM without track_dirty_pages takes the resident pages as its dirty set",
	"sendmsg":     "a Uffd snapshot load sends the userfaultfd and the region list to the page-fault handler (SCM_RIGHTS)",
}

// untracedIoctls are ioctl requests squib makes on paths the e2e suite does
// not exercise yet. Each says which.
var untracedIoctls = map[uint64]string{
	0xaead:     "KVM_KVMCLOCK_CTRL: each vCPU tells kvmclock it was paused (PATCH /vm Paused)",
	0xaa00:     "USERFAULTFD_IOC_NEW: a Uffd snapshot load opens /dev/userfaultfd (strace cannot follow a Uffd load)",
	0xc018aa3f: "UFFDIO_API: a Uffd snapshot load negotiates the userfaultfd's features",
	0xc020aa00: "UFFDIO_REGISTER: a Uffd snapshot load registers guest memory",
	0xaea2:     "KVM_SET_TSC_KHZ: a snapshot load on a host whose TSC runs more than 250 ppm off the saved frequency",
}

// ioctlNames names the request numbers squib uses, for the comments.
var ioctlNames = map[uint64]string{
	0xae00: "KVM_GET_API_VERSION", 0xae01: "KVM_CREATE_VM", 0xae03: "KVM_CHECK_EXTENSION", 0xae04: "KVM_GET_VCPU_MMAP_SIZE",
	0xc008ae05: "KVM_GET_SUPPORTED_CPUID", 0xae41: "KVM_CREATE_VCPU", 0x4020ae46: "KVM_SET_USER_MEMORY_REGION",
	0xae47: "KVM_SET_TSS_ADDR", 0xae60: "KVM_CREATE_IRQCHIP", 0x4020ae76: "KVM_IRQFD", 0x4040ae77: "KVM_CREATE_PIT2",
	0x4040ae79: "KVM_IOEVENTFD", 0xae80: "KVM_RUN", 0x4090ae82: "KVM_SET_REGS", 0x8138ae83: "KVM_GET_SREGS",
	0x4138ae84: "KVM_SET_SREGS", 0x4008ae89: "KVM_SET_MSRS", 0x41a0ae8d: "KVM_SET_FPU", 0x8400ae8e: "KVM_GET_LAPIC",
	0x4400ae8f: "KVM_SET_LAPIC", 0x4008ae90: "KVM_SET_CPUID2", 0xaead: "KVM_KVMCLOCK_CTRL",
	0xc004ae02: "KVM_GET_MSR_INDEX_LIST", 0x4010ae42: "KVM_GET_DIRTY_LOG", 0xc208ae62: "KVM_GET_IRQCHIP", 0x8208ae63: "KVM_SET_IRQCHIP",
	0x4030ae7b: "KVM_SET_CLOCK", 0x8030ae7c: "KVM_GET_CLOCK", 0x8090ae81: "KVM_GET_REGS", 0xc008ae88: "KVM_GET_MSRS",
	0xc008ae91: "KVM_GET_CPUID2", 0x8004ae98: "KVM_GET_MP_STATE", 0x4004ae99: "KVM_SET_MP_STATE",
	0x8070ae9f: "KVM_GET_PIT2", 0x4070aea0: "KVM_SET_PIT2", 0x8040ae9f: "KVM_GET_VCPU_EVENTS", 0x4040aea0: "KVM_SET_VCPU_EVENTS",
	0x8080aea1: "KVM_GET_DEBUGREGS", 0x4080aea2: "KVM_SET_DEBUGREGS", 0xaea2: "KVM_SET_TSC_KHZ", 0xaea3: "KVM_GET_TSC_KHZ",
	0x9000aea4: "KVM_GET_XSAVE", 0x5000aea5: "KVM_SET_XSAVE", 0x8188aea6: "KVM_GET_XCRS", 0x4188aea7: "KVM_SET_XCRS",
	0x9000aecf: "KVM_GET_XSAVE2", 0xaa00: "USERFAULTFD_IOC_NEW", 0xc018aa3f: "UFFDIO_API", 0xc020aa00: "UFFDIO_REGISTER",
	0x400454ca: "TUNSETIFF", 0x400454d0: "TUNSETOFFLOAD", 0x400454d8: "TUNSETVNETHDRSZ",
	0x5401: "TCGETS", 0x5402: "TCSETS", 0x5413: "TIOCGWINSZ", 0x5421: "FIONBIO",
}

// ioctlName names req, or spells out its _IOC fields.
func ioctlName(req uint64) string {
	if n, ok := ioctlNames[req]; ok {
		return n
	}
	dir := [...]string{"_IO", "_IOW", "_IOR", "_IOWR"}[req>>30&3]
	return fmt.Sprintf("%s(%#x, %#x, %d)", dir, req>>8&0xff, req&0xff, req>>16&0x3fff)
}

// traced is what traced.txt says: per syscall or ioctl request, the calls
// and the calls after the first KVM_RUN, summed over its sections.
type traced struct {
	syscalls map[string][2]uint64
	ioctls   map[uint64][2]uint64
}

func readTraced(path string) (*traced, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &traced{syscalls: map[string][2]uint64{}, ioctls: map[uint64][2]uint64{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 4 {
			return nil, fmt.Errorf("%s:%d: want 4 fields: %q", path, n, line)
		}
		var c [2]uint64
		for i := range c {
			if c[i], err = strconv.ParseUint(fs[2+i], 10, 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, n, err)
			}
		}
		add := func(old [2]uint64) [2]uint64 { return [2]uint64{old[0] + c[0], old[1] + c[1]} }
		switch fs[0] {
		case "syscall":
			t.syscalls[fs[1]] = add(t.syscalls[fs[1]])
		case "ioctl":
			req, err := strconv.ParseUint(fs[1], 0, 32)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, n, err)
			}
			t.ioctls[req] = add(t.ioctls[req])
		default:
			return nil, fmt.Errorf("%s:%d: unknown kind %q", path, n, fs[0])
		}
	}
	return t, sc.Err()
}

// JSON shapes, with the members in the order Firecracker's files use.
type arg struct {
	Index   int    `json:"index"`
	Type    string `json:"type"`
	Op      any    `json:"op"`
	Val     uint64 `json:"val"`
	Comment string `json:"comment,omitempty"`
}

type rule struct {
	Syscall string `json:"syscall"`
	Args    []arg  `json:"args,omitempty"`
	Comment string `json:"comment,omitempty"`
}

type category struct {
	DefaultAction string `json:"default_action"`
	FilterAction  string `json:"filter_action"`
	Filter        []rule `json:"filter"`
}

type file struct {
	VMM  category `json:"vmm"`
	API  category `json:"api"`
	VCPU category `json:"vcpu"`
}

// noExec restricts a protection argument (index i) to mappings without
// PROT_EXEC.
func noExec(i int) []arg {
	return []arg{{Index: i, Type: "dword", Op: map[string]uint64{"masked_eq": 4}, Val: 0, Comment: "PROT_EXEC not set"}}
}

// tracedComment describes a traced call by when it was seen.
func tracedComment(c [2]uint64) string {
	if c[1] == 0 {
		return "traced, only while the VM was being built"
	}
	return "traced"
}

// generate builds default.json's text.
func generate(t *traced) ([]byte, error) {
	names := map[string]string{} // syscall -> comment
	for name, c := range t.syscalls {
		if name == "ioctl" {
			continue // allowed per request below
		}
		names[name] = tracedComment(c)
	}
	for name, why := range runtimeSyscalls {
		if _, ok := names[name]; ok {
			names[name] = why + " (traced)"
		} else {
			names[name] = why + " (not traced)"
		}
	}
	var rules []rule
	for _, name := range slices.Sorted(maps.Keys(names)) {
		r := rule{Syscall: name, Comment: names[name]}
		switch name {
		case "mmap", "mprotect":
			r.Args = noExec(2)
		}
		rules = append(rules, r)
	}
	reqs := map[uint64]string{}
	for req, c := range t.ioctls {
		reqs[req] = tracedComment(c)
	}
	for req, why := range untracedIoctls {
		if _, ok := reqs[req]; !ok {
			reqs[req] = why + " (not traced)"
		}
	}
	for _, req := range slices.Sorted(maps.Keys(reqs)) {
		rules = append(rules, rule{
			Syscall: "ioctl",
			Args:    []arg{{Index: 1, Type: "dword", Op: "eq", Val: req, Comment: ioctlName(req)}},
			Comment: reqs[req],
		})
	}
	empty := category{DefaultAction: "trap", FilterAction: "allow", Filter: []rule{}}
	f := file{VMM: category{DefaultAction: "trap", FilterAction: "allow", Filter: rules}, API: empty, VCPU: empty}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	// what squib will load must parse and compile
	parsed, err := seccomp.Parse(b.Bytes())
	if err != nil {
		return nil, err
	}
	if _, err := parsed.Compile(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func main() {
	in := flag.String("traced", "tools/seccomp/traced.txt", "the trace counts")
	out := flag.String("o", "internal/seccomp/default.json", "the filter file to write")
	check := flag.Bool("check", false, "only check that the file is up to date")
	flag.Parse()
	t, err := readTraced(*in)
	if err == nil && len(t.syscalls) == 0 {
		err = fmt.Errorf("%s holds no syscalls", *in)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendefault:", err)
		os.Exit(1)
	}
	b, err := generate(t)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendefault:", err)
		os.Exit(1)
	}
	if *check {
		old, err := os.ReadFile(*out)
		if err != nil || !bytes.Equal(old, b) {
			fmt.Fprintf(os.Stderr, "gendefault: %s is not what %s gives; run go run ./tools/seccomp/gendefault\n", *out, *in)
			os.Exit(1)
		}
		return
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gendefault:", err)
		os.Exit(1)
	}
}
