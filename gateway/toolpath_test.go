package gateway

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/demo"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

// countingLimiter is a limiter that counts its decisions.
type countingLimiter struct {
	policy.Limiter
	takes atomic.Int64
}

func (l *countingLimiter) Take(ctx context.Context, bs ...policy.Bucket) (bool, time.Duration, error) {
	l.takes.Add(1)
	return l.Limiter.Take(ctx, bs...)
}

// stepsFixture is a gateway with Code Mode on and the upstream tools
// listed too (codeMode.directTools), in front of the demo upstream, served
// over loopback, with an audit log and a limiter that counts its
// decisions. Every call takes a token from the project's bucket, so that
// each rate-limit step is one decision; demo__word_count allows one call
// a minute, which the fixture makes, so that every later call of it is
// refused by its rate limit.
type stepsFixture struct {
	httpFixture
	limiter *countingLimiter
}

func newStepsFixture(t *testing.T) *stepsFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demo.NewServer() }, nil)}
	go func() { _ = up.Serve(ln) }()
	t.Cleanup(func() { up.Close() })

	dir := t.TempDir()
	path := filepath.Join(dir, "toolgate.json")
	doc := `{"listen": "127.0.0.1:0", "dataDir": ` + quoteJSON(dir) + `, "auth": {"required": false},
		"codeMode": {"enabled": true, "directTools": true},
		"rateLimit": {"requestsPerMinute": 60000, "burst": 1000},
		"toolLimits": {"demo__word_count": {"requestsPerMinute": 1, "burst": 1}},
		"mcpServers": {"demo": {"url": ` + quoteJSON("http://"+ln.Addr().String()+"/mcp") + `}}}`
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
	f := &stepsFixture{}
	f.audit = filepath.Join(dir, "audit.jsonl")
	auditLog, err := audit.Open(f.audit, &audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() })
	mem := policy.NewMemoryLimiter(nil)
	t.Cleanup(mem.Close)
	f.limiter = &countingLimiter{Limiter: mem}
	f.g = startGateway(t, cfg, &Options{Sandbox: engine, Audit: auditLog, Limiter: f.limiter})
	srv := httptest.NewServer(f.g.Handler())
	t.Cleanup(srv.Close)
	f.url = srv.URL + "/mcp"
	if _, err := f.g.CallTool(context.Background(), &ToolCall{Principal: Principal{Project: config.DefaultProject}, Name: "demo__word_count", Arguments: []byte(`{"text":"spend the token"}`)}); err != nil {
		t.Fatal(err)
	}
	return f
}

// steps are what the tool path did over some calls.
type steps struct {
	Takes      int64          // rate-limit decisions
	Admissions uint64         // slots taken
	Refused    float64        // admissions refused
	Events     map[string]int // audit events by "type tool"
}

func (f *stepsFixture) steps(t *testing.T) steps {
	t.Helper()
	f.g.life.mu.Lock()
	admissions := f.g.life.seq
	f.g.life.mu.Unlock()
	var refused float64
	mfs, err := f.g.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "toolgate_requests_refused_total" {
			for _, m := range mf.GetMetric() {
				refused += m.GetCounter().GetValue()
			}
		}
	}
	events := map[string]int{}
	if _, err := audit.Read(f.audit, func(ev *audit.Event) error {
		switch ev.Type {
		case audit.EventToolCall, audit.EventToolDenied, audit.EventRateLimitHit, audit.EventCodeExecution:
			events[ev.Type+" "+ev.Tool]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return steps{Takes: f.limiter.takes.Load(), Admissions: admissions, Refused: refused, Events: events}
}

// since is what happened between before and s.
func (s steps) since(before steps) steps {
	d := steps{Takes: s.Takes - before.Takes, Admissions: s.Admissions - before.Admissions, Refused: s.Refused - before.Refused, Events: map[string]int{}}
	for k, n := range s.Events {
		if n != before.Events[k] {
			d.Events[k] = n - before.Events[k]
		}
	}
	return d
}

// TestToolPathStepsOnce proves each step of the tool path happens once
// per call, whoever the caller and whoever answers: one rate-limit
// decision, one admission (none for a script's calls, which run in their
// execution's slot) and one audit event, refused calls included. A call
// that admission refuses is counted as refused and neither charged nor
// recorded.
func TestToolPathStepsOnce(t *testing.T) {
	f := newStepsFixture(t)
	sid := f.session(t, "")
	cs := connectInMemory(t, f.g.Server(config.DefaultProject))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	post := func(body string) func(t *testing.T) {
		return func(t *testing.T) {
			code, _, msg := f.post(t, "", sid, body)
			if code == 0 || msg == "" {
				t.Fatalf("no answer: status %d", code)
			}
		}
	}
	call := func(name string, args map[string]any) func(t *testing.T) {
		return func(t *testing.T) { _, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args}) }
	}
	const script = `await tools.demo.echo({text: "in a script"});
try { await tools.demo.word_count({text: "refused"}); } catch (e) { if (e.code !== "rate_limited") throw e; }
return "done";`
	tests := []struct {
		name   string
		do     func(t *testing.T)
		want   steps
		direct float64 // calls the access layer answered itself
	}{
		{
			name:   "HTTP, answered by the access layer",
			do:     post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"}}}`),
			want:   steps{Takes: 1, Admissions: 1, Events: map[string]int{"tool.call demo__echo": 1}},
			direct: 1,
		},
		{
			name: "HTTP, answered by the SDK",
			do:   post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"},"_meta":{"x":1}}}`),
			want: steps{Takes: 1, Admissions: 1, Events: map[string]int{"tool.call demo__echo": 1}},
		},
		{
			name: "HTTP, refused by a rate limit (429)",
			do:   post(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo__word_count","arguments":{"text":"x"}}}`),
			want: steps{Takes: 1, Admissions: 1, Events: map[string]int{"ratelimit.hit demo__word_count": 1}},
		},
		{
			name: "HTTP, an unknown tool",
			do:   post(`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"demo__nosuch"}}`),
			want: steps{Admissions: 1, Events: map[string]int{"tool.denied demo__nosuch": 1}},
		},
		{
			name: "HTTP, execute_code and its script's calls",
			do:   post(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"execute_code","arguments":{"code":` + quoteJSON(script) + `}}}`),
			want: steps{Takes: 3, Admissions: 1, Events: map[string]int{
				"tool.call execute_code": 1, "code.execution ": 1, "tool.call demo__echo": 1, "ratelimit.hit demo__word_count": 1}},
		},
		{
			name: "another transport",
			do:   call("demo__echo", map[string]any{"text": "hi"}),
			want: steps{Takes: 1, Admissions: 1, Events: map[string]int{"tool.call demo__echo": 1}},
		},
		{
			name: "another transport, refused by a rate limit",
			do:   call("demo__word_count", map[string]any{"text": "x"}),
			want: steps{Takes: 1, Admissions: 1, Events: map[string]int{"ratelimit.hit demo__word_count": 1}},
		},
		{
			name: "another transport, search_tools",
			do:   call(SearchToolsTool, map[string]any{"query": "echo"}),
			want: steps{Takes: 1, Admissions: 1, Events: map[string]int{"tool.call search_tools": 1}},
		},
		{
			name: "another transport, execute_code and its script's calls",
			do:   call(ExecuteCodeTool, map[string]any{"code": script}),
			want: steps{Takes: 3, Admissions: 1, Events: map[string]int{
				"tool.call execute_code": 1, "code.execution ": 1, "tool.call demo__echo": 1, "ratelimit.hit demo__word_count": 1}},
		},
		{
			name: "a script run outside a client's call",
			do: func(t *testing.T) {
				if _, err := f.g.ExecuteCode(ctx, config.DefaultProject, Principal{}, script); err != nil {
					t.Fatal(err)
				}
			},
			want: steps{Takes: 2, Events: map[string]int{"code.execution ": 1, "tool.call demo__echo": 1, "ratelimit.hit demo__word_count": 1}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, direct := f.steps(t), f.accessCalls(t)
			tc.do(t)
			f.waitIdle(t)
			if diff := cmp.Diff(tc.want, f.steps(t).since(before)); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if got := f.accessCalls(t) - direct; got != tc.direct {
				t.Errorf("the access layer answered %v calls, want %v", got, tc.direct)
			}
		})
	}

	// Once a shutdown began, admission refuses every call: counted as
	// refused, neither charged nor recorded.
	f.g.life.drain(time.Minute)
	for _, tc := range []struct {
		name string
		do   func(t *testing.T)
	}{
		{"HTTP", post(`{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"}}}`)},
		{"another transport", call("demo__echo", map[string]any{"text": "hi"})},
		{"another transport, execute_code", call(ExecuteCodeTool, map[string]any{"code": script})},
	} {
		t.Run("refused by admission, "+tc.name, func(t *testing.T) {
			before := f.steps(t)
			tc.do(t)
			if diff := cmp.Diff(steps{Refused: 1, Events: map[string]int{}}, f.steps(t).since(before)); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
		})
	}
}

// waitIdle waits until no call holds a slot: every slot taken was given
// back.
func (f *stepsFixture) waitIdle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); f.g.InFlight() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still hold a slot", f.g.InFlight())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestToolPathRefusalAtHTTP proves a tools/call refused by a rate limit
// before the MCP SDK read it is answered 429 with the retry hint, and
// counted as a rate-limit hit once.
func TestToolPathRefusalAtHTTP(t *testing.T) {
	f := newStepsFixture(t)
	sid := f.session(t, "")
	code, _, msg := f.post(t, "", sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__word_count","arguments":{"text":"x"}}}`)
	if code != http.StatusTooManyRequests || !strings.Contains(msg, `"code":-32029`) || !strings.Contains(msg, "retryAfterMs") {
		t.Fatalf("status %d: %s", code, msg)
	}
	var m dto.Metric
	if err := f.g.metrics.rateLimited.WithLabelValues(config.DefaultProject).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("toolgate_rate_limit_hits_total = %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
	f.waitIdle(t)
}

// TestPathCallHandOff proves the hand-off of a call the access layer
// opened: the code that answers it takes its slot, or, when the access
// layer gave the slot back first (the POST ended before the MCP SDK
// started the call), admits it again without charging it again.
func TestPathCallHandOff(t *testing.T) {
	f := newStepsFixture(t)
	p := f.g.project(config.DefaultProject)
	ctx := context.Background()
	call := &ToolCall{Principal: Principal{Project: p.name}, Name: "demo__echo", Arguments: []byte(`{"text":"x"}`)}
	t.Run("taken", func(t *testing.T) {
		before := f.steps(t)
		var pc pathCall
		if r := pc.open(ctx, p, call, ""); r != nil {
			t.Fatal(r.message)
		}
		if !pc.take() {
			t.Fatal("an open call was not taken")
		}
		pc.release() // the POST ends: the call is the taker's
		if n := f.g.InFlight(); n != 1 {
			t.Fatalf("in flight = %d, want 1", n)
		}
		if _, _, err := pc.finish(ctx, answerDecoded); err != nil {
			t.Fatal(err)
		}
		f.waitIdle(t)
		if diff := cmp.Diff(steps{Takes: 1, Admissions: 1, Events: map[string]int{"tool.call demo__echo": 1}}, f.steps(t).since(before)); diff != "" {
			t.Errorf("steps (-want +got):\n%s", diff)
		}
	})
	t.Run("released first", func(t *testing.T) {
		before := f.steps(t)
		var pc pathCall
		if r := pc.open(ctx, p, call, ""); r != nil {
			t.Fatal(r.message)
		}
		pc.release()
		if n := f.g.InFlight(); n != 0 {
			t.Fatalf("in flight after release = %d, want 0", n)
		}
		if pc.take() {
			t.Fatal("a released call was taken")
		}
		again, r := pc.reopen(call, "")
		if r != nil {
			t.Fatal(r.message)
		}
		if _, _, err := again.finish(ctx, answerDecoded); err != nil {
			t.Fatal(err)
		}
		f.waitIdle(t)
		if diff := cmp.Diff(steps{Takes: 1, Admissions: 2, Events: map[string]int{"tool.call demo__echo": 1}}, f.steps(t).since(before)); diff != "" {
			t.Errorf("steps (-want +got):\n%s", diff)
		}
	})
}

// TestUpstreamMeta: an upstream gets a client's _meta without the
// per-request keys of protocol 2026-07-28, and the client's map is never
// changed.
func TestUpstreamMeta(t *testing.T) {
	v26 := func(extra mcp.Meta) mcp.Meta {
		m := mcp.Meta{metaProtocolVersion: "2026-07-28", metaClientCapabilities: map[string]any{}, metaClientInfo: map[string]any{"name": "c"}}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		in, want mcp.Meta
	}{
		{"none", nil, nil},
		{"a progress token", mcp.Meta{"progressToken": "p"}, mcp.Meta{"progressToken": "p"}},
		{"2026-07-28 only", v26(nil), nil},
		{"2026-07-28 and a progress token", v26(mcp.Meta{"progressToken": 1.0}), mcp.Meta{"progressToken": 1.0}},
		{"a log level and a key of the client's", mcp.Meta{mcp.MetaKeyLogLevel: "debug", "x": true}, mcp.Meta{"x": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.in)
			got := upstreamMeta(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("upstreamMeta(%v) = %v, want %v", tc.in, got, tc.want)
			}
			if !reflect.DeepEqual(tc.in, before) {
				t.Errorf("the client's _meta changed: %v, was %v", tc.in, before)
			}
		})
	}
}
