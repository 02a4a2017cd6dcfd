package jsonx

import (
	"strings"
	"testing"
)

type bucket struct {
	Size       *uint64 `json:"size" squib:"required"`
	RefillTime *uint64 `json:"refill_time" squib:"required"`
	_          Lenient
}

type limiter struct {
	Bandwidth *bucket `json:"bandwidth"`
	Ops       *bucket `json:"ops"`
}

type machine struct {
	VcpuCount  *uint8    `json:"vcpu_count" squib:"required"`
	MemSizeMib *uint64   `json:"mem_size_mib" squib:"required"`
	Smt        *bool     `json:"smt"`
	Limiter    *limiter  `json:"rate_limiter"`
	Mode       *testMode `json:"mode"`
}

type testMode string

func (m *testMode) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s != "V1" && s != "V2" {
		return &VariantError{Got: s, Variants: []string{"V1", "V2"}}
	}
	*m = testMode(s)
	return nil
}

func TestDecodeMessages(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"mem_size_mib": 128}`, "missing field `vcpu_count` at line 1 column 21"},
		{`{"vcpu_count": 2}`, "missing field `mem_size_mib` at line 1 column 17"},
		{`{"vcpu_count":2,"mem_size_mib":1,"bogus":1}`, "unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, `smt`, `rate_limiter`, `mode`"},
		{`{"VCPU_COUNT":2,"mem_size_mib":1}`, "unknown field `VCPU_COUNT`"},
		{`{"vcpu_count":2,"vcpu_count":3,"mem_size_mib":1}`, "duplicate field `vcpu_count`"},
		{`{"vcpu_count":2,"mem_size_mib":1}{}`, "trailing characters"},
		{`{"vcpu_count":256,"mem_size_mib":1}`, "invalid value: integer `256`, expected u8"},
		{`{"vcpu_count":"-2","mem_size_mib":1}`, `invalid type: string "-2", expected u8`},
		{`{"vcpu_count":2,"mem_size_mib":1,"smt":"random_string"}`, `invalid type: string "random_string", expected a boolean`},
		{`{"vcpu_count":2,"mem_size_mib":18446744073709551616}`, "invalid type: floating point"},
		{`{"vcpu_count":2,"mem_size_mib":1,"mode":"foo"}`, "unknown variant `foo`, expected `V1` or `V2`"},
		{``, "EOF while parsing a value at line 1 column 0"},
		{`x`, "expected value at line 1 column 1"},
		{`{"vcpu_count":2,"mem_size_mib":1,"rate_limiter":{"bandwidth":{"size":1}}}`, "missing field `refill_time`"},
		{`{"vcpu_count":2,"mem_size_mib":1,"rate_limiter":{"foo":{}}}`, "unknown field `foo`, expected `bandwidth` or `ops`"},
	}
	for _, c := range cases {
		var m machine
		err := Decode([]byte(c.in), &m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%s) = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestDecodeAccepts(t *testing.T) {
	for _, in := range []string{
		`{"vcpu_count":2,"mem_size_mib":128}`,
		`{"vcpu_count":2,"mem_size_mib":128,"smt":null,"rate_limiter":null}`,
		// TokenBucket ignores unknown members, as Firecracker's does.
		`{"vcpu_count":2,"mem_size_mib":128,"rate_limiter":{"ops":{"size":1,"refill_time":2,"extra":3}}}`,
	} {
		var m machine
		if err := Decode([]byte(in), &m); err != nil {
			t.Errorf("Decode(%s) = %v", in, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"vcpu_count":2,"mem_size_mib":128,"rate_limiter":{"ops":{"size":1,"refill_time":2}}}`))
	f.Add([]byte(`{"vcpu_count":2,"vcpu_count":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m machine
		_ = Decode(b, &m)
	})
}
