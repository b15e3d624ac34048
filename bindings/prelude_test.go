package bindings

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// preludeTools are the tools of the prelude tests: names that need
// brackets, servers that must not become globals, and a repeated tool.
var preludeTools = []Tool{
	{Server: "demo", Name: "echo", FullName: "demo__echo"},
	{Server: "demo", Name: "echo", FullName: "demo__echo_again"}, // repeated: the first wins
	{Server: "demo", Name: "do.it", FullName: "demo__do.it"},
	{Server: "my-server", Name: "x-y", FullName: "my-server__x-y"},
	{Server: "Math", Name: "add", FullName: "Math__add"},
	{Server: "tools", Name: "list", FullName: "tools__list"},
	{Server: "memory", Name: "read_graph", FullName: "memory__read_graph"},
	{Server: "__proto__", Name: "constructor", FullName: "p__c"},
	{Server: "quote\"s", Name: "line\u2028sep</script>", FullName: "q__l"},
	{Server: "plain", Name: "noFull"},
}

// preludeArgs returns the arguments Prelude passes to its function: the
// host name, the table and the globals, which must be plain JSON.
func preludeArgs(t testing.TB, js string) (host string, table [][3]string, globals []string) {
	t.Helper()
	const open = "})(globalThis, "
	i := strings.LastIndex(js, open)
	if i < 0 || !strings.HasSuffix(js, ");\n") {
		t.Fatalf("prelude does not end with its arguments:\n%s", js)
	}
	args := "[" + js[i+len(open):len(js)-len(");\n")] + "]"
	var parts []json.RawMessage
	if err := json.Unmarshal([]byte(args), &parts); err != nil || len(parts) != 3 {
		t.Fatalf("prelude arguments are not JSON (%v): %s", err, args)
	}
	if err := json.Unmarshal(parts[0], &host); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(parts[1], &table); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(parts[2], &globals); err != nil {
		t.Fatal(err)
	}
	return host, table, globals
}

func TestPreludeStructure(t *testing.T) {
	js := Prelude(preludeTools, "__toolgate_call")
	host, table, globals := preludeArgs(t, js)
	if host != "__toolgate_call" {
		t.Errorf("host = %q", host)
	}
	wantTable := [][3]string{
		{"Math", "add", "Math__add"},
		{"__proto__", "constructor", "p__c"},
		{"demo", "do.it", "demo__do.it"},
		{"demo", "echo", "demo__echo"},
		{"memory", "read_graph", "memory__read_graph"},
		{"my-server", "x-y", "my-server__x-y"},
		{"plain", "noFull", "noFull"},
		{"quote\"s", "line\u2028sep</script>", "q__l"},
		{"tools", "list", "tools__list"},
	}
	if diff := cmp.Diff(wantTable, table); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"demo", "memory", "plain"}, globals); diff != "" {
		t.Errorf("globals (-want +got):\n%s", diff)
	}
	if strings.Contains(js, "\u2028") {
		t.Error("prelude contains a raw U+2028")
	}
	// The declarations agree on the globals.
	decl := Declarations(preludeTools)
	for _, g := range globals {
		if !strings.Contains(decl, "declare const "+g+": ") {
			t.Errorf("declarations lack the global %s", g)
		}
	}
	if n := strings.Count(decl, "\ndeclare const ") - 1; n != len(globals)+1 { // tools + globals, console counted by -1
		t.Errorf("declarations declare %d constants besides console, want %d:\n%s", n, len(globals)+1, decl)
	}
}

func TestGlobalServerNames(t *testing.T) {
	for name, want := range map[string]bool{
		"filesystem": true, "github": true, "my_server": true, "$x": true, "get": true,
		"Math": false, "JSON": false, "Promise": false, "console": false, "globalThis": false,
		"Object": false, "Uint8Array": false, "undefined": false, "NaN": false, "eval": false,
		"tools": false, "callTool": false, "fetch": false, "std": false, "os": false,
		"default": false, "class": false, "let": false, "await": false, "yield": false,
		"__toolgate_call": false, "__x": false, "my-server": false, "1abc": false, "": false,
		"ünï": false, "a.b": false,
	} {
		if got := isGlobalServerName(name); got != want {
			t.Errorf("isGlobalServerName(%q) = %v, want %v", name, got, want)
		}
	}
}

// runNode runs a JavaScript file with node and returns its stdout.
func runNode(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2etest.Node(t), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestPreludeSyntax(t *testing.T) {
	for name, tools := range map[string][]Tool{
		"none":       nil,
		"tricky":     preludeTools,
		"constructs": loadTools(t, "constructs", ""),
		"npm": append(append(loadTools(t, "everything", "everything"),
			loadTools(t, "filesystem", "filesystem")...), loadTools(t, "memory", "memory")...),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "prelude.js")
			if err := os.WriteFile(path, []byte(Prelude(tools, "__toolgate_call")), 0o644); err != nil {
				t.Fatal(err)
			}
			runNode(t, "--check", path)
		})
	}
}

// preludeHarness runs before the prelude: a fake host primitive that
// answers by the "mode" argument, and a global a server must not replace.
const preludeHarness = `"use strict";
globalThis.memory = "taken";
globalThis.__toolgate_call = function (name, argsJSON) {
  const args = JSON.parse(argsJSON);
  if (args.mode === "throw-sync") throw { code: "unavailable", message: "down" };
  return (async () => { switch (args.mode) {
    case "reject-json": throw JSON.stringify({ code: "rate_limited", message: "slow down", retryAfterMs: 1500 });
    case "reject-object": throw { code: "not_found", message: "tool \"x\" not found" };
    case "reject-error": { const e = new Error("boom"); e.code = "timeout"; throw e; }
    case "reject-plain-error": throw new Error("plain");
    case "reject-string": throw "just text";
    case "reject-frozen": throw Object.freeze(new Error("frozen"));
    case "empty": return undefined;
    case "string-value": return "{";
  }
  return { name, args }; })();
};
`

// preludeChecks runs after the prelude and prints one JSON object of
// observations.
const preludeChecks = `
(async () => {
  const out = {};
  const settle = async (p) => {
    try { return { ok: await p }; }
    catch (e) { return { error: { isError: e instanceof Error, name: e.name, message: e.message, code: e.code, tool: e.tool, retryAfterMs: e.retryAfterMs } }; }
  };
  out.echo = await settle(tools.demo.echo({ a: 1 }));
  out.noArgs = await settle(tools.demo.echo());
  out.nullArgs = await settle(tools.demo.echo(null));
  out.brackets = await settle(tools["my-server"]["x-y"]({ b: [true] }));
  out.dotted = await settle(tools.demo["do.it"]({}));
  out.proto = await settle(tools["__proto__"]["constructor"]({}));
  out.unicode = await settle(tools["quote\"s"]["line\u2028sep</script>"]({}));
  out.noFull = await settle(plain.noFull({}));
  out.global = demo === tools.demo && demo.echo === tools.demo.echo;
  out.callTool = await settle(callTool("anything__at_all", { c: "d" }));
  out.callToolNoName = await settle(callTool(5));
  out.stringArgs = await settle(tools.demo.echo("nope"));
  out.arrayArgs = await settle(tools.demo.echo([1]));
  const cyclic = {}; cyclic.self = cyclic;
  out.cyclicArgs = await settle(tools.demo.echo(cyclic));
  for (const mode of ["reject-json", "reject-object", "reject-error", "reject-plain-error", "reject-string", "reject-frozen", "throw-sync", "empty", "string-value"]) {
    out[mode] = await settle(tools.demo.echo({ mode }));
  }
  out.concurrent = (await Promise.all([1, 2, 3].map((n) => tools.demo.echo({ n })))).map((r) => r.args.n);
  out.hostGone = typeof __toolgate_call;
  out.mathIntact = Math.max(1, 2) === 2 && typeof tools.Math.add === "function";
  out.myServerGlobal = typeof globalThis["my-server"];
  out.toolsServer = typeof tools.tools.list;
  out.memoryGlobal = globalThis.memory;
  out.serverKeys = Object.keys(tools);
  out.toolKeys = Object.keys(tools.demo);
  out.functionName = tools.demo.echo.name;
  out.frozen = [Object.isFrozen(tools), Object.isFrozen(tools.demo), Object.isFrozen(tools.demo.echo), Object.isFrozen(callTool)];
  const attempts = {
    replaceTool: () => { tools.demo.echo = () => 1; },
    addTool: () => { tools.demo.extra = () => 1; },
    replaceServer: () => { tools.demo = {}; },
    replaceTools: () => { globalThis.tools = {}; },
    replaceCallTool: () => { globalThis.callTool = () => 1; },
    redefineGlobal: () => { Object.defineProperty(globalThis, "demo", { value: {} }); },
    deleteTools: () => { delete globalThis.tools; },
  };
  out.tamper = {};
  for (const [k, f] of Object.entries(attempts)) {
    try { f(); out.tamper[k] = "allowed"; } catch (e) { out.tamper[k] = e.name; }
  }
  out.stillWorks = (await tools.demo.echo({ z: 1 })).name;
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`

func TestPreludeRuns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "script.js")
	src := preludeHarness + Prelude(preludeTools, "__toolgate_call") + preludeChecks
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(runNode(t, path)), &got); err != nil {
		t.Fatal(err)
	}
	ok := func(name string, args any) map[string]any {
		return map[string]any{"ok": map[string]any{"name": name, "args": args}}
	}
	fail := func(name, message, code, tool string, retry float64) map[string]any {
		e := map[string]any{"isError": true, "name": name, "message": message, "code": code, "tool": tool}
		if retry != 0 {
			e["retryAfterMs"] = retry
		}
		return map[string]any{"error": e}
	}
	empty := map[string]any{}
	want := map[string]any{
		"echo":               ok("demo__echo", map[string]any{"a": 1.0}),
		"noArgs":             ok("demo__echo", empty),
		"nullArgs":           ok("demo__echo", empty),
		"brackets":           ok("my-server__x-y", map[string]any{"b": []any{true}}),
		"dotted":             ok("demo__do.it", empty),
		"proto":              ok("p__c", empty),
		"unicode":            ok("q__l", empty),
		"noFull":             ok("noFull", empty),
		"global":             true,
		"callTool":           ok("anything__at_all", map[string]any{"c": "d"}),
		"callToolNoName":     fail("TypeError", "callTool: name must be a string", "invalid_arguments", "5", 0),
		"stringArgs":         fail("TypeError", "demo__echo: arguments must be an object", "invalid_arguments", "demo__echo", 0),
		"arrayArgs":          fail("TypeError", "demo__echo: arguments must be an object", "invalid_arguments", "demo__echo", 0),
		"reject-json":        fail("Error", "slow down", "rate_limited", "demo__echo", 1500),
		"reject-object":      fail("Error", `tool "x" not found`, "not_found", "demo__echo", 0),
		"reject-error":       fail("Error", "boom", "timeout", "demo__echo", 0),
		"reject-plain-error": fail("Error", "plain", "internal", "demo__echo", 0),
		"reject-string":      fail("Error", "just text", "internal", "demo__echo", 0),
		"reject-frozen":      fail("Error", "frozen", "internal", "demo__echo", 0),
		"throw-sync":         fail("Error", "down", "unavailable", "demo__echo", 0),
		"empty":              empty,
		"string-value":       map[string]any{"ok": "{"},
		"concurrent":         []any{1.0, 2.0, 3.0},
		"hostGone":           "undefined",
		"mathIntact":         true,
		"myServerGlobal":     "undefined",
		"toolsServer":        "function",
		"memoryGlobal":       "taken",
		"serverKeys":         []any{"Math", "__proto__", "demo", "memory", "my-server", "plain", "quote\"s", "tools"},
		"toolKeys":           []any{"do.it", "echo"},
		"functionName":       "echo",
		"frozen":             []any{true, true, true, true},
		"tamper": map[string]any{
			"replaceTool": "TypeError", "addTool": "TypeError", "replaceServer": "TypeError",
			"replaceTools": "TypeError", "replaceCallTool": "TypeError",
			"redefineGlobal": "TypeError", "deleteTools": "TypeError",
		},
		"stillWorks": "demo__echo",
	}
	// The cyclic-arguments message comes from the engine; check its shape.
	cyc, _ := got["cyclicArgs"].(map[string]any)
	cycErr, _ := cyc["error"].(map[string]any)
	if cycErr["code"] != "invalid_arguments" || cycErr["name"] != "TypeError" ||
		!strings.HasPrefix(cycErr["message"].(string), "demo__echo: arguments cannot be sent as JSON: ") {
		t.Errorf("cyclic arguments: %v", got["cyclicArgs"])
	}
	delete(got, "cyclicArgs")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("prelude behaviour (-want +got):\n%s", diff)
	}
}

func TestPreludeMissingHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "script.js")
	src := Prelude(preludeTools, "__nothing_here") + `process.stdout.write("not reached");`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e2etest.Node(t), path)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "toolgate: host function __nothing_here is missing") {
		t.Errorf("prelude without its host: err %v, output:\n%s", err, out)
	}
}

// TestPreludeCodedHost: a host that declares errorsCarryCodes has its
// promises handed to the script unchanged: its value as is, its Error (the
// same object) as is; bad arguments still reject before it is called.
func TestPreludeCodedHost(t *testing.T) {
	const harness = `"use strict";
let calls = 0, lastError;
globalThis.__toolgate_call = function (name, argsJSON) {
  calls++;
  const args = JSON.parse(argsJSON);
  if (args.fail) {
    lastError = Object.assign(new Error("slow down"), { code: "rate_limited", tool: name, retryAfterMs: 250 });
    return Promise.reject(lastError);
  }
  return Promise.resolve({ name, args });
};
Object.defineProperty(globalThis.__toolgate_call, "errorsCarryCodes", { value: true });
`
	const checks = `
(async () => {
  const out = {};
  out.ok = await tools.demo.echo({ a: 1 });
  try { await tools.demo.echo({ fail: true }); } catch (e) {
    out.sameError = e === lastError;
    out.error = [e.code, e.tool, e.retryAfterMs, e.message];
  }
  try { await tools.demo.echo("nope"); } catch (e) { out.badArgs = [e.name, e.code, e.tool]; }
  out.calls = calls;
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`
	path := filepath.Join(t.TempDir(), "coded.js")
	if err := os.WriteFile(path, []byte(harness+Prelude(preludeTools, "__toolgate_call")+checks), 0o644); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(runNode(t, path)), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"ok":        map[string]any{"name": "demo__echo", "args": map[string]any{"a": 1.0}},
		"sameError": true,
		"error":     []any{"rate_limited", "demo__echo", 250.0, "slow down"},
		"badArgs":   []any{"TypeError", "invalid_arguments", "demo__echo"},
		"calls":     2.0,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

// TestPreludeMissingTools: a name that is no visible tool, under a known
// server or an unknown one, is a function that calls the host with the
// name callTool would take (so the tool path answers it, with its own
// not_found); it calls nothing when read, awaited, stringified or
// looked up by symbol, and cannot be redirected.
func TestPreludeMissingTools(t *testing.T) {
	tools := []Tool{
		{Server: "demo", Name: "echo", FullName: "demo__echo"},
		{Server: "fs", Name: "read_file", FullName: "files_read_file"}, // a prefix of its own
		{Server: "odd", Name: "x", FullName: "unrelated"},              // no prefix to see
	}
	const harness = `"use strict";
let calls = 0;
globalThis.__toolgate_call = function (name, argsJSON) {
  calls++;
  if (name === "demo__echo" || name === "files_read_file") return Promise.resolve({ name });
  return Promise.reject(JSON.stringify({ code: "not_found", message: "unknown tool " + JSON.stringify(name) }));
};
`
	const checks = `
(async () => {
  const out = {};
  const settle = async (p) => {
    try { return { ok: await p }; }
    catch (e) { return { error: [e instanceof Error, e.code, e.message, e.tool] }; }
  };
  out.visible = await settle(tools.demo.echo({}));
  out.hidden = await settle(tools.demo.write_file({ path: "x" }));
  out.hiddenByCallTool = await settle(callTool("demo__write_file", { path: "x" }));
  out.hiddenByGlobal = await settle(demo.write_file({}));
  out.ownPrefix = await settle(tools.fs.write_file({}));
  out.noPrefix = await settle(tools.odd.y({}));
  out.unknownServer = await settle(tools.nosuch.anything({}));
  out.unknownByCallTool = await settle(callTool("nosuch__anything", {}));
  out.callsSoFar = calls;

  // Reading, awaiting and printing call nothing.
  out.types = [typeof tools.demo.write_file, typeof tools.nosuch, typeof tools.nosuch.x, typeof tools.demo.then, typeof tools.then];
  out.awaited = (await tools.demo) === tools.demo && (await tools) === tools && (await tools.nosuch) === tools.nosuch;
  out.json = [JSON.stringify(tools.demo), JSON.stringify(tools.nosuch)];
  out.text = String(tools.demo) + " " + String(tools.nosuch);
  out.symbols = [tools.demo[Symbol.iterator], tools.demo[Symbol.toPrimitive], tools[Symbol.toStringTag]].map((v) => typeof v);
  out.usual = [typeof tools.demo.hasOwnProperty, tools.demo.constructor === Object, tools.demo instanceof Object, tools.nosuch instanceof Object];
  out.listed = [Object.keys(tools), Object.keys(tools.demo), Object.keys(tools.nosuch), "write_file" in tools.demo, "nosuch" in tools];
  out.sameUnknown = tools.nosuch === tools.nosuch;
  out.callsAfter = calls;

  // Nobody redirects a missing name.
  const attempts = {
    defineOnPrototype: () => { Object.defineProperty(Object.getPrototypeOf(tools.demo), "write_file", { value: () => 1 }); },
    setOnPrototype: () => { Object.getPrototypeOf(tools.demo).write_file = () => 1; },
    replacePrototype: () => { Object.setPrototypeOf(tools.demo, {}); },
    addToUnknown: () => { tools.nosuch.x = () => 1; },
  };
  out.tamper = {};
  for (const [k, f] of Object.entries(attempts)) {
    try { f(); out.tamper[k] = "allowed"; } catch (e) { out.tamper[k] = e.name; }
  }
  Object.prototype.write_file = () => "polluted";
  out.afterPollution = await settle(tools.demo.write_file({}));
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`
	path := filepath.Join(t.TempDir(), "missing.js")
	if err := os.WriteFile(path, []byte(harness+Prelude(tools, "__toolgate_call")+checks), 0o644); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(runNode(t, path)), &got); err != nil {
		t.Fatal(err)
	}
	notFound := func(name string) map[string]any {
		return map[string]any{"error": []any{true, "not_found", `unknown tool "` + name + `"`, name}}
	}
	want := map[string]any{
		"visible":           map[string]any{"ok": map[string]any{"name": "demo__echo"}},
		"hidden":            notFound("demo__write_file"),
		"hiddenByCallTool":  notFound("demo__write_file"),
		"hiddenByGlobal":    notFound("demo__write_file"),
		"ownPrefix":         notFound("files_write_file"),
		"noPrefix":          notFound("odd__y"),
		"unknownServer":     notFound("nosuch__anything"),
		"unknownByCallTool": notFound("nosuch__anything"),
		"callsSoFar":        8.0,
		"types":             []any{"function", "object", "function", "undefined", "undefined"},
		"awaited":           true,
		"json":              []any{"{}", "{}"},
		"text":              "[object Object] [object Object]",
		"symbols":           []any{"undefined", "undefined", "undefined"},
		"usual":             []any{"function", true, true, true},
		"listed":            []any{[]any{"demo", "fs", "odd"}, []any{"echo"}, []any{}, false, false},
		"sameUnknown":       true,
		"callsAfter":        8.0,
		"tamper": map[string]any{
			"defineOnPrototype": "TypeError", "setOnPrototype": "TypeError",
			"replacePrototype": "TypeError", "addToUnknown": "TypeError",
		},
		"afterPollution": notFound("demo__write_file"),
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
