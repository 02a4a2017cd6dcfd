// Package jsonx decodes JSON request bodies and configuration files as
// strictly as Firecracker's serde models do, and reports failures with
// serde_json's wording so that clients matching on Firecracker's messages
// keep working.
//
// Strictness: unknown members, wrong-case keys, duplicate keys, trailing data
// and wrong types are all rejected. Required members are marked with the
// struct tag `squib:"required"` on a pointer (or slice/map) field; optional
// members accept an explicit null, as the Firecracker Go SDK sends them.
// A struct whose unknown members must be ignored (Firecracker's TokenBucket,
// MetricsConfig, ...) carries a field `_ jsonx.Lenient`.
package jsonx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Lenient, embedded as a blank field, makes Decode ignore unknown members of
// that struct, matching serde structs without deny_unknown_fields.
type Lenient struct{}

var lenientType = reflect.TypeFor[Lenient]()

// Error is a decoding failure whose text follows serde_json.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// VariantError is returned by enum types' UnmarshalJSON for a string that
// names no variant; Decode reports it as serde's "unknown variant".
type VariantError struct {
	Got      string
	Variants []string
}

func (e *VariantError) Error() string {
	return fmt.Sprintf("unknown variant `%s`, expected %s", e.Got, expectList(e.Variants))
}

// ValueError lets a custom UnmarshalJSON report a message verbatim (for
// example "The provided MAC address is invalid.").
type ValueError struct{ Msg string }

func (e *ValueError) Error() string { return e.Msg }

// expectList renders candidates as serde does: "`a`", "`a` or `b`",
// "one of `a`, `b`, `c`".
func expectList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "`" + n + "`"
	}
	switch len(q) {
	case 0:
		return "nothing"
	case 1:
		return q[0]
	case 2:
		return q[0] + " or " + q[1]
	}
	return "one of " + strings.Join(q, ", ")
}

// Decode unmarshals data into v (a pointer to a struct, usually) and checks
// required members. The error, if any, is an *Error with serde's text.
func Decode(data []byte, v any) error {
	err := json.Unmarshal(data, v, json.RejectUnknownMembers(true))
	if err != nil {
		// Retry leniently only to learn whether every unknown member sits in
		// a Lenient struct; the normal path pays nothing for this.
		if isUnknown(err) && allUnknownLenient(data, v) {
			err = json.Unmarshal(data, v, json.RejectUnknownMembers(false))
		}
	}
	if err != nil {
		return translate(data, v, err)
	}
	if msg := checkRequired(reflect.ValueOf(v)); msg != "" {
		return &Error{Msg: msg + " at " + position(data, int64(len(bytes.TrimRight(data, " \t\r\n"))))}
	}
	return nil
}

func isUnknown(err error) bool {
	var se *json.SemanticError
	return errors.As(err, &se) && errors.Is(se.Err, json.ErrUnknownName)
}

// allUnknownLenient walks the document alongside the Go type and reports
// whether each unknown member belongs to a struct marked Lenient.
func allUnknownLenient(data []byte, v any) bool {
	var doc any
	if json.Unmarshal(data, &doc) != nil {
		return false
	}
	return lenientOK(doc, reflect.TypeOf(v))
}

func lenientOK(doc any, t reflect.Type) bool {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return true
		}
		fields := jsonFields(t)
		lenient := hasLenient(t)
		for k, val := range obj {
			f, ok := fields[k]
			if !ok {
				if !lenient {
					return false
				}
				continue
			}
			if !lenientOK(val, f.Type) {
				return false
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := doc.([]any)
		if !ok {
			return true
		}
		for _, e := range arr {
			if !lenientOK(e, t.Elem()) {
				return false
			}
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			return true
		}
		for _, e := range obj {
			if !lenientOK(e, t.Elem()) {
				return false
			}
		}
	}
	return true
}

func hasLenient(t reflect.Type) bool {
	for i := range t.NumField() {
		if t.Field(i).Type == lenientType {
			return true
		}
	}
	return false
}

// jsonFields maps JSON member names to struct fields, in declaration order
// through fieldNames.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for _, f := range structFields(t) {
		m[jsonName(f)] = f
	}
	return m
}

func structFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		out = append(out, f)
	}
	return out
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for _, f := range structFields(t) {
		names = append(names, jsonName(f))
	}
	return names
}

// checkRequired reports the first required member that is absent, as
// serde's "missing field `x`".
func checkRequired(v reflect.Value) string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		for _, f := range structFields(v.Type()) {
			fv := v.FieldByIndex(f.Index)
			if f.Tag.Get("squib") == "required" {
				switch fv.Kind() {
				case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
					if fv.IsNil() {
						return "missing field `" + jsonName(f) + "`"
					}
				}
			}
			if msg := checkRequired(fv); msg != "" {
				return msg
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if msg := checkRequired(v.Index(i)); msg != "" {
				return msg
			}
		}
	}
	return ""
}

// position renders a byte offset as serde's "line L column C".
func position(data []byte, off int64) string {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	prefix := data[:off]
	line := bytes.Count(prefix, []byte{'\n'}) + 1
	col := off - int64(bytes.LastIndexByte(prefix, '\n')+1)
	return fmt.Sprintf("line %d column %d", line, col)
}

func translate(data []byte, v any, err error) error {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &sem):
		return &Error{Msg: semanticText(data, v, sem)}
	case errors.As(err, &syn):
		return &Error{Msg: syntacticText(data, syn)}
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return &Error{Msg: "EOF while parsing a value at " + position(data, int64(len(data)))}
	}
	return &Error{Msg: err.Error()}
}

func syntacticText(data []byte, e *jsontext.SyntacticError) string {
	pos := position(data, e.ByteOffset+1)
	switch {
	case errors.Is(e.Err, io.ErrUnexpectedEOF):
		if len(bytes.TrimSpace(data)) == 0 {
			return "EOF while parsing a value at " + position(data, int64(len(data)))
		}
		return "EOF while parsing an object at " + position(data, int64(len(data)))
	case errors.Is(e.Err, jsontext.ErrDuplicateName):
		tok := e.JSONPointer.LastToken()
		return "duplicate field `" + tok + "` at " + pos
	}
	msg := e.Err.Error()
	if strings.Contains(msg, "after top-level value") {
		return "trailing characters at " + pos
	}
	if e.ByteOffset == 0 {
		return "expected value at " + pos
	}
	return strings.TrimPrefix(msg, "jsontext: ") + " at " + pos
}

func semanticText(data []byte, v any, e *json.SemanticError) string {
	pos := position(data, e.ByteOffset+1)
	var ve *VariantError
	var vv *ValueError
	var syn *jsontext.SyntacticError
	switch {
	case errors.As(e.Err, &ve):
		return ve.Error() + " at " + pos
	case errors.As(e.Err, &vv):
		return vv.Msg
	case errors.Is(e.Err, json.ErrUnknownName):
		name := e.JSONPointer.LastToken()
		parent := typeAt(reflect.TypeOf(v), e.JSONPointer)
		expected := ""
		if parent != nil {
			expected = ", expected " + expectList(fieldNames(parent))
		}
		return "unknown field `" + name + "`" + expected + " at " + position(data, e.ByteOffset+int64(len(name))+2)
	case errors.As(e.Err, &syn):
		return syntacticText(data, syn)
	}
	if len(e.JSONValue) == 0 && e.ByteOffset < int64(len(data)) {
		// The decoder does not always record the offending value; read it
		// back from the input so the message can quote it.
		if val, err := jsontext.NewDecoder(bytes.NewReader(data[e.ByteOffset:])).ReadValue(); err == nil {
			e.JSONValue = val
		}
	}
	return invalidTypeText(e) + " at " + pos
}

// typeAt finds the struct type that holds the member named by the last token
// of p.
func typeAt(t reflect.Type, p jsontext.Pointer) reflect.Type {
	toks := []string{}
	for tok := range p.Tokens() {
		toks = append(toks, tok)
	}
	if len(toks) > 0 {
		toks = toks[:len(toks)-1]
	}
	for _, tok := range toks {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			f, ok := jsonFields(t)[tok]
			if !ok {
				return nil
			}
			t = f.Type
		case reflect.Slice, reflect.Array, reflect.Map:
			t = t.Elem()
		default:
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

// invalidTypeText produces serde's "invalid type: <got>, expected <want>"
// or "invalid value: integer `N`, expected u8" messages.
func invalidTypeText(e *json.SemanticError) string {
	want := "a valid value"
	if e.GoType != nil {
		want = expectName(e.GoType)
	}
	got := ""
	val := string(e.JSONValue)
	switch e.JSONKind {
	case 'n':
		got = "null"
	case 't', 'f':
		got = "boolean `" + val + "`"
		if val == "" {
			got = "boolean"
		}
	case '"':
		s, err := strconv.Unquote(val)
		if err != nil {
			s = strings.Trim(val, `"`)
		}
		got = "string " + strconv.Quote(s)
	case '0':
		if n, err := strconv.ParseInt(val, 10, 64); err == nil {
			if e.GoType != nil && isInt(e.GoType) {
				return "invalid value: integer `" + val + "`, expected " + want
			}
			_ = n
			got = "integer `" + val + "`"
		} else if _, err := strconv.ParseUint(val, 10, 64); err == nil {
			if e.GoType != nil && isInt(e.GoType) {
				return "invalid value: integer `" + val + "`, expected " + want
			}
			got = "integer `" + val + "`"
		} else {
			f, _ := strconv.ParseFloat(val, 64)
			got = "floating point `" + formatFloat(f) + "`"
		}
	case '{', '}':
		got = "map"
	case '[', ']':
		got = "sequence"
	default:
		if e.Err != nil {
			return strings.TrimPrefix(e.Err.Error(), "json: ")
		}
		return "invalid value"
	}
	return "invalid type: " + got + ", expected " + want
}

func formatFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func isInt(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// expectName names a Go type the way serde names the Rust type it stands
// for.
func expectName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n, ok := reflect.New(t).Interface().(interface{ Expecting() string }); ok {
		return n.Expecting()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Uint8:
		return "u8"
	case reflect.Uint16:
		return "u16"
	case reflect.Uint32:
		return "u32"
	case reflect.Uint64:
		return "u64"
	case reflect.Uint:
		return "usize"
	case reflect.Int8:
		return "i8"
	case reflect.Int16:
		return "i16"
	case reflect.Int32:
		return "i32"
	case reflect.Int64, reflect.Int:
		return "i64"
	case reflect.Slice, reflect.Array:
		return "a sequence"
	case reflect.Map:
		return "a map"
	case reflect.Struct:
		return "struct " + t.Name()
	}
	return t.String()
}

// Marshal encodes v with the settings squib uses for every response: struct
// field order, no HTML escaping surprises.
func Marshal(v any) ([]byte, error) {
	return json.Marshal(v, json.Deterministic(true))
}
