package bindings

import (
	"slices"
	"strings"
)

// Declarations renders the TypeScript declarations of what a script sees
// for tools: per server an interface with one method per tool (argument
// type from InputSchema, Promise<T> from OutputSchema or Promise<unknown>,
// JSDoc from the descriptions, defaults and deprecations), the types named
// by $ref in the schemas, `declare const tools`, a global per server where
// the name is free (see Prelude), callTool with the union of full names,
// the ToolError shape of rejections, and console.
//
// The output depends only on the set of tools: they are sorted by server
// and name, and a repeated (server, name) pair keeps its first tool.
// Properties keep the order of the schema. Schemas that are not valid JSON
// or make no sense are rendered as unknown; Declarations never fails.
func Declarations(tools []Tool) string {
	ts := normalize(tools)
	type server struct {
		name  string
		iface string
		tools []Tool
	}
	var servers []*server
	for _, t := range ts {
		if len(servers) == 0 || servers[len(servers)-1].name != t.Server {
			servers = append(servers, &server{name: t.Server})
		}
		s := servers[len(servers)-1]
		s.tools = append(s.tools, t)
	}
	names := &typeNames{}
	for _, s := range servers {
		s.iface = names.alloc(pascal(s.name) + "Tools")
	}

	var b strings.Builder
	for _, s := range servers {
		var types, iface strings.Builder
		iface.WriteString("interface ")
		iface.WriteString(s.iface)
		iface.WriteString(" {\n")
		for i := range s.tools {
			writeMethod(&types, &iface, names, &s.tools[i])
		}
		iface.WriteString("}\n\n")
		b.WriteString(types.String())
		b.WriteString(iface.String())
	}

	if len(servers) == 0 {
		b.WriteString("declare const tools: {};\n")
	} else {
		b.WriteString("declare const tools: {\n")
		for _, s := range servers {
			b.WriteString("  readonly ")
			b.WriteString(propKey(s.name))
			b.WriteString(": ")
			b.WriteString(s.iface)
			b.WriteString(";\n")
		}
		b.WriteString("};\n")
	}
	for _, s := range servers {
		if isGlobalServerName(s.name) {
			b.WriteString("declare const ")
			b.WriteString(s.name)
			b.WriteString(": ")
			b.WriteString(s.iface)
			b.WriteString(";\n")
		}
	}

	full := make([]string, 0, len(ts))
	for i := range ts {
		full = append(full, quote(ts[i].callName()))
	}
	slices.Sort(full)
	full = slices.Compact(full)
	nameType := "string"
	if len(full) > 0 {
		nameType = strings.Join(full, " | ")
	}
	b.WriteString(callToolDoc)
	b.WriteString("declare function callTool(name: " + nameType + ", args?: object): Promise<unknown>;\n")
	b.WriteString(footer)
	return b.String()
}

// callToolDoc documents callTool and what every call resolves to.
const callToolDoc = `/**
 * Calls a tool by its full name; the same call as tools.<server>.<tool>(args).
 * Every call resolves to the tool's structured result when it has one (typed
 * above), else to its text (parsed when it is JSON), else to its content blocks.
 */
`

// footer declares the shape of rejections and console.
const footer = `/**
 * Every failed call rejects with a ToolError. code is "tool_error" (the tool
 * reported an error; message is its text), "not_found", "denied",
 * "rate_limited" (see retryAfterMs), "timeout", "unavailable",
 * "invalid_arguments" or "internal".
 */
interface ToolError extends Error { code: string; tool: string; retryAfterMs?: number }
declare const console: { log(...data: unknown[]): void; info(...data: unknown[]): void; warn(...data: unknown[]): void; error(...data: unknown[]): void };
`

// writeMethod writes the method of one tool to iface and the types its
// schemas name to types.
func writeMethod(types, iface *strings.Builder, names *typeNames, t *Tool) {
	in, inErr := parseJSON(t.InputSchema)
	if inErr != nil {
		in = true
	}
	var out any = true
	if len(t.OutputSchema) > 0 {
		if v, err := parseJSON(t.OutputSchema); err == nil {
			out = v
		}
	}
	r := &schemaRenderer{
		names:  names,
		prefix: pascal(t.Server) + "_" + pascal(t.Name) + "_",
		roots:  []schemaRoot{{value: in, label: "Input"}, {value: out, label: "Output"}},
	}
	argType := r.render(in, 0, 1, 0)
	optional := argsOptional(in)
	if argType.text == "unknown" {
		argType, optional = tsType{text: "{ [key: string]: unknown }"}, true
	}
	result := r.render(out, 1, 1, 0)

	writeDoc(iface, 1, appendText(nil, t.Description))
	writeIndent(iface, 1)
	iface.WriteString(propKey(t.Name))
	iface.WriteString("(args")
	if optional {
		iface.WriteByte('?')
	}
	iface.WriteString(": ")
	iface.WriteString(argType.text)
	iface.WriteString("): Promise<")
	iface.WriteString(result.text)
	iface.WriteString(">;\n")
	r.writeNamedTypes(types)
}

// argsOptional reports whether a tool's arguments may be left out: the
// input schema requires no property and has no combinator that could.
func argsOptional(root any) bool {
	schema := root
	for range maxDepth {
		o, ok := schema.(*object)
		if !ok {
			return true
		}
		if len(o.arr("required")) > 0 || o.has("anyOf") || o.has("oneOf") || o.has("allOf") {
			return false
		}
		ref, ok := o.str("$ref")
		if !ok {
			return true
		}
		ptr, local := strings.CutPrefix(ref, "#")
		if !local {
			return false
		}
		if schema, ok = resolvePointer(root, ptr); !ok {
			return false
		}
	}
	return false
}
