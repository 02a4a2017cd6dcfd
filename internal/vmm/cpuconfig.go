package vmm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// CPUConfig is a custom CPU template (PUT /cpu-config), x86_64 form. Only
// its top level rejects unknown members, as in Firecracker.
type CPUConfig struct {
	KvmCapabilities []KvmCapability     `json:"kvm_capabilities"`
	CpuidModifiers  []CpuidLeafModifier `json:"cpuid_modifiers"`
	MsrModifiers    []RegisterModifier  `json:"msr_modifiers"`
}

// KvmCapability is a KVM capability number the template requires ("N") or
// removes from the required set ("!N").
type KvmCapability struct {
	Cap    uint32
	Remove bool
}

// UnmarshalJSON parses "N" or "!N".
func (k *KvmCapability) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return &jsonx.ValueError{Msg: "invalid type: " + string(b) + ", expected a string"}
	}
	num, remove := strings.CutPrefix(s, "!")
	v, perr := strconv.ParseUint(num, 10, 32)
	if perr != nil {
		return &jsonx.ValueError{Msg: fmt.Sprintf("Failed to parse string [%s] as a kvm capability - can not convert to numeric: %s", s, rustParseIntText(num))}
	}
	*k = KvmCapability{Cap: uint32(v), Remove: remove}
	return nil
}

// rustParseIntText mirrors Rust's ParseIntError display.
func rustParseIntText(s string) string {
	if s == "" {
		return "cannot parse integer from empty string"
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return "invalid digit found in string"
		}
	}
	return "number too large to fit in target type"
}

// CpuidLeafModifier changes registers of one CPUID leaf and subleaf.
type CpuidLeafModifier struct {
	Leaf      TemplateNumber32        `json:"leaf" squib:"required"`
	Subleaf   TemplateNumber32        `json:"subleaf" squib:"required"`
	Flags     *uint32                 `json:"flags" squib:"required"`
	Modifiers []CpuidRegisterModifier `json:"modifiers" squib:"required"`
	_         jsonx.Lenient
}

// CpuidRegisterModifier applies a bitmap to one CPUID output register.
type CpuidRegisterModifier struct {
	Register *CpuidRegister `json:"register" squib:"required"`
	Bitmap   Bitmap32       `json:"bitmap" squib:"required"`
	_        jsonx.Lenient
}

// CpuidRegister is eax, ebx, ecx or edx.
type CpuidRegister string

// UnmarshalJSON accepts the four register names.
func (r *CpuidRegister) UnmarshalJSON(b []byte) error {
	s, err := variant(b, []string{"eax", "ebx", "ecx", "edx"})
	*r = CpuidRegister(s)
	return err
}

// RegisterModifier applies a bitmap to an MSR.
type RegisterModifier struct {
	Addr   TemplateNumber32 `json:"addr" squib:"required"`
	Bitmap Bitmap64         `json:"bitmap" squib:"required"`
	_      jsonx.Lenient
}

// TemplateNumber32 is a number written as a "0x" or "0b" string. It is a
// pointer-like optional so that `squib:"required"` can see its absence.
type TemplateNumber32 = *templateNumber

type templateNumber struct{ V uint64 }

// UnmarshalJSON parses the prefixed string as Firecracker does.
func (n *templateNumber) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return &jsonx.ValueError{Msg: "invalid type: " + string(b) + ", expected a string"}
	}
	var v uint64
	var perr error
	switch {
	case strings.HasPrefix(s, "0b"):
		v, perr = strconv.ParseUint(s[2:], 2, 32)
	case strings.HasPrefix(s, "0x"):
		v, perr = strconv.ParseUint(s[2:], 16, 32)
	default:
		return &jsonx.ValueError{Msg: fmt.Sprintf("No supported number system prefix found in value [%s]. Make sure to prefix the number with '0x' for hexadecimal numbers or '0b' for binary numbers.", s)}
	}
	if perr != nil {
		return &jsonx.ValueError{Msg: fmt.Sprintf("Failed to parse string [%s] as a number for CPU template", s)}
	}
	n.V = v
	return nil
}

// Bitmap32 and Bitmap64 are tri-state register filters: "0b" then up to 32
// or 64 characters of 0, 1 or x (x leaves the bit alone); '_' separates.
type (
	Bitmap32 = *bitmap32
	Bitmap64 = *bitmap64
)

type bitmap32 struct{ Filter, Value uint64 }
type bitmap64 struct{ Filter, Value uint64 }

// UnmarshalJSON parses a 32-bit tri-state bitmap.
func (b *bitmap32) UnmarshalJSON(data []byte) error {
	f, v, err := parseBitmap(data, 32)
	b.Filter, b.Value = f, v
	return err
}

// UnmarshalJSON parses a 64-bit tri-state bitmap.
func (b *bitmap64) UnmarshalJSON(data []byte) error {
	f, v, err := parseBitmap(data, 64)
	b.Filter, b.Value = f, v
	return err
}

func parseBitmap(data []byte, bits int) (filter, value uint64, err error) {
	orig, uerr := strconv.Unquote(string(data))
	if uerr != nil {
		return 0, 0, &jsonx.ValueError{Msg: "invalid type: " + string(data) + ", expected a string"}
	}
	s := strings.TrimPrefix(orig, "0b")
	i := 0
	for j := len(s) - 1; j >= 0; j-- {
		c := s[j]
		if c == '_' {
			continue
		}
		if i == bits {
			return 0, 0, &jsonx.ValueError{Msg: fmt.Sprintf("Failed to parse string [%s] as a bitmap - string is too long", orig)}
		}
		switch c {
		case 'x':
		case '0':
			filter |= 1 << i
		case '1':
			filter |= 1 << i
			value |= 1 << i
		default:
			return 0, 0, &jsonx.ValueError{Msg: fmt.Sprintf("Failed to parse string [%s] as a bitmap - unknown character: %d", orig, c)}
		}
		i++
	}
	return filter, value, nil
}
