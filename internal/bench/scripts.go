package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// BuiltinOptions parameterise the built-in scripts that call tools.
type BuiltinOptions struct {
	Tool  string          // namespaced tool name; "" = the builtin's default
	Args  json.RawMessage // JSON object of arguments; nil = the builtin's default
	Calls int             // fan-out width or chain length; 0 = 10
}

type builtin struct {
	description string
	tool        string // default tool, "" when the script calls none
	args        string // default arguments
	code        string // %[1]s is the tool name, %[2]s the arguments, %[3]d the calls (JavaScript literals)
}

var builtins = map[string]builtin{
	"trivial": {description: "return 1+1: the fixed cost of an execution", code: "return 1+1"},
	"fib": {description: "compute fib(25) recursively (about 240,000 calls), no tool",
		code: "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) }\nreturn fib(25)"},
	"transform": {
		description: "one tool call with a large result (1000 rows, about 100 KB of JSON), grouped and ranked in JavaScript",
		tool:        "demo__export_records", args: `{"rows": 1000}`,
		code: `const r = await callTool(%[1]s, %[2]s);
const byCity = {};
for (const row of r.rows) {
  const c = byCity[row.city] ?? (byCity[row.city] = { city: row.city, count: 0, total: 0, tags: {} });
  c.count++;
  c.total += row.amount;
  for (const t of row.tags) c.tags[t] = (c.tags[t] ?? 0) + 1;
}
const cities = Object.values(byCity).map(c => ({
  city: c.city, count: c.count, total: c.total, average: Math.round(c.total / c.count),
  topTag: Object.entries(c.tags).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0][0],
})).sort((a, b) => b.total - a.total);
const largest = r.rows.slice().sort((a, b) => b.amount - a.amount || a.id - b.id).slice(0, 5).map(x => x.id);
return { rows: r.rows.length, cities, largest };`,
	},
	"fanout": {
		description: "N parallel tool calls awaited with Promise.all",
		tool:        "demo__echo", args: `{"text": "toolgate bench"}`,
		code: `const results = await Promise.all(Array.from({ length: %[3]d }, () => callTool(%[1]s, %[2]s)));
return results.length;`,
	},
	"chain": {
		description: "N tool calls in sequence, each awaited before the next",
		tool:        "demo__echo", args: `{"text": "toolgate bench"}`,
		code: `let n = 0;
for (let i = 0; i < %[3]d; i++) { await callTool(%[1]s, %[2]s); n++; }
return n;`,
	},
}

// BuiltinNames lists the built-in scripts.
func BuiltinNames() []string { return sortedKeys(builtins) }

// BuiltinDescription describes a built-in script.
func BuiltinDescription(name string) string { return builtins[name].description }

// Builtin returns the code of a built-in script and the settings it used
// (tool, args and calls, for the report).
func Builtin(name string, opts BuiltinOptions) (code string, settings map[string]string, err error) {
	b, ok := builtins[name]
	if !ok {
		return "", nil, fmt.Errorf("--builtin: no script %q; the built-in scripts are %s", name, strings.Join(BuiltinNames(), ", "))
	}
	settings = map[string]string{}
	if b.tool == "" {
		if opts.Tool != "" || opts.Args != nil || opts.Calls != 0 {
			return "", nil, fmt.Errorf("--builtin %s calls no tool; --tool, --args and --calls do not apply", name)
		}
		return b.code, settings, nil
	}
	tool, args := b.tool, json.RawMessage(b.args)
	if opts.Tool != "" {
		tool = opts.Tool
	}
	if opts.Args != nil {
		var obj map[string]any
		if err := json.Unmarshal(opts.Args, &obj); err != nil || obj == nil {
			return "", nil, fmt.Errorf("--args: want a JSON object of tool arguments, got %s", opts.Args)
		}
		args = opts.Args
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, args); err != nil {
		return "", nil, fmt.Errorf("--args: %w", err)
	}
	calls := opts.Calls
	if calls == 0 {
		calls = 10
	}
	usesCalls := strings.Contains(b.code, "%[3]d")
	if !usesCalls && opts.Calls != 0 {
		return "", nil, fmt.Errorf("--builtin %s makes one call; --calls does not apply", name)
	}
	if calls < 1 {
		return "", nil, fmt.Errorf("--calls must be at least 1, got %d", calls)
	}
	quoted, _ := json.Marshal(tool)
	code = fmt.Sprintf(b.code, quoted, compact.String(), calls)
	settings["tool"], settings["args"] = tool, compact.String()
	if usesCalls {
		settings["calls"] = fmt.Sprint(calls)
	}
	return code, settings, nil
}
