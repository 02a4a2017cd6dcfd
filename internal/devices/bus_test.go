package devices

import "testing"

type rec struct{ off uint64 }

func (r *rec) Read(off uint64, d []byte)  { r.off = off; d[0] = 0xab }
func (r *rec) Write(off uint64, d []byte) { r.off = off }

func TestBus(t *testing.T) {
	var b Bus
	a, c := &rec{}, &rec{}
	if err := b.Insert(a, 0x3f8, 8); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(c, 0x60, 5); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(c, 0x3fc, 8); err == nil {
		t.Fatal("overlap accepted")
	}
	d := []byte{0}
	if !b.Read(0x3fd, d) || a.off != 5 || d[0] != 0xab {
		t.Fatalf("read dispatch: off %d data %x", a.off, d)
	}
	if b.Read(0x400, d) || b.Write(0x5f, d) {
		t.Fatal("unclaimed address dispatched")
	}
	if !b.Write(0x64, d) || c.off != 4 {
		t.Fatal("write dispatch")
	}
}
