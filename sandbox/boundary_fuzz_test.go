package sandbox

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// boundaryReturns are the values FuzzBoundary hands back from JavaScript,
// built from the fuzzed inputs: v is the tool result, s the fuzzed string,
// u a string of fuzzed UTF-16 code units (lone surrogates included).
var boundaryReturns = []string{
	`return {v, s, u, o, keys: Object.keys(o), parts: [s.split(""), [...u]]}`,
	`return v`,
	`return u`,
	`return [u, s, u + s, s.normalize === undefined ? 0 : u.toWellFormed?.()]`,
	`return {[u]: u, [s]: s, __proto__: {p: u}, ["__proto__"]: s}`,
	`return JSON.parse(JSON.stringify(v))`,
	`return undefined`,
	`return () => s`,
	`return Symbol(s)`,
	`return 10n ** 30n`,
	`return [NaN, Infinity, -Infinity, -0, 2 ** 53 + 1, 1e-320]`,
	`return new Map([[s, u]])`,
	`return new Set([s, u])`,
	`return new Date(NaN)`,
	`return new Uint8Array([1, 2, 255])`,
	`const a = {s}; a.self = a; return a`,
	`return {toJSON() { return u }}`,
	`return {toJSON() { throw new Error(u) }}`,
	`return {get g() { throw new TypeError(s) }}`,
	`return new Proxy({}, {ownKeys() { throw new RangeError(u) }})`,
	`return Object.create(null, {[s]: {value: u, enumerable: true}})`,
	`return new Error(u)`,
	`throw u`,
	`throw new Error(s + u)`,
	`throw {message: u, name: s, code: s, stack: u}`,
	`return Promise.reject(new Error(u))`,
	`return s.repeat(1 + (s.length > 0 ? 2048 / s.length : 0))`,
	`return Array.from({length: 64}, (_, i) => u.slice(i))`,
	`let x = v; for (let i = 0; i < 64; i++) x = [x, {u}]; return x`,
}

// FuzzBoundary drives values both ways across the JS/Go boundary: an
// arbitrary tool result into JavaScript, arbitrary strings (with lone
// UTF-16 surrogates) into console output, object keys, thrown errors and
// the returned value. Nothing panics, Run has no internal error, the result
// is valid UTF-8 JSON, logs and error text are valid UTF-8, and the script
// cannot pollute Object.prototype through what it received.
func FuzzBoundary(f *testing.F) {
	for i := range boundaryReturns {
		f.Add([]byte(`{"a":[1,"x",null]}`), "hello", []byte{0x00, 0xd8, 0x41, 0x00}, uint8(i))
	}
	f.Add([]byte(`{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}`), "__proto__", []byte{0xff, 0xdf, 0x00, 0xdc}, uint8(4))
	f.Add([]byte(`"\ud800"`), "\xff\xfe", []byte{0x3d, 0xd8, 0x00, 0xde}, uint8(0))
	f.Add([]byte(`[1e999]`), "\u2028\u2029\x00", []byte{0x00, 0xdc, 0x00, 0xd8}, uint8(2))
	f.Add([]byte(`not json`), "constructor", []byte{}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, s string, units []byte, kind uint8) {
		code := make([]uint16, len(units)/2)
		for i := range code {
			code[i] = uint16(units[2*i]) | uint16(units[2*i+1])<<8
		}
		unitsJSON, _ := json.Marshal(code)
		sJSON, _ := json.Marshal(s)
		caller := func(_ context.Context, name string, _ []byte) ([]byte, error) {
			switch name {
			case "v":
				return data, nil
			case "s":
				return sJSON, nil
			default:
				return unitsJSON, nil
			}
		}
		script := `
const before = Object.getOwnPropertyNames(Object.prototype).join();
let v;
try { v = await callTool("v"); } catch (e) { v = String(e.message); }
const s = await callTool("s");
const u = String.fromCharCode(...await callTool("u"));
console.log(s, u);
console.warn(u);
console.error(v, {[u]: s});
console.info([u, s]);
const o = {};
o[s] = u;
o[u] = s;
Object.assign(o, typeof v === "object" && v !== null ? v : {});
const after = Object.getOwnPropertyNames(Object.prototype).join();
if (before !== after || ({}).polluted !== undefined || Object.getPrototypeOf({}) !== Object.prototype) {
	throw new Error("POLLUTED Object.prototype");
}
` + boundaryReturns[int(kind)%len(boundaryReturns)]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := testEngine.Run(ctx, &Request{Code: script, Prelude: testPrelude, Caller: caller}, Limits{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		checkBoundaryResult(t, res)
	})
}

// checkBoundaryResult asserts what every execution must hand back to Go:
// UTF-8 JSON as the result, UTF-8 logs and error text, no pollution.
func checkBoundaryResult(t *testing.T, res *Result) {
	t.Helper()
	if len(res.Result) == 0 || !json.Valid(res.Result) || !utf8.Valid(res.Result) {
		t.Fatalf("result %q is not UTF-8 JSON", res.Result)
	}
	for _, l := range res.Logs {
		if !utf8.ValidString(l.Message) {
			t.Fatalf("log line %q is not UTF-8", l.Message)
		}
	}
	if e := res.Error; e != nil {
		for _, s := range []string{e.Name, e.Message, e.Stack, e.Code, e.Limit} {
			if !utf8.ValidString(s) {
				t.Fatalf("error text %q is not UTF-8", s)
			}
		}
		if strings.Contains(e.Message, "POLLUTED") {
			t.Fatalf("a tool result polluted Object.prototype: %+v", e)
		}
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatalf("the result does not marshal: %v", err)
	}
}

// FuzzScript runs arbitrary code as a script under small limits: no panic,
// no internal error, and the result is well-formed whatever the code does.
func FuzzScript(f *testing.F) {
	for _, s := range []string{
		`return 1`, `return "\ud800"`, `console.log("\udfff"); return {a: "\ud83d"}`,
		`throw "\udc00"`, `while (true) {}`, `return [].constructor.constructor("return 1")()`,
		`const a = []; a[2**32-2] = 1; return a.length`, `return Object.prototype`,
		`Object.prototype.x = 1; return {}`, `return globalThis`, `return new Array(1e6).fill("\u2028")`,
		`function f() { return f() } return f()`, `await new Promise(() => {})`, `}`, "return `${'\\ud800'}`",
		`return await callTool("x", {"__proto__": 1})`, `import("os")`, `return this`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, code string) {
		caller := func(_ context.Context, _ string, args []byte) ([]byte, error) { return args, nil }
		res, err := testEngine.Run(context.Background(), &Request{Code: code, Prelude: testPrelude, Caller: caller},
			Limits{Timeout: 500 * time.Millisecond, MemoryLimitMB: 16, MaxOutputBytes: 64 << 10, MaxToolCalls: 8})
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		checkBoundaryResult(t, res)
	})
}
