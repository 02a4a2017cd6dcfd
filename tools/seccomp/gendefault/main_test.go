package main

import (
	"bytes"
	"os"
	"testing"
)

// TestDefaultUpToDate: internal/seccomp/default.json is what traced.txt
// and the lists here give, so that nobody edits it by hand.
func TestDefaultUpToDate(t *testing.T) {
	tr, err := readTraced("../traced.txt")
	if err != nil {
		t.Fatal(err)
	}
	want, err := generate(tr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../../internal/seccomp/default.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("internal/seccomp/default.json is stale: run go run ./tools/seccomp/gendefault from the repository root")
	}
}

func TestIoctlName(t *testing.T) {
	for req, want := range map[uint64]string{
		0xae80:     "KVM_RUN",
		0xc008ae88: "KVM_GET_MSRS",
		0x4004ae8b: "_IOW(0xae, 0x8b, 4)",
		0xc008ae0a: "_IOWR(0xae, 0xa, 8)",
		0x8090ae8a: "_IOR(0xae, 0x8a, 144)",
		0xae9a:     "_IO(0xae, 0x9a, 0)",
	} {
		if got := ioctlName(req); got != want {
			t.Errorf("%#x: got %q, want %q", req, got, want)
		}
	}
}
