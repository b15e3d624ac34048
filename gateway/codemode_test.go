package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/demo"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

// codeModeFixture runs a gateway in process with code mode and fetch on, in
// front of the demo upstream served over loopback, with an audit log.
func codeModeFixture(t *testing.T, extra string) (*Gateway, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := demo.NewServer()
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })

	dir := t.TempDir()
	path := filepath.Join(dir, "toolgate.json")
	doc := `{"listen": "127.0.0.1:0", "dataDir": ` + quoteJSON(dir) + `, "auth": {"required": false},
		"codeMode": {"enabled": true, "allowFetch": true},
		"mcpServers": {"demo": {"url": ` + quoteJSON("http://"+ln.Addr().String()+"/mcp") + `}}` + extra + `}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := sandbox.NewEngine(context.Background(), &sandbox.EngineOptions{CacheDir: filepath.Join(os.TempDir(), "toolgate-gateway-test-cache"), PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	auditPath := filepath.Join(dir, "audit.jsonl")
	auditLog, err := audit.Open(auditPath, &audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() })
	g := startGateway(t, cfg, &Options{Sandbox: engine, Audit: auditLog})
	return g, auditPath
}

// startGateway starts a gateway of cfg, giving it 30 s to reach its
// upstreams, and closes it when the test ends.
func startGateway(t *testing.T, cfg *config.Config, opts *Options) *Gateway {
	t.Helper()
	g := New(cfg, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// connectInMemory connects a client to srv over in-memory transports; both
// sessions close when the test ends.
func connectInMemory(t *testing.T, srv *mcp.Server) *mcp.ClientSession {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestFetchIsRateLimited proves every fetch request takes a token from the
// caller's buckets, shared with its tool calls, and that a refusal reaches
// the script as a rate-limited tool call does: code "rate_limited" and a
// numeric retryAfterMs. The requests themselves go to loopback, which the
// fetch guard refuses after the tokens are taken ("denied").
func TestFetchIsRateLimited(t *testing.T) {
	tests := []struct {
		name   string
		limits string
		code   string
		want   string
	}{
		{
			name:   "key bucket shared with tool calls",
			limits: `, "rateLimit": {"perKeyRequestsPerMinute": 60, "perKeyBurst": 3}`,
			code: `const out = [];
const probe = async (f) => { try { await f(); out.push("ok"); } catch (e) { out.push(e.code + (typeof e.retryAfterMs === "number" && e.retryAfterMs > 0 ? "+retry" : "")); } };
await probe(() => tools.demo.echo({text: "a"}));
await probe(() => fetch("http://127.0.0.1:9/"));
await probe(() => fetch("http://127.0.0.1:9/"));
await probe(() => fetch("http://127.0.0.1:9/"));
await probe(() => tools.demo.echo({text: "b"}));
return out;`,
			want: `["ok","denied","denied","rate_limited+retry","rate_limited+retry"]`,
		},
		{
			name:   "project bucket",
			limits: `, "rateLimit": {"requestsPerMinute": 60, "burst": 1}`,
			code: `const out = [];
for (let i = 0; i < 2; i++) { try { await fetch("http://127.0.0.1:9/"); } catch (e) { out.push(e.code); } }
return out;`,
			want: `["denied","rate_limited"]`,
		},
		{
			name:   "per-tool limit under codeMode:fetch",
			limits: `, "toolLimits": {"codeMode:fetch": {"requestsPerMinute": 60, "burst": 2}}`,
			code: `const out = [];
for (let i = 0; i < 3; i++) { try { await fetch("http://127.0.0.1:9/"); } catch (e) { out.push(e.code); } }
for (let i = 0; i < 3; i++) { await tools.demo.echo({text: "x"}); out.push("ok"); }
return out;`,
			want: `["denied","denied","rate_limited","ok","ok","ok"]`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, auditPath := codeModeFixture(t, tc.limits)
			res, err := g.ExecuteCode(context.Background(), config.DefaultProject, Principal{KeyID: "k1", ClientIP: "127.0.0.1"}, tc.code)
			if err != nil {
				t.Fatal(err)
			}
			if res.Error != nil {
				t.Fatalf("script failed: %+v", res.Error)
			}
			if d := cmp.Diff(tc.want, string(res.Result)); d != "" {
				t.Fatalf("result (-want +got):\n%s", d)
			}
			var hits []*audit.Event
			if _, err := audit.Read(auditPath, func(ev *audit.Event) error {
				if ev.Type == audit.EventRateLimitHit && ev.Tool == FetchRateName {
					hits = append(hits, ev)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(hits) != 1 || hits[0].Host != "127.0.0.1" || hits[0].Method != "GET" || hits[0].KeyID != "k1" ||
				hits[0].ExecutionID == "" || !strings.Contains(hits[0].Error, "rate limit") {
				t.Fatalf("ratelimit.hit events for fetch: %+v", hits)
			}
		})
	}
}

// TestScriptSeesRetryHint proves a rate-limited binding call rejects with
// the retry hint of the direct path's JSON-RPC error (data.retryAfterMs).
func TestScriptSeesRetryHint(t *testing.T) {
	g, _ := codeModeFixture(t, `, "toolLimits": {"demo__echo": {"requestsPerMinute": 6, "burst": 1}}`)
	res, err := g.ExecuteCode(context.Background(), config.DefaultProject, Principal{KeyID: "k1"}, `
await tools.demo.echo({text: "first"});
try { await tools.demo.echo({text: "second"}); return "not limited"; }
catch (e) { return [e.code, e.tool, typeof e.retryAfterMs, e.retryAfterMs > 1000 && e.retryAfterMs <= 10000, e.message]; }`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil {
		t.Fatalf("script failed: %+v", res.Error)
	}
	var got []any
	if err := json.Unmarshal(res.Result, &got); err != nil || len(got) != 5 {
		t.Fatalf("result %s", res.Result)
	}
	if got[0] != "rate_limited" || got[1] != "demo__echo" || got[2] != "number" || got[3] != true ||
		!strings.HasPrefix(got[4].(string), "rate limit exceeded; retry after ") {
		t.Fatalf("rejection = %s", res.Result)
	}
}

// TestCodeToolsAreRateLimited proves a call of execute_code or search_tools
// is charged like any other tools/call (here through a toolLimits entry
// under its name), refused with the rate limiter's JSON-RPC error and its
// retry hint, and audited as a ratelimit.hit.
func TestCodeToolsAreRateLimited(t *testing.T) {
	for _, tool := range []string{ExecuteCodeTool, SearchToolsTool} {
		t.Run(tool, func(t *testing.T) {
			g, auditPath := codeModeFixture(t, `, "toolLimits": {"`+tool+`": {"requestsPerMinute": 6, "burst": 1}}`)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cs := connectInMemory(t, g.Server(config.DefaultProject))
			args := map[string]any{"code": "return 1"}
			if tool == SearchToolsTool {
				args = map[string]any{"query": "echo"}
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
			if err != nil || res.IsError {
				t.Fatalf("first call: %v %+v", err, res)
			}
			_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
			if err == nil || !strings.Contains(err.Error(), "rate limit exceeded") {
				t.Fatalf("second call: err = %v, want a rate-limit refusal", err)
			}
			// The other code tool has no limit of its own.
			other := map[string]any{"query": "echo"}
			otherName := SearchToolsTool
			if tool == SearchToolsTool {
				otherName, other = ExecuteCodeTool, map[string]any{"code": "return 2"}
			}
			if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: otherName, Arguments: other}); err != nil || res.IsError {
				t.Fatalf("%s after the refusal: %v %+v", otherName, err, res)
			}
			hits := 0
			if _, err := audit.Read(auditPath, func(ev *audit.Event) error {
				if ev.Type == audit.EventRateLimitHit && ev.Tool == tool {
					hits++
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if hits != 1 {
				t.Fatalf("%d ratelimit.hit events for %s, want 1", hits, tool)
			}
		})
	}
}

// TestExecSlotsResize: a reload that changes codeMode.maxConcurrentExecutions
// counts the executions still running.
func TestExecSlotsResize(t *testing.T) {
	s := newExecSlots(2)
	take := func() bool { return s.sem.TryAcquire(1) }
	if !take() || !take() || take() {
		t.Fatal("two slots of two: want exactly two")
	}
	s.resize(1) // two still run
	s.release()
	if take() {
		t.Fatal("after shrinking to 1 with 2 running, an end freed a slot")
	}
	s.release()
	if !take() || take() {
		t.Fatal("with none running, want exactly one slot")
	}
	s.resize(3) // one runs
	if !take() || !take() || take() {
		t.Fatal("after growing to 3 with one running, want two more slots at once")
	}
	s.resize(1) // three run: two are owed
	s.resize(2) // one owed
	s.release()
	s.release()
	if !take() || take() {
		t.Fatal("at 2 with one running, want one slot")
	}
}

// TestCodeModeKeepsUpstreamToolsForScripts proves that with Code Mode on
// and codeMode.directTools off an upstream tool is for scripts only, and
// that every way a client can call it gives the same answer: a POST the
// access layer would answer, one only the MCP SDK answers (its _meta holds
// more than a progress token), and a session over another transport (as
// serve --stdio). Each refusal is audited as tool.denied; a script calls
// the tool as before.
func TestCodeModeKeepsUpstreamToolsForScripts(t *testing.T) {
	g, auditPath := codeModeFixture(t, "")
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	f := &httpFixture{g: g, url: srv.URL + "/mcp"}
	sid := f.session(t, "")
	const unknown = `{"code":-32602,"message":"unknown tool \"demo__echo\""}`
	for _, tc := range []struct{ name, meta string }{
		{"answered by the access layer if at all", ""},
		{"answered by the SDK", `,"_meta":{"x":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, msg := f.post(t, "", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"}`+tc.meta+`}}`)
			var resp struct {
				Error json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal([]byte(msg), &resp); code != http.StatusOK || err != nil || string(resp.Error) != unknown {
				t.Fatalf("status %d: %s", code, msg)
			}
		})
	}
	t.Run("another transport", func(t *testing.T) {
		cs := connectInMemory(t, g.Server(config.DefaultProject))
		_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "demo__echo", Arguments: map[string]any{"text": "hi"}})
		if err == nil || !strings.Contains(err.Error(), `unknown tool "demo__echo"`) {
			t.Fatalf("call over another transport: %v", err)
		}
	})
	res, err := g.ExecuteCode(context.Background(), config.DefaultProject, Principal{}, `return await tools.demo.echo({text: "from a script"})`)
	if err != nil || res.Error != nil || string(res.Result) != `"from a script"` {
		t.Fatalf("a script's call: %+v, %v", res, err)
	}
	denied := 0
	if _, err := audit.Read(auditPath, func(ev *audit.Event) error {
		if ev.Type == audit.EventToolDenied && ev.Tool == "demo__echo" {
			denied++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if denied != 3 {
		t.Errorf("%d tool.denied events for demo__echo, want 3", denied)
	}
}

// scriptLines runs code, a script that returns an array of n strings, on
// g's default project and returns them.
func scriptLines(t *testing.T, g *Gateway, n int, code string) []string {
	t.Helper()
	res, err := g.ExecuteCode(context.Background(), config.DefaultProject, Principal{}, code)
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil {
		t.Fatalf("script failed: %+v", res.Error)
	}
	var got []string
	if err := json.Unmarshal(res.Result, &got); err != nil || len(got) != n {
		t.Fatalf("result %s, want %d strings", res.Result, n)
	}
	return got
}

// TestScriptArgumentsNestedTooDeep: arguments nested deeper than an MCP
// message may carry are refused before they reach the upstream, which
// would refuse the message as malformed and end its session for every
// caller; arguments at the limit go through.
func TestScriptArgumentsNestedTooDeep(t *testing.T) {
	g, _ := codeModeFixture(t, "")
	got := scriptLines(t, g, 3, `
const nest = (n) => { let v = 0; for (let i = 0; i < n; i++) v = [v]; return v; };
const out = [];
for (const levels of [998, 997]) {
  try { await tools.demo.echo({text: "deep", d: nest(levels)}); out.push("answered"); }
  catch (e) { out.push(e.code + ": " + e.message); }
}
out.push(await tools.demo.echo({text: "after"}));
return out;`)
	if want := "invalid_arguments: the arguments nest deeper than 998 levels"; !strings.HasPrefix(got[0], want) {
		t.Errorf("999 levels: %q, want %q...", got[0], want)
	}
	if strings.HasPrefix(got[1], "invalid_arguments") || strings.Contains(got[1], "unavailable") {
		t.Errorf("998 levels: %q, want the upstream's answer", got[1])
	}
	if got[2] != "after" {
		t.Errorf("a call after them: %q, want the echo (the upstream's session lives)", got[2])
	}
}

// TestScriptCallOverTheUpstreamsBodyLimit: a script may pass as many bytes
// of arguments as a client may send, which makes a message over the
// upstream's own limit (the go-sdk's 4 MiB here). The upstream refuses
// that call with 413; its session, which every caller shares, lives on.
func TestScriptCallOverTheUpstreamsBodyLimit(t *testing.T) {
	g, _ := codeModeFixture(t, "")
	got := scriptLines(t, g, 2, `
const out = [];
try { await tools.demo.echo({text: "x".repeat(4*1024*1024 - 60)}); out.push("answered"); }
catch (e) { out.push(e.code + ": " + e.message); }
out.push(await tools.demo.echo({text: "after"}));
return out;`)
	if !strings.Contains(got[0], "413") || got[1] != "after" {
		t.Errorf("calls over the upstream's limit and after it: %q", got)
	}
	_, ps := g.Status()
	if n := ps[config.DefaultProject].Upstreams["demo"].Restarts; n != 0 {
		t.Errorf("the upstream was reconnected %d times; a refused message must not end its session", n)
	}
}
