package bindings

import (
	"strconv"
	"strings"
)

// isIdent reports whether s can follow a dot in JavaScript and TypeScript
// (tools.filesystem.read_file) and name an interface member without quotes.
// Only ASCII identifiers count; anything else is written with brackets or
// quotes. Reserved words are identifiers here: they are valid property
// names.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// propKey returns s as a property name for an object type or an interface:
// bare when it is an identifier, quoted otherwise.
func propKey(s string) string {
	if isIdent(s) {
		return s
	}
	return quote(s)
}

// access returns the JavaScript accessor of property s: ".s" or "[\"s\"]".
func access(s string) string {
	if isIdent(s) {
		return "." + s
	}
	return "[" + quote(s) + "]"
}

// isGlobalServerName reports whether the server name becomes a global of
// its own in scripts (filesystem.read_file(...) beside
// tools.filesystem.read_file(...)). It does when the name is an ASCII
// identifier that is neither a reserved word, nor a JavaScript or common
// host built-in (Object, JSON, Math, Promise, console, fetch, ...), nor one
// of the names the prelude defines (tools, callTool), nor starts with "__"
// (kept for host primitives). Declarations and Prelude agree on it; the
// prelude also skips a name that already exists on globalThis at run time.
func isGlobalServerName(server string) bool {
	return isIdent(server) && !strings.HasPrefix(server, "__") && !reservedGlobals[server]
}

// reservedGlobals are the names a server global must not take: reserved
// words, ECMAScript globals, common host globals (web, Node, QuickJS), and
// the names the prelude defines itself.
var reservedGlobals = setOf(
	// Reserved words, strict-mode and future reserved words, and the
	// identifiers that cannot be rebound in strict code.
	"await", "break", "case", "catch", "class", "const", "continue", "debugger",
	"default", "delete", "do", "else", "enum", "export", "extends", "false",
	"finally", "for", "function", "if", "implements", "import", "in",
	"instanceof", "interface", "let", "new", "null", "package", "private",
	"protected", "public", "return", "static", "super", "switch", "this",
	"throw", "true", "try", "typeof", "var", "void", "while", "with", "yield",
	"arguments", "eval", "async",
	// ECMAScript globals.
	"globalThis", "undefined", "NaN", "Infinity", "Object", "Function",
	"Array", "Number", "Boolean", "String", "Symbol", "BigInt", "Date",
	"Promise", "RegExp", "Error", "AggregateError", "EvalError", "RangeError",
	"ReferenceError", "SyntaxError", "TypeError", "URIError", "InternalError",
	"SuppressedError", "JSON", "Math", "Intl", "Reflect", "Proxy", "Atomics",
	"Iterator", "AsyncIterator", "Generator", "ArrayBuffer",
	"SharedArrayBuffer", "DataView", "Int8Array", "Uint8Array",
	"Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array",
	"Uint32Array", "Float16Array", "Float32Array", "Float64Array",
	"BigInt64Array", "BigUint64Array", "Map", "Set", "WeakMap", "WeakSet",
	"WeakRef", "FinalizationRegistry", "DisposableStack",
	"AsyncDisposableStack", "parseInt", "parseFloat", "isNaN", "isFinite",
	"decodeURI", "decodeURIComponent", "encodeURI", "encodeURIComponent",
	"escape", "unescape", "WebAssembly",
	// Host globals of browsers, Node and QuickJS that scripts may expect.
	"console", "fetch", "Headers", "Request", "Response", "FormData", "Blob",
	"File", "URL", "URLSearchParams", "TextEncoder", "TextDecoder",
	"AbortController", "AbortSignal", "Event", "EventTarget", "setTimeout",
	"clearTimeout", "setInterval", "clearInterval", "setImmediate",
	"clearImmediate", "queueMicrotask", "structuredClone", "atob", "btoa",
	"crypto", "performance", "navigator", "self", "window", "global",
	"process", "require", "module", "exports", "Buffer", "Deno", "Bun",
	"std", "os", "bjson", "print", "scriptArgs", "gc",
	// Defined by the prelude.
	"tools", "callTool",
)

// reservedTypeNames are type names the declarations must not redefine: the
// globals above (many are types too) and TypeScript's own types.
var reservedTypeNames = setOf(
	"Record", "Partial", "Required", "Readonly", "Pick", "Omit", "Exclude",
	"Extract", "NonNullable", "Parameters", "ReturnType", "InstanceType",
	"Awaited", "PromiseLike", "ArrayLike", "Iterable", "IterableIterator",
	"ReadonlyArray", "Uppercase", "Lowercase", "Capitalize", "Uncapitalize",
	"ThisType", "NoInfer", "PropertyKey", "Console", "ToolError",
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// pascal turns a name into a PascalCase identifier fragment:
// "read_file" -> "ReadFile", "get-env" -> "GetEnv", "readFile" ->
// "ReadFile". Characters that cannot appear in an identifier are dropped;
// the result may be empty or start with a digit.
func pascal(s string) string {
	var b strings.Builder
	upper := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z':
			if upper {
				c -= 'a' - 'A'
			}
			b.WriteByte(c)
			upper = false
		case 'A' <= c && c <= 'Z' || '0' <= c && c <= '9':
			b.WriteByte(c)
			upper = false
		default:
			upper = true
		}
	}
	return b.String()
}

// typeNames hands out unique TypeScript type names.
type typeNames struct {
	used map[string]bool
}

// alloc returns name, or name2, name3, ... when it is taken, and marks the
// result as taken. A name that is not an identifier is prefixed with "T".
func (n *typeNames) alloc(name string) string {
	if n.used == nil {
		n.used = map[string]bool{}
	}
	if name == "" || !isIdent(name) || '0' <= name[0] && name[0] <= '9' {
		name = "T" + name
	}
	candidate := name
	for i := 2; n.used[candidate] || reservedGlobals[candidate] || reservedTypeNames[candidate]; i++ {
		candidate = name + strconv.Itoa(i)
	}
	n.used[candidate] = true
	return candidate
}
