package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/policy/audit"
)

// execution is execute_code's structuredContent.
type execution struct {
	Result    json.RawMessage `json:"result"`
	Logs      []struct{ Level, Message string }
	ToolCalls []struct {
		Tool string
		OK   bool
	}
	DurationMs float64 `json:"durationMs"`
	Error      *struct {
		Name, Message, Stack, Limit, Code string
		Line, Column                      int
	} `json:"error"`
}

func execute(t *testing.T, cs *mcp.ClientSession, code string) (*mcp.CallToolResult, execution) {
	t.Helper()
	res := callTool(t, cs, "execute_code", map[string]any{"code": code})
	var ex execution
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &ex); err != nil {
		t.Fatalf("execute_code structuredContent %s: %v", b, err)
	}
	return res, ex
}

func codeModeGateway(t *testing.T, extra string) *gateway {
	up := testUpstream(t)
	return startGateway(t, fmt.Sprintf(`{
		"codeMode": {"enabled": true, "timeout": 4000 %s},
		"toolLimits": {"s__fail": {"requestsPerMinute": 60, "burst": 2}},
		"mcpServers": {
			"s": {"command": %s, "allowedTools": ["echo", "fail", "slow", "stats"]},
			"memory": {"command": "node", "args": [%s]}
		}
	}`, extra, jsonString(up), jsonString(e2etest.NPMFile(t, e2etest.ServerMemoryEntry))), "--log-level", "info")
}

func TestCodeMode(t *testing.T) {
	g := codeModeGateway(t, "")
	cs := connect(t, g.URL(), nil)
	if names := toolNames(t, cs); !slices.Equal(names, []string{"execute_code", "search_tools"}) {
		t.Fatalf("tools/list with code mode = %v", names)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var desc string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == "execute_code" {
			desc = tool.Description
		}
	}
	if !strings.Contains(desc, "declare") || !strings.Contains(desc, "echo") {
		t.Errorf("execute_code description has no declarations:\n%s", desc)
	}

	t.Run("each inner call counts against the rate limits", func(t *testing.T) {
		_, ex := execute(t, cs, `
const out = [];
for (let i = 0; i < 4; i++) {
  try { await tools.s.fail({message: "x"}); out.push("called"); } catch (e) { out.push(e.code === "tool_error" ? e.code + ":" + e.message : e.code); }
}
return out;`)
		if string(ex.Result) != `["tool_error:x","tool_error:x","rate_limited","rate_limited"]` {
			t.Errorf("result = %s", ex.Result)
		}
	})

	t.Run("a rate-limited call carries the retry hint", func(t *testing.T) {
		_, ex := execute(t, cs, `
try { await tools.s.fail({message: "x"}); return "called"; }
catch (e) { return [e.code, typeof e.retryAfterMs, e.retryAfterMs > 0 && e.retryAfterMs <= 1000]; }`)
		if string(ex.Result) != `["rate_limited","number",true]` {
			t.Errorf("result = %s", ex.Result)
		}
	})

	t.Run("tools, concurrency, console and result", func(t *testing.T) {
		res, ex := execute(t, cs, `
const a = await tools.s.echo({text: "one"});
const [b, c] = await Promise.all([callTool("s__echo", {text: "two"}), s.echo({text: "three"})]);
await tools.memory.create_entities({entities: [{name: "gateway", entityType: "service", observations: ["speaks MCP"]}]});
const graph = await tools.memory.read_graph({});
console.log("entities", graph.entities.length);
console.warn("careful");
return {a: a.text, b: b.text, c: c.text, entity: graph.entities[0].name};`)
		if res.IsError {
			t.Fatalf("execution failed: %s", text(res))
		}
		if string(ex.Result) != `{"a":"one","b":"two","c":"three","entity":"gateway"}` {
			t.Errorf("result = %s", ex.Result)
		}
		if len(ex.ToolCalls) != 5 || len(ex.Logs) != 2 || ex.Logs[1].Level != "warn" {
			t.Errorf("toolCalls %v logs %v", ex.ToolCalls, ex.Logs)
		}
		if !strings.Contains(text(res), "result:") {
			t.Errorf("no text rendering: %q", text(res))
		}
	})

	t.Run("errors carry codes and the agent's line numbers", func(t *testing.T) {
		res, ex := execute(t, cs, `
let codes = [];
for (const name of ["s__environ", "s__crash", "nosuch__tool"]) {
  try { await callTool(name, {}); } catch (e) { codes.push(e.code); }
}
codes.push(typeof tools.s.environ, typeof tools.s.crash);
for (const call of [() => tools.s.environ({}), () => tools.s.crash({}), () => tools.nosuch.tool({})]) {
  try { await call(); } catch (e) { codes.push(e.code); }
}
codes.push(String(Object.keys(tools.s)));
return codes;`)
		if res.IsError {
			t.Fatalf("execution failed: %s", text(res))
		}
		// A hidden tool (environ) looks like one that does not exist
		// (crash) whichever way it is called.
		want := `["not_found","not_found","not_found","function","function","not_found","not_found","not_found","echo,fail,slow,stats"]`
		if string(ex.Result) != want {
			t.Errorf("result = %s, want %s", ex.Result, want)
		}
		res, ex = execute(t, cs, "const x = 1;\nconst y = 2;\nnull.boom;")
		if !res.IsError || ex.Error == nil || ex.Error.Name != "TypeError" || ex.Error.Line != 3 {
			t.Errorf("script error = %v %+v", res.IsError, ex.Error)
		}
	})

	t.Run("a breached limit ends only that execution", func(t *testing.T) {
		res, ex := execute(t, cs, "while (true) {}")
		if !res.IsError || ex.Error == nil || ex.Error.Limit != "timeout" {
			t.Errorf("infinite loop = %v %+v", res.IsError, ex.Error)
		}
		res, ex = execute(t, cs, "await tools.s.slow({ms: 20000}); return 1")
		if !res.IsError || ex.Error == nil || ex.Error.Limit != "timeout" {
			t.Errorf("slow tool = %v %+v", res.IsError, ex.Error)
		}
		// The upstream call was cancelled with the script.
		eventually(t, 10*time.Second, "the slow call to be cancelled", func() bool {
			_, ex := execute(t, cs, "return await tools.s.stats({})")
			var st struct{ Cancelled int }
			_ = json.Unmarshal(ex.Result, &st)
			return st.Cancelled >= 1
		})
		res, ex = execute(t, cs, "return 1 + 1")
		if res.IsError || string(ex.Result) != "2" {
			t.Errorf("next execution = %s %s", text(res), ex.Result)
		}
		if code, _ := g.readyz(t); code != 200 {
			t.Errorf("readyz after hostile scripts = %d", code)
		}
	})

	t.Run("no filesystem, environment or fetch", func(t *testing.T) {
		_, ex := execute(t, cs, `
const out = [typeof std, typeof os, typeof fetch, typeof process];
try { await import("qjs:std"); out.push("imported"); } catch (e) { out.push("no import"); }
return out;`)
		if ex.Error != nil {
			// Refusing import() outright is also a safe outcome.
			if !strings.Contains(ex.Error.Message, "import") {
				t.Errorf("error = %+v", ex.Error)
			}
			return
		}
		if string(ex.Result) != `["undefined","undefined","undefined","undefined","no import"]` {
			t.Errorf("result = %s", ex.Result)
		}
	})

	t.Run("search_tools", func(t *testing.T) {
		out := text(callTool(t, cs, "search_tools", map[string]any{"query": "entities"}))
		if !strings.Contains(out, "create_entities") || strings.Contains(out, "echo(") {
			t.Errorf("search_tools(entities) =\n%s", out)
		}
	})

	t.Run("50 concurrent executions", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 50)
		for i := range 50 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "execute_code", Arguments: map[string]any{"code": fmt.Sprintf("return (await tools.s.echo({text: 'n%d'})).text", i)}})
				switch {
				case err != nil:
					errs <- err.Error()
				case res.IsError && !strings.Contains(text(res), "maxConcurrentExecutions"):
					errs <- text(res)
				case !res.IsError && !strings.Contains(text(res), fmt.Sprintf("n%d", i)):
					errs <- text(res)
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})

	// Every inner call is linked to its execution in the audit log.
	execs := map[string]int{}
	calls := map[string]int{}
	_, err := audit.Read(g.auditPath(), func(ev *audit.Event) error {
		switch ev.Type {
		case "code.execution":
			execs[ev.ExecutionID]++
		case "tool.call", "tool.denied", "ratelimit.hit":
			if ev.ExecutionID != "" {
				calls[ev.ExecutionID]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(execs) < 10 || len(calls) == 0 {
		t.Errorf("audit: %d executions, %d with calls", len(execs), len(calls))
	}
	for id := range calls {
		if execs[id] != 1 {
			t.Errorf("tool calls of execution %s have no code.execution event", id)
		}
	}
}

func TestCodeModeSmallBudgetAndDirectTools(t *testing.T) {
	g := codeModeGateway(t, `, "directTools": true, "declarationBudgetBytes": 200`)
	cs := connect(t, g.URL(), nil)
	names := toolNames(t, cs)
	if !slices.Contains(names, "execute_code") || !slices.Contains(names, "s__echo") {
		t.Fatalf("tools with directTools = %v", names)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == "execute_code" && (!strings.Contains(tool.Description, "search_tools") || strings.Contains(tool.Description, "declare ")) {
			t.Errorf("over the budget, the description should point to search_tools:\n%s", tool.Description)
		}
	}
}

// startLoopbackFetchGateway runs `toolgate serve` built with the
// toolgate_fetch_loopback tag: the one way a real gateway lets fetch reach
// a test's local HTTP server (release builds refuse loopback, see
// sandbox/fetch_loopback.go).
func startLoopbackFetchGateway(t *testing.T, cfg string) *gateway {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "toolgate-fetch-loopback")
	cmd := exec.Command("go", "build", "-tags", "toolgate_fetch_loopback", "-o", bin, "./cmd/toolgate")
	cmd.Dir = e2etest.ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags toolgate_fetch_loopback: %v\n%s", err, out)
	}
	return startGatewayBinary(t, bin, writeConfig(t, cfg), "--log-level", "info")
}

// TestCodeModeFetchRateLimit: each fetch request of a script takes a token
// from the caller's buckets, shared with its tool calls, and a refused one
// rejects like a rate-limited tool call (code and retryAfterMs), so that a
// script can wait and retry; every request is audited. The key bucket of 4
// pays for the execute_code call itself and three fetches.
func TestCodeModeFetchRateLimit(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"n": %d, "path": %q}`, n, r.URL.Path)
	}))
	defer srv.Close()
	up := testUpstream(t)
	g := startLoopbackFetchGateway(t, fmt.Sprintf(`{
		"codeMode": {"enabled": true, "timeout": 8000, "allowFetch": true},
		"rateLimit": {"perKeyRequestsPerMinute": 6, "perKeyBurst": 4},
		"toolLimits": {"codeMode:fetch": {"requestsPerMinute": 60, "burst": 2}},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)

	res, ex := execute(t, cs, strings.ReplaceAll(`
const out = [];
const get = async (path) => {
  try { const r = await fetch("SRV" + path); out.push([r.status, (await r.json()).path]); }
  catch (e) { out.push([e.code, typeof e.retryAfterMs, e.message]); return e; }
};
await get("/a");
await get("/b");
const refused = await get("/c");          // over codeMode:fetch's burst of 2
await new Promise((resolve) => setTimeout(resolve, refused.retryAfterMs));
await get("/d");                          // the fetch bucket refilled; the key bucket is now empty
try { await tools.s.echo({text: "x"}); out.push("echo ok"); } catch (e) { out.push(e.code); }
return out;`, "SRV", srv.URL))
	if res.IsError {
		t.Fatalf("execution failed: %s", text(res))
	}
	var got []any
	if err := json.Unmarshal(ex.Result, &got); err != nil || len(got) != 5 {
		t.Fatalf("result = %s", ex.Result)
	}
	want := []string{`[200,"/a"]`, `[200,"/b"]`, `rate_limited`, `[200,"/d"]`, `"rate_limited"`}
	for i, w := range want {
		b, _ := json.Marshal(got[i])
		if !strings.HasPrefix(strings.TrimPrefix(string(b), `["`), w) {
			t.Errorf("step %d = %s, want %s", i+1, b, w)
		}
	}
	if third, ok := got[2].([]any); !ok || len(third) != 3 || third[1] != "number" || !strings.Contains(fmt.Sprint(third[2]), "rate limit exceeded") {
		t.Errorf("refused fetch = %v, want code rate_limited with a numeric retryAfterMs", got[2])
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("the server saw %d requests, want 3 (the refused one never left the gateway)", n)
	}

	evs := g.auditEvents(t)
	var fetched, limited int
	for _, ev := range evs {
		switch {
		case ev.Type == audit.EventCodeFetch && ev.Status == 200 && ev.Host == "127.0.0.1":
			fetched++
		case ev.Type == audit.EventRateLimitHit && ev.Tool == "codeMode:fetch" && ev.ExecutionID != "" && ev.Host == "127.0.0.1":
			limited++
		}
	}
	if fetched != 3 || limited != 1 {
		t.Errorf("audit: %d code.fetch events and %d ratelimit.hit for fetch, want 3 and 1", fetched, limited)
	}
}

// TestCodeModeKeepsUpstreamToolsForScripts calls an upstream tool of a
// Code Mode project without directTools every way a client can: over HTTP
// as the access layer answers, over HTTP as only the SDK answers (more
// than a progress token in _meta), and over serve --stdio. Each gets the
// unknown-tool error; a script calls the tool.
func TestCodeModeKeepsUpstreamToolsForScripts(t *testing.T) {
	up := testUpstream(t)
	cfg := fmt.Sprintf(`{"codeMode": {"enabled": true}, "mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`, jsonString(up))
	g := startGateway(t, cfg)
	key := g.keys["default"]
	sid := rawSession(t, g.URL(), bearer(key))
	eventStream(t, g.URL(), key, sid)
	hs := map[string]string{"Authorization": "Bearer " + key, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
	for _, meta := range []string{``, `,"_meta":{"x":1}`} {
		code, _, body := post(t, nil, g.URL(), hs, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"hi"}`+meta+`}}`)
		if code != 200 || !strings.Contains(body, `"code":-32602`) || !strings.Contains(body, `unknown tool \"s__echo\"`) {
			t.Errorf("over HTTP (_meta %q): %d %s", meta, code, body)
		}
	}
	stdio := connectStdio(t, e2etest.BuildBinary(t, "./cmd/toolgate"), "serve", "--stdio", "-c", writeConfig(t, cfg))
	if _, err := stdio.CallTool(t.Context(), &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": "hi"}}); err == nil || !strings.Contains(err.Error(), `unknown tool "s__echo"`) {
		t.Errorf("over stdio: %v", err)
	}
	cs := connect(t, g.URL(), nil)
	if _, ex := execute(t, cs, `return (await tools.s.echo({text: "from a script"})).text`); string(ex.Result) != `"from a script"` {
		t.Errorf("a script's call: %s", ex.Result)
	}
}
