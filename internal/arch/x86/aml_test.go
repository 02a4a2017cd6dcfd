package x86

import (
	"bytes"
	"testing"
)

func TestAMLPkgLength(t *testing.T) {
	cases := []struct {
		n    int
		want []byte
	}{
		{0, []byte{1}},
		{62, []byte{63}},
		{63, []byte{0x41, 0x04}},         // 65 = 0x41: low nibble 1, then 4
		{4093, []byte{0x4f, 0xff}},       // 4095
		{4094, []byte{0x81, 0x00, 0x01}}, // 4097 = 0x1001
		{1<<20 - 4, []byte{0x8f, 0xff, 0xff}},
		{1<<20 - 3, []byte{0xc1, 0x00, 0x00, 0x01}},
	}
	for _, c := range cases {
		if got := amlPkgLength(c.n); !bytes.Equal(got, c.want) {
			t.Errorf("amlPkgLength(%d) = %x, want %x", c.n, got, c.want)
		}
		// The encoded length counts itself.
		got := amlPkgLength(c.n)
		l := int(got[0] & 0x3f)
		if len(got) > 1 {
			l = int(got[0] & 0xf)
			for i, b := range got[1:] {
				l |= int(b) << (4 + 8*i)
			}
		}
		if l != c.n+len(got) {
			t.Errorf("amlPkgLength(%d) decodes to %d", c.n, l)
		}
	}
}

func TestAMLPrimitives(t *testing.T) {
	cases := []struct {
		name      string
		got, want []byte
	}{
		{"path", amlPath("_HID"), []byte("_HID")},
		{"root path", amlPath(`\_SB_`), []byte(`\_SB_`)},
		{"dual path", amlPath("_SB_.COM1"), append([]byte{0x2e}, "_SB_COM1"...)},
		{"multi path", amlPath(`\_SB_.PCI0.S000`), append([]byte{'\\', 0x2f, 3}, "_SB_PCI0S000"...)},
		{"byte", amlInteger(0), []byte{0x0a, 0}},
		{"word", amlInteger(0x1234), []byte{0x0b, 0x34, 0x12}},
		{"dword", amlInteger(0x12345678), []byte{0x0c, 0x78, 0x56, 0x34, 0x12}},
		{"qword", amlInteger(1 << 32), []byte{0x0e, 0, 0, 0, 0, 1, 0, 0, 0}},
		{"string", amlString("COM1"), []byte{0x0d, 'C', 'O', 'M', '1', 0}},
		{"eisaid PNP0501", amlEISAID("PNP0501"), []byte{0x0c, 0x41, 0xd0, 0x05, 0x01}},
		{"eisaid PNP0303", amlEISAID("PNP0303"), []byte{0x0c, 0x41, 0xd0, 0x03, 0x03}},
		{"eisaid PNP0A08", amlEISAID("PNP0A08"), []byte{0x0c, 0x41, 0xd0, 0x0a, 0x08}},
		{"name", amlName("_CCA", amlOne()), []byte{0x08, '_', 'C', 'C', 'A', 0x01}},
		{"package", amlPackage(amlZero(), amlOnes()), []byte{0x12, 0x04, 0x02, 0x00, 0xff}},
		{"memory32fixed", amlMemory32Fixed(true, 0xc0001000, 0x1000),
			[]byte{0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xc0, 0x00, 0x10, 0x00, 0x00}},
		{"io", amlIO(0x3f8, 0x3f8, 1, 8), []byte{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}},
		{"interrupt", amlInterrupt(true, true, false, false, 5), []byte{0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0, 0, 0}},
		{"interrupt level low shared", amlInterrupt(true, false, true, true, 0x1234), []byte{0x89, 0x06, 0x00, 0x0d, 0x01, 0x34, 0x12, 0, 0}},
		{"resource template", amlResourceTemplate(amlIO(0x60, 0x60, 1, 1)),
			[]byte{0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x79, 0x00}},
		{"method", amlMethod("_STA", 0, false, amlReturn(amlByte(0x0f))),
			[]byte{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f}},
		{"serialized method", amlMethod("_EVT", 1, true), []byte{0x14, 0x06, '_', 'E', 'V', 'T', 0x09}},
		{"if notify", amlIf(amlLEqual(amlArg(0), amlByte(7)), amlNotify(`\_SB_.VGEN`, amlByte(0x80))),
			append(append([]byte{0xa0, 0x12, 0x93, 0x68, 0x0a, 0x07, 0x86, '\\', 0x2e}, "_SB_VGEN"...), 0x0a, 0x80)},
		{"device", amlDevice("COM1", amlName("_UID", amlZero())),
			[]byte{0x5b, 0x82, 0x0b, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x00}},
		{"scope", amlScope(`\_SB_`), []byte{0x10, 0x06, '\\', '_', 'S', 'B', '_'}},
	}
	for _, c := range cases {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
}

func TestAMLInvalid(t *testing.T) {
	for name, f := range map[string]func(){
		"short segment":    func() { amlPath("_SB") },
		"lowercase":        func() { amlPath("abcd") },
		"leading digit":    func() { amlPath("1ABC") },
		"empty segment":    func() { amlPath("_SB_..COM1") },
		"bad eisaid":       func() { amlEISAID("PNP050G") },
		"short eisaid":     func() { amlEISAID("PNP050") },
		"NUL in string":    func() { amlString("a\x00") },
		"too many args":    func() { amlMethod("_EVT", 8, false) },
		"arg out of range": func() { amlArg(7) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
