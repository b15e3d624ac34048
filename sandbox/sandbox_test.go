package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/callerr"
)

// testPrelude is a minimal set of bindings, as the bindings package would
// generate: callTool(name, args) over the host primitive.
const testPrelude = `
const call = __toolgate_call;
globalThis.callTool = (name, args) => call(name, JSON.stringify(args ?? {}));
`

// echoCaller answers "echo" with its arguments and fails everything else.
func echoCaller(_ context.Context, name string, args []byte) ([]byte, error) {
	switch name {
	case "echo":
		return args, nil
	case "fail":
		return nil, &callerr.Error{Code: callerr.RateLimited, Message: "slow down"}
	case "limited":
		return nil, &callerr.Error{Code: callerr.RateLimited, Message: "rate limit exceeded; retry after 1500 ms", RetryAfter: 1500 * time.Millisecond}
	case "plain_error":
		return nil, errors.New("upstream exploded")
	}
	return nil, &callerr.Error{Code: callerr.NotFound, Message: "tool " + name + " not found"}
}

func run(t testing.TB, code string, lim Limits) *Result {
	t.Helper()
	return runReq(t, &Request{Code: code, Prelude: testPrelude, Caller: echoCaller}, lim)
}

func runReq(t testing.TB, req *Request, lim Limits) *Result {
	t.Helper()
	res, err := testEngine.Run(context.Background(), req, lim)
	if err != nil {
		t.Fatalf("Run: internal error: %v", err)
	}
	return res
}

func wantResult(t *testing.T, res *Result, want string) {
	t.Helper()
	if res.Error != nil {
		t.Fatalf("script failed: %+v", res.Error)
	}
	var got, exp any
	if err := json.Unmarshal(res.Result, &got); err != nil {
		t.Fatalf("result %s: %v", res.Result, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(exp, got); d != "" {
		t.Fatalf("result mismatch (-want +got):\n%s", d)
	}
}

func TestResults(t *testing.T) {
	tests := []struct {
		name, code, want string
	}{
		{"arithmetic", "return 1 + 1", "2"},
		{"object", "return {a: [1, 'x', null], b: true}", `{"a":[1,"x",null],"b":true}`},
		{"undefined is null", "return undefined", "null"},
		{"no return", "const x = 1;", "null"},
		{"top-level await", "const v = await Promise.resolve(41); return v + 1", "42"},
		{"function is null", "return () => 1", "null"},
		{"toJSON", "return new Date(0)", `"1970-01-01T00:00:00.000Z"`},
		{"string", "return 'héllo \\u2028'", `"héllo \u2028"`},
		{"trailing comment", "return 3 // done", "3"},
		{"tool call", "return await callTool('echo', {q: 'x'})", `{"q":"x"}`},
		{"timer", "await new Promise(r => setTimeout(r, 5)); return 'late'", `"late"`},
		{"cleared timer", "let hit = false; const id = setTimeout(() => { hit = true }, 1); clearTimeout(id); await new Promise(r => setTimeout(r, 10)); return hit", "false"},
		{"json intrinsics overwritten", "JSON.stringify = () => 'x'; JSON.parse = () => 1; return {ok: 1}", `{"ok":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantResult(t, run(t, tc.code, Limits{}), tc.want)
		})
	}
}

func TestConsoleCapture(t *testing.T) {
	res := run(t, `console.log("a", 1, {b: 2}); console.info("i"); console.warn("w"); console.error(new TypeError("e")); console.debug(null, undefined)`, Limits{})
	if res.Error != nil {
		t.Fatal(res.Error)
	}
	want := []LogLine{
		{"log", `a 1 {"b":2}`},
		{"info", "i"},
		{"warn", "w"},
		{"error", "TypeError: e\n    at <anonymous> (agent.js:1:86)"},
		{"debug", "null undefined"},
	}
	if d := cmp.Diff(want, res.Logs); d != "" {
		t.Fatalf("logs (-want +got):\n%s", d)
	}
}

func TestOutputCap(t *testing.T) {
	t.Run("logs truncated", func(t *testing.T) {
		res := run(t, `for (let i = 0; i < 1000; i++) console.log("x".repeat(100)); return 1`, Limits{MaxOutputBytes: 2000})
		wantResult(t, res, "1")
		if !res.Truncated {
			t.Fatal("not marked truncated")
		}
		total := len(res.Result)
		for _, l := range res.Logs {
			total += len(l.Message)
		}
		if total > 2000 {
			t.Fatalf("output is %d bytes, over the cap", total)
		}
	})
	t.Run("result over the cap", func(t *testing.T) {
		res := run(t, `return "y".repeat(5000)`, Limits{MaxOutputBytes: 1000})
		if res.Error == nil || res.Error.Limit != LimitOutputBytes || !res.Truncated {
			t.Fatalf("want maxOutputBytes error, got %+v", res.Error)
		}
	})
}

func TestScriptErrors(t *testing.T) {
	tests := []struct {
		name, code string
		want       ScriptError
	}{
		{"throw on line 3", "const a = 1;\nconst b = 2;\nthrow new RangeError('bad ' + (a + b));",
			ScriptError{Name: "RangeError", Message: "bad 3", Line: 3, Column: 36}},
		{"reference error on line 1", "  missing();",
			ScriptError{Name: "ReferenceError", Message: "missing is not defined", Line: 1, Column: 3}},
		{"in a nested function", "function inner() {\n  throw new TypeError('inner');\n}\nreturn inner();",
			ScriptError{Name: "TypeError", Message: "inner", Line: 2, Column: 13}},
		{"syntax error", "const a = 1;\nlet x = ;",
			ScriptError{Name: "SyntaxError", Message: "unexpected token in expression: ';'", Line: 2}},
		{"thrown string", "throw 'boom'", ScriptError{Name: "Error", Message: "uncaught boom"}},
		{"tool error code", "await callTool('fail')", ScriptError{Name: "Error", Message: "slow down", Code: callerr.RateLimited}},
		{"unknown tool", "await callTool('nope')", ScriptError{Name: "Error", Message: "tool nope not found", Code: callerr.NotFound}},
		{"plain host error", "await callTool('plain_error')", ScriptError{Name: "Error", Message: "upstream exploded", Code: callerr.ToolError}},
		{"not serialisable", "return 10n", ScriptError{Name: "TypeError", Message: "the returned value is not JSON-serialisable: BigInt are forbidden in JSON.stringify"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, tc.code, Limits{})
			if res.Error == nil {
				t.Fatalf("no error, result %s", res.Result)
			}
			got := *res.Error
			got.Stack = ""
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("error (-want +got):\n%s\nstack:\n%s", d, res.Error.Stack)
			}
			if tc.want.Column > 0 && !strings.Contains(res.Error.Stack, fmt.Sprintf("agent.js:%d:%d", tc.want.Line, tc.want.Column)) {
				t.Fatalf("stack does not point into the agent's code:\n%s", res.Error.Stack)
			}
		})
	}
}

func TestPreludeErrorIsReported(t *testing.T) {
	res := runReq(t, &Request{Code: "return 1", Prelude: "throw new Error('bad bindings')"}, Limits{})
	if res.Error == nil || !strings.Contains(res.Error.Message, "prelude: bad bindings") {
		t.Fatalf("got %+v", res.Error)
	}
}

func TestConcurrentToolCalls(t *testing.T) {
	var inflight, peak, calls atomic.Int32
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(3)
	caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if calls.Add(1) <= 3 {
			started.Done()
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return args, nil
	}
	go func() { started.Wait(); close(release) }()
	res := runReq(t, &Request{
		Code:    "const r = await Promise.all([1,2,3,4,5,6,7].map(i => callTool('t', {i}))); return r.map(x => x.i)",
		Prelude: testPrelude, Caller: caller,
	}, Limits{MaxConcurrentToolCalls: 3})
	wantResult(t, res, "[1,2,3,4,5,6,7]")
	if p := peak.Load(); p != 3 {
		t.Fatalf("peak concurrency %d, want 3 (all allowed at once, no more)", p)
	}
	if len(res.ToolCalls) != 7 {
		t.Fatalf("%d tool call records, want 7", len(res.ToolCalls))
	}
}

// TestAwaitedCallRacesTheRest proves a tool call runs on its own while
// anything else can still settle: a timer or a second call the script made
// beside it wins the race against a call that never answers, and the
// never-answering call is cancelled when the script returns.
func TestAwaitedCallRacesTheRest(t *testing.T) {
	var canceled atomic.Int32
	caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
		if name == "hang" {
			<-ctx.Done()
			canceled.Add(1)
			return nil, ctx.Err()
		}
		return args, nil
	}
	tests := []struct{ name, code, want string }{
		{"a timer", "return await Promise.race([callTool('hang', {}), new Promise(r => setTimeout(() => r('timer'), 5))])", `"timer"`},
		{"a second call", "return (await Promise.race([callTool('hang', {}), callTool('echo', {v: 'echo'})])).v", `"echo"`},
		{"a call after a timer", "await new Promise(r => setTimeout(r, 1)); return (await callTool('echo', {v: 1})).v", `1`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := canceled.Load()
			res := runReq(t, &Request{Code: tc.code, Prelude: testPrelude, Caller: caller}, Limits{Timeout: 5 * time.Second})
			wantResult(t, res, tc.want)
			if strings.Contains(tc.code, "hang") && canceled.Load() != before+1 {
				t.Fatalf("the hanging call was not cancelled when the script returned")
			}
		})
	}
}

// TestRetryHint proves a rejected call carries the host's retry hint as a
// number, and no retryAfterMs at all when the host gave none, besides its
// code and the name it was called with.
func TestRetryHint(t *testing.T) {
	tests := []struct {
		name, tool, want string
	}{
		{"with hint", "limited", `["rate_limited", "number", 1500, "rate limit exceeded; retry after 1500 ms", "limited"]`},
		{"without hint", "fail", `["rate_limited", "undefined", false, "slow down", "fail"]`},
		{"not found", "nosuch", `["not_found", "undefined", false, "tool nosuch not found", "nosuch"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, fmt.Sprintf(`try { await callTool(%q, {}); return "called" } catch (e) {
  return [e.code, typeof e.retryAfterMs, "retryAfterMs" in e && e.retryAfterMs, e.message, e.tool] }`, tc.tool), Limits{})
			wantResult(t, res, tc.want)
		})
	}
	t.Run("a script can wait and retry", func(t *testing.T) {
		var calls atomic.Int32
		caller := func(_ context.Context, _ string, args []byte) ([]byte, error) {
			if calls.Add(1) == 1 {
				return nil, &callerr.Error{Code: callerr.RateLimited, Message: "rate limit exceeded; retry after 20 ms", RetryAfter: 20 * time.Millisecond}
			}
			return args, nil
		}
		res := runReq(t, &Request{Prelude: testPrelude, Caller: caller, Code: `
for (let attempt = 1; ; attempt++) {
  try { return [attempt, (await callTool("t", {v: 7})).v]; }
  catch (e) {
    if (e.code !== "rate_limited" || attempt > 3) throw e;
    await new Promise((resolve) => setTimeout(resolve, e.retryAfterMs));
  }
}`}, Limits{})
		wantResult(t, res, `[2, 7]`)
	})
}

func TestMaxToolCalls(t *testing.T) {
	res := run(t, "for (let i = 0; i < 5; i++) await callTool('echo', {i}); return 'done'", Limits{MaxToolCalls: 3})
	if res.Error == nil || res.Error.Code != "limit" || res.Error.Limit != LimitToolCalls || !strings.Contains(res.Error.Message, "maxToolCalls") {
		t.Fatalf("got %+v", res.Error)
	}
	caught := run(t, "let code; for (let i = 0; i < 5; i++) { try { await callTool('echo', {i}) } catch (e) { code = e.code } } return code", Limits{MaxToolCalls: 3})
	wantResult(t, caught, `"limit"`)
}

func TestCancelInFlightCalls(t *testing.T) {
	cancelled := make(chan struct{})
	entered := make(chan struct{})
	caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
		close(entered)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-entered; cancel() }()
	res, err := testEngine.Run(ctx, &Request{Code: "await callTool('slow'); return 1", Prelude: testPrelude, Caller: caller}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error == nil || res.Error.Name != "AbortError" {
		t.Fatalf("got %+v", res.Error)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight call's context was not cancelled")
	}
}

// A script that ends while its host calls still run (here it returns
// without awaiting them, once they started): Run cancels them and returns
// only after they have returned, so that what they record happens before
// the end is reported.
func TestRunWaitsForHostCalls(t *testing.T) {
	var returned atomic.Int32
	caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
		defer returned.Add(1)
		select {
		case <-ctx.Done():
			time.Sleep(20 * time.Millisecond) // the caller's own cleanup
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
			return []byte(`"late"`), nil
		}
	}
	res, err := testEngine.Run(context.Background(), &Request{Code: "callTool('slow'); callTool('slow'); await new Promise((r) => setTimeout(r, 50)); return 1", Prelude: testPrelude, Caller: caller}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != nil || string(res.Result) != "1" {
		t.Fatalf("got %s %+v", res.Result, res.Error)
	}
	if n := returned.Load(); n != 2 {
		t.Fatalf("%d of 2 host calls had returned when Run returned", n)
	}
}

func TestCodeSizeLimit(t *testing.T) {
	res := run(t, "return 1;"+strings.Repeat(" ", 2000), Limits{MaxCodeBytes: 1000})
	if res.Error == nil || res.Error.Limit != LimitCodeBytes {
		t.Fatalf("got %+v", res.Error)
	}
}

func TestRunAfterClose(t *testing.T) {
	e, err := NewEngine(context.Background(), &EngineOptions{CacheDir: testEngine.opts.cacheDir, PoolSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Run(context.Background(), &Request{Code: "return 5"}, Limits{})
	if err != nil || string(res.Result) != "5" {
		t.Fatalf("unpooled run: %v %+v", err, res)
	}
	e.Close()
	if _, err := e.Run(context.Background(), &Request{Code: "return 1"}, Limits{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestFindImport(t *testing.T) {
	tests := []struct {
		code string
		want bool
	}{
		{"await import('qjs:std')", true},
		{"import ( 'qjs:os' )", true},
		{"import/* c */('x')", true},
		{"import\n// c\n('x')", true},
		{"import\u00a0('x')", true},
		{"\u00a0import('x')", true},
		{"[...import('x')]", true},
		{"import.meta", true},
		{"obj.import('x')", false},
		{"const important = 1; important('x')", false},
		{"reimport('x')", false},
		{"const s = 'no imports here'", false},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			if _, _, got := findImport(tc.code); got != tc.want {
				t.Fatalf("findImport(%q) = %v, want %v", tc.code, got, tc.want)
			}
		})
	}
}

// TestTimeBreakdown checks that StartMs and WaitMs split DurationMs: a
// script that awaits a tool blocked for 30 ms waits at least that long, and
// start plus wait never exceed the whole.
func TestTimeBreakdown(t *testing.T) {
	const block = 30 * time.Millisecond
	slow := func(ctx context.Context, _ string, args []byte) ([]byte, error) {
		select {
		case <-time.After(block):
		case <-ctx.Done():
		}
		return args, nil
	}
	tests := []struct {
		name     string
		code     string
		caller   Caller
		minWait  float64
		wantZero bool
	}{
		{name: "no tool call", code: "return 1+1", wantZero: true},
		{name: "one blocked call", code: "return (await callTool('slow', {a: 1})).a", caller: slow, minWait: float64(block.Milliseconds())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runReq(t, &Request{Code: tt.code, Prelude: testPrelude, Caller: tt.caller}, Limits{})
			if res.Error != nil {
				t.Fatalf("script failed: %+v", res.Error)
			}
			if res.StartMs <= 0 {
				t.Errorf("StartMs = %v, want > 0", res.StartMs)
			}
			if tt.wantZero && res.WaitMs != 0 {
				t.Errorf("WaitMs = %v, want 0 for a script that awaits nothing", res.WaitMs)
			}
			if res.WaitMs < tt.minWait {
				t.Errorf("WaitMs = %v, want >= %v", res.WaitMs, tt.minWait)
			}
			if res.StartMs+res.WaitMs > res.DurationMs {
				t.Errorf("StartMs %v + WaitMs %v > DurationMs %v", res.StartMs, res.WaitMs, res.DurationMs)
			}
		})
	}
}
