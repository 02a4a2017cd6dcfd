package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/sys/unix"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// categories are Firecracker's thread categories, in the order errors and
// the merge visit them. A filter file has exactly these three.
var categories = [3]string{"vmm", "api", "vcpu"}

// Filter is a parsed and validated filter file: the three categories of
// Firecracker's seccompiler format. Build one with Parse or Default.
type Filter struct {
	cats [3]category // in categories order
}

// category is one thread category's filter.
type category struct {
	defaultAction action // for syscalls no rule matches
	filterAction  action // for syscalls a rule matches
	rules         []rule
}

// rule allows (or applies filter_action to) one syscall, when all its
// conditions hold. Rules for the same syscall are OR-ed.
type rule struct {
	Syscall string // name as in the file
	Nr      uint32 // its x86_64 number
	Conds   []cond // AND-ed; none means the syscall always matches
}

// cond compares one syscall argument with a value.
type cond struct {
	Index uint8  // argument 0..5
	Qword bool   // compare all 64 bits; a dword compares the low 32 only
	Op    cmpOp  // comparison
	Mask  uint64 // for opMaskedEq: compare (arg & Mask) with Val
	Val   uint64
}

// cmpOp is a condition's comparison, seccompiler's "op".
type cmpOp uint8

// Comparisons, named as in the file.
const (
	opEq       cmpOp = iota // "eq"
	opNe                    // "ne"
	opLt                    // "lt"
	opLe                    // "le"
	opGt                    // "gt"
	opGe                    // "ge"
	opMaskedEq              // {"masked_eq": mask}
)

var opNames = [...]string{"eq", "ne", "lt", "le", "gt", "ge", "masked_eq"}

func (o cmpOp) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// actionKind is a seccomp action without its data.
type actionKind uint8

// Actions, named as in the file.
const (
	actAllow       actionKind = iota // "allow"
	actErrno                         // {"errno": n}: fail with errno n
	actKillThread                    // "kill_thread"
	actKillProcess                   // "kill_process"
	actLog                           // "log": allow and log
	actTrace                         // {"trace": n}: notify a ptrace tracer
	actTrap                          // "trap": SIGSYS (see Install)
)

var actionNames = [...]string{"allow", "errno", "kill_thread", "kill_process", "log", "trace", "trap"}

// action is a seccomp action: what the kernel does with a syscall.
type action struct {
	Kind actionKind
	Data uint16 // errno or trace value
}

func (a action) String() string {
	if a.Kind == actErrno || a.Kind == actTrace {
		return fmt.Sprintf("%s(%d)", actionNames[a.Kind], a.Data)
	}
	return actionNames[a.Kind]
}

// ret is the SECCOMP_RET_* value a BPF program returns for a.
func (a action) ret() uint32 {
	switch a.Kind {
	case actAllow:
		return unix.SECCOMP_RET_ALLOW
	case actErrno:
		return unix.SECCOMP_RET_ERRNO | uint32(a.Data)
	case actKillThread:
		return unix.SECCOMP_RET_KILL_THREAD
	case actKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS
	case actLog:
		return unix.SECCOMP_RET_LOG
	case actTrace:
		return unix.SECCOMP_RET_TRACE | uint32(a.Data)
	default:
		return unix.SECCOMP_RET_TRAP
	}
}

// --- JSON model -------------------------------------------------------------

// fileJSON is the top level of a filter file. jsonx rejects unknown and
// duplicate members, so a fourth category is an "unknown field" error.
type fileJSON struct {
	VMM  *categoryJSON `json:"vmm" squib:"required"`
	API  *categoryJSON `json:"api" squib:"required"`
	VCPU *categoryJSON `json:"vcpu" squib:"required"`
}

type categoryJSON struct {
	DefaultAction *actionJSON `json:"default_action" squib:"required"`
	FilterAction  *actionJSON `json:"filter_action" squib:"required"`
	Filter        []ruleJSON  `json:"filter" squib:"required"`
}

type ruleJSON struct {
	Syscall *string    `json:"syscall" squib:"required"`
	Args    []condJSON `json:"args"`
	Comment *string    `json:"comment"`
}

type condJSON struct {
	Index   *uint8      `json:"index" squib:"required"`
	Type    *argLenJSON `json:"type" squib:"required"`
	Op      *opJSON     `json:"op" squib:"required"`
	Val     *uint64     `json:"val" squib:"required"`
	Comment *string     `json:"comment"`
}

// actionJSON is serde's encoding of seccompiler's action enum: unit
// variants as strings ("allow"), the two with data as one-member objects
// ({"errno": 1}).
type actionJSON action

func (a *actionJSON) UnmarshalJSON(b []byte) error {
	name, data, err := enumValue(b, "action")
	if err != nil {
		return err
	}
	i := slices.Index(actionNames[:], name)
	if i < 0 {
		return &jsonx.VariantError{Got: name, Variants: actionNames[:]}
	}
	kind := actionKind(i)
	withData := kind == actErrno || kind == actTrace
	if withData != (data != nil) {
		if withData {
			return &jsonx.ValueError{Msg: fmt.Sprintf(`action %q needs a value: {"%s": <0..65535>}`, name, name)}
		}
		return &jsonx.ValueError{Msg: fmt.Sprintf("action %q takes no value: write it as the string %q", name, name)}
	}
	*a = actionJSON{Kind: kind}
	if withData {
		v, err := strconv.ParseUint(string(data), 10, 16)
		if err != nil {
			return &jsonx.ValueError{Msg: fmt.Sprintf("action %q: value %s is not an integer in 0..65535", name, snippet(data))}
		}
		a.Data = uint16(v)
	}
	return nil
}

// opJSON is the "op" member: a string, or {"masked_eq": mask}.
type opJSON struct {
	op   cmpOp
	mask uint64
}

func (o *opJSON) UnmarshalJSON(b []byte) error {
	name, data, err := enumValue(b, "op")
	if err != nil {
		return err
	}
	i := slices.Index(opNames[:], name)
	if i < 0 {
		return &jsonx.VariantError{Got: name, Variants: opNames[:]}
	}
	op := cmpOp(i)
	if (op == opMaskedEq) != (data != nil) {
		if op == opMaskedEq {
			return &jsonx.ValueError{Msg: `op "masked_eq" needs its mask: {"masked_eq": <mask>}`}
		}
		return &jsonx.ValueError{Msg: fmt.Sprintf("op %q takes no value: write it as the string %q", name, name)}
	}
	*o = opJSON{op: op}
	if data != nil {
		m, err := strconv.ParseUint(string(data), 10, 64)
		if err != nil {
			return &jsonx.ValueError{Msg: fmt.Sprintf("op \"masked_eq\": mask %s is not an integer in 0..2^64-1", snippet(data))}
		}
		o.mask = m
	}
	return nil
}

// argLenJSON is the "type" member: "dword" or "qword".
type argLenJSON struct{ qword bool }

var argLenNames = []string{"dword", "qword"}

func (t *argLenJSON) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &jsonx.ValueError{Msg: fmt.Sprintf(`argument type %s is not a string ("dword" or "qword")`, snippet(b))}
	}
	switch s {
	case "dword":
		t.qword = false
	case "qword":
		t.qword = true
	default:
		return &jsonx.VariantError{Got: s, Variants: argLenNames}
	}
	return nil
}

// snippet quotes at most 40 bytes of a JSON value in an error message.
func snippet(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// enumValue splits serde's external enum encoding: "name" gives (name, nil),
// {"name": value} gives (name, value as JSON text).
func enumValue(b []byte, what string) (string, []byte, error) {
	b = bytes.TrimSpace(b)
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return "", nil, err
		}
		return s, nil, nil
	}
	var m map[string]jsontext.Value // v2 rejects duplicate names here too
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 {
		return "", nil, &jsonx.ValueError{Msg: fmt.Sprintf("%s %s: expected a string or an object with one member", what, snippet(b))}
	}
	for k, v := range m {
		v = bytes.TrimSpace(v)
		if string(v) == "null" {
			return "", nil, &jsonx.ValueError{Msg: fmt.Sprintf("%s %q: the value is null", what, k)}
		}
		return k, v, nil
	}
	panic("unreachable")
}

// --- parsing and validation ---------------------------------------------------

// maxFileSize bounds what Parse reads. Firecracker's own default JSON is
// about 40 KiB; a filter that needs more would not fit 4096 instructions.
const maxFileSize = 1 << 20

// Parse decodes and validates a filter file in Firecracker's seccompiler
// JSON format. It is strict: unknown or duplicate members, a missing or
// extra category, an unknown syscall name or op or action, an argument
// index above 5, a dword value above 32 bits and categories that disagree on
// their actions are all errors, each naming the place it was found.
func Parse(data []byte) (*Filter, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("seccomp filter: file is %d bytes, more than the %d allowed", len(data), maxFileSize)
	}
	var fj fileJSON
	if err := jsonx.Decode(data, &fj); err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	f := &Filter{}
	for i, cj := range []*categoryJSON{fj.VMM, fj.API, fj.VCPU} {
		c, err := cj.validate()
		if err != nil {
			return nil, fmt.Errorf("seccomp filter: %s: %w", categories[i], err)
		}
		f.cats[i] = c
	}
	// squib installs one filter for the whole process (doc.go), so there is
	// one default and one filter action; refusing a file whose categories
	// differ is better than silently picking one of them.
	for i := 1; i < len(f.cats); i++ {
		for _, x := range []struct {
			name string
			a, b action
		}{
			{"default_action", f.cats[0].defaultAction, f.cats[i].defaultAction},
			{"filter_action", f.cats[0].filterAction, f.cats[i].filterAction},
		} {
			if x.a != x.b {
				return nil, fmt.Errorf("seccomp filter: %s differs between categories (%s: %s, %s: %s): squib installs one filter for all threads, so the three categories must agree",
					x.name, categories[0], x.a, categories[i], x.b)
			}
		}
	}
	return f, nil
}

func (cj *categoryJSON) validate() (category, error) {
	c := category{defaultAction: action(*cj.DefaultAction), filterAction: action(*cj.FilterAction)}
	if c.defaultAction == c.filterAction {
		// libseccomp refuses a rule whose action is the default one, so
		// seccompiler fails on such a file; so does squib, for the same
		// reason: the rules would mean nothing.
		if len(cj.Filter) > 0 {
			return c, fmt.Errorf("filter_action and default_action are both %s, so the rules would have no effect", c.defaultAction)
		}
	}
	for i, rj := range cj.Filter {
		r, err := rj.validate()
		if err != nil {
			return c, fmt.Errorf("filter rule %d: %w", i, err)
		}
		c.rules = append(c.rules, r)
	}
	return c, nil
}

func (rj *ruleJSON) validate() (rule, error) {
	name := *rj.Syscall
	nr, ok := syscallNumbers[name]
	if !ok {
		return rule{}, fmt.Errorf("unknown syscall %q", name)
	}
	r := rule{Syscall: name, Nr: nr}
	for i, aj := range rj.Args {
		c, err := aj.validate()
		if err != nil {
			return r, fmt.Errorf("syscall %q: argument condition %d: %w", name, i, err)
		}
		r.Conds = append(r.Conds, c)
	}
	return r, nil
}

func (aj *condJSON) validate() (cond, error) {
	c := cond{Index: *aj.Index, Qword: aj.Type.qword, Op: aj.Op.op, Mask: aj.Op.mask, Val: *aj.Val}
	if c.Index > 5 {
		return c, fmt.Errorf("index %d: syscalls have arguments 0 to 5", c.Index)
	}
	if !c.Qword {
		if c.Val > 0xffffffff {
			return c, fmt.Errorf("val %#x does not fit the 32 bits of a dword", c.Val)
		}
		if c.Mask > 0xffffffff {
			return c, fmt.Errorf("masked_eq mask %#x does not fit the 32 bits of a dword", c.Mask)
		}
	}
	return c, nil
}

// --- merging ---------------------------------------------------------------

// merged is the process-wide rule set: for each syscall number, the
// alternatives that match it (OR), or always when one is unconditional.
type merged struct {
	nrs    []uint32            // sorted
	always map[uint32]bool     // an unconditional rule exists
	alts   map[uint32][][]cond // distinct condition sets, file order
}

// merge unions the three categories' rules: any thread may run any
// goroutine, so a syscall one category allows must be allowed everywhere.
func (f *Filter) merge() merged {
	m := merged{always: map[uint32]bool{}, alts: map[uint32][][]cond{}}
	seen := map[uint32][]string{} // canonical keys of the condition sets
	for _, c := range f.cats {
		for _, r := range c.rules {
			if _, ok := m.alts[r.Nr]; !ok && !m.always[r.Nr] {
				m.nrs = append(m.nrs, r.Nr)
			}
			if len(r.Conds) == 0 {
				m.always[r.Nr] = true
				m.alts[r.Nr] = nil
				continue
			}
			if m.always[r.Nr] {
				continue
			}
			conds := canonical(r.Conds)
			key := condsKey(conds)
			if slices.Contains(seen[r.Nr], key) {
				continue
			}
			seen[r.Nr] = append(seen[r.Nr], key)
			m.alts[r.Nr] = append(m.alts[r.Nr], conds)
		}
	}
	slices.Sort(m.nrs)
	return m
}

// canonical orders a rule's conditions (they are AND-ed, so order does not
// matter) and drops repeats, so that equal rules compare equal.
func canonical(conds []cond) []cond {
	out := slices.Clone(conds)
	slices.SortFunc(out, func(a, b cond) int {
		return strings.Compare(condKey(a), condKey(b))
	})
	return slices.Compact(out)
}

func condKey(c cond) string {
	return fmt.Sprintf("%d/%t/%d/%x/%x", c.Index, c.Qword, c.Op, c.Mask, c.Val)
}

func condsKey(conds []cond) string {
	var b strings.Builder
	for _, c := range conds {
		b.WriteString(condKey(c))
		b.WriteByte(';')
	}
	return b.String()
}

// errTooLong is wrapped by Compile's error for a program over the kernel's
// 4096-instruction limit.
var errTooLong = errors.New("program too long")
