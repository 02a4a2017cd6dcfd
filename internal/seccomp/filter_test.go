package seccomp

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	js := `{
	  "vmm": {
	    "default_action": "trap",
	    "filter_action": "allow",
	    "filter": [
	      {"syscall": "read"},
	      {"syscall": "ioctl", "comment": "KVM_RUN", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 44672, "comment": "KVM_RUN"}]},
	      {"syscall": "mmap", "args": [
	        {"index": 3, "type": "dword", "op": "eq", "val": 34},
	        {"index": 2, "type": "dword", "op": {"masked_eq": 4}, "val": 0, "comment": "no PROT_EXEC"}
	      ]},
	      {"syscall": "lseek", "args": [{"index": 1, "type": "qword", "op": "ge", "val": 18446744073709551615}]},
	      {"syscall": "close", "args": null}
	    ]
	  },
	  "api": {"default_action": "trap", "filter_action": "allow", "filter": [{"syscall": "accept4"}]},
	  "vcpu": {"default_action": "trap", "filter_action": "allow", "filter": []}
	}`
	f := mustParse(t, js)
	vmm := f.cats[0].rules
	if len(vmm) != 5 || vmm[1].Nr != 16 || vmm[1].Conds[0] != (cond{Index: 1, Op: opEq, Val: 44672}) {
		t.Fatalf("vmm rules: %+v", vmm)
	}
	if c := vmm[2].Conds[1]; c.Op != opMaskedEq || c.Mask != 4 || c.Val != 0 {
		t.Errorf("masked_eq: %+v", c)
	}
	if c := vmm[3].Conds[0]; !c.Qword || c.Op != opGe || c.Val != ^uint64(0) {
		t.Errorf("qword: %+v", c)
	}
	if f.cats[1].rules[0].Syscall != "accept4" || f.cats[0].defaultAction != (action{Kind: actTrap}) {
		t.Errorf("parsed %+v", f.cats)
	}
	a := mustParse(t, file(`{"errno": 4095}`, `{"trace": 65535}`, `{"syscall": "read"}`)).cats[2]
	if a.defaultAction != (action{Kind: actErrno, Data: 4095}) || a.filterAction != (action{Kind: actTrace, Data: 65535}) {
		t.Errorf("actions with data: %+v", a)
	}
}

func TestParseErrors(t *testing.T) {
	okCat := `{"default_action": "trap", "filter_action": "allow", "filter": []}`
	withRule := func(rule string) string { return file(`"trap"`, `"allow"`, rule) }
	withCond := func(c string) string { return withRule(`{"syscall": "ioctl", "args": [` + c + `]}`) }
	for _, tc := range []struct {
		name, js, want string
	}{
		{"not JSON", `{"vmm": `, "EOF"},
		{"empty", ``, "EOF"},
		{"array", `[]`, "invalid type"},
		{"missing category", `{"vmm": ` + okCat + `, "api": ` + okCat + `}`, "missing field `vcpu`"},
		{"extra category", `{"vmm": ` + okCat + `, "api": ` + okCat + `, "vcpu": ` + okCat + `, "fc_vcpu": ` + okCat + `}`, "unknown field `fc_vcpu`"},
		{"duplicate category", `{"vmm": ` + okCat + `, "vmm": ` + okCat + `, "api": ` + okCat + `, "vcpu": ` + okCat + `}`, "duplicate field `vmm`"},
		{"trailing data", file(`"trap"`, `"allow"`) + `x`, "trailing characters"},
		{"unknown category member", strings.Replace(file(`"trap"`, `"allow"`), `"filter": []`, `"filter": [], "threads": 1`, 1), "unknown field `threads`"},
		{"missing filter", strings.Replace(file(`"trap"`, `"allow"`), `, "filter": []`, ``, 1), "missing field `filter`"},
		{"missing default_action", `{"vmm": {"filter_action": "allow", "filter": []}, "api": ` + okCat + `, "vcpu": ` + okCat + `}`, "missing field `default_action`"},
		{"unknown action", file(`"deny"`, `"allow"`), "unknown variant `deny`"},
		{"kill is not an action", file(`"trap"`, `"kill"`), "unknown variant `kill`"},
		{"errno without value", file(`"errno"`, `"allow"`), `action "errno" needs a value`},
		{"errno too big", file(`{"errno": 65536}`, `"allow"`), "not an integer in 0..65535"},
		{"errno negative", file(`{"errno": -1}`, `"allow"`), "not an integer in 0..65535"},
		{"allow with value", file(`"trap"`, `{"allow": 1}`), `action "allow" takes no value`},
		{"action object with two members", file(`"trap"`, `{"errno": 1, "trace": 2}`), "expected a string or an object with one member"},
		{"same actions with rules", file(`"allow"`, `"allow"`, `{"syscall": "read"}`), "both allow"},
		{"categories disagree", `{"vmm": ` + okCat + `, "api": {"default_action": "kill_process", "filter_action": "allow", "filter": []}, "vcpu": ` + okCat + `}`,
			"default_action differs between categories (vmm: trap, api: kill_process)"},
		{"unknown syscall", withRule(`{"syscall": "frobnicate"}`), `vmm: filter rule 0: unknown syscall "frobnicate"`},
		{"syscall missing", withRule(`{"comment": "x"}`), "missing field `syscall`"},
		{"syscall not a string", withRule(`{"syscall": 16}`), "invalid type"},
		{"unknown rule member", withRule(`{"syscall": "read", "action": "allow"}`), "unknown field `action`"},
		{"bad op", withCond(`{"index": 1, "type": "dword", "op": "equals", "val": 1}`), "unknown variant `equals`"},
		{"masked_eq without mask", withCond(`{"index": 1, "type": "dword", "op": "masked_eq", "val": 1}`), `op "masked_eq" needs its mask`},
		{"eq with a value", withCond(`{"index": 1, "type": "dword", "op": {"eq": 1}, "val": 1}`), `op "eq" takes no value`},
		{"bad type", withCond(`{"index": 1, "type": "word", "op": "eq", "val": 1}`), "unknown variant `word`"},
		{"index too big", withCond(`{"index": 6, "type": "dword", "op": "eq", "val": 1}`), "index 6"},
		{"index not u8", withCond(`{"index": 256, "type": "dword", "op": "eq", "val": 1}`), "256"},
		{"dword value too big", withCond(`{"index": 1, "type": "dword", "op": "eq", "val": 4294967296}`), "does not fit the 32 bits of a dword"},
		{"dword mask too big", withCond(`{"index": 1, "type": "dword", "op": {"masked_eq": 4294967296}, "val": 0}`), "mask 0x100000000 does not fit"},
		{"negative value", withCond(`{"index": 1, "type": "qword", "op": "eq", "val": -1}`), "-1"},
		{"float value", withCond(`{"index": 1, "type": "qword", "op": "eq", "val": 1.5}`), "1.5"},
		{"missing val", withCond(`{"index": 1, "type": "qword", "op": "eq"}`), "missing field `val`"},
		{"unknown cond member", withCond(`{"index": 1, "type": "qword", "op": "eq", "val": 1, "mask": 3}`), "unknown field `mask`"},
	} {
		_, err := Parse([]byte(tc.js))
		if err == nil {
			t.Errorf("%s: parsed", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not contain %q", tc.name, err, tc.want)
		}
		if !strings.HasPrefix(err.Error(), "seccomp filter: ") {
			t.Errorf("%s: error %q lacks the prefix", tc.name, err)
		}
	}
}

func TestParseTooBig(t *testing.T) {
	if _, err := Parse(make([]byte, maxFileSize+1)); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("got %v", err)
	}
}

// TestSyscallTableMatchesHeader checks the name table against the
// installed kernel header: every syscall it defines must be in the table
// with its number. The table may know newer syscalls than the header.
func TestSyscallTableMatchesHeader(t *testing.T) {
	const header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
	fh, err := os.Open(header)
	if os.IsNotExist(err) {
		t.Skipf("%s is not installed (linux-libc-dev)", header)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	re := regexp.MustCompile(`^#define __NR_(\w+)\s+(\d+)\s*$`)
	n := 0
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n++
		want, _ := strconv.ParseUint(m[2], 10, 32)
		got, ok := syscallNumbers[m[1]]
		if !ok {
			t.Errorf("%s (%d) is missing from the table", m[1], want)
		} else if uint64(got) != want {
			t.Errorf("%s: table says %d, header %d", m[1], got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 300 {
		t.Fatalf("only %d syscalls in %s", n, header)
	}
	seen := map[uint32]string{}
	for name, nr := range syscallNumbers {
		if other, ok := seen[nr]; ok {
			t.Errorf("%s and %s share number %d", name, other, nr)
		}
		seen[nr] = name
	}
}
