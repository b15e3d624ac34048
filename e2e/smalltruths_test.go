package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A script calling a hidden or missing tool as tools.<server>.<tool>(...)
// (or through the server's global) gets the same not_found Error as
// callTool, from the gateway's tool path, whether the tool exists or not.
func TestScriptMissingToolIsNotFound(t *testing.T) {
	_, env := isolatedEnv(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "toolgate.json")
	doc := fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}, "codeMode": {"enabled": true}}`, jsonString(testUpstream(t)))
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `
const tries = {
  hidden: () => tools.s.fail({ message: "x" }),
  hiddenByCallTool: () => callTool("s__fail", { message: "x" }),
  hiddenByGlobal: () => s.fail({ message: "x" }),
  missing: () => tools.s.no_such_tool({}),
  missingByCallTool: () => callTool("s__no_such_tool", {}),
  unknownServer: () => tools.nosuch.thing({}),
  unknownServerByCallTool: () => callTool("nosuch__thing", {}),
};
const out = {};
for (const [k, f] of Object.entries(tries)) {
  try { await f(); out[k] = "resolved"; }
  catch (e) { out[k] = [e.name, e.code, e.message, e.tool]; }
}
out.visible = (await tools.s.echo({ text: "hi" })).text;
return out;
`
	if err := os.WriteFile(filepath.Join(dir, "script.js"), []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	out := toolgateJSON[struct {
		Result map[string]any `json:"result"`
		Error  json.RawMessage
	}](t, dir, env, "-c", cfg, "run", "script.js", "--json")
	notFound := func(name string) []any {
		return []any{"Error", "not_found", fmt.Sprintf("unknown tool %q", name), name}
	}
	want := map[string]any{
		"hidden":                  notFound("s__fail"),
		"hiddenByCallTool":        notFound("s__fail"),
		"hiddenByGlobal":          notFound("s__fail"),
		"missing":                 notFound("s__no_such_tool"),
		"missingByCallTool":       notFound("s__no_such_tool"),
		"unknownServer":           notFound("nosuch__thing"),
		"unknownServerByCallTool": notFound("nosuch__thing"),
		"visible":                 "hi",
	}
	if d := cmp.Diff(want, out.Result); d != "" {
		t.Errorf("script result (-want +got):\n%s\nerror: %s", d, out.Error)
	}
}

// report.md of toolgate bench is Markdown: its results are a table, not
// text in a code block.
func TestBenchReportIsMarkdown(t *testing.T) {
	_, env := isolatedEnv(t)
	dir := t.TempDir()
	if code, out, errOut := runToolgateSplit(t, dir, env, "bench", "exec", "-n", "3", "--warmup", "1", "--concurrency", "1", "--out", "report"); code != 0 {
		t.Fatalf("bench exec: exit %d\n%s%s", code, out, errOut)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report", "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	lines := strings.Split(md, "\n")
	i := slices.Index(lines, "| ms | p50 | p90 | p99 | max | mean |")
	if strings.Contains(md, "```") || i < 0 || i+2 >= len(lines) || lines[i+1] != "| --- | ---: | ---: | ---: | ---: | ---: |" ||
		!strings.HasPrefix(lines[i+2], "| wall (caller) | ") {
		t.Errorf("report.md has no results table:\n%s", md)
	}
}

// bench compare from an installed binary, outside a source checkout and
// with an empty cache: it installs the pinned npm servers into the cache
// folder (saying so on stderr) and runs; the next run reuses them; and
// --npm-dir takes an npm project folder as well as its node_modules.
func TestBenchCompareOutsideCheckout(t *testing.T) {
	home, env := isolatedEnv(t)
	cache := filepath.Join(home, "cache")
	env = append(env, "XDG_CACHE_HOME="+cache, "TOOLGATE_NPM_DIR=")
	work := t.TempDir() // no e2e/npm above it
	compare := func(args ...string) (stderr string) {
		t.Helper()
		code, out, errOut := runToolgateWithin(t, 10*time.Minute, work, env, append([]string{"bench", "compare", "--task", "memory-graph", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("bench compare %v: exit %d\n%s%s", args, code, out, errOut)
		}
		var rep struct {
			Tasks []struct {
				Name string `json:"name"`
			} `json:"tasks"`
			Settings map[string]string `json:"settings"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Tasks) != 1 || rep.Tasks[0].Name != "memory-graph" {
			t.Fatalf("bench compare %v: report %s (%v)", args, out, err)
		}
		if v := rep.Settings["server-memory"]; v != "2026.8.31" {
			t.Errorf("server-memory %q, want the pinned 2026.8.31", v)
		}
		return errOut
	}

	errOut := compare()
	installed, _ := filepath.Glob(filepath.Join(cache, "toolgate", "bench-compare-npm", "*", "node_modules", "@modelcontextprotocol", "server-memory"))
	if !strings.Contains(errOut, "Installing the npm MCP servers") || len(installed) != 1 {
		t.Fatalf("first run: installed %v; stderr:\n%s", installed, errOut)
	}
	if errOut := compare(); strings.Contains(errOut, "Installing") {
		t.Errorf("the second run installed again:\n%s", errOut)
	}
	project := filepath.Dir(filepath.Dir(filepath.Dir(installed[0]))) // the npm project folder
	for _, dir := range []string{project, filepath.Join(project, "node_modules")} {
		compare("--npm-dir", dir)
	}
}
