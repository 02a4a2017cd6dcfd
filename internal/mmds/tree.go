package mmds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/squib-vmm/squib/internal/jsonx"
)

// The data store is an immutable tree of plain Go values:
//
//	map[string]any, []any, string, json.Number, bool, nil (JSON null)
//
// Trees are never modified once built, so a patched store may share
// untouched subtrees with the previous one and readers need no lock.

// ErrInvalidJSON wraps every failure to parse a document handed to the store.
// The API layer normally decodes the body itself first and reports serde's
// wording; this error only guards the store's own entry points.
var ErrInvalidJSON = errors.New("invalid JSON")

// parseJSON decodes raw into a tree, keeping number literals verbatim.
func parseJSON(raw []byte) (any, error) {
	// encoding/json silently replaces invalid UTF-8; serde_json refuses it,
	// and so do we.
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrInvalidJSON)
	}
	// Valid also rejects trailing data, which a Decoder would leave unread.
	if !json.Valid(raw) {
		var probe any
		err := json.Unmarshal(raw, &probe)
		if err == nil {
			err = errors.New("syntax error")
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return v, nil
}

// normalize turns an arbitrary Go value into a tree by a JSON round trip, so
// that callers' maps are never aliased by the store.
func normalize(v any) (any, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return parseJSON(raw)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return parseJSON(raw)
}

// appendJSON serializes v compactly with sorted keys and serde_json's string
// escaping, so sizes and output match Firecracker byte for byte (numbers
// aside).
func appendJSON(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, x)
	case json.Number:
		return append(b, x...)
	case string:
		return appendString(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	case map[string]any:
		b = append(b, '{')
		for i, k := range sortedKeys(x) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendJSON(b, x[k])
		}
		return append(b, '}')
	default:
		// Unreachable for trees built by parseJSON; fail loudly in tests
		// rather than emit something that is not JSON.
		panic(fmt.Sprintf("mmds: unexpected tree node %T", v))
	}
}

// sortedKeys returns m's keys in byte order, the order of serde_json's
// BTreeMap-backed objects.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendString quotes s as serde_json does (jsonx): no HTML or U+2028
// escaping, unlike encoding/json.
func appendString(b []byte, s string) []byte { return jsonx.AppendString(b, s) }

// mergePatch returns target with patch applied as an RFC 7396 merge patch,
// exactly as Firecracker's json_patch: a non-object patch replaces the
// target, a null member deletes, object members merge recursively (a
// missing or non-object target member starts out as {}). Neither input is
// modified; maps along the patched paths are copied.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, _ := target.(map[string]any)
	out := make(map[string]any, len(t)+len(p))
	for k, v := range t {
		out[k] = v
	}
	for k, pv := range p {
		if pv == nil {
			delete(out, k)
			continue
		}
		out[k] = mergePatch(out[k], pv)
	}
	return out
}

// pointer resolves an RFC 6901 JSON pointer the way serde_json's
// Value::pointer does: "" is the whole document, anything else must start
// with '/', "~1" and "~0" are unescaped, and array indexes are plain decimal
// without sign or leading zeros.
func pointer(root any, ptr string) (any, bool) {
	if ptr == "" {
		return root, true
	}
	if ptr[0] != '/' {
		return nil, false
	}
	cur := root
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, ok := parseIndex(tok)
			if !ok || i >= len(x) {
				return nil, false
			}
			cur = x[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// parseIndex accepts what serde_json's parse_index accepts.
func parseIndex(s string) (int, bool) {
	if s == "" || (s[0] == '0' && len(s) != 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		// Any index this large is out of range of a ≤ limit-sized store.
		if n > 1<<40 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// formatIMDS renders v in the EC2 IMDS text format: an object lists its keys
// one per line (sorted, sub-objects suffixed with '/', no final newline), a
// string is printed raw, and anything else is unsupported.
func formatIMDS(v any) ([]byte, error) {
	switch x := v.(type) {
	case map[string]any:
		var b []byte
		for i, k := range sortedKeys(x) {
			if i > 0 {
				b = append(b, '\n')
			}
			b = append(b, k...)
			if _, ok := x[k].(map[string]any); ok {
				b = append(b, '/')
			}
		}
		if b == nil {
			b = []byte{}
		}
		return b, nil
	case string:
		return []byte(x), nil
	default:
		return nil, ErrUnsupportedValueType
	}
}
