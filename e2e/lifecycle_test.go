package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/policy/audit"
)

// JSON-RPC codes of the retryable refusals (docs/operations.md, "Shutdown and
// backpressure").
const (
	codeOverloaded   = -32030
	codeShuttingDown = -32031
)

var inFlightRE = regexp.MustCompile(`(?m)^toolgate_tool_calls_in_flight (\d+)$`)

// inFlight reads the gateway's count of tools/call requests being handled.
func (g *gateway) inFlight(t *testing.T) int {
	t.Helper()
	_, body := httpGet(t, g.base+"/metrics")
	m := inFlightRE.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no toolgate_tool_calls_in_flight in /metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// waitInFlight waits until n tool calls are being handled.
func (g *gateway) waitInFlight(t *testing.T, n int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%d calls in flight", n), func() bool { return g.inFlight(t) == n })
}

// asyncCall calls a tool in the background; the channel receives the
// outcome.
type callOutcome struct {
	res *mcp.CallToolResult
	err error
	at  time.Time
}

func asyncCall(cs *mcp.ClientSession, name string, args any) <-chan callOutcome {
	ch := make(chan callOutcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		ch <- callOutcome{res, err, time.Now()}
	}()
	return ch
}

func waitOutcome(t *testing.T, ch <-chan callOutcome) callOutcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(90 * time.Second):
		t.Fatal("the call never returned")
		return callOutcome{}
	}
}

// rpcBody decodes the JSON-RPC error of a raw HTTP answer.
func rpcBody(t *testing.T, body string) (code int, message string, data map[string]any) {
	t.Helper()
	var m struct {
		Error struct {
			Code    int            `json:"code"`
			Message string         `json:"message"`
			Data    map[string]any `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("answer %q is not a JSON-RPC error: %v", body, err)
	}
	return m.Error.Code, m.Error.Message, m.Error.Data
}

// checkRetryable checks a raw refusal: 503, Retry-After, the JSON-RPC code
// and a retryAfterMs hint.
func checkRetryable(t *testing.T, what string, status int, h http.Header, body string, wantCode int) {
	t.Helper()
	if status != http.StatusServiceUnavailable {
		t.Errorf("%s: status %d %s, want 503", what, status, body)
		return
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("%s: Retry-After = %q", what, h.Get("Retry-After"))
	}
	code, msg, data := rpcBody(t, body)
	if code != wantCode {
		t.Errorf("%s: JSON-RPC code %d (%s), want %d", what, code, msg, wantCode)
	}
	if ms, _ := data["retryAfterMs"].(float64); ms < 1 {
		t.Errorf("%s: no retryAfterMs in %s", what, body)
	}
}

// callEvents returns the tool.call events of a tool in the audit log.
func callEvents(t *testing.T, g *gateway, tool string) []*audit.Event {
	var out []*audit.Event
	for _, ev := range g.auditEvents(t) {
		if ev.Type == audit.EventToolCall && ev.Tool == tool {
			out = append(out, ev)
		}
	}
	return out
}

// directStats reads the counters of an HTTP test upstream without the
// gateway.
func directStats(t *testing.T, url string) map[string]int {
	t.Helper()
	cs := directHTTP(t, url, false)
	var st map[string]int
	if err := json.Unmarshal([]byte(text(callTool(t, cs, "stats", nil))), &st); err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// lifecycleGateway starts a gateway with the test upstream over stdio ("s",
// in a process group with a child, pids in pidfile) and over streamable
// HTTP ("h", a process of the test's, so that its counters outlive the
// gateway).
func lifecycleGateway(t *testing.T, extra string) (g *gateway, httpURL, pidfile string) {
	t.Helper()
	up := testUpstream(t)
	httpURL = startHTTPUpstream(t, "http", "h")
	pidfile = filepath.Join(t.TempDir(), "pids")
	g = startGateway(t, fmt.Sprintf(`{
		%s
		"mcpServers": {
			"s": {"command": %s, "args": ["-pidfile", %s, "-spawn-child"], "allowedToolsGlob": ["echo", "slow"]},
			"h": {"url": %s, "allowedToolsGlob": ["echo", "slow", "stats"]}
		}
	}`, extra, jsonString(up), jsonString(pidfile), jsonString(httpURL)))
	return g, httpURL, pidfile
}

// processGrace is how long the processes of an upstream's group, killed
// by a gateway as it exits, may take to be gone after it.
const processGrace = 2 * time.Second

func TestGracefulShutdown(t *testing.T) {
	t.Run("in-flight calls finish", func(t *testing.T) {
		g, _, pidfile := lifecycleGateway(t, `"shutdownGracePeriod": "20s",`)
		pids := readPids(t, pidfile, 2)
		key := g.keys["default"]
		sid := rawSession(t, g.URL(), bearer(key)) // a session opened before the signal
		cs := connect(t, g.URL(), nil)
		idle := connect(t, g.URL(), nil) // its event stream must not hold the shutdown
		if got := text(callTool(t, idle, "s__echo", map[string]any{"text": "idle"})); got != "idle" {
			t.Fatalf("echo = %q", got)
		}
		slowHTTP := asyncCall(cs, "h__slow", map[string]any{"ms": 2500})
		slowStdio := asyncCall(cs, "s__slow", map[string]any{"ms": 2500})
		g.waitInFlight(t, 2)

		signalled := time.Now()
		if err := g.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		g.proc.WaitForLine(t, "shutting down: draining", 10*time.Second)

		// During the drain: not ready, and no new work.
		code, body := g.readyz(t)
		if code != http.StatusServiceUnavailable || body["draining"] != true {
			t.Errorf("readyz while draining = %d %v", code, body)
		}
		if code, _ := httpGet(t, g.base+"/healthz"); code != http.StatusOK {
			t.Errorf("healthz while draining = %d", code)
		}
		status, h, raw := initialize(t, nil, g.URL(), bearer(key))
		checkRetryable(t, "new session while draining", status, h, raw, codeShuttingDown)
		hs := map[string]string{"Authorization": "Bearer " + key, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
		status, h, raw = post(t, nil, g.URL(), hs, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"late"}}}`)
		checkRetryable(t, "new call while draining", status, h, raw, codeShuttingDown)
		// A SIGHUP during the drain is ignored, not fatal.
		if err := g.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		g.proc.WaitForLine(t, "SIGHUP ignored", 10*time.Second)
		// The calls in flight are not disturbed: a session still answers
		// what is not new work.
		if status, _, raw := post(t, nil, g.URL(), hs, `{"jsonrpc":"2.0","id":8,"method":"tools/list"}`); status != http.StatusOK || !strings.Contains(raw, "s__echo") {
			t.Errorf("tools/list while draining = %d %s", status, raw)
		}

		for name, ch := range map[string]<-chan callOutcome{"h__slow": slowHTTP, "s__slow": slowStdio} {
			o := waitOutcome(t, ch)
			if o.err != nil || o.res.IsError || text(o.res) != "slept 2500 ms" {
				t.Errorf("%s in flight at SIGTERM = %v %v, want it to complete", name, o.err, o.res)
			}
		}
		exit, err := g.proc.Wait(20 * time.Second)
		if err != nil || exit != 0 {
			t.Fatalf("toolgate exit = %d, %v; want 0", exit, err)
		}
		// It did not wait for the whole grace period once the calls ended,
		// and no connection (such as an event stream) held it open.
		if took := time.Since(signalled); took > 15*time.Second {
			t.Errorf("shutdown took %v with a 20s grace period and 2.5s calls", took)
		}
		if strings.Contains(g.proc.Stderr(), "closing the connections still open") {
			t.Errorf("connections were still open after the drain")
		}
		for _, pid := range e2etest.ProcessesLeft(pids, processGrace) {
			t.Errorf("process %d of the stdio upstream's group outlived the gateway", pid)
		}
		for _, tool := range []string{"h__slow", "s__slow"} {
			evs := callEvents(t, g, tool)
			if len(evs) != 1 || evs[0].Outcome != "ok" {
				t.Errorf("audit events of %s = %v, want one ok", tool, evs)
			}
		}
		if out := g.runCLI(t, "audit", "verify"); !strings.Contains(out, "OK") {
			t.Errorf("audit verify = %q", out)
		}
	})

	t.Run("calls past the grace period are cancelled", func(t *testing.T) {
		g, httpURL, pidfile := lifecycleGateway(t, `"shutdownGracePeriod": "2s",`)
		pids := readPids(t, pidfile, 2)
		cs := connect(t, g.URL(), nil)
		long := asyncCall(cs, "h__slow", map[string]any{"ms": 60000})
		g.waitInFlight(t, 1)
		signalled := time.Now()
		if err := g.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		o := waitOutcome(t, long)
		if o.err == nil {
			t.Fatalf("a call past the grace period succeeded: %v", text(o.res))
		}
		if re := rpcError(t, o.err); re.Code != codeShuttingDown || !strings.Contains(re.Message, "shut down") {
			t.Errorf("cancelled call error = %d %q", re.Code, re.Message)
		}
		if d := o.at.Sub(signalled); d < 1500*time.Millisecond {
			t.Errorf("the call was cancelled %v after SIGTERM, before the 2s grace period", d)
		}
		exit, err := g.proc.Wait(20 * time.Second)
		if err != nil || exit != 0 {
			t.Fatalf("toolgate exit = %d, %v; want 0", exit, err)
		}
		// The upstream was told.
		eventually(t, 10*time.Second, "the upstream to see the cancellation", func() bool {
			return directStats(t, httpURL)["cancelled"] == 1
		})
		if st := directStats(t, httpURL); st["slowCompleted"] != 0 {
			t.Errorf("upstream stats = %v", st)
		}
		evs := callEvents(t, g, "h__slow")
		if len(evs) != 1 || evs[0].Outcome != "canceled" {
			t.Errorf("audit events of the cancelled call = %v, want one canceled", evs)
		}
		if out := g.runCLI(t, "audit", "verify"); !strings.Contains(out, "OK") {
			t.Errorf("audit verify = %q", out)
		}
		for _, pid := range e2etest.ProcessesLeft(pids, processGrace) {
			t.Errorf("process %d of the stdio upstream's group outlived the gateway", pid)
		}
	})

	t.Run("a second signal exits at once", func(t *testing.T) {
		g, _, pidfile := lifecycleGateway(t, `"shutdownGracePeriod": "60s",`)
		pids := readPids(t, pidfile, 2)
		cs := connect(t, g.URL(), nil)
		long := asyncCall(cs, "s__slow", map[string]any{"ms": 60000})
		g.waitInFlight(t, 1)
		if err := g.proc.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		g.proc.WaitForLine(t, "shutting down: draining", 10*time.Second)
		second := time.Now()
		if err := g.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		exit, err := g.proc.Wait(5 * time.Second)
		if err != nil {
			t.Fatalf("toolgate still running after a second signal: %v", err)
		}
		if exit != 128+int(syscall.SIGTERM) {
			t.Errorf("exit code after a second SIGTERM = %d, want %d", exit, 128+int(syscall.SIGTERM))
		}
		t.Logf("exited %v after the second signal", time.Since(second).Round(time.Millisecond))
		// The call must not succeed. It may fail either way: the
		// connection drops, or the gateway, whose upstreams the exit
		// kills first, answers with the upstream's failure just before
		// it is gone.
		if o := waitOutcome(t, long); o.err == nil && (o.res == nil || !o.res.IsError) {
			t.Errorf("the call in flight succeeded after an immediate exit: %v", text(o.res))
		}
		eventually(t, 5*time.Second, "the upstream's process group to be killed", func() bool {
			return !e2etest.ProcessAlive(pids[0]) && !e2etest.ProcessAlive(pids[1])
		})
	})
}

// A Code Mode execution in flight at SIGTERM finishes, its inner calls
// included (they are not new work); one past the grace period is aborted.
func TestGracefulShutdownCodeMode(t *testing.T) {
	for _, tc := range []struct {
		name, grace string
		ms          int
		ok          bool
	}{
		{"finishes", "20s", 2000, true},
		{"aborted at the grace deadline", "2s", 15000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := testUpstream(t)
			g := startGateway(t, fmt.Sprintf(`{
				"shutdownGracePeriod": %q,
				"codeMode": {"enabled": true, "timeout": 30000},
				"mcpServers": {"s": {"command": %s, "allowedToolsGlob": ["echo", "slow"]}}
			}`, tc.grace, jsonString(up)))
			cs := connect(t, g.URL(), nil)
			code := fmt.Sprintf(`await tools.s.slow({ms: %d}); const r = await tools.s.echo({text: "after"}); return r.text;`, tc.ms)
			run := asyncCall(cs, "execute_code", map[string]any{"code": code})
			g.waitInFlight(t, 1)
			if err := g.proc.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			o := waitOutcome(t, run)
			if tc.ok {
				if o.err != nil || o.res.IsError || !strings.Contains(text(o.res), `result: "after"`) {
					t.Errorf("execution in flight at SIGTERM = %v %v, want it to finish", o.err, o.res)
				}
			} else if re := rpcErrorOf(o.err); re == nil || re.Code != codeShuttingDown {
				t.Errorf("execution past the grace period = %v %v, want -32031", o.err, o.res)
			}
			if exit, err := g.proc.Wait(20 * time.Second); err != nil || exit != 0 {
				t.Fatalf("toolgate exit = %d, %v; want 0", exit, err)
			}
			var execs []*audit.Event
			for _, ev := range g.auditEvents(t) {
				if ev.Type == audit.EventCodeExecution {
					execs = append(execs, ev)
				}
			}
			want := "ok"
			if !tc.ok {
				want = "error"
			}
			if len(execs) != 1 || execs[0].Outcome != want {
				t.Errorf("code.execution events = %v, want one %s", execs, want)
			}
			if slow := callEvents(t, g, "s__slow"); len(slow) != 1 || (tc.ok && slow[0].Outcome != "ok") || (!tc.ok && slow[0].Outcome != "canceled") {
				t.Errorf("audit of the script's slow call = %v", slow)
			}
			if out := g.runCLI(t, "audit", "verify"); !strings.Contains(out, "OK") {
				t.Errorf("audit verify = %q", out)
			}
		})
	}
}

// Over --stdio the one session outlives the signal by the drain: the call
// in flight answers, then serve exits 0.
func TestGracefulShutdownStdio(t *testing.T) {
	up := testUpstream(t)
	pidfile := filepath.Join(t.TempDir(), "pids")
	path := writeConfig(t, fmt.Sprintf(`{
		"shutdownGracePeriod": "20s",
		"mcpServers": {"s": {"command": %s, "args": ["-pidfile", %s, "-spawn-child"], "allowedToolsGlob": ["slow", "stats"]}}
	}`, jsonString(up), jsonString(pidfile)))
	cmd := exec.Command(e2etest.BuildBinary(t, "./cmd/toolgate"), "serve", "--stdio", "-c", path)
	cmd.Dir = filepath.Dir(path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("toolgate stderr:\n%s", stderr.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "stdio", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	pids := readPids(t, pidfile, 2)
	slow := asyncCall(cs, "s__slow", map[string]any{"ms": 2000})
	eventually(t, 10*time.Second, "the call to reach the upstream", func() bool {
		return upstreamStats(t, cs, "s")["calls"] == 1
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if o := waitOutcome(t, slow); o.err != nil || text(o.res) != "slept 2000 ms" {
		t.Fatalf("call in flight at SIGTERM = %v %v", o.err, o.res)
	}
	done := make(chan error, 1)
	go func() { done <- cs.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("serve --stdio did not exit after the drain")
	}
	_ = cs.Close() // waits for the process
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("serve --stdio exit = %v, want 0", cmd.ProcessState)
	}
	for _, pid := range e2etest.ProcessesLeft(pids, processGrace) {
		t.Errorf("process %d of the upstream's group outlived the gateway", pid)
	}
}

func TestBackpressure(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"limits": {"maxInFlightCalls": 3},
		"mcpServers": {"s": {"command": %s, "allowedToolsGlob": ["echo", "slow"]}}
	}`, jsonString(up)))
	key := g.keys["default"]
	cs := connect(t, g.URL(), nil)
	var slow []<-chan callOutcome
	for range 3 {
		slow = append(slow, asyncCall(cs, "s__slow", map[string]any{"ms": 4000}))
	}
	g.waitInFlight(t, 3)

	// At the cap: raw HTTP gets 503 with Retry-After before the SDK sees
	// the request...
	sid := rawSession(t, g.URL(), bearer(key))
	hs := map[string]string{"Authorization": "Bearer " + key, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
	status, h, raw := post(t, nil, g.URL(), hs, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"x"}}}`)
	checkRetryable(t, "call over the cap", status, h, raw, codeOverloaded)
	if _, msg, _ := rpcBody(t, raw); !strings.Contains(msg, "limits.maxInFlightCalls") {
		t.Errorf("refusal does not name the limit: %q", msg)
	}
	// ... an SDK client gets an error and keeps its session; other
	// requests are served.
	other := connect(t, g.URL(), nil)
	if _, err := callCtx(other, "s__echo", map[string]any{"text": "x"}); err == nil || !strings.Contains(err.Error(), "Service Unavailable") {
		t.Errorf("SDK call over the cap: err = %v, want Service Unavailable", err)
	}
	if names := toolNames(t, other); !slices.Contains(names, "s__echo") {
		t.Errorf("tools/list at the cap = %v", names)
	}
	// The refused calls came back while the others were still running.
	if n := g.inFlight(t); n != 3 {
		t.Errorf("%d calls in flight after the refusals, want the 3 slow ones", n)
	}
	for i, ch := range slow {
		if o := waitOutcome(t, ch); o.err != nil || text(o.res) != "slept 4000 ms" {
			t.Errorf("slow call %d = %v %v", i, o.err, o.res)
		}
	}
	// Below the cap again, everyone is served.
	g.waitInFlight(t, 0)
	if got := text(callTool(t, other, "s__echo", map[string]any{"text": "again"})); got != "again" {
		t.Errorf("echo after the load = %q", got)
	}
	status, _, raw = post(t, nil, g.URL(), hs, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"raw again"}}}`)
	if status != http.StatusOK || !strings.Contains(raw, "raw again") {
		t.Errorf("raw call after the load = %d %s", status, raw)
	}
	_, body := httpGet(t, g.base+"/metrics")
	if !strings.Contains(string(body), `toolgate_requests_refused_total{project="default",reason="overloaded"} 2`) {
		t.Errorf("metrics do not count the 2 refusals:\n%s", grepLines(string(body), "refused"))
	}
}

// Code Mode's execution slots refuse with the same retryable error once
// the brief queue wait is over.
func TestExecutionSlotsAreRetryable(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"codeMode": {"enabled": true, "maxConcurrentExecutions": 1, "timeout": 20000},
		"mcpServers": {"s": {"command": %s, "allowedToolsGlob": ["slow"]}}
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	busy := asyncCall(cs, "execute_code", map[string]any{"code": `await tools.s.slow({ms: 6000}); return "done";`})
	g.waitInFlight(t, 1) // the running execution holds the only slot
	_, err := callCtx(cs, "execute_code", map[string]any{"code": `return 1;`})
	re := rpcError(t, err)
	if re.Code != codeOverloaded || !strings.Contains(re.Message, "codeMode.maxConcurrentExecutions") {
		t.Errorf("execution over the slots = %d %q", re.Code, re.Message)
	}
	var data map[string]any
	if json.Unmarshal(re.Data, &data) != nil || data["retryAfterMs"] == nil {
		t.Errorf("no retryAfterMs in %s", re.Data)
	}
	if o := waitOutcome(t, busy); o.err != nil || o.res.IsError {
		t.Errorf("the running execution = %v %v", o.err, o.res)
	}
	res, _ := execute(t, cs, `return 2;`)
	if res.IsError {
		t.Errorf("execution after the slot freed: %s", text(res))
	}
}

func grepLines(s, substr string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// Many clients call tools in a loop while the configuration is reloaded
// again and again, switching a filter: no call fails except for a tool the
// configuration in force hides, no session is dropped, and every tools/list
// is exactly one of the two configurations, never a mix.
func TestReloadUnderLoad(t *testing.T) {
	up := testUpstream(t)
	config := func(allow string) string {
		return fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedToolsGlob": [%s]}}}`, jsonString(up), allow)
	}
	// Several tools differ, so that a swap takes several steps.
	configs := []string{config(`"echo", "stats", "headers", "progress", "log", "roots"`), config(`"echo", "fail", "content", "environ", "sample", "elicit"`)}
	lists := [][]string{
		{"s__echo", "s__headers", "s__log", "s__progress", "s__roots", "s__stats"},
		{"s__content", "s__echo", "s__elicit", "s__environ", "s__fail", "s__sample"},
	}
	g := startGateway(t, configs[0])

	const clients = 8
	var (
		stop     atomic.Bool
		calls    atomic.Int64
		hidden   atomic.Int64
		listsA   atomic.Int64
		listsB   atomic.Int64
		failures = make(chan string, 100)
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		select {
		case failures <- fmt.Sprintf(format, args...):
		default:
		}
	}
	sessions := make([]*mcp.ClientSession, clients)
	for i := range sessions {
		sessions[i] = connect(t, g.URL(), nil)
	}
	for i, cs := range sessions {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": fmt.Sprint(i, n)}})
				switch {
				case err != nil:
					fail("client %d: echo failed: %v", i, err)
				case text(res) != fmt.Sprint(i, n):
					fail("client %d: echo = %q", i, text(res))
				}
				calls.Add(1)
				// A tool only one of the configurations shows: found, or
				// refused as unknown, nothing else.
				name := []string{"s__stats", "s__fail", "s__headers", "s__content"}[n%4]
				args := map[string]any{}
				if name == "s__fail" {
					args["message"] = "expected"
				}
				res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
				switch {
				case err != nil:
					if re := rpcErrorOf(err); re == nil || !strings.Contains(re.Message, "unknown tool") {
						fail("client %d: %s failed for another reason than the filter: %v", i, name, err)
					}
					hidden.Add(1)
				case name == "s__fail" && (!res.IsError || text(res) != "expected"):
					fail("client %d: fail = %v %q", i, res.IsError, text(res))
				case name != "s__fail" && res.IsError:
					fail("client %d: %s = error %q", i, name, text(res))
				}
				calls.Add(1)
				var names []string
				for tool, err := range cs.Tools(ctx, nil) {
					if err != nil {
						fail("client %d: tools/list: %v", i, err)
						break
					}
					names = append(names, tool.Name)
				}
				cancel()
				slices.Sort(names)
				switch {
				case slices.Equal(names, lists[0]):
					listsA.Add(1)
				case slices.Equal(names, lists[1]):
					listsB.Add(1)
				default:
					fail("client %d: tools/list = %v, neither configuration", i, names)
				}
			}
		})
	}

	const reloads = 24
	for r := 1; r <= reloads; r++ {
		if err := os.WriteFile(g.configPath, []byte(configs[r%2]), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := g.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		want := r
		eventually(t, 30*time.Second, fmt.Sprintf("reload %d to apply", r), func() bool {
			return strings.Count(g.proc.Stderr(), "configuration reloaded") >= want
		})
		time.Sleep(100 * time.Millisecond) // let the clients work under this configuration
	}
	stop.Store(true)
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	t.Logf("%d calls (%d refused as hidden), %d lists of A, %d of B, over %d reloads", calls.Load(), hidden.Load(), listsA.Load(), listsB.Load(), reloads)
	if listsA.Load() == 0 || listsB.Load() == 0 {
		t.Errorf("the clients saw only one configuration (A %d, B %d)", listsA.Load(), listsB.Load())
	}
	// Every session is still the one it was.
	for i, cs := range sessions {
		if got := text(callTool(t, cs, "s__echo", map[string]any{"text": "still here"})); got != "still here" {
			t.Errorf("session %d after the reloads: echo = %q", i, got)
		}
	}
	if strings.Contains(g.proc.Stderr(), "configuration reload refused") {
		t.Errorf("a reload was refused")
	}
}

// rpcErrorOf is the JSON-RPC error inside err, or nil.
func rpcErrorOf(err error) *jsonrpc.Error {
	var re *jsonrpc.Error
	if errors.As(err, &re) {
		return re
	}
	return nil
}
