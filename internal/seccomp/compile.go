package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// maxInsns is BPF_MAXINSNS: the kernel refuses longer filter programs.
const maxInsns = 4096

// Offsets in struct seccomp_data (little-endian x86_64): nr, arch,
// instruction_pointer, then args[6] of 8 bytes each.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// argLo and argHi are the offsets of argument i's low and high 32 bits.
func argLo(i uint8) uint32 { return offArgs + 8*uint32(i) }
func argHi(i uint8) uint32 { return offArgs + 8*uint32(i) + 4 }

// Classic BPF opcodes the compiler emits (linux/bpf_common.h); the test's
// interpreter implements exactly these.
const (
	opLdAbsW = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	opAndK   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	opJa     = unix.BPF_JMP | unix.BPF_JA
	opJeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	opJgtK   = unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K
	opJgeK   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	opRetK   = unix.BPF_RET | unix.BPF_K
)

// Compile turns the filter into one classic BPF program for the whole
// process: the three categories' rules merged (see doc.go). The program
// kills the process for any architecture but x86_64 and for x32 syscall
// numbers, then finds the syscall by binary search on its number and checks
// the argument conditions of its rules. It fails only when the result
// exceeds the kernel's 4096 instructions.
func (f *Filter) Compile() ([]unix.SockFilter, error) {
	m := f.merge()
	def, act := f.cats[0].defaultAction.ret(), f.cats[0].filterAction.ret()
	a := &asm{}

	// Architecture first: the syscall numbers below mean nothing for
	// another ABI.
	a.ld(offArch)
	a.jeq(auditArch, a.next(1), a.next(0))
	a.ret(unix.SECCOMP_RET_KILL_PROCESS)
	a.ld(offNr)
	// The x32 ABI shares AUDIT_ARCH_X86_64 and numbers its syscalls from
	// bit 30 up: it would slip past a deny list, so it is refused. Number
	// -1 (what syscall(-1) or a tracer's skip gives) goes on, as with
	// libseccomp, and gets the default action.
	notX32 := a.newLabel()
	a.jge(x32SyscallBit, a.next(0), notX32)
	a.jeq(0xffffffff, notX32, a.next(0))
	a.ret(unix.SECCOMP_RET_KILL_PROCESS)
	a.bind(notX32)

	chains := map[uint32]label{}
	for _, nr := range m.nrs {
		if !m.always[nr] {
			chains[nr] = a.newLabel()
		}
	}
	a.dispatch(m.nrs, chains, m.always, act, def)
	for _, nr := range m.nrs {
		if m.always[nr] {
			continue
		}
		a.bind(chains[nr])
		a.chain(m.alts[nr], act, def)
	}
	prog, err := a.assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	return prog, nil
}

// dispatch emits a binary search over the sorted syscall numbers (A holds
// the number). Small groups are compared one by one; each group ends with
// its own default and filter-action returns, so that most jumps stay short.
func (a *asm) dispatch(nrs []uint32, chains map[uint32]label, always map[uint32]bool, act, def uint32) {
	const leaf = 4
	if len(nrs) <= leaf {
		deny, allow := a.newLabel(), a.newLabel()
		usedAllow := false
		for i, nr := range nrs {
			jf := a.next(0)
			if i == len(nrs)-1 {
				jf = deny
			}
			if always[nr] {
				a.jeq(nr, allow, jf)
				usedAllow = true
			} else {
				a.jeq(nr, chains[nr], jf)
			}
		}
		a.bind(deny)
		a.ret(def)
		if usedAllow {
			a.bind(allow)
			a.ret(act)
		}
		return
	}
	mid := len(nrs) / 2
	right := a.newLabel()
	a.jge(nrs[mid], right, a.next(0))
	a.dispatch(nrs[:mid], chains, always, act, def)
	a.bind(right)
	a.dispatch(nrs[mid:], chains, always, act, def)
}

// chain emits one syscall's rules: each rule's conditions in turn. The
// first rule whose conditions all hold returns act; when none does, the
// chain returns def.
func (a *asm) chain(alts [][]cond, act, def uint32) {
	pass := a.newLabel()
	for _, conds := range alts {
		next := a.newLabel() // the next rule, or the final return of def
		for i, c := range conds {
			if i == len(conds)-1 {
				a.cond(c, pass, next)
				break
			}
			ok := a.newLabel()
			a.cond(c, ok, next)
			a.bind(ok)
		}
		a.bind(next)
	}
	a.ret(def)
	a.bind(pass)
	a.ret(act)
}

// cond emits a test of one argument condition that goes to yes when it
// holds and to no otherwise. A qword is compared high half first; a dword
// looks at the low half only.
func (a *asm) cond(c cond, yes, no label) {
	lo, hi := uint32(c.Val), uint32(c.Val>>32)
	mlo, mhi := uint32(c.Mask), uint32(c.Mask>>32)
	if !c.Qword {
		a.ld(argLo(c.Index))
		a.cmp32(c.Op, lo, mlo, yes, no)
		return
	}
	cont := a.newLabel()
	a.ld(argHi(c.Index))
	switch c.Op {
	case opEq:
		a.jeq(hi, cont, no)
	case opNe:
		a.jeq(hi, cont, yes)
	case opMaskedEq:
		a.alu(opAndK, mhi)
		a.jeq(hi, cont, no)
	case opGt, opGe:
		// high above: holds; high below: fails; equal: decided by low
		a.jgt(hi, yes, a.next(0))
		a.jeq(hi, cont, no)
	case opLt, opLe:
		a.jgt(hi, no, a.next(0))
		a.jeq(hi, cont, yes)
	}
	a.bind(cont)
	a.ld(argLo(c.Index))
	a.cmp32(c.Op, lo, mlo, yes, no)
}

// cmp32 compares A with v (unsigned) according to op.
func (a *asm) cmp32(op cmpOp, v, mask uint32, yes, no label) {
	switch op {
	case opEq:
		a.jeq(v, yes, no)
	case opNe:
		a.jeq(v, no, yes)
	case opMaskedEq:
		a.alu(opAndK, mask)
		a.jeq(v, yes, no)
	case opGt:
		a.jgt(v, yes, no)
	case opGe:
		a.jge(v, yes, no)
	case opLt:
		a.jge(v, no, yes)
	case opLe:
		a.jgt(v, no, yes)
	}
}

// --- a small assembler with labels ------------------------------------------

// label names a position in the program. Conditional jumps reach at most
// 255 instructions ahead; assemble routes longer ones through an
// unconditional jump (32-bit offset) placed right after them.
type label int

// item is an instruction, or a label's position when isLabel is set.
type item struct {
	code    uint16
	k       uint32
	jt, jf  label // conditional jump targets; jt is also a JA's target
	isLabel bool
	lbl     label
}

// pendingLabel is a next() label waiting for its instruction count.
type pendingLabel struct {
	l     label
	after int // instructions still to emit before binding l
}

type asm struct {
	items   []item
	labels  int
	pending []pendingLabel
}

func (a *asm) newLabel() label {
	a.labels++
	return label(a.labels)
}

// next returns a label for the position n instructions past the one about
// to be emitted: next(0) is the instruction right after it, next(1) skips
// one. It is bound once that many instructions have been emitted.
func (a *asm) next(n int) label {
	l := a.newLabel()
	a.pending = append(a.pending, pendingLabel{l: l, after: n + 1})
	return l
}

// bind places l at the current position.
func (a *asm) bind(l label) { a.items = append(a.items, item{isLabel: true, lbl: l}) }

func (a *asm) emit(it item) {
	a.items = append(a.items, it)
	keep := a.pending[:0]
	for _, p := range a.pending {
		if p.after--; p.after == 0 {
			a.bind(p.l)
		} else {
			keep = append(keep, p)
		}
	}
	a.pending = keep
}

func (a *asm) ld(off uint32)              { a.emit(item{code: opLdAbsW, k: off}) }
func (a *asm) alu(code uint16, k uint32)  { a.emit(item{code: code, k: k}) }
func (a *asm) ret(k uint32)               { a.emit(item{code: opRetK, k: k}) }
func (a *asm) jeq(k uint32, jt, jf label) { a.emit(item{code: opJeqK, k: k, jt: jt, jf: jf}) }
func (a *asm) jgt(k uint32, jt, jf label) { a.emit(item{code: opJgtK, k: k, jt: jt, jf: jf}) }
func (a *asm) jge(k uint32, jt, jf label) { a.emit(item{code: opJgeK, k: k, jt: jt, jf: jf}) }

func isCondJump(code uint16) bool { return code&0x07 == unix.BPF_JMP && code != opJa }

// layout maps each label to the index of the instruction it precedes and
// counts the instructions.
func layout(items []item) (map[label]int, int) {
	pos := map[label]int{}
	n := 0
	for _, it := range items {
		if it.isLabel {
			pos[it.lbl] = n
		} else {
			n++
		}
	}
	return pos, n
}

func tooLong(n int) error {
	return fmt.Errorf("%w: %d instructions, the kernel allows %d", errTooLong, n, maxInsns)
}

// assemble resolves labels into offsets. A conditional jump whose target
// is more than 255 instructions ahead gets a trampoline: an unconditional
// jump inserted right after it (conditional jumps never fall through, so
// nothing else lands there). Insertions move later code, so this repeats
// until every short jump fits; each branch is redirected at most once, to a
// target one or two instructions away, so it ends.
func (a *asm) assemble() ([]unix.SockFilter, error) {
	if len(a.pending) > 0 {
		return nil, fmt.Errorf("internal error: %d next() labels never bound", len(a.pending))
	}
	items := a.items
	for {
		pos, n := layout(items)
		if n > maxInsns {
			return nil, tooLong(n)
		}
		out := make([]item, 0, len(items))
		changed := false
		idx := 0 // index of the instruction being copied
		for _, it := range items {
			if it.isLabel {
				out = append(out, it)
				continue
			}
			var tramps []item
			if isCondJump(it.code) {
				for _, br := range []*label{&it.jt, &it.jf} {
					t, ok := pos[*br]
					if !ok {
						return nil, fmt.Errorf("internal error: label %d never bound", *br)
					}
					if t-idx-1 > 255 {
						via := a.newLabel()
						tramps = append(tramps, item{isLabel: true, lbl: via}, item{code: opJa, jt: *br})
						*br = via
						changed = true
					}
				}
			}
			out = append(out, it)
			out = append(out, tramps...)
			idx++
		}
		items = out
		if !changed {
			break
		}
	}
	pos, n := layout(items)
	prog := make([]unix.SockFilter, 0, n)
	for _, it := range items {
		if it.isLabel {
			continue
		}
		i := len(prog)
		ins := unix.SockFilter{Code: it.code, K: it.k}
		if it.code == opJa {
			t, ok := pos[it.jt]
			if !ok || t <= i {
				return nil, fmt.Errorf("internal error: jump at %d to %d", i, t)
			}
			ins.K = uint32(t - i - 1)
		} else if isCondJump(it.code) {
			jt, jf := pos[it.jt]-i-1, pos[it.jf]-i-1
			if jt < 0 || jf < 0 || jt > 255 || jf > 255 {
				return nil, fmt.Errorf("internal error: jump at %d out of range (%d, %d)", i, jt, jf)
			}
			ins.Jt, ins.Jf = uint8(jt), uint8(jf)
		}
		prog = append(prog, ins)
	}
	return prog, nil
}
