package config

import (
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Node is one value of a configuration file as written: decoded by the
// codecs Load uses, before environment overrides, interpolation, defaults
// and validation (a `${VAR}` reference is still the reference). It knows
// its key path, spelled as [Problem] paths are, and the Config type the
// loader decodes it into, so that [Node.Get] matches keys by the loader's
// rules. A Node whose key the file does not hold has a path but no value.
type Node struct {
	path, key string
	t         reflect.Type // nil where Config has no type for the value
	v         any
}

// rootNode is the whole document raw.
func rootNode(raw map[string]any) Node { return Node{t: configType, v: raw} }

// Path is the key path of the value, such as `mcpServers.api.url` or
// `projects.team.mcpServers.api.args[2]` ("" for the whole file).
func (n Node) Path() string { return n.path }

// Key is the key the value sits under in its parent ("" for the whole
// file and for the elements of a list).
func (n Node) Key() string { return n.key }

// Exists reports whether the file gives the value: the key is present
// and not null.
func (n Node) Exists() bool { return n.v != nil }

// Text returns the value if it is a string.
func (n Node) Text() (string, bool) {
	s, ok := n.v.(string)
	return s, ok
}

// Get returns the value under key. In an object of settings (a struct
// of Config, such as a server) key names the setting: it is matched
// against the keys of the file exactly first, then regardless of case,
// as the loader matches them, and the path spells it as Config's field
// tag does. In a map of names (projects, mcpServers, headers, env) key
// is matched exactly.
func (n Node) Get(key string) Node {
	m, _ := asMap(n.v)
	switch t := n.t; {
	case t != nil && t.Kind() == reflect.Struct && t != durationType:
		name, ft, ok := lookupField(keysOf(t), key)
		if !ok {
			return Node{path: child(n.path, key), key: key}
		}
		out := Node{path: child(n.path, name), key: name, t: deref(ft)}
		if k, ok := fieldKey(m, name); ok {
			out.v = m[k]
		}
		return out
	case t != nil && t.Kind() == reflect.Map:
		return Node{path: child(n.path, key), key: key, t: deref(t.Elem()), v: m[key]}
	default:
		return Node{path: child(n.path, key), key: key, v: m[key]}
	}
}

// Index returns element i of a list (a value without an element i
// when the value is not a list that long).
func (n Node) Index(i int) Node {
	out := Node{path: index(n.path, i)}
	if n.t != nil && n.t.Kind() == reflect.Slice {
		out.t = deref(n.t.Elem())
	}
	if list, ok := n.v.([]any); ok && i >= 0 && i < len(list) {
		out.v = list[i]
	}
	return out
}

// Entries returns the entries of an object, sorted by key as written;
// nil when the value is not an object. Keys that are not strings (which
// YAML allows and the loader refuses) are left out.
func (n Node) Entries() []Node {
	m, _ := asMap(n.v)
	out := make([]Node, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, n.Get(k))
	}
	return out
}

// Elems returns the elements of a list; nil when the value is not a list.
func (n Node) Elems() []Node {
	list, _ := n.v.([]any)
	out := make([]Node, 0, len(list))
	for i := range list {
		out = append(out, n.Index(i))
	}
	return out
}

func deref(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}

// fieldKey returns the key of m that holds the setting named name, by
// the rule the loader decodes with (see loader.cleanStruct): the key
// spelled exactly as name, else the first key in sorted order that
// equals it regardless of case.
func fieldKey(m map[string]any, name string) (string, bool) {
	if _, ok := m[name]; ok {
		return name, true
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}

// asMap returns v as a map with string keys. A YAML mapping decoded as
// map[any]any is copied, without the keys that are not strings; ok is
// false when v is not a mapping or had such keys.
func asMap(v any) (m map[string]any, ok bool) {
	switch x := v.(type) {
	case map[string]any:
		return x, true
	case map[any]any:
		m, ok = make(map[string]any, len(x)), true
		for k, e := range x {
			s, isStr := k.(string)
			if !isStr {
				ok = false
				continue
			}
			m[s] = e
		}
		return m, ok
	}
	return nil, false
}
