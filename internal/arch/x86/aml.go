package x86

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// A small AML (ACPI Machine Language, ACPI 6.5 chapter 20) encoder: just
// what the DSDT needs. Every function returns the encoded term; the
// encodings match Firecracker's acpi-tables crate byte for byte, so the
// guest sees the same DSDT. Names are package constants or generated
// here, so an invalid one is a programming error and panics.

// AML opcodes and prefixes.
const (
	amlZeroOp         = 0x00
	amlOneOp          = 0x01
	amlNameOp         = 0x08
	amlBytePrefix     = 0x0a
	amlWordPrefix     = 0x0b
	amlDWordPrefix    = 0x0c
	amlStringPrefix   = 0x0d
	amlQWordPrefix    = 0x0e
	amlScopeOp        = 0x10
	amlBufferOp       = 0x11
	amlPackageOp      = 0x12
	amlMethodOp       = 0x14
	amlDualNamePrefix = 0x2e
	amlMultiNamePfx   = 0x2f
	amlRootChar       = '\\'
	amlExtOpPrefix    = 0x5b
	amlDeviceOp       = 0x82 // after amlExtOpPrefix
	amlArg0Op         = 0x68
	amlNotifyOp       = 0x86
	amlLEqualOp       = 0x93
	amlIfOp           = 0xa0
	amlReturnOp       = 0xa4
	amlOnesOp         = 0xff
)

// Resource descriptor tags (ACPI 6.5 section 6.4).
const (
	rdIO            = 0x47 // small item, I/O port, length 7
	rdEndTag        = 0x79 // small item, end tag, length 1
	rdMemory32Fixed = 0x86 // large item
	rdExtendedIRQ   = 0x89 // large item
)

// amlPath encodes a name string: "NAME", "\NAME", "ABCD.EFGH" and so on,
// each segment exactly four characters.
func amlPath(path string) []byte {
	var b []byte
	if strings.HasPrefix(path, `\`) {
		b = append(b, amlRootChar)
		path = path[1:]
	}
	segs := strings.Split(path, ".")
	for _, s := range segs {
		if !validNameSeg(s) {
			panic(fmt.Sprintf("aml: invalid name segment %q in %q", s, path))
		}
	}
	switch len(segs) {
	case 1:
	case 2:
		b = append(b, amlDualNamePrefix)
	default:
		b = append(b, amlMultiNamePfx, byte(len(segs)))
	}
	for _, s := range segs {
		b = append(b, s...)
	}
	return b
}

// validNameSeg reports whether s is a NameSeg: a lead character A-Z or
// '_', then three of A-Z, 0-9 or '_'.
func validNameSeg(s string) bool {
	if len(s) != 4 {
		return false
	}
	for i := range 4 {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// amlPkgLength encodes the PkgLength of a body of n bytes; the length
// counts its own bytes.
func amlPkgLength(n int) []byte {
	switch {
	case n+1 <= 0x3f:
		return []byte{byte(n + 1)}
	case n+2 < 1<<12:
		l := n + 2
		return []byte{1<<6 | byte(l&0xf), byte(l >> 4)}
	case n+3 < 1<<20:
		l := n + 3
		return []byte{2<<6 | byte(l&0xf), byte(l >> 4), byte(l >> 12)}
	case n+4 < 1<<28:
		l := n + 4
		return []byte{3<<6 | byte(l&0xf), byte(l >> 4), byte(l >> 12), byte(l >> 20)}
	}
	panic(fmt.Sprintf("aml: package of %d bytes is too long", n))
}

// amlPkg is op, PkgLength, then body.
func amlPkg(op []byte, body []byte) []byte {
	b := append([]byte{}, op...)
	b = append(b, amlPkgLength(len(body))...)
	return append(b, body...)
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// amlByte, amlWord, amlDWord and amlQWord encode integers with a fixed
// width.
func amlByte(v uint8) []byte { return []byte{amlBytePrefix, v} }

func amlWord(v uint16) []byte {
	return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, v)
}

func amlDWord(v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, v)
}

func amlQWord(v uint64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
}

// amlInteger encodes v in the narrowest prefixed width.
func amlInteger(v uint64) []byte {
	switch {
	case v <= 0xff:
		return amlByte(uint8(v))
	case v <= 0xffff:
		return amlWord(uint16(v))
	case v <= 0xffff_ffff:
		return amlDWord(uint32(v))
	}
	return amlQWord(v)
}

// amlZero, amlOne and amlOnes are the constant objects.
func amlZero() []byte { return []byte{amlZeroOp} }
func amlOne() []byte  { return []byte{amlOneOp} }
func amlOnes() []byte { return []byte{amlOnesOp} }

// amlString encodes an ASCII string.
func amlString(s string) []byte {
	if strings.IndexByte(s, 0) >= 0 {
		panic("aml: NUL in string")
	}
	b := append([]byte{amlStringPrefix}, s...)
	return append(b, 0)
}

// amlEISAID encodes a compressed EISA ID such as "PNP0501" (three
// letters, four hex digits) as the DWord EISAID() produces.
func amlEISAID(id string) []byte {
	if len(id) != 7 {
		panic(fmt.Sprintf("aml: invalid EISA ID %q", id))
	}
	var v uint32
	for i := range 3 {
		c := id[i]
		if c < 'A' || c > 'Z' {
			panic(fmt.Sprintf("aml: invalid EISA ID %q", id))
		}
		v |= uint32(c-0x40) << (26 - 5*uint(i))
	}
	for i := 3; i < 7; i++ {
		var d uint32
		switch c := id[i]; {
		case c >= '0' && c <= '9':
			d = uint32(c - '0')
		case c >= 'A' && c <= 'F':
			d = uint32(c - 'A' + 10)
		default:
			panic(fmt.Sprintf("aml: invalid EISA ID %q", id))
		}
		v |= d << (4 * uint(6-i))
	}
	// The ID is stored big-endian in a little-endian DWord.
	return amlDWord(v>>24 | v>>8&0xff00 | v<<8&0xff_0000 | v<<24)
}

// amlName is Name(path, value).
func amlName(path string, value []byte) []byte {
	return concat([]byte{amlNameOp}, amlPath(path), value)
}

// amlPackage is Package() { elements }.
func amlPackage(elements ...[]byte) []byte {
	if len(elements) > 0xff {
		panic("aml: package has too many elements")
	}
	return amlPkg([]byte{amlPackageOp}, concat(append([][]byte{{byte(len(elements))}}, elements...)...))
}

// amlBuffer is Buffer() { data }.
func amlBuffer(data []byte) []byte {
	return amlPkg([]byte{amlBufferOp}, concat(amlInteger(uint64(len(data))), data))
}

// amlResourceTemplate is ResourceTemplate() { descriptors }: a buffer of
// resource descriptors closed by an end tag whose zero checksum means
// "valid".
func amlResourceTemplate(descriptors ...[]byte) []byte {
	return amlBuffer(concat(concat(descriptors...), []byte{rdEndTag, 0}))
}

// amlMemory32Fixed is Memory32Fixed(ReadWrite or ReadOnly, base, length).
func amlMemory32Fixed(readWrite bool, base, length uint32) []byte {
	b := []byte{rdMemory32Fixed, 9, 0, boolByte(readWrite)}
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, length)
}

// amlIO is IO(Decode16, min, max, alignment, length).
func amlIO(minAddr, maxAddr uint16, alignment, length uint8) []byte {
	b := []byte{rdIO, 1}
	b = binary.LittleEndian.AppendUint16(b, minAddr)
	b = binary.LittleEndian.AppendUint16(b, maxAddr)
	return append(b, alignment, length)
}

// amlInterrupt is an extended Interrupt() descriptor for one GSI.
func amlInterrupt(consumer, edge, activeLow, shared bool, gsi uint32) []byte {
	flags := boolByte(consumer) | boolByte(edge)<<1 | boolByte(activeLow)<<2 | boolByte(shared)<<3
	b := []byte{rdExtendedIRQ, 6, 0, flags, 1}
	return binary.LittleEndian.AppendUint32(b, gsi)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// amlDevice is Device(path) { children }.
func amlDevice(path string, children ...[]byte) []byte {
	return amlPkg([]byte{amlExtOpPrefix, amlDeviceOp}, concat(amlPath(path), concat(children...)))
}

// amlScope is Scope(path) { children }.
func amlScope(path string, children ...[]byte) []byte {
	return amlPkg([]byte{amlScopeOp}, concat(amlPath(path), concat(children...)))
}

// amlMethod is Method(path, args, Serialized or NotSerialized) { body }.
func amlMethod(path string, args int, serialized bool, body ...[]byte) []byte {
	if args < 0 || args > 7 {
		panic("aml: a method takes 0 to 7 arguments")
	}
	flags := byte(args) | boolByte(serialized)<<3
	return amlPkg([]byte{amlMethodOp}, concat(amlPath(path), []byte{flags}, concat(body...)))
}

// amlReturn is Return(value).
func amlReturn(value []byte) []byte { return concat([]byte{amlReturnOp}, value) }

// amlArg is ArgN.
func amlArg(n int) []byte {
	if n < 0 || n > 6 {
		panic("aml: ArgN is Arg0 to Arg6")
	}
	return []byte{amlArg0Op + byte(n)}
}

// amlLEqual is LEqual(a, b).
func amlLEqual(a, b []byte) []byte { return concat([]byte{amlLEqualOp}, a, b) }

// amlIf is If(predicate) { body }.
func amlIf(predicate []byte, body ...[]byte) []byte {
	return amlPkg([]byte{amlIfOp}, concat(predicate, concat(body...)))
}

// amlNotify is Notify(path, value): how a GED _EVT method tells a device
// (VMGenID, VMClock) that its interrupt fired.
func amlNotify(path string, value []byte) []byte {
	return concat([]byte{amlNotifyOp}, amlPath(path), value)
}
