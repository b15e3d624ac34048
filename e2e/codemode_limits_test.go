package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// timingSlack is how long past a deadline an answer may come: 250 ms when
// TOOLGATE_TIMING=strict (scripts/test.sh runs the timing tests in a step
// of their own), else a second, since beside other packages' tests the
// wall clock also measures their load.
var timingSlack = func() time.Duration {
	if os.Getenv("TOOLGATE_TIMING") == "strict" {
		return 250 * time.Millisecond
	}
	return time.Second
}()

// The scripts that once ran for seconds to minutes past their timeout
// inside QuickJS's native built-ins.
var nativeHostile = map[string]string{
	"join":        "return new Array(1e9).join('x').length",
	"indexOf":     "return new Array(1e9).indexOf(1)",
	"includes":    "return new Array(2**32-1).includes(1)",
	"lastIndexOf": "return Array.prototype.lastIndexOf.call({length: 1e9}, 1)",
	"every":       "return [].every.call({length: 1e9}, () => true)",
	"toString":    "return new Array(1e9).toString()",
	"BigInt":      "let x = 3n ** 150000n; x = x * x; for (let i = 0; i < 3; i++) x.toString(); return 1",
}

// TestCodeModeNativeTimeout: through execute_code, each of those ends with
// the timeout error soon after its deadline; while the execution slots are
// all taken by such scripts, a benign script still answers within their
// deadline plus 250 ms; and a script's outputs and arguments obey the
// limits.
func TestCodeModeNativeTimeout(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"codeMode": {"enabled": true, "timeout": 1000, "maxConcurrentExecutions": 2, "maxOutputBytes": 65536, "maxToolCalls": 20},
		"limits": {"maxRequestBodyBytes": 65536},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)

	for name, code := range nativeHostile {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			res, ex := execute(t, cs, code)
			took := time.Since(start)
			if !res.IsError || ex.Error == nil || ex.Error.Limit != "timeout" {
				t.Fatalf("got %v %+v after %v, want the timeout error", res.IsError, ex.Error, took)
			}
			if took > time.Second+timingSlack {
				t.Fatalf("answered after %v for a 1 s timeout", took)
			}
		})
	}

	t.Run("a benign script beside two runaways", func(t *testing.T) {
		start := time.Now()
		hostile := []<-chan callOutcome{
			asyncCall(cs, "execute_code", map[string]any{"code": nativeHostile["indexOf"]}),
			asyncCall(cs, "execute_code", map[string]any{"code": nativeHostile["BigInt"]}),
		}
		g.waitInFlight(t, 2)
		res, ex := execute(t, cs, "return 1 + 1")
		if res.IsError || string(ex.Result) != "2" {
			t.Fatalf("benign script = %s", text(res))
		}
		if took := time.Since(start); took > time.Second+timingSlack {
			t.Fatalf("the benign script answered %v after the runaways started (their deadline: 1 s)", took)
		}
		for _, h := range hostile {
			if o := waitOutcome(t, h); o.err != nil || !o.res.IsError || !strings.Contains(text(o.res), "timeout") {
				t.Fatalf("runaway = %v %v", o.err, o.res)
			}
		}
	})

	t.Run("long tool names", func(t *testing.T) {
		res, ex := execute(t, cs, "const codes = []; for (let i = 0; i < 10; i++) { try { await callTool('n'.repeat(200000) + i) } catch (e) { codes.push(e.code) } } return codes")
		if res.IsError || !strings.Contains(string(ex.Result), "not_found") {
			t.Fatalf("got %s", text(res))
		}
		b, _ := json.Marshal(res.StructuredContent)
		if len(b) > 65536+512 {
			t.Fatalf("structuredContent is %d bytes with maxOutputBytes 64 KiB", len(b))
		}
		for _, c := range ex.ToolCalls {
			if len(c.Tool) > 128 {
				t.Fatalf("a record holds a %d-byte name", len(c.Tool))
			}
		}
		for _, ev := range g.auditEvents(t) {
			if len(ev.Tool) > 200000 {
				t.Fatalf("the audit log holds a %d-byte tool name (%s)", len(ev.Tool), ev.Type)
			}
		}
	})

	t.Run("calls past maxToolCalls", func(t *testing.T) {
		res, ex := execute(t, cs, "for (let i = 0; i < 500; i++) { try { await tools.s.echo({text: 'x'}) } catch (e) {} } return 1")
		if res.IsError || len(ex.ToolCalls) != 21 {
			t.Fatalf("got %d records: %s", len(ex.ToolCalls), text(res))
		}
	})

	t.Run("arguments over maxRequestBodyBytes", func(t *testing.T) {
		res, ex := execute(t, cs, "try { await tools.s.echo({text: 'x'.repeat(70000)}) } catch (e) { return e.code }")
		if res.IsError || string(ex.Result) != `"limit"` {
			t.Fatalf("got %s", text(res))
		}
	})
}

// TestShutdownStopsARunaway: a script spinning inside a native built-in
// does not hold a shutdown past its grace period.
func TestShutdownStopsARunaway(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"shutdownGracePeriod": "1s",
		"codeMode": {"enabled": true, "timeout": 60000},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	run := asyncCall(cs, "execute_code", map[string]any{"code": nativeHostile["indexOf"]})
	g.waitInFlight(t, 1)
	start := time.Now()
	if err := g.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exit, err := g.proc.Wait(30 * time.Second); err != nil || exit != 0 {
		t.Fatalf("toolgate exit = %d, %v; want 0", exit, err)
	}
	// One second of grace, then the answers and the audit log are flushed.
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %v with a 1 s grace period", took)
	}
	if re := rpcErrorOf(waitOutcome(t, run).err); re == nil || re.Code != codeShuttingDown {
		t.Errorf("the runaway got %v, want -32031", re)
	}
}
