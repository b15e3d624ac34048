package bindings

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// A JSON value as parsed by parseJSON is one of: nil (null), bool,
// json.Number, string, []any or *object. Objects keep their keys in source
// order, so properties are declared in the order the schema's author wrote
// them.
type object struct {
	keys []string
	vals map[string]any
}

// get returns the value of key, or nil.
func (o *object) get(key string) any {
	if o == nil {
		return nil
	}
	return o.vals[key]
}

// has reports whether key is present (its value may be null).
func (o *object) has(key string) bool {
	if o == nil {
		return false
	}
	_, ok := o.vals[key]
	return ok
}

// str returns the value of key when it is a string.
func (o *object) str(key string) (string, bool) {
	s, ok := o.get(key).(string)
	return s, ok
}

// obj returns the value of key when it is an object.
func (o *object) obj(key string) *object {
	v, _ := o.get(key).(*object)
	return v
}

// arr returns the value of key when it is an array.
func (o *object) arr(key string) []any {
	v, _ := o.get(key).([]any)
	return v
}

// boolean returns the value of key when it is a boolean.
func (o *object) boolean(key string) (value, ok bool) {
	value, ok = o.get(key).(bool)
	return value, ok
}

// errNotJSON is returned by parseJSON for input that is not one JSON value.
var errNotJSON = errors.New("not a JSON value")

// parseJSON parses one JSON value, keeping the order of object keys. A
// repeated key keeps its first position and its last value, and strings
// decode as encoding/json decodes them (invalid UTF-8 becomes U+FFFD).
func parseJSON(data []byte) (any, error) {
	if !json.Valid(data) { // also bounds the nesting depth
		return nil, errNotJSON
	}
	p := parser{data: data}
	return p.value(), nil
}

// parser reads JSON that json.Valid accepted, so it needs no error paths.
type parser struct {
	data []byte
	i    int
}

func (p *parser) skipSpace() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value() any {
	p.skipSpace()
	switch p.data[p.i] {
	case '{':
		p.i++
		o := &object{vals: map[string]any{}}
		for {
			p.skipSpace()
			switch p.data[p.i] {
			case '}':
				p.i++
				return o
			case ',':
				p.i++
				p.skipSpace()
			}
			key := p.str()
			p.skipSpace()
			p.i++ // ':'
			v := p.value()
			if _, dup := o.vals[key]; !dup {
				o.keys = append(o.keys, key)
			}
			o.vals[key] = v
		}
	case '[':
		p.i++
		a := []any{}
		for {
			p.skipSpace()
			switch p.data[p.i] {
			case ']':
				p.i++
				return a
			case ',':
				p.i++
			}
			a = append(a, p.value())
		}
	case '"':
		return p.str()
	case 't':
		p.i += len("true")
		return true
	case 'f':
		p.i += len("false")
		return false
	case 'n':
		p.i += len("null")
		return nil
	}
	start := p.i
	for p.i < len(p.data) && strings.IndexByte("+-0123456789.eE", p.data[p.i]) >= 0 {
		p.i++
	}
	return json.Number(p.data[start:p.i])
}

// str reads a string literal.
func (p *parser) str() string {
	start := p.i
	p.i++ // opening quote
	escaped := false
	for p.data[p.i] != '"' {
		if p.data[p.i] == '\\' {
			escaped = true
			p.i++
		}
		p.i++
	}
	p.i++
	raw := p.data[start:p.i]
	if !escaped && utf8.Valid(raw) {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	_ = json.Unmarshal(raw, &s) // a valid literal always decodes
	return s
}

// appendJSON appends the compact JSON text of a value from parseJSON.
func appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		if v {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case json.Number:
		return append(b, v...)
	case string:
		return appendQuoted(b, v)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	case *object:
		b = append(b, '{')
		for i, k := range v.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, k)
			b = append(b, ':')
			b = appendJSON(b, v.vals[k])
		}
		return append(b, '}')
	}
	return append(b, "null"...)
}

// appendQuoted appends s as a double-quoted string literal that is valid
// JSON, JavaScript and TypeScript alike: invalid UTF-8 becomes U+FFFD, and
// control characters, U+2028 and U+2029 are escaped.
func appendQuoted(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// quote returns s as a double-quoted string literal (see appendQuoted).
func quote(s string) string {
	if isPlainASCII(s) {
		return `"` + s + `"`
	}
	return string(appendQuoted(nil, s))
}

// isPlainASCII reports whether s is printable ASCII without quotes or
// backslashes, so that quoting it needs no escapes.
func isPlainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// jsonText returns the compact JSON text of a parsed value.
func jsonText(v any) string {
	return string(appendJSON(nil, v))
}
