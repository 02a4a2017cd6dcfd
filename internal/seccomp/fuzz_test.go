package seccomp

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse. It must not panic; whatever
// parses must compile, or fail only for being too long; and the program
// must decide like the reference on calls made from the file's own rules.
func FuzzParse(f *testing.F) {
	f.Add(defaultJSON)
	f.Add([]byte(file(`"trap"`, `"allow"`, `{"syscall": "read"}`)))
	f.Add([]byte(file(`"allow"`, `{"errno": 1}`,
		`{"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 44672, "comment": "KVM_RUN"}]}`,
		`{"syscall": "mmap", "args": [{"index": 2, "type": "qword", "op": {"masked_eq": 4}, "val": 0}, {"index": 5, "type": "qword", "op": "ge", "val": 4294967296}]}`)))
	f.Add([]byte(`{"vmm": {}, "api": [], "vcpu": null}`))
	f.Add([]byte(`{"vmm": {"default_action": {"trace": 3}, "filter_action": "log", "filter": [{"syscall": "futex", "args": null}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, err := Parse(data)
		if err != nil {
			if flt != nil {
				t.Fatal("a Filter with an error")
			}
			return
		}
		prog, err := flt.Compile()
		if err != nil {
			if !errors.Is(err, errTooLong) {
				t.Fatalf("Compile: %v", err)
			}
			return
		}
		if err := checkProgram(prog); err != nil {
			t.Fatalf("invalid program: %v", err)
		}
		h := fnv.New64a()
		h.Write(data)
		r := rand.New(rand.NewPCG(h.Sum64(), 1))
		var rules []rule
		for _, c := range flt.cats {
			rules = append(rules, c.rules...)
		}
		for range 32 {
			in := call(uint32(r.IntN(512)))
			if len(rules) > 0 && r.IntN(4) > 0 {
				rl := rules[r.IntN(len(rules))]
				in.nr = rl.Nr
				for _, c := range rl.Conds {
					in.args[c.Index] = c.Val + uint64(r.IntN(3)) - 1
				}
			}
			for i := range in.args {
				if r.IntN(4) == 0 {
					in.args[i] = interesting(r)
				}
			}
			if got, want := run(t, prog, in), reference(flt, in); got != want {
				t.Fatalf("%+v: got %#x, want %#x", in, got, want)
			}
		}
	})
}
