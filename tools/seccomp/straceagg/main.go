// Command straceagg reads the output of `strace -f -X raw` and counts the
// syscalls, and the ioctl request numbers, that one program made: every
// thread and child of every process that executed -exe, from its execve
// on. tools/seccomp/trace.sh runs it inside the sandbox on a trace of the
// end-to-end suite; its output becomes tools/seccomp/traced.txt.
//
// Lines of the result:
//
//	syscall <name> <calls> <calls after the first KVM_RUN>
//	ioctl 0x<request> <calls> <calls after the first KVM_RUN>
//	# end
//
// "After the first KVM_RUN" counts the calls a process made once one of its
// threads had entered KVM_RUN: the calls of a running machine, as opposed
// to those of building it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const kvmRun = 0xae80 // KVM_RUN, _IO(0xAE, 0x80)

// cloneThread is CLONE_THREAD: the child is a thread of the same process.
const cloneThread = 0x10000

// seg is a stretch of one task's life under one program image: from its
// start or an execve to the next execve or its end.
type seg struct {
	image  string // set when an execve began it
	parent *seg   // for a task's first seg: the cloning task's seg
	counts map[string]*[2]uint64
}

func (s *seg) resolve() string {
	for ; s != nil; s = s.parent {
		if s.image != "" {
			return s.image
		}
	}
	return ""
}

// proc is a thread group's state, for the KVM_RUN phase.
type proc struct{ ran bool }

type task struct {
	first, cur *seg
	proc       *proc
	pendExec   string // path of an execve in progress
	pendClone  uint64 // flags of a clone in progress
}

type agg struct {
	exe   string
	tasks map[int]*task
	segs  []*seg
	execs int // execve calls of exe that succeeded
	lines int
}

func newAgg(exe string) *agg { return &agg{exe: exe, tasks: map[int]*task{}} }

func (a *agg) newSeg(image string, parent *seg) *seg {
	s := &seg{image: image, parent: parent, counts: map[string]*[2]uint64{}}
	a.segs = append(a.segs, s)
	return s
}

func (a *agg) task(pid int) *task {
	t, ok := a.tasks[pid]
	if !ok {
		s := a.newSeg("", nil)
		t = &task{first: s, cur: s}
		a.tasks[pid] = t
	}
	return t
}

var (
	lineRE    = regexp.MustCompile(`^(\d+)\s+(.*)$`)
	callRE    = regexp.MustCompile(`^([a-z_][a-z0-9_]*)\((.*)$`)
	resumedRE = regexp.MustCompile(`^<\.\.\. ([a-z_][a-z0-9_]*) resumed>(.*)$`)
	retRE     = regexp.MustCompile(`\)\s+= (-?\d+|0x[0-9a-f]+|\?)`)
	flagsRE   = regexp.MustCompile(`flags=(0x[0-9a-f]+|0)\b`)
	execRE    = regexp.MustCompile(`^"([^"]*)"`)
	ioctlRE   = regexp.MustCompile(`^[^,]*,\s*(0x[0-9a-f]+|\d+)`)
)

// line handles one line of strace output.
func (a *agg) line(l string) {
	m := lineRE.FindStringSubmatch(l)
	if m == nil {
		return
	}
	a.lines++
	pid, _ := strconv.Atoi(m[1])
	rest := m[2]
	switch {
	case strings.HasPrefix(rest, "+++ "): // exited or killed
		delete(a.tasks, pid)
		return
	case strings.HasPrefix(rest, "--- "): // a signal
		return
	}
	t := a.task(pid)
	if rm := resumedRE.FindStringSubmatch(rest); rm != nil {
		a.finish(pid, t, rm[1], rm[2])
		return
	}
	cm := callRE.FindStringSubmatch(rest)
	if cm == nil {
		return
	}
	name, args := cm[1], cm[2]
	key := "syscall " + name
	var req uint64
	if name == "ioctl" {
		if im := ioctlRE.FindStringSubmatch(args); im != nil {
			req, _ = strconv.ParseUint(im[1], 0, 64)
			key = fmt.Sprintf("ioctl %#x", req)
		}
		if req == kvmRun && t.proc != nil {
			t.proc.ran = true
		}
		if key != "syscall ioctl" {
			a.count(t, "syscall ioctl") // the syscall itself counts too
		}
	}
	a.count(t, key)
	switch name {
	case "execve", "execveat":
		t.pendExec = ""
		if em := execRE.FindStringSubmatch(args); em != nil {
			t.pendExec = em[1]
		}
	case "clone", "clone3", "fork", "vfork":
		t.pendClone = 0
		if fm := flagsRE.FindStringSubmatch(args); fm != nil {
			t.pendClone, _ = strconv.ParseUint(fm[1], 0, 64)
		}
	}
	if !strings.HasSuffix(rest, "<unfinished ...>") {
		a.finish(pid, t, name, args)
	}
}

func (a *agg) count(t *task, key string) {
	c := t.cur.counts[key]
	if c == nil {
		c = new([2]uint64)
		t.cur.counts[key] = c
	}
	c[0]++
	if t.proc != nil && t.proc.ran {
		c[1]++
	}
}

// finish handles the end of a call, where its result is known.
func (a *agg) finish(pid int, t *task, name, tail string) {
	rm := retRE.FindStringSubmatch(tail)
	if rm == nil {
		return
	}
	ret := rm[1]
	switch name {
	case "execve", "execveat":
		if ret == "0" {
			t.cur = a.newSeg(t.pendExec, nil)
			t.proc = &proc{}
			if t.pendExec == a.exe {
				a.execs++
			}
		}
	case "clone", "clone3", "fork", "vfork":
		child, err := strconv.Atoi(ret)
		if err != nil || child <= 0 {
			return
		}
		c := a.task(child)
		c.first.parent = t.cur
		if t.pendClone&cloneThread != 0 {
			c.proc = t.proc
		} else {
			c.proc = &proc{}
		}
	}
}

// result sums the counts of every seg that ran exe.
func (a *agg) result() map[string]*[2]uint64 {
	out := map[string]*[2]uint64{}
	for _, s := range a.segs {
		if s.resolve() != a.exe {
			continue
		}
		for k, c := range s.counts {
			o := out[k]
			if o == nil {
				o = new([2]uint64)
				out[k] = o
			}
			o[0] += c[0]
			o[1] += c[1]
		}
	}
	return out
}

func (a *agg) write(w io.Writer) error {
	res := a.result()
	keys := make([]string, 0, len(res))
	for k := range res {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# %s: %d processes, %d trace lines\n", a.exe, a.execs, a.lines)
	for _, k := range keys {
		fmt.Fprintf(bw, "%s %d %d\n", k, res[k][0], res[k][1])
	}
	fmt.Fprintln(bw, "# end") // trace.sh waits for this line
	return bw.Flush()
}

func main() {
	exe := flag.String("exe", "/usr/bin/squib", "the program whose calls are counted")
	out := flag.String("o", "-", "output file")
	flag.Parse()
	a := newAgg(*exe)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		a.line(sc.Text())
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "straceagg:", err)
		os.Exit(1)
	}
	w := os.Stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "straceagg:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	if err := a.write(w); err != nil {
		fmt.Fprintln(os.Stderr, "straceagg:", err)
		os.Exit(1)
	}
}
