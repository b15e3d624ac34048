package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAdversarial runs hostile scripts. Each case asserts the safe outcome
// and then that the engine still runs a normal script.
func TestAdversarial(t *testing.T) {
	slowCaller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
		if name == "slow" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if name == "pollute" {
			return []byte(`{"__proto__": {"polluted": 1}, "constructor": {"prototype": {"polluted": 2}}}`), nil
		}
		return echoCaller(ctx, name, args)
	}
	short := Limits{Timeout: 400 * time.Millisecond}
	tests := []struct {
		name  string
		code  string
		lim   Limits
		check func(t *testing.T, res *Result)
	}{
		{"infinite loop", "for (;;) {}", short, wantLimit(LimitTimeout)},
		{"infinite loop in a promise callback", "Promise.resolve().then(() => { for (;;) {} }); await callTool('echo', {})", short, wantLimit(LimitTimeout)},
		{"infinite loop in a timer", "setTimeout(() => { for (;;) {} }, 1); await new Promise(r => setTimeout(r, 100000))", short, wantLimit(LimitTimeout)},
		{"infinite loop that catches", "for (;;) { try { for (;;) {} } catch (e) {} finally { continue } }", short, wantLimit(LimitTimeout)},
		{"catastrophic regexp", "return /(a+)+b/.test('a'.repeat(40))", short, wantLimit(LimitTimeout)},
		{"huge string repeat", "return 'x'.repeat(2 ** 30).length", Limits{MemoryLimitMB: 32}, wantAnyError},
		{"deep recursion", "function f(n) { return f(n + 1) + 1 } return f(0)", Limits{}, wantLimit(LimitStack)},
		{"deep recursion caught, then more", "function f(n) { return f(n + 1) + 1 } try { f(0) } catch (e) {} return f(0)", Limits{}, wantLimit(LimitStack)},
		{"string memory bomb", "const a = []; for (let i = 0; ; i++) a.push('x'.repeat(1 << 20) + i)", Limits{MemoryLimitMB: 32}, wantMemory(32)},
		{"typed-array memory bomb", "const a = []; for (;;) a.push(new Uint8Array(1 << 20))", Limits{MemoryLimitMB: 32}, wantMemory(32)},
		{"array memory bomb", "const a = []; for (let i = 0; ; i++) a.push({i, s: [i, i, i]})", Limits{MemoryLimitMB: 16}, wantMemory(16)},
		{"output flood", "for (;;) console.log('x'.repeat(1000))", Limits{Timeout: 300 * time.Millisecond, MaxOutputBytes: 10000}, func(t *testing.T, res *Result) {
			wantLimit(LimitTimeout)(t, res)
			if !res.Truncated {
				t.Fatal("flooded output not marked truncated")
			}
			n := 0
			for _, l := range res.Logs {
				n += len(l.Message)
			}
			if n > 10000 {
				t.Fatalf("logs hold %d bytes, over the cap", n)
			}
		}},
		{"never-settling promise", "await new Promise(() => {})", Limits{}, func(t *testing.T, res *Result) {
			if res.Error == nil || !strings.Contains(res.Error.Message, "never settle") {
				t.Fatalf("got %+v", res.Error)
			}
		}},
		{"slow tool outliving the timeout", "await callTool('slow')", short, func(t *testing.T, res *Result) {
			wantLimit(LimitTimeout)(t, res)
			if res.DurationMs > 2000 {
				t.Fatalf("took %.0f ms for a 400 ms timeout", res.DurationMs)
			}
		}},
		{"tool-call storm", "await Promise.all(Array.from({length: 1000}, (_, i) => callTool('echo', {i})))", Limits{}, wantLimit(LimitToolCalls)},
		{"timers do not outlive the execution", "setTimeout(() => console.log('late'), 60000); return 'early'", Limits{}, func(t *testing.T, res *Result) {
			wantResult(t, res, `"early"`)
			if res.DurationMs > 2000 || len(res.Logs) != 0 {
				t.Fatalf("timer kept the execution alive: %.0f ms, logs %v", res.DurationMs, res.Logs)
			}
		}},
		{"overwritten JSON and Promise", `
			JSON.parse = () => { throw new Error('hijacked parse') };
			JSON.stringify = () => { throw new Error('hijacked stringify') };
			Promise.prototype.then = function () { throw new Error('hijacked then') };
			globalThis.Promise = function () { throw new Error('hijacked Promise') };
			Object.prototype.toJSON = () => 'hijacked toJSON';
			Array.prototype[0] = 'hijacked index';
			return 'survived'`, Limits{}, func(t *testing.T, res *Result) {
			wantResult(t, res, `"survived"`)
		}},
		{"overwritten intrinsics then a tool call", `
			JSON.parse = () => { throw new Error('hijacked parse') };
			return await callTool('echo', {a: 1})`, Limits{}, func(t *testing.T, res *Result) {
			// The bridge parses results with the JSON.parse it captured
			// before any script ran.
			wantResult(t, res, `{"a": 1}`)
		}},
		{"a global named like the bridge", `
			globalThis.__toolgate_bridge = {pump() { throw new Error('called') }};
			globalThis.__toolgate_call = () => { throw new Error('called') };
			return await callTool('echo', {ok: true})`, Limits{}, func(t *testing.T, res *Result) {
			wantResult(t, res, `{"ok":true}`)
		}},
		{"prototype pollution through a tool result", `
			const r = await callTool('pollute');
			return [({}).polluted ?? 'clean', Object.prototype.polluted ?? 'clean', Object.keys(r)]`, Limits{}, func(t *testing.T, res *Result) {
			wantResult(t, res, `["clean","clean",["__proto__","constructor"]]`)
		}},
		{"no std, os or process globals", "return [typeof std, typeof os, typeof bjson, typeof process, typeof require, typeof print, typeof Deno]",
			Limits{}, func(t *testing.T, res *Result) {
				wantResult(t, res, `["undefined","undefined","undefined","undefined","undefined","undefined","undefined"]`)
			}},
		{"dynamic import", "const std = await import('qjs:std'); return std.loadFile('/etc/passwd')", Limits{}, func(t *testing.T, res *Result) {
			if res.Error == nil || res.Error.Name != "SyntaxError" || !strings.Contains(res.Error.Message, "import") {
				t.Fatalf("got %+v", res.Error)
			}
		}},
		{"import through eval", "return await eval(\"imp\" + \"ort('qjs:os')\")", Limits{}, wantCodegenBlocked},
		{"import through Function", "return await Function('return imp' + 'ort(\"qjs:os\")')()", Limits{}, wantCodegenBlocked},
		{"import through the AsyncFunction constructor", "const AF = (async function () {}).constructor; return await AF('return await imp' + 'ort(\"qjs:os\")')()", Limits{}, wantCodegenBlocked},
		{"import through a generator constructor", "const GF = (function* () {}).constructor; return GF('yield 1')().next()", Limits{}, wantCodegenBlocked},
		{"fetch when disabled", "return typeof fetch", Limits{}, func(t *testing.T, res *Result) { wantResult(t, res, `"undefined"`) }},
		{"host primitive is hidden", "return typeof __toolgate_call", Limits{}, func(t *testing.T, res *Result) { wantResult(t, res, `"undefined"`) }},
		{"coarse clocks", "const a = performance.now(), b = Date.now(); return [a % 1, b % 1]", Limits{}, func(t *testing.T, res *Result) {
			wantResult(t, res, `[0,0]`)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := runReq(t, &Request{Code: tc.code, Prelude: testPrelude, Caller: slowCaller}, tc.lim)
			tc.check(t, res)
			wantResult(t, run(t, "return 1 + 1", Limits{}), "2")
		})
	}
}

func wantLimit(limit string) func(*testing.T, *Result) {
	return func(t *testing.T, res *Result) {
		t.Helper()
		if res.Error == nil || res.Error.Limit != limit {
			t.Fatalf("want an error naming limit %q, got %+v (result %s)", limit, res.Error, res.Result)
		}
	}
}

func wantMemory(mb int) func(*testing.T, *Result) {
	return func(t *testing.T, res *Result) {
		t.Helper()
		wantLimit(LimitMemory)(t, res)
		if res.PeakMemoryBytes > int64(mb)<<20 {
			t.Fatalf("linear memory reached %d bytes, over the %d MB cap", res.PeakMemoryBytes, mb)
		}
	}
}

func wantAnyError(t *testing.T, res *Result) {
	t.Helper()
	if res.Error == nil {
		t.Fatalf("want an error, got result %s", res.Result)
	}
}

func wantCodegenBlocked(t *testing.T, res *Result) {
	t.Helper()
	if res.Error == nil || !strings.Contains(res.Error.Message, "code generation from strings is disabled") {
		t.Fatalf("got %+v (result %s)", res.Error, res.Result)
	}
}

func TestStateDoesNotLeakBetweenRuns(t *testing.T) {
	wantResult(t, run(t, "globalThis.leak = 42; Object.prototype.leak2 = 1; Array.prototype.push = null; return 1", Limits{}), "1")
	wantResult(t, run(t, "return [typeof leak, typeof ({}).leak2, typeof [].push]", Limits{}), `["undefined","undefined","function"]`)
}

// TestNoFilesystem proves, below the script's restrictions, that the
// interpreter's own std and os modules reach no host file: reads and writes
// through them fail even with a secret file in the working directory.
func TestNoFilesystem(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("TOP SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	g, err := newGuest(testEngine.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	probe := fmt.Sprintf(`
		(async () => {
			const std = await import('qjs:std');
			const os = await import('qjs:os');
			const out = [];
			for (const p of [%q, '/secret.txt', 'secret.txt', '/etc/passwd', '/']) out.push(String(std.loadFile(p)));
			const f = std.open('/written.txt', 'w');
			out.push(f === null ? 'no write' : 'WROTE');
			out.push(os.open('/written2.txt', os.O_WRONLY | os.O_CREAT) < 0 ? 'no create' : 'CREATED');
			out.push(String(os.readdir('/')[1] !== 0 ? 'no readdir' : 'READDIR'));
			out.push(String(std.getenv('HOME')), String(std.getenv('PATH')));
			return out.join('|');
		})()`, secret)
	s, err := g.eval("probe.js", probe)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "TOP SECRET") || strings.Contains(s, "root:") || strings.Contains(s, "WROTE") || strings.Contains(s, "CREATED") || strings.Contains(s, "READDIR") {
		t.Fatalf("filesystem reachable: %s", s)
	}
	if want := "null|null|null|null|null|no write|no create|no readdir|undefined|undefined"; s != want {
		t.Fatalf("probe = %q, want %q", s, want)
	}
	for _, name := range []string{"written.txt", "written2.txt"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Fatalf("%s was created on the host", name)
		}
	}
}

func TestFiftyConcurrentExecutions(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			res, err := testEngine.Run(context.Background(), &Request{
				Code:    fmt.Sprintf("const r = await callTool('echo', {i: %d}); return r.i * 2", i),
				Prelude: testPrelude, Caller: echoCaller,
			}, Limits{})
			switch {
			case err != nil:
				errs <- err
			case res.Error != nil:
				errs <- res.Error
			case string(res.Result) != fmt.Sprint(i*2):
				errs <- fmt.Errorf("run %d returned %s", i, res.Result)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
