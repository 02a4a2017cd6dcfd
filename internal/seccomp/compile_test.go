package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// input is a struct seccomp_data.
type input struct {
	nr   uint32
	arch uint32
	ip   uint64
	args [6]uint64
}

func (in input) bytes() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], in.nr)
	binary.LittleEndian.PutUint32(b[4:], in.arch)
	binary.LittleEndian.PutUint64(b[8:], in.ip)
	for i, a := range in.args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

func call(nr uint32, args ...uint64) input {
	in := input{nr: nr, arch: auditArch}
	copy(in.args[:], args)
	return in
}

// checkProgram applies the kernel's static checks on classic BPF that
// matter here (bpf_check_classic): length, known opcodes, forward jumps
// inside the program, aligned loads inside seccomp_data, a return last.
func checkProgram(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("length %d", len(prog))
	}
	for i, ins := range prog {
		switch ins.Code {
		case opLdAbsW:
			if ins.K%4 != 0 || ins.K >= 64 {
				return fmt.Errorf("insn %d: load at %d", i, ins.K)
			}
		case opAndK, opRetK:
		case opJa:
			if uint64(i)+1+uint64(ins.K) >= uint64(len(prog)) {
				return fmt.Errorf("insn %d: ja +%d past the end", i, ins.K)
			}
		case opJeqK, opJgtK, opJgeK:
			if i+1+int(max(ins.Jt, ins.Jf)) >= len(prog) {
				return fmt.Errorf("insn %d: jump past the end", i)
			}
		default:
			return fmt.Errorf("insn %d: opcode %#x", i, ins.Code)
		}
	}
	if prog[len(prog)-1].Code != opRetK {
		return errors.New("does not end with a return")
	}
	return nil
}

// run interprets prog on in: the opcodes Compile emits, with the
// semantics of the kernel's classic BPF interpreter.
func run(t testing.TB, prog []unix.SockFilter, in input) uint32 {
	t.Helper()
	if err := checkProgram(prog); err != nil {
		t.Fatalf("invalid program: %v", err)
	}
	data := in.bytes()
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case opLdAbsW:
			a = binary.LittleEndian.Uint32(data[ins.K:])
		case opAndK:
			a &= ins.K
		case opRetK:
			return ins.K
		case opJa:
			pc += int(ins.K)
		case opJeqK, opJgtK, opJgeK:
			var ok bool
			switch ins.Code {
			case opJeqK:
				ok = a == ins.K
			case opJgtK:
				ok = a > ins.K
			default:
				ok = a >= ins.K
			}
			if ok {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		}
	}
	t.Fatal("ran off the end of the program")
	return 0
}

// holds is the reference meaning of one condition.
func holds(c cond, arg uint64) bool {
	v, m := c.Val, c.Mask
	if !c.Qword {
		arg &= 0xffffffff
	}
	switch c.Op {
	case opEq:
		return arg == v
	case opNe:
		return arg != v
	case opLt:
		return arg < v
	case opLe:
		return arg <= v
	case opGt:
		return arg > v
	case opGe:
		return arg >= v
	default:
		return arg&m == v
	}
}

// reference is what the process-wide filter must decide for in, computed
// straight from the file's rules, without the merge or the compiler.
func reference(f *Filter, in input) uint32 {
	if in.arch != auditArch || (in.nr&x32SyscallBit != 0 && in.nr != 0xffffffff) {
		return unix.SECCOMP_RET_KILL_PROCESS
	}
	for _, c := range f.cats {
		for _, r := range c.rules {
			if r.Nr != in.nr {
				continue
			}
			all := true
			for _, cd := range r.Conds {
				all = all && holds(cd, in.args[cd.Index])
			}
			if all {
				return f.cats[0].filterAction.ret()
			}
		}
	}
	return f.cats[0].defaultAction.ret()
}

func mustParse(t testing.TB, js string) *Filter {
	t.Helper()
	f, err := Parse([]byte(js))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, js)
	}
	return f
}

func mustCompile(t testing.TB, f *Filter) []unix.SockFilter {
	t.Helper()
	prog, err := f.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// file builds a filter file whose vmm category has the rules (JSON
// fragments) and whose other categories are empty.
func file(def, act string, rules ...string) string {
	empty := fmt.Sprintf(`{"default_action": %s, "filter_action": %s, "filter": []}`, def, act)
	return fmt.Sprintf(`{"vmm": {"default_action": %s, "filter_action": %s, "filter": [%s]}, "api": %s, "vcpu": %s}`,
		def, act, strings.Join(rules, ","), empty, empty)
}

func TestCompileAllowList(t *testing.T) {
	f := mustParse(t, file(`"trap"`, `"allow"`, `{"syscall": "read"}`, `{"syscall": "write"}`, `{"syscall": "exit_group"}`))
	prog := mustCompile(t, f)
	for _, tc := range []struct {
		name string
		in   input
		want uint32
	}{
		{"read", call(unix.SYS_READ), unix.SECCOMP_RET_ALLOW},
		{"write", call(unix.SYS_WRITE), unix.SECCOMP_RET_ALLOW},
		{"exit_group", call(unix.SYS_EXIT_GROUP), unix.SECCOMP_RET_ALLOW},
		{"open", call(unix.SYS_OPEN), unix.SECCOMP_RET_TRAP},
		{"number 0xffff", call(0xffff), unix.SECCOMP_RET_TRAP},
		{"i386 read", input{nr: unix.SYS_READ, arch: unix.AUDIT_ARCH_I386}, unix.SECCOMP_RET_KILL_PROCESS},
		{"x32 read", call(x32SyscallBit | unix.SYS_READ), unix.SECCOMP_RET_KILL_PROCESS},
		{"number 0x80000001", call(0x80000001), unix.SECCOMP_RET_KILL_PROCESS},
		{"number -1", call(0xffffffff), unix.SECCOMP_RET_TRAP},
	} {
		if got := run(t, prog, tc.in); got != tc.want {
			t.Errorf("%s: got %#x, want %#x", tc.name, got, tc.want)
		}
	}
	if prog[0] != (unix.SockFilter{Code: opLdAbsW, K: offArch}) {
		t.Errorf("the program does not start with the arch check: %+v", prog[0])
	}
}

func TestCompileActions(t *testing.T) {
	for _, tc := range []struct {
		def, act   string
		want, deny uint32
	}{
		{`"allow"`, `{"errno": 1}`, unix.SECCOMP_RET_ERRNO | 1, unix.SECCOMP_RET_ALLOW},
		{`"allow"`, `"kill_thread"`, unix.SECCOMP_RET_KILL_THREAD, unix.SECCOMP_RET_ALLOW},
		{`"allow"`, `"kill_process"`, unix.SECCOMP_RET_KILL_PROCESS, unix.SECCOMP_RET_ALLOW},
		{`"allow"`, `"log"`, unix.SECCOMP_RET_LOG, unix.SECCOMP_RET_ALLOW},
		{`"allow"`, `{"trace": 7}`, unix.SECCOMP_RET_TRACE | 7, unix.SECCOMP_RET_ALLOW},
		{`"allow"`, `"trap"`, unix.SECCOMP_RET_TRAP, unix.SECCOMP_RET_ALLOW},
		{`{"errno": 38}`, `"allow"`, unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_ERRNO | 38},
	} {
		prog := mustCompile(t, mustParse(t, file(tc.def, tc.act, `{"syscall": "getppid"}`)))
		if got := run(t, prog, call(unix.SYS_GETPPID)); got != tc.want {
			t.Errorf("%s/%s: getppid got %#x, want %#x", tc.def, tc.act, got, tc.want)
		}
		if got := run(t, prog, call(unix.SYS_GETPID)); got != tc.deny {
			t.Errorf("%s/%s: getpid got %#x, want %#x", tc.def, tc.act, got, tc.deny)
		}
	}
}

// TestCompileConditions checks each comparison on both halves of a
// qword and on a dword (which ignores the high half) at its boundaries.
func TestCompileConditions(t *testing.T) {
	const v = 0x0000_0005_8000_0000
	vals := []uint64{0, 1, v - 1, v, v + 1, 0x5_0000_0000, 0x5_ffff_ffff, 0x4_ffff_ffff, 0x6_0000_0000,
		0x8000_0000, 0x7fff_ffff, 0x8000_0001, 0xffff_ffff_ffff_ffff, 0xffff_ffff_8000_0000}
	ops := []struct {
		js   string
		mask uint64 // for masked_eq
	}{{`"eq"`, 0}, {`"ne"`, 0}, {`"lt"`, 0}, {`"le"`, 0}, {`"gt"`, 0}, {`"ge"`, 0},
		{`{"masked_eq": 51539607552}`, 0xc_0000_0000}, {`{"masked_eq": 4294967295}`, 0xffff_ffff}, {`{"masked_eq": 4}`, 4}}
	for _, typ := range []string{"qword", "dword"} {
		for _, op := range ops {
			val := uint64(v)
			if typ == "dword" {
				if op.mask > 0xffff_ffff {
					continue // such a mask does not fit a dword
				}
				val &= 0xffff_ffff
			}
			if op.mask != 0 {
				val &= op.mask
			}
			rule := fmt.Sprintf(`{"syscall": "mmap", "args": [{"index": 3, "type": %q, "op": %s, "val": %d}]}`, typ, op.js, val)
			f := mustParse(t, file(`"trap"`, `"allow"`, rule))
			prog := mustCompile(t, f)
			allowed := 0
			for _, x := range vals {
				in := call(unix.SYS_MMAP, 0, 0, 0, x)
				got, want := run(t, prog, in), reference(f, in)
				if got != want {
					t.Errorf("%s %s %#x with arg %#x: got %#x, want %#x", typ, op.js, val, x, got, want)
				}
				if got == unix.SECCOMP_RET_ALLOW {
					allowed++
				}
			}
			if allowed == 0 || allowed == len(vals) {
				t.Errorf("%s %s: the values do not exercise both outcomes (%d of %d allowed)", typ, op.js, allowed, len(vals))
			}
		}
	}
	// spot checks of the reference itself
	c := cond{Qword: true, Op: opGt, Val: v}
	if !holds(c, v+1) || holds(c, v) || !holds(c, 0x6_0000_0000) || holds(c, 0x4_ffff_ffff) {
		t.Error("reference qword gt is wrong")
	}
	if d := (cond{Op: opEq, Val: 7}); !holds(d, 0xdead_0000_0000_0007) {
		t.Error("a dword must ignore the high half")
	}
}

func TestCompileRulesOrAndConds(t *testing.T) {
	f := mustParse(t, file(`"trap"`, `"allow"`,
		`{"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 44672, "comment": "KVM_RUN"}]}`,
		`{"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 21537}, {"index": 0, "type": "dword", "op": "lt", "val": 3}]}`,
		`{"syscall": "futex"}`,
	))
	prog := mustCompile(t, f)
	for _, tc := range []struct {
		in   input
		want uint32
	}{
		{call(unix.SYS_IOCTL, 9, 0xae80), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_IOCTL, 9, 0xffff_ffff_0000_ae80), unix.SECCOMP_RET_ALLOW}, // dword: high half ignored
		{call(unix.SYS_IOCTL, 9, 0xae81), unix.SECCOMP_RET_TRAP},
		{call(unix.SYS_IOCTL, 2, 21537), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_IOCTL, 3, 21537), unix.SECCOMP_RET_TRAP}, // second condition fails
		{call(unix.SYS_FUTEX, 1, 2, 3), unix.SECCOMP_RET_ALLOW},
	} {
		if got := run(t, prog, tc.in); got != tc.want {
			t.Errorf("%+v: got %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// TestCompileMerge: the same rule in several categories is kept once, an
// unconditional rule covers the conditional ones, and rules from
// different categories are OR-ed.
func TestCompileMerge(t *testing.T) {
	cat := func(rules ...string) string {
		return fmt.Sprintf(`{"default_action": "trap", "filter_action": "allow", "filter": [%s]}`, strings.Join(rules, ","))
	}
	ioctl := func(req int) string {
		return fmt.Sprintf(`{"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": %d}]}`, req)
	}
	one := mustParse(t, fmt.Sprintf(`{"vmm": %s, "api": %s, "vcpu": %s}`, cat(ioctl(1), `{"syscall": "read"}`), cat(), cat()))
	three := mustParse(t, fmt.Sprintf(`{"vmm": %s, "api": %s, "vcpu": %s}`, cat(ioctl(1), `{"syscall": "read"}`), cat(`{"syscall": "read"}`, ioctl(1)), cat(ioctl(1))))
	p1, p3 := mustCompile(t, one), mustCompile(t, three)
	if fmt.Sprint(p1) != fmt.Sprint(p3) {
		t.Errorf("repeated rules changed the program:\n%v\n%v", p1, p3)
	}
	split := mustParse(t, fmt.Sprintf(`{"vmm": %s, "api": %s, "vcpu": %s}`, cat(ioctl(1)), cat(ioctl(2)), cat(ioctl(3))))
	p := mustCompile(t, split)
	for req, want := range map[uint64]uint32{1: unix.SECCOMP_RET_ALLOW, 2: unix.SECCOMP_RET_ALLOW, 3: unix.SECCOMP_RET_ALLOW, 4: unix.SECCOMP_RET_TRAP} {
		if got := run(t, p, call(unix.SYS_IOCTL, 0, req)); got != want {
			t.Errorf("ioctl %d: got %#x, want %#x", req, got, want)
		}
	}
	always := mustParse(t, fmt.Sprintf(`{"vmm": %s, "api": %s, "vcpu": %s}`, cat(ioctl(1)), cat(`{"syscall": "ioctl"}`), cat(ioctl(3))))
	if got := run(t, mustCompile(t, always), call(unix.SYS_IOCTL, 0, 99)); got != unix.SECCOMP_RET_ALLOW {
		t.Errorf("an unconditional rule in one category must allow every ioctl: got %#x", got)
	}
	m := always.merge()
	if !m.always[unix.SYS_IOCTL] || len(m.alts[unix.SYS_IOCTL]) != 0 {
		t.Errorf("merge kept conditions next to an unconditional rule: %+v", m)
	}
}

// randomFilter makes a filter file with n rules over a small set of
// syscalls, so that several rules share one.
func randomFilter(r *rand.Rand, n, minConds int) string {
	names := []string{"read", "write", "ioctl", "mmap", "futex", "openat", "close", "madvise", "clone", "epoll_pwait", "tgkill", "getpid"}
	ops := []string{`"eq"`, `"ne"`, `"lt"`, `"le"`, `"gt"`, `"ge"`, "masked"}
	var rules []string
	for range n {
		name := names[r.IntN(len(names))]
		var conds []string
		for range minConds + r.IntN(4) {
			qword := r.IntN(2) == 0
			val := interesting(r)
			if !qword {
				val &= 0xffffffff
			}
			op := ops[r.IntN(len(ops))]
			if op == "masked" {
				mask := interesting(r)
				if !qword {
					mask &= 0xffffffff
				}
				op = fmt.Sprintf(`{"masked_eq": %d}`, mask)
				if r.IntN(2) == 0 {
					val &= mask
				}
			}
			typ := "dword"
			if qword {
				typ = "qword"
			}
			conds = append(conds, fmt.Sprintf(`{"index": %d, "type": %q, "op": %s, "val": %d}`, r.IntN(6), typ, op, val))
		}
		if len(conds) == 0 {
			rules = append(rules, fmt.Sprintf(`{"syscall": %q}`, name))
		} else {
			rules = append(rules, fmt.Sprintf(`{"syscall": %q, "args": [%s]}`, name, strings.Join(conds, ",")))
		}
	}
	return file(`"trap"`, `"allow"`, rules...)
}

// interesting returns values near the 32-bit boundaries, where a compiler
// that mixes up halves goes wrong.
func interesting(r *rand.Rand) uint64 {
	base := []uint64{0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 32, 0x1_0000_0001, 0xffff_ffff_ffff_ffff, 0x8000_0000_0000_0000}
	v := base[r.IntN(len(base))]
	switch r.IntN(4) {
	case 0:
		v++
	case 1:
		v--
	case 2:
		v = r.Uint64()
	}
	return v
}

// TestCompileMatchesReference runs random filters, some long enough to
// need trampolines, against the reference on random calls.
func TestCompileMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sawLong := false
	for i := range 300 {
		n, minConds := 1+r.IntN(30), 0
		if i%10 == 0 {
			n, minConds = 80+r.IntN(150), 1
		}
		js := randomFilter(r, n, minConds)
		f := mustParse(t, js)
		prog, err := f.Compile()
		if errors.Is(err, errTooLong) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(prog) > 300 {
			sawLong = true
		}
		rules := f.cats[0].rules
		for range 200 {
			var in input
			if r.IntN(8) == 0 {
				in = call(uint32(r.IntN(500)))
			} else {
				in = call(rules[r.IntN(len(rules))].Nr)
			}
			for j := range in.args {
				in.args[j] = interesting(r)
			}
			// reuse the rules' own values so that conditions hold often
			rl := rules[r.IntN(len(rules))]
			for _, c := range rl.Conds {
				if r.IntN(3) > 0 {
					in.args[c.Index] = c.Val + uint64(r.IntN(3)) - 1
				}
			}
			if got, want := run(t, prog, in), reference(f, in); got != want {
				t.Fatalf("filter %d, %+v: got %#x, want %#x\n%s", i, in, got, want, js)
			}
		}
	}
	if !sawLong {
		t.Error("no program over 300 instructions was tested")
	}
}

// TestCompileLongJumps: chains far beyond 255 instructions from the
// dispatch are reached through unconditional jumps.
func TestCompileLongJumps(t *testing.T) {
	var rules []string
	for i := range 150 {
		rules = append(rules, fmt.Sprintf(`{"syscall": "ioctl", "args": [{"index": 1, "type": "qword", "op": "eq", "val": %d}]}`, 1000+i))
	}
	for _, name := range []string{"read", "write", "close", "mmap", "futex", "exit_group", "tgkill", "madvise", "clone"} {
		rules = append(rules, fmt.Sprintf(`{"syscall": %q, "args": [{"index": 0, "type": "dword", "op": "ne", "val": 77}]}`, name))
	}
	f := mustParse(t, file(`"trap"`, `"allow"`, rules...))
	prog := mustCompile(t, f)
	ja := 0
	for _, ins := range prog {
		if ins.Code == opJa && ins.K > 255 {
			ja++
		}
	}
	if len(prog) < 600 || ja == 0 {
		t.Fatalf("expected a long program with long jumps: %d instructions, %d long JAs", len(prog), ja)
	}
	for _, tc := range []struct {
		in   input
		want uint32
	}{
		{call(unix.SYS_IOCTL, 0, 1000), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_IOCTL, 0, 1149), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_IOCTL, 0, 1150), unix.SECCOMP_RET_TRAP},
		{call(unix.SYS_IOCTL, 0, 1<<32|1000), unix.SECCOMP_RET_TRAP},
		{call(unix.SYS_CLONE, 1), unix.SECCOMP_RET_ALLOW},
		{call(unix.SYS_CLONE, 77), unix.SECCOMP_RET_TRAP},
		{call(unix.SYS_READ, 77), unix.SECCOMP_RET_TRAP},
		{call(unix.SYS_READ, 78), unix.SECCOMP_RET_ALLOW},
	} {
		if got := run(t, prog, tc.in); got != tc.want {
			t.Errorf("%+v: got %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

func TestCompileTooLong(t *testing.T) {
	var rules []string
	for i := range 1200 {
		rules = append(rules, fmt.Sprintf(`{"syscall": "ioctl", "args": [{"index": 1, "type": "qword", "op": "eq", "val": %d}]}`, i))
	}
	_, err := mustParse(t, file(`"trap"`, `"allow"`, rules...)).Compile()
	if !errors.Is(err, errTooLong) || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("got %v, want a too-long error naming the limit", err)
	}
}

func TestCompileEmpty(t *testing.T) {
	prog := mustCompile(t, mustParse(t, file(`{"errno": 1}`, `"allow"`)))
	if got := run(t, prog, call(unix.SYS_READ)); got != unix.SECCOMP_RET_ERRNO|1 {
		t.Errorf("got %#x", got)
	}
}
