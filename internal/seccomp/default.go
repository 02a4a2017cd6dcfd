package seccomp

import (
	_ "embed"
	"encoding/json"
	"sync"
)

//go:embed default.json
var defaultJSON []byte

// cgoSyscalls are what a cgo build of squib calls beyond default.json,
// which was traced from the pure-Go build: glibc's pthread_create
// (clone3, mprotect of the new stack's guard, rseq, set_robust_list,
// set_tid_address) and malloc (brk). Found by tracing a cgo build through
// the command-line tests' error, signal and API paths; mprotect stays
// without PROT_EXEC, like mmap.
var cgoSyscalls = []map[string]any{
	{"syscall": "brk", "comment": "glibc malloc (cgo builds)"},
	{"syscall": "clone3", "comment": "glibc pthread_create (cgo builds)"},
	{"syscall": "mprotect", "comment": "glibc pthread_create stack set-up (cgo builds)",
		"args": []any{map[string]any{"index": 2, "type": "dword", "op": map[string]any{"masked_eq": 4}, "val": 0, "comment": "PROT_EXEC not set"}}},
	{"syscall": "rseq", "comment": "glibc thread start (cgo builds)"},
	{"syscall": "set_robust_list", "comment": "glibc thread start (cgo builds)"},
	{"syscall": "set_tid_address", "comment": "glibc thread start (cgo builds)"},
}

// withCgo returns default.json with cgoSyscalls added to the vmm category
// (every category ends up in the one process-wide program anyway).
func withCgo(data []byte) []byte {
	var doc map[string]map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return data // Parse reports it
	}
	vmm := doc["vmm"]
	rules, _ := vmm["filter"].([]any)
	for _, r := range cgoSyscalls {
		rules = append(rules, r)
	}
	vmm["filter"] = rules
	out, err := json.Marshal(doc)
	if err != nil {
		return data
	}
	return out
}

var defaultFilter = sync.OnceValue(func() *Filter {
	data := defaultJSON
	if cgoBuild {
		data = withCgo(data)
	}
	f, err := Parse(data)
	if err != nil {
		// default.json is checked by TestDefaultFilter; a broken one is
		// a build defect, not a run-time condition.
		panic("seccomp: the embedded default.json is invalid: " + err.Error())
	}
	return f
})

// Default returns the default filter, squib's counterpart of Firecracker's
// built-in filters (default.json, embedded in the binary). The Filter is
// shared: treat it as read-only.
func Default() *Filter { return defaultFilter() }
