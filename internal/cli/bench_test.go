package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/bench"
	"github.com/toolgate/toolgate/internal/benchcompare"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/mcpclient"
)

// benchJSON runs a bench subcommand with --json and decodes its report.
func benchJSON[T any](t *testing.T, args ...string) T {
	t.Helper()
	code, out, errOut := run(t, "", append(args, "--json")...)
	if code != 0 {
		t.Fatalf("exit %d\nstderr: %s\nstdout: %s", code, errOut, out)
	}
	return decode[T](t, out)
}

// ordered checks that a summary's percentiles are in order and sane.
func ordered(t *testing.T, what string, s *bench.Summary, n int) {
	t.Helper()
	if s == nil {
		t.Fatalf("%s: missing", what)
	}
	if s.N != n || !(0 <= s.Min && s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.Max) || s.Max <= 0 {
		t.Errorf("%s: %+v, want %d samples with 0 <= min <= p50 <= p90 <= p99 <= max, max > 0", what, *s, n)
	}
}

func checkMachine(t *testing.T, m bench.Machine) {
	t.Helper()
	if m.Cores < 1 || m.GoVersion == "" || m.ToolgateVersion == "" {
		t.Errorf("machine %+v lacks cores, Go or toolgate version", m)
	}
}

func TestBenchExecDemo(t *testing.T) {
	const n = 6
	tests := []struct {
		builtin   string
		extra     []string
		wantCalls int // per execution
	}{
		{builtin: "trivial"},
		{builtin: "fanout", extra: []string{"--calls", "3"}, wantCalls: 3},
		{builtin: "chain", extra: []string{"--calls", "2"}, wantCalls: 2},
		{builtin: "transform", wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.builtin, func(t *testing.T) {
			rep := benchJSON[bench.ExecReport](t, append([]string{"bench", "exec", "--builtin", tt.builtin, "-n", "6", "--concurrency", "2", "--warmup", "2"}, tt.extra...)...)
			checkMachine(t, rep.Machine)
			if rep.Executions != n || rep.Succeeded != n || rep.Failed != 0 {
				t.Errorf("%d executions, %d ok, %d failed; want %d ok (errors %v, limits %v)", rep.Executions, rep.Succeeded, rep.Failed, n, rep.Errors, rep.LimitsHit)
			}
			ordered(t, "wall", &rep.Wall, n)
			ordered(t, "duration", rep.Duration, n)
			ordered(t, "start", rep.Start, n)
			if rep.CPUPerExecMs == nil || *rep.CPUPerExecMs <= 0 {
				t.Errorf("cpuPerExecMs = %v, want > 0", rep.CPUPerExecMs)
			}
			if rep.PeakMemory == nil || rep.PeakMemory.P50 < 64<<10 || rep.PeakMemory.Max < rep.PeakMemory.P50 {
				t.Errorf("peak memory %+v, want at least the interpreter's 64 KiB", rep.PeakMemory)
			}
			if rep.ExecPerSec <= 0 || rep.ElapsedSec <= 0 {
				t.Errorf("%v exec/s in %v s", rep.ExecPerSec, rep.ElapsedSec)
			}
			if rep.ToolCalls.Total != n*tt.wantCalls || rep.ToolCalls.Failed != 0 {
				t.Errorf("tool calls %+v, want %d, none failed", rep.ToolCalls, n*tt.wantCalls)
			}
			if share := rep.ToolCalls.Share; share == nil || *share < 0 || *share > 1 || (tt.wantCalls > 0) != (*share > 0) {
				t.Errorf("tool share %v, want in [0, 1] and > 0 exactly when tools are called", share)
			}
			if rep.Settings["builtin"] != tt.builtin || rep.Settings["n"] != "6" || rep.Settings["concurrency"] != "2" {
				t.Errorf("settings %v", rep.Settings)
			}
		})
	}
}

// testUpstreamConfig writes a configuration fronting the Go test upstream
// over stdio as server "up", with extra members, and returns its path.
func testUpstreamConfig(t *testing.T, extra string) string {
	t.Helper()
	bin := e2etest.BuildBinary(t, "./internal/testupstream")
	dir := t.TempDir()
	path := filepath.Join(dir, "toolgate.json")
	doc := `{"mcpServers": {"up": {"command": ` + jsonQuote(bin) + `, "args": ["-transport", "stdio", "-name", "up"]}}` + extra + `}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeScript(t *testing.T, code string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "script.js")
	if err := os.WriteFile(path, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBenchExecConfig(t *testing.T) {
	cfg := testUpstreamConfig(t, `, "codeMode": {"memoryLimitMB": 16}`)
	t.Run("script calling the test upstream", func(t *testing.T) {
		script := writeScript(t, `const r = await callTool("up__echo", {text: "hi"}); if (r.server !== "up") throw new Error("wrong server"); return r.text`)
		rep := benchJSON[bench.ExecReport](t, "bench", "exec", "-c", cfg, "--script", script, "-n", "5", "--concurrency", "2", "--warmup", "1")
		if rep.Succeeded != 5 || rep.ToolCalls.Total != 5 {
			t.Errorf("%d ok, %d tool calls; want 5 and 5 (errors %v)", rep.Succeeded, rep.ToolCalls.Total, rep.Errors)
		}
		ordered(t, "wall", &rep.Wall, 5)
		if rep.Settings["script"] != script {
			t.Errorf("settings %v do not name the script", rep.Settings)
		}
	})
	t.Run("builtin chain on the configured tool", func(t *testing.T) {
		rep := benchJSON[bench.ExecReport](t, "bench", "exec", "-c", cfg, "--builtin", "chain", "--tool", "up__echo", "--args", `{"text": "x"}`, "--calls", "3", "-n", "4", "--warmup", "0")
		if rep.Succeeded != 4 || rep.ToolCalls.Total != 12 {
			t.Errorf("%d ok, %d tool calls; want 4 and 12", rep.Succeeded, rep.ToolCalls.Total)
		}
	})
	t.Run("limits hit are counted by name", func(t *testing.T) {
		script := writeScript(t, `const a = []; for (;;) a.push(new Uint8Array(1 << 20));`)
		rep := benchJSON[bench.ExecReport](t, "bench", "exec", "-c", cfg, "--script", script, "-n", "3", "--concurrency", "1", "--warmup", "0")
		if rep.LimitsHit["memoryLimitMB"] != 3 || rep.Failed != 3 || rep.Succeeded != 0 {
			t.Errorf("limits %v, %d failed, %d ok; want memoryLimitMB 3", rep.LimitsHit, rep.Failed, rep.Succeeded)
		}
		if rep.PeakMemory == nil || rep.PeakMemory.Max > 16<<20 {
			t.Errorf("peak memory %+v, want at most the 16 MiB cap", rep.PeakMemory)
		}
	})
}

// TestBenchExecURL runs exec against a gateway serving the demo over
// HTTP, through execute_code.
func TestBenchExecURL(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := &globals{logLevel: "warn", logFormat: "text", stderr: io.Discard}
	log, _ := g.logger()
	cfg, key, err := startDemo(ctx, log, "") // stopped by cancel
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Audit.Path = "", ""
	endpoint, key, stop, err := serveGateway(ctx, cfg, log, key)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	rep := benchJSON[bench.ExecReport](t, "bench", "exec", "--url", endpoint, "--key", key, "--builtin", "fanout", "--calls", "4", "-n", "6", "--concurrency", "3", "--warmup", "3")
	if rep.Succeeded != 6 || rep.ToolCalls.Total != 24 {
		t.Errorf("%d ok, %d tool calls; want 6 and 24 (errors %v)", rep.Succeeded, rep.ToolCalls.Total, rep.Errors)
	}
	ordered(t, "wall", &rep.Wall, 6)
	ordered(t, "duration", rep.Duration, 6)
	if rep.Wall.Min < rep.Duration.Min {
		t.Errorf("wall min %v < sandbox duration min %v: the caller waited less than the execution took", rep.Wall.Min, rep.Duration.Min)
	}
	if rep.CPUPerExecMs != nil || rep.PeakMemory != nil {
		t.Errorf("a remote run reports CPU %v and memory %v it cannot measure", rep.CPUPerExecMs, rep.PeakMemory)
	}
	code, _, errOut := run(t, "", "bench", "exec", "--url", endpoint, "--key", "tg_wrong_key", "-n", "1")
	if code != exitFailed || !strings.Contains(errOut, endpoint) {
		t.Errorf("a wrong key: exit %d, stderr %s", code, errOut)
	}
}

func TestBenchExecErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.js")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"missing script", []string{"--script", missing}, exitFailed, []string{"--script", "nope.js", "no such file"}},
		{"syntax error", []string{"--script", writeScript(t, "return (1 +;")}, exitFailed, []string{"SyntaxError", "nothing to measure"}},
		{"thrown on the first run", []string{"--script", writeScript(t, "\nthrow new TypeError('bad input')")}, exitFailed, []string{"TypeError: bad input at line 2"}},
		{"missing tool", []string{"--builtin", "chain", "--tool", "demo__nope"}, exitFailed, []string{"demo__nope"}},
		{"script and builtin", []string{"--script", missing, "--builtin", "fib"}, exitUsage, []string{"not both"}},
		{"unknown builtin", []string{"--builtin", "fast"}, exitUsage, []string{`no script "fast"`, "trivial"}},
		{"bad args", []string{"--builtin", "fanout", "--args", "nope"}, exitUsage, []string{"--args: want a JSON object"}},
		{"key without url", []string{"--key", "tg_x"}, exitUsage, []string{"--key goes with --url"}},
		{"zero n", []string{"-n", "0"}, exitUsage, []string{"-n must be at least 1"}},
		{"zero concurrency", []string{"--concurrency", "0"}, exitUsage, []string{"--concurrency must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := run(t, "", append([]string{"bench", "exec", "--warmup", "0"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q: %s", w, errOut)
				}
			}
		})
	}
}

// wellFormedSVG parses an SVG file to its end.
func wellFormedSVG(t *testing.T, path string) {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(doc))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
}

func TestBenchExecOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "report")
	code, out, errOut := run(t, "", "bench", "exec", "-n", "5", "--warmup", "0", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"wall (caller)", "p50", "exec/s", "machine:", "settings:", "trivial\n", "limits hit:       none"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	wellFormedSVG(t, filepath.Join(dir, bench.LatencyChart))
	md, err := os.ReadFile(filepath.Join(dir, bench.ReportFile))
	if err != nil || !strings.Contains(string(md), "](latency.svg)") || !strings.Contains(string(md), "wall (caller)") {
		t.Errorf("report.md: %v\n%s", err, md)
	}
}

func TestBenchProxyDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "proxy")
	rep := benchJSON[bench.ProxyReport](t, "bench", "proxy", "-n", "20", "--concurrency", "1,3", "--warmup", "2", "--out", dir)
	checkMachine(t, rep.Machine)
	if len(rep.Levels) != 2 || rep.Levels[0].Concurrency != 1 || rep.Levels[1].Concurrency != 3 {
		t.Fatalf("levels %+v, want 1 and 3", rep.Levels)
	}
	for _, l := range rep.Levels {
		for _, name := range []string{"direct", "gateway"} {
			r, ok := l.Targets[name]
			if !ok {
				t.Fatalf("c=%d: no %s target", l.Concurrency, name)
			}
			if r.Calls != 20 || r.Errors != 0 || r.CallsPerSec <= 0 {
				t.Errorf("c=%d %s: %+v, want 20 calls, no error", l.Concurrency, name, r)
			}
			ordered(t, name, &r.LatencyMs, 20)
		}
		if l.P50Ratio == nil || *l.P50Ratio <= 0 || l.ThroughputRatio == nil || *l.ThroughputRatio <= 0 {
			t.Errorf("c=%d: ratios %v %v", l.Concurrency, l.P50Ratio, l.ThroughputRatio)
		}
	}
	if rep.Settings["tool"] != "demo__echo" || rep.Settings["upstreamTool"] != "echo" {
		t.Errorf("settings %v", rep.Settings)
	}
	wellFormedSVG(t, filepath.Join(dir, bench.ProxyLatencyChart))
	wellFormedSVG(t, filepath.Join(dir, bench.ProxyThroughputFile))
}

func TestBenchProxyConfig(t *testing.T) {
	cfg := testUpstreamConfig(t, "")
	rep := benchJSON[bench.ProxyReport](t, "bench", "proxy", "-c", cfg, "--tool", "up__echo", "--args", `{"text": "hi"}`, "-n", "10", "--concurrency", "2", "--warmup", "1")
	r := rep.Levels[0].Targets
	if r["direct"].Calls != 10 || r["direct"].Errors != 0 || r["gateway"].Calls != 10 || r["gateway"].Errors != 0 {
		t.Errorf("targets %+v", r)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", cfg}, "--tool: name the tool"},
		{[]string{"-c", cfg, "--tool", "other__echo"}, `"other__echo" belongs to none`},
		{[]string{"--args", "[]"}, "--args: want a JSON object"},
		{[]string{"--concurrency", "0"}, "levels must be at least 1"},
	} {
		code, _, errOut := run(t, "", append([]string{"bench", "proxy", "-n", "1"}, tt.args...)...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %s; want an error containing %q", tt.args, code, errOut, tt.want)
		}
	}
}

// TestServeGateway checks the Serve function handed to benchcompare: a
// real gateway on loopback that wants the key it returns.
func TestServeGateway(t *testing.T) {
	path := testUpstreamConfig(t, "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// As benchcompare may build it: in memory, data folder relative.
	cfg.DataDir, cfg.Audit.Path = "toolgate-data", "toolgate-data/audit.jsonl"
	ctx := context.Background()
	g := &globals{logLevel: "warn", logFormat: "text", stderr: io.Discard}
	log, _ := g.logger()
	endpoint, key, stop, err := serveGateway(ctx, cfg, log, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if key == "" || !strings.HasPrefix(endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q key %q", endpoint, key)
	}
	if !filepath.IsAbs(cfg.DataDir) || !strings.HasPrefix(cfg.Audit.Path, cfg.DataDir) {
		t.Errorf("data in %q, audit log %q: want both in a temporary folder", cfg.DataDir, cfg.Audit.Path)
	}
	if _, err := os.Stat("toolgate-data"); err == nil {
		t.Error("serveGateway wrote toolgate-data in the working directory")
	}
	cs, err := connectMCP(ctx, endpoint, key)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "through"}})
	if err != nil || res.IsError || mcpclient.ResultText(res) != "through" {
		t.Fatalf("call through the gateway: %v %+v", err, res)
	}
	resp, err := http.Post(endpoint, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a request without the key got %s, want 401", resp.Status)
	}
}

func TestBenchCompareRendering(t *testing.T) {
	hand := &benchcompare.Report{
		Settings: map[string]string{"files": "200", "records": "20"},
		Tasks: []benchcompare.TaskResult{
			{Name: "search", Description: "search 200 files", Direct: benchcompare.Mode{RoundTrips: 201, ContextBytes: 512000, ApproxTokens: 128000, Wall: 2 * time.Second, Answer: "12 lines"},
				CodeMode: benchcompare.Mode{RoundTrips: 1, ContextBytes: 1200, ApproxTokens: 300, Wall: 400 * time.Millisecond, Answer: "12 lines"}},
			{Name: "records", Description: "aggregate 20 records", Direct: benchcompare.Mode{RoundTrips: 20, ContextBytes: 8000, ApproxTokens: 2000, Wall: time.Second, Answer: "sum 100"},
				CodeMode: benchcompare.Mode{RoundTrips: 1, ContextBytes: 40, ApproxTokens: 10, Wall: 90 * time.Millisecond, Answer: "sum 100"}},
		},
	}
	var got benchcompare.Options
	compareRun = func(_ context.Context, opts benchcompare.Options) (*benchcompare.Report, error) {
		got = opts
		return hand, nil
	}
	t.Cleanup(func() { compareRun = benchcompare.Run })

	dir := filepath.Join(t.TempDir(), "cmp")
	rep := benchJSON[bench.CompareReport](t, "bench", "compare", "--task", "search,records", "--out", dir)
	checkMachine(t, rep.Machine)
	if len(rep.Tasks) != 2 || rep.Tasks[0].Direct.RoundTrips != 201 || rep.Tasks[1].CodeMode.ContextBytes != 40 || rep.Tasks[0].CodeMode.Wall != 400*time.Millisecond {
		t.Errorf("tasks %+v", rep.Tasks)
	}
	if rep.Settings["files"] != "200" || rep.Settings["tasks"] != "search,records" {
		t.Errorf("settings %v", rep.Settings)
	}
	if got.Serve == nil || strings.Join(got.Tasks, ",") != "search,records" {
		t.Errorf("options %+v: want Serve set and the tasks passed on", got)
	}
	wellFormedSVG(t, filepath.Join(dir, bench.CompareBytesChart))

	code, out, errOut := run(t, "", "bench", "compare")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"round trips", "512000", "0.2%", "0.5%", "code mode"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	compareRun = func(context.Context, benchcompare.Options) (*benchcompare.Report, error) {
		return nil, errors.New("npm packages not found")
	}
	if code, _, errOut := run(t, "", "bench", "compare"); code != exitFailed || !strings.Contains(errOut, "npm packages not found") {
		t.Errorf("exit %d, stderr %s; want the failure passed on", code, errOut)
	}
}

// TestBenchCompare runs the real subcommand: the fixed tasks against the npm
// filesystem and memory servers through a gateway it serves, each way.
func TestBenchCompare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cmp")
	rep := benchJSON[bench.CompareReport](t, "bench", "compare", "--npm-dir", e2etest.NPMDir(t), "--out", dir)
	checkMachine(t, rep.Machine)
	if rep.Report == nil || len(rep.Tasks) != 3 {
		t.Fatalf("report %+v, want the three built-in tasks", rep.Report)
	}
	for _, task := range rep.Tasks {
		d, c := task.Direct, task.CodeMode
		if c.RoundTrips != 1 || d.RoundTrips < 10 {
			t.Errorf("%s: round trips direct %d, code mode %d; want >= 10 and 1", task.Name, d.RoundTrips, c.RoundTrips)
		}
		if d.ContextBytes <= 0 || c.ContextBytes <= 0 || bench.ByteRatio(task) > 0.10 {
			t.Errorf("%s: context bytes direct %d, code mode %d; want code mode at most 10%%", task.Name, d.ContextBytes, c.ContextBytes)
		}
		if d.ApproxTokens != (d.ContextBytes+3)/4 || c.ApproxTokens != (c.ContextBytes+3)/4 {
			t.Errorf("%s: tokens %d/%d for bytes %d/%d", task.Name, d.ApproxTokens, c.ApproxTokens, d.ContextBytes, c.ContextBytes)
		}
		if d.Wall <= 0 || c.Wall <= 0 || d.Answer == "" || d.Answer != c.Answer {
			t.Errorf("%s: wall %v/%v, answers %q/%q", task.Name, d.Wall, c.Wall, d.Answer, c.Answer)
		}
	}
	wellFormedSVG(t, filepath.Join(dir, bench.CompareBytesChart))
	if b, err := os.ReadFile(filepath.Join(dir, "report.md")); err != nil || !strings.Contains(string(b), "search-files") {
		t.Errorf("report.md: %v\n%s", err, b)
	}
}

// BenchmarkExecuteCodeTrivial is what `toolgate bench exec --builtin
// trivial --concurrency 1` measures, as a Go benchmark: `return 1+1`
// through Gateway.ExecuteCode with the demo configuration (prelude,
// audit event and metrics included). Comparing the two shows what the
// bench command itself adds; BenchmarkSandboxTrivial in benchmarks/ is
// the sandbox alone.
func BenchmarkExecuteCodeTrivial(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	setServeGC()
	g := &globals{logLevel: "warn", logFormat: "text", stderr: io.Discard}
	log, _ := g.logger()
	cfg, _, err := startDemo(ctx, log, "")
	if err != nil {
		b.Fatal(err)
	}
	cfg.DataDir = b.TempDir()
	cfg.Audit.Path = filepath.Join(cfg.DataDir, "audit.jsonl")
	gw, release, err := openGateway(ctx, cfg, log, false)
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	pr := gateway.Principal{Project: config.DefaultProject, ClientIP: "local"}
	for range 20 { // warm-up, as bench exec does
		if _, err := gw.ExecuteCode(ctx, config.DefaultProject, pr, "return 1+1"); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	cpu0 := processCPUTime(b)
	start := time.Now()
	for b.Loop() {
		t := time.Now()
		res, err := gw.ExecuteCode(ctx, config.DefaultProject, pr, "return 1+1")
		lat = append(lat, time.Since(t))
		if err != nil || res.Error != nil || string(res.Result) != "2" {
			b.Fatalf("%v %+v %s", err, res.Error, res.Result)
		}
	}
	b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "exec/s")
	b.ReportMetric(float64(processCPUTime(b)-cpu0)/float64(time.Millisecond)/float64(len(lat)), "cpu-ms/op")
	s := bench.Summarize(lat)
	b.ReportMetric(s.P50, "p50-ms")
	b.ReportMetric(s.P99, "p99-ms")
}

// processCPUTime is the user plus system CPU time of this process, as
// bench exec measures it.
func processCPUTime(b *testing.B) time.Duration {
	d, ok := bench.ProcessCPU()
	if !ok {
		b.Skip("the process's CPU time is not known on this platform")
	}
	return d
}
