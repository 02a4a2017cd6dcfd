package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestChecksumMatchesFirecrackerVector(t *testing.T) {
	// Firecracker's crc module doc-test: 16 bytes of 0x7B.
	if got := Checksum(0, bytes.Repeat([]byte{0x7B}, 16)); got != 0x29D5357216326566 {
		t.Fatalf("crc = %#x", got)
	}
}

func TestRoundTrip(t *testing.T) {
	payload := []byte(`{"vcpus":[]}`)
	v, got, err := Decode(Encode(payload))
	if err != nil || v != Current || !bytes.Equal(got, payload) {
		t.Fatalf("Decode = %v, %q, %v", v, got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Encode([]byte("state"))
	reframe := func(mutate func(b []byte)) []byte {
		b := append([]byte(nil), good[:len(good)-8]...)
		mutate(b)
		return binary.LittleEndian.AppendUint64(b, Checksum(0, b))
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTooShort},
		{"truncated", good[:len(good)-3], ErrCRC},
		{"flipped bit", func() []byte { b := append([]byte(nil), good...); b[20] ^= 1; return b }(), ErrCRC},
		{"aarch64", reframe(func(b []byte) { binary.LittleEndian.PutUint64(b, MagicAarch64) }), ErrMagic},
		{"garbage magic", reframe(func(b []byte) { binary.LittleEndian.PutUint64(b, 42) }), ErrMagic},
		{"newer major", reframe(func(b []byte) { binary.LittleEndian.PutUint16(b[8:], Current.Major+1) }), ErrVersion},
		{"newer minor", reframe(func(b []byte) { binary.LittleEndian.PutUint16(b[10:], Current.Minor+1) }), ErrVersion},
		{"length", reframe(func(b []byte) { binary.LittleEndian.PutUint64(b[14:], 1000) }), ErrFormat},
		{"short header", func() []byte { b := []byte{1, 2, 3}; return binary.LittleEndian.AppendUint64(b, Checksum(0, b)) }(), ErrFormat},
	}
	for _, c := range cases {
		if _, _, err := Decode(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vm.snap")
	if err := WriteFile(p, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if v, err := Describe(p); err != nil || v.String() != "v11.0.0" {
		t.Fatalf("Describe = %v, %v", v, err)
	}
	// A failed write leaves the old file and no temporary behind.
	err := WriteAtomic(p, func(f *os.File) error { f.Write([]byte("partial")); return errors.New("disk full") })
	if err == nil {
		t.Fatal("expected the write error")
	}
	_, payload, err := ReadFile(p)
	if err != nil || string(payload) != "one" {
		t.Fatalf("after failed write: %q, %v", payload, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(ents))
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode([]byte(`{"a":1}`)))
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, p, err := Decode(b)
		if err == nil {
			// Whatever decodes re-encodes to the same bytes.
			if v != Current && v.Major != Current.Major {
				t.Fatalf("accepted version %v", v)
			}
			if len(p) > len(b) {
				t.Fatal("payload longer than the file")
			}
		}
	})
}
