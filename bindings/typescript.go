package bindings

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
)

// Limits that keep the rendering of hostile or broken schemas bounded.
const (
	// maxDepth is how deep the renderer follows nested schemas; deeper
	// parts become unknown.
	maxDepth = 32
	// maxNamedTypes is how many $ref targets one tool may name; further
	// references become unknown.
	maxNamedTypes = 64
	// maxDefaultLen is the longest @default value shown in JSDoc.
	maxDefaultLen = 120
)

// Operator precedence of a rendered type, to know when to add parentheses.
const (
	precPrimary      = iota // string, Foo, { ... }, T[], "a"
	precIntersection        // A & B
	precUnion               // A | B
)

// tsType is a rendered TypeScript type.
type tsType struct {
	text string
	prec int
}

var (
	tsUnknown = tsType{text: "unknown"}
	tsNever   = tsType{text: "never"}
)

// schemaRoot is one schema of a tool (its input or its output), against
// which "#..." references resolve.
type schemaRoot struct {
	value any    // parsed schema
	label string // type name suffix for a reference to the whole schema
}

// refKey names a reference target: a JSON pointer within one root.
type refKey struct {
	root int
	ptr  string
}

// namedType is a reference target waiting to be emitted as a type alias.
type namedType struct {
	name string
	root int
	node any
}

// schemaRenderer renders the schemas of one tool to TypeScript types.
// Every $ref target becomes a type alias named prefix+<name>, emitted once
// (which also ends recursion).
type schemaRenderer struct {
	names   *typeNames
	prefix  string
	roots   []schemaRoot
	refs    map[refKey]string
	pending []namedType
}

// render renders node, a schema from roots[root], for a position indented
// by indent levels.
func (r *schemaRenderer) render(node any, root, indent, depth int) tsType {
	if depth > maxDepth {
		return tsUnknown
	}
	switch n := node.(type) {
	case bool:
		if n {
			return tsUnknown
		}
		return tsNever
	case *object:
		return r.renderObject(n, root, indent, depth)
	}
	return tsUnknown
}

func (r *schemaRenderer) renderObject(o *object, root, indent, depth int) tsType {
	if c, ok := o.vals["const"]; ok {
		if lit, ok := literal(c); ok {
			return tsType{text: lit}
		}
	}
	var parts []tsType // intersected
	if ref, ok := o.str("$ref"); ok {
		parts = append(parts, r.ref(root, ref))
	}
	parts = append(parts, r.base(o, root, indent, depth))
	for _, key := range [...]string{"anyOf", "oneOf"} {
		if members := o.arr(key); len(members) > 0 { // an empty list is invalid; ignore it
			ts := make([]tsType, 0, len(members))
			for _, m := range members {
				ts = append(ts, r.render(m, root, indent, depth+1))
			}
			parts = append(parts, union(ts))
		}
	}
	for _, m := range o.arr("allOf") {
		parts = append(parts, r.render(m, root, indent, depth+1))
	}
	return intersection(parts)
}

// base renders what o says without combinators: enum, or its types.
func (r *schemaRenderer) base(o *object, root, indent, depth int) tsType {
	nullable, _ := o.boolean("nullable")
	if enum, ok := o.vals["enum"].([]any); ok {
		members := make([]tsType, 0, len(enum)+1)
		all := true
		for _, e := range enum {
			lit, ok := literal(e)
			if !ok {
				all = false
				break
			}
			members = append(members, tsType{text: lit})
		}
		if all {
			if nullable {
				members = append(members, tsType{text: "null"})
			}
			return union(members)
		}
	}
	var types []string
	switch t := o.vals["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok {
				types = append(types, s)
			}
		}
	default:
		switch {
		case o.has("properties") || o.has("additionalProperties") || o.has("patternProperties"):
			types = []string{"object"}
		case o.has("items") || o.has("prefixItems"):
			types = []string{"array"}
		}
	}
	if len(types) == 0 {
		return tsUnknown // nullable alone says nothing about the type
	}
	members := make([]tsType, 0, len(types)+1)
	for _, t := range types {
		switch t {
		case "string", "number", "boolean", "null":
			members = append(members, tsType{text: t})
		case "integer":
			members = append(members, tsType{text: "number"})
		case "object":
			members = append(members, r.objectType(o, root, indent, depth))
		case "array":
			members = append(members, r.arrayType(o, root, indent, depth))
		default:
			members = append(members, tsUnknown)
		}
	}
	if nullable {
		members = append(members, tsType{text: "null"})
	}
	return union(members)
}

// objectType renders an object schema as an object type literal.
func (r *schemaRenderer) objectType(o *object, root, indent, depth int) tsType {
	props := o.obj("properties")
	required := map[string]bool{}
	for _, e := range o.arr("required") {
		if s, ok := e.(string); ok {
			required[s] = true
		}
	}
	// The index signature: additionalProperties and patternProperties. An
	// object that says nothing about its keys is a free-form map.
	var index []tsType
	switch ap := o.vals["additionalProperties"].(type) {
	case *object:
		index = append(index, r.render(ap, root, indent+1, depth+1))
	case bool:
		if ap {
			index = append(index, tsUnknown)
		}
	}
	if pp := o.obj("patternProperties"); pp != nil {
		for _, k := range pp.keys {
			index = append(index, r.render(pp.vals[k], root, indent+1, depth+1))
		}
	}
	if len(index) == 0 && !o.has("properties") && !o.has("additionalProperties") && !o.has("patternProperties") {
		if hasCombinator(o) {
			return tsUnknown // the members of anyOf, oneOf, allOf or $ref say it all
		}
		index = append(index, tsUnknown)
	}
	if props == nil || len(props.keys) == 0 {
		if len(index) == 0 {
			return tsType{text: "{}"}
		}
		it := union(index)
		if !strings.Contains(it.text, "\n") {
			return tsType{text: "{ [key: string]: " + it.text + " }"}
		}
	}
	var b strings.Builder
	b.WriteString("{\n")
	if props != nil {
		for _, k := range props.keys {
			p := props.vals[k]
			writeDoc(&b, indent+1, schemaDoc(p))
			writeIndent(&b, indent+1)
			b.WriteString(propKey(k))
			if !required[k] {
				b.WriteByte('?')
			}
			b.WriteString(": ")
			b.WriteString(r.render(p, root, indent+1, depth+1).text)
			b.WriteString(";\n")
		}
	}
	if len(index) > 0 {
		writeIndent(&b, indent+1)
		b.WriteString("[key: string]: ")
		b.WriteString(union(index).text)
		b.WriteString(";\n")
	}
	writeIndent(&b, indent)
	b.WriteByte('}')
	return tsType{text: b.String()}
}

// hasCombinator reports whether o has $ref, anyOf, oneOf or allOf.
func hasCombinator(o *object) bool {
	return o.has("$ref") || o.has("anyOf") || o.has("oneOf") || o.has("allOf")
}

// arrayType renders an array schema as T[] or a tuple.
func (r *schemaRenderer) arrayType(o *object, root, indent, depth int) tsType {
	prefix := o.arr("prefixItems") // 2020-12 tuples
	rest, hasRest := o.vals["items"]
	if prefix == nil {
		if items, ok := rest.([]any); ok { // draft-07 tuples
			prefix = items
			rest, hasRest = o.vals["additionalItems"]
		}
	}
	if prefix == nil && !o.has("prefixItems") {
		elem := tsUnknown
		if hasRest {
			elem = r.render(rest, root, indent, depth+1)
		}
		return tsType{text: parens(elem, precPrimary) + "[]"}
	}
	minItems := len(prefix)
	if n, ok := o.vals["minItems"].(json.Number); ok {
		if m, err := strconv.Atoi(string(n)); err == nil && m >= 0 && m < minItems {
			minItems = m
		}
	}
	elems := make([]string, 0, len(prefix)+1)
	for i, p := range prefix {
		t := r.render(p, root, indent, depth+1)
		if i >= minItems {
			elems = append(elems, parens(t, precPrimary)+"?")
		} else {
			elems = append(elems, t.text)
		}
	}
	if hasRest {
		if b, ok := rest.(bool); !ok || b {
			elems = append(elems, "..."+parens(r.render(rest, root, indent, depth+1), precPrimary)+"[]")
		}
	}
	return tsType{text: "[" + strings.Join(elems, ", ") + "]"}
}

// ref returns the type a "#..." reference names, queuing the target for
// emission the first time it is seen.
func (r *schemaRenderer) ref(root int, ref string) tsType {
	ptr, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return tsUnknown // not local to this schema
	}
	node, ok := resolvePointer(r.roots[root].value, ptr)
	// Follow references that are nothing but a reference, so that an alias
	// never names itself.
	seen := map[string]bool{ptr: true}
	for ok {
		o, isObj := node.(*object)
		if !isObj || len(o.keys) != 1 {
			break
		}
		next, isStr := o.str("$ref")
		if !isStr {
			break
		}
		if ptr, ok = strings.CutPrefix(next, "#"); !ok || seen[ptr] {
			return tsUnknown
		}
		seen[ptr] = true
		node, ok = resolvePointer(r.roots[root].value, ptr)
	}
	if !ok {
		return tsUnknown
	}
	key := refKey{root, canonicalPointer(ptr)}
	if name, ok := r.refs[key]; ok {
		return tsType{text: name}
	}
	if len(r.refs) >= maxNamedTypes {
		return tsUnknown
	}
	name := r.names.alloc(r.prefix + refName(key.ptr, r.roots[root].label))
	if r.refs == nil {
		r.refs = map[refKey]string{}
	}
	r.refs[key] = name
	r.pending = append(r.pending, namedType{name: name, root: root, node: node})
	return tsType{text: name}
}

// writeNamedTypes emits every queued reference target as a type alias,
// including those the emitted ones reference in turn.
func (r *schemaRenderer) writeNamedTypes(b *strings.Builder) {
	for len(r.pending) > 0 {
		nt := r.pending[0]
		r.pending = r.pending[1:]
		writeDoc(b, 0, schemaDoc(nt.node))
		b.WriteString("type ")
		b.WriteString(nt.name)
		b.WriteString(" = ")
		b.WriteString(r.render(nt.node, nt.root, 0, 0).text)
		b.WriteString(";\n")
	}
}

// resolvePointer resolves a JSON pointer (the fragment of a "#..."
// reference, percent-encoded or not) within v.
func resolvePointer(v any, ptr string) (any, bool) {
	if ptr == "" {
		return v, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false // an anchor name; not supported
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		if u, err := url.PathUnescape(tok); err == nil {
			tok = u
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := v.(type) {
		case *object:
			next, ok := n.vals[tok]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				return nil, false
			}
			v = n[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// canonicalPointer returns ptr with percent-encoding undone, so that two
// spellings of one target share a name.
func canonicalPointer(ptr string) string {
	if u, err := url.PathUnescape(ptr); err == nil {
		return u
	}
	return ptr
}

// refName derives a type name from a JSON pointer: "/$defs/Entity" ->
// "Entity", "/properties/entities/items" -> "EntitiesItem", "" -> label.
func refName(ptr, label string) string {
	if ptr == "" {
		return label
	}
	toks := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	for i, tok := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
	}
	if n := len(toks); n >= 2 && (toks[n-2] == "$defs" || toks[n-2] == "definitions") {
		if p := pascal(toks[n-1]); p != "" {
			return p
		}
	}
	var b strings.Builder
	for _, tok := range toks {
		switch tok {
		case "properties", "$defs", "definitions", "anyOf", "oneOf", "allOf",
			"prefixItems", "additionalProperties", "patternProperties":
		case "items":
			b.WriteString("Item")
		default:
			b.WriteString(pascal(tok))
		}
	}
	if b.Len() == 0 {
		return "Type"
	}
	return b.String()
}

// union joins members with |: unknown absorbs everything, never vanishes,
// duplicates are dropped, and intersections get parentheses.
func union(members []tsType) tsType {
	var out []tsType
	seen := map[string]bool{}
	for _, m := range members {
		switch m.text {
		case "unknown":
			return tsUnknown
		case "never":
			continue
		}
		if !seen[m.text] {
			seen[m.text] = true
			out = append(out, m)
		}
	}
	switch len(out) {
	case 0:
		return tsNever
	case 1:
		return out[0]
	}
	texts := make([]string, len(out))
	for i, m := range out {
		if m.prec == precUnion {
			texts[i] = m.text
		} else {
			texts[i] = parens(m, precPrimary)
		}
	}
	return tsType{text: strings.Join(texts, " | "), prec: precUnion}
}

// intersection joins parts with &: unknown vanishes, never absorbs
// everything, duplicates are dropped, and unions get parentheses.
func intersection(parts []tsType) tsType {
	var out []tsType
	seen := map[string]bool{}
	for _, p := range parts {
		switch p.text {
		case "unknown":
			continue
		case "never":
			return tsNever
		}
		if !seen[p.text] {
			seen[p.text] = true
			out = append(out, p)
		}
	}
	switch len(out) {
	case 0:
		return tsUnknown
	case 1:
		return out[0]
	}
	texts := make([]string, len(out))
	for i, p := range out {
		texts[i] = parens(p, precIntersection)
	}
	return tsType{text: strings.Join(texts, " & "), prec: precIntersection}
}

// parens returns t's text, parenthesized when its precedence is looser
// than max.
func parens(t tsType, max int) string {
	if t.prec > max {
		return "(" + t.text + ")"
	}
	return t.text
}

// literal renders a JSON scalar as a TypeScript literal type.
func literal(v any) (string, bool) {
	switch v := v.(type) {
	case nil:
		return "null", true
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		return string(v), true
	case string:
		return quote(v), true
	}
	return "", false
}

// schemaDoc returns the JSDoc lines of a schema: its description,
// @deprecated and @default.
func schemaDoc(node any) []string {
	o, ok := node.(*object)
	if !ok {
		return nil
	}
	var lines []string
	if d, ok := o.str("description"); ok {
		lines = appendText(lines, d)
	}
	if dep, _ := o.boolean("deprecated"); dep {
		lines = append(lines, "@deprecated")
	}
	if def, ok := o.vals["default"]; ok {
		if s := jsonText(def); len(s) <= maxDefaultLen {
			lines = append(lines, "@default "+s)
		}
	}
	return lines
}

// lineEnds turns every line terminator of JavaScript into "\n".
var lineEnds = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\u2028", "\n", "\u2029", "\n")

// appendText appends the lines of free text, trimmed, with blank lines at
// either end dropped.
func appendText(lines []string, text string) []string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	all := strings.Split(strings.TrimSpace(lineEnds.Replace(text)), "\n")
	for _, l := range all {
		l = strings.TrimRight(l, " \t")
		if l == "" && len(all) == 1 {
			return lines
		}
		lines = append(lines, l)
	}
	return lines
}

// writeDoc writes lines as a JSDoc comment: on one line when there is one,
// as a block otherwise. "*/" inside the text is broken up so the comment
// cannot end early.
func writeDoc(b *strings.Builder, indent int, lines []string) {
	switch len(lines) {
	case 0:
		return
	case 1:
		writeIndent(b, indent)
		b.WriteString("/** ")
		b.WriteString(commentSafe(lines[0]))
		b.WriteString(" */\n")
		return
	}
	writeIndent(b, indent)
	b.WriteString("/**\n")
	for _, l := range lines {
		writeIndent(b, indent)
		if l == "" {
			b.WriteString(" *\n")
			continue
		}
		b.WriteString(" * ")
		b.WriteString(commentSafe(l))
		b.WriteByte('\n')
	}
	writeIndent(b, indent)
	b.WriteString(" */\n")
}

// commentSafe makes text safe inside a block comment.
func commentSafe(s string) string {
	return strings.ReplaceAll(s, "*/", "*\\/")
}

func writeIndent(b *strings.Builder, indent int) {
	for range indent {
		b.WriteString("  ")
	}
}
