package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/benchcompare"
)

func TestSummarize(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{"none", nil, Summary{}},
		{"one", ms(7), Summary{N: 1, Min: 7, P50: 7, P90: 7, P99: 7, Max: 7, Mean: 7}},
		{"unsorted", ms(5, 1, 4, 2, 3), Summary{N: 5, Min: 1, P50: 3, P90: 5, P99: 5, Max: 5, Mean: 3}},
		{"even count takes the lower middle", ms(1, 2, 3, 4), Summary{N: 4, Min: 1, P50: 2, P90: 4, P99: 4, Max: 4, Mean: 2.5}},
		{"ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), Summary{N: 10, Min: 1, P50: 5, P90: 9, P99: 10, Max: 10, Mean: 5.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Summarize(tt.in)); diff != "" {
				t.Errorf("Summarize (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeExec cycles through outcomes, one per call.
func fakeExec(outcomes ...func() (Execution, error)) func(ctx context.Context) (ExecFunc, func(), error) {
	var i atomic.Int64
	f := func(context.Context) (Execution, error) {
		return outcomes[int(i.Add(1)-1)%len(outcomes)]()
	}
	return func(context.Context) (ExecFunc, func(), error) { return f, nil, nil }
}

func ok(calls ...float64) func() (Execution, error) {
	return func() (Execution, error) {
		ex := Execution{DurationMs: 10, Detailed: true, StartMs: 2, WaitMs: 5, PeakMemoryBytes: 1 << 20}
		for _, c := range calls {
			ex.ToolCalls = append(ex.ToolCalls, ToolCall{OK: true, Ms: c})
		}
		return ex, nil
	}
}

func TestRunExec(t *testing.T) {
	limit := func() (Execution, error) {
		return Execution{DurationMs: 10, Detailed: true, StartMs: 2, WaitMs: 5, PeakMemoryBytes: 4 << 20, ErrorName: "InternalError", Limit: "memoryLimitMB"}, nil
	}
	thrown := func() (Execution, error) {
		return Execution{DurationMs: 10, Detailed: true, StartMs: 2, WaitMs: 5, PeakMemoryBytes: 1 << 20, ErrorName: "TypeError", ErrorMessage: "x is undefined"}, nil
	}
	refused := func() (Execution, error) { return Execution{}, errors.New("busy") }

	rep, err := RunExec(context.Background(), ExecOptions{N: 8, Concurrency: 3, Warmup: 0, InProcess: true,
		// The first call is the check; then 8 timed calls: ok, limit, thrown, refused, ...
		Open: fakeExec(ok(1, 3), ok(1, 3), limit, thrown, refused)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Executions != 8 || rep.Succeeded+rep.Failed != 8 {
		t.Errorf("executions %d = %d ok + %d failed, want 8 in all", rep.Executions, rep.Succeeded, rep.Failed)
	}
	// Calls 2..9 of the cycle: ok limit thrown refused ok ok limit thrown.
	if diff := cmp.Diff(map[string]int{"memoryLimitMB": 2}, rep.LimitsHit); diff != "" {
		t.Errorf("limits hit (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"TypeError": 2, "refused: busy": 1}, rep.Errors); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if rep.Succeeded != 3 {
		t.Errorf("succeeded %d, want 3", rep.Succeeded)
	}
	if rep.ToolCalls.Total != 6 || rep.ToolCalls.CallMs.Max != 3 {
		t.Errorf("tool calls %+v, want 6 calls of at most 3 ms", rep.ToolCalls)
	}
	if rep.ToolCalls.Share == nil || *rep.ToolCalls.Share != 0.5 || rep.StartShare == nil || *rep.StartShare != 0.2 {
		t.Errorf("shares: tools %v, start %v; want 0.5 and 0.2", rep.ToolCalls.Share, rep.StartShare)
	}
	if rep.PeakMemory == nil || rep.PeakMemory.Max != 4<<20 || rep.PeakMemory.P50 != 1<<20 {
		t.Errorf("peak memory %+v, want p50 1 MiB, max 4 MiB", rep.PeakMemory)
	}
	if rep.Run == nil || rep.Run.P50 != 8 {
		t.Errorf("run %+v, want 8 ms", rep.Run)
	}
	if rep.CPUPerExecMs == nil || *rep.CPUPerExecMs < 0 {
		t.Errorf("cpuPerExecMs = %v in process, want a figure", rep.CPUPerExecMs)
	}
	if rep.Concurrency != 3 || rep.ExecPerSec <= 0 || rep.Wall.N != 8 {
		t.Errorf("concurrency %d, %v exec/s, %d wall samples", rep.Concurrency, rep.ExecPerSec, rep.Wall.N)
	}
}

// TestRunExecRemote checks what an execution in another process leaves
// unknown: CPU time, start time, memory and the share of tool time.
func TestRunExecRemote(t *testing.T) {
	remote := func() (Execution, error) {
		return Execution{DurationMs: 4, ToolCalls: []ToolCall{{OK: true, Ms: 1}, {OK: false, Ms: 2}}}, nil
	}
	rep, err := RunExec(context.Background(), ExecOptions{N: 4, Concurrency: 2, Open: fakeExec(remote)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CPUPerExecMs != nil || rep.Start != nil || rep.Run != nil || rep.PeakMemory != nil || rep.ToolCalls.Share != nil || rep.StartShare != nil {
		t.Errorf("remote report claims figures it cannot know: %+v", rep)
	}
	if rep.Duration == nil || rep.Duration.P50 != 4 || rep.ToolCalls.Total != 8 || rep.ToolCalls.Failed != 4 || rep.Succeeded != 4 {
		t.Errorf("duration %+v, tool calls %+v, %d ok", rep.Duration, rep.ToolCalls, rep.Succeeded)
	}
}

func TestRunExecFirstRunFails(t *testing.T) {
	syntax := func() (Execution, error) {
		return Execution{ErrorName: "SyntaxError", ErrorMessage: "unexpected token", ErrorLine: 3}, nil
	}
	_, err := RunExec(context.Background(), ExecOptions{N: 5, Concurrency: 1, Open: fakeExec(syntax)})
	var sf *ScriptFailure
	if !errors.As(err, &sf) || !strings.Contains(err.Error(), "SyntaxError: unexpected token at line 3") {
		t.Fatalf("err = %v, want a ScriptFailure naming the syntax error and its line", err)
	}
	_, err = RunExec(context.Background(), ExecOptions{N: 5, Concurrency: 1, Open: fakeExec(func() (Execution, error) { return Execution{}, errors.New("connection refused") })})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want the refusal", err)
	}
	for _, bad := range []ExecOptions{{N: 0, Concurrency: 1}, {N: 1, Concurrency: 0}} {
		bad.Open = fakeExec(ok())
		if _, err := RunExec(context.Background(), bad); err == nil {
			t.Errorf("RunExec(%+v) succeeded", bad)
		}
	}
}

// wellFormed parses an SVG document to its end.
func wellFormed(t *testing.T, doc []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}

func TestBarChart(t *testing.T) {
	tests := []struct {
		name string
		cats []string
		ss   []series
	}{
		{"empty", nil, nil},
		{"zeros", []string{"a"}, []series{{name: "s", color: "#000", values: []float64{0}}}},
		{"escaping", []string{"<a&b>", `"q"`}, []series{{name: "x<y", color: "#111", values: []float64{3, 1e9}}, {name: "z", color: "#222", values: []float64{0.001}}}},
		{"many bins", make([]string, 40), []series{{name: "n", color: "#333", values: make([]float64, 40)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wellFormed(t, barChart("title & <more>", "x & y", "unit", tt.cats, tt.ss))
		})
	}
}

func TestHistogram(t *testing.T) {
	labels, counts := histogram([]float64{1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100}, 4)
	var total float64
	for _, c := range counts {
		total += c
	}
	if len(labels) != 4 || total != 12 || !strings.HasPrefix(labels[3], "≥") {
		t.Errorf("labels %q counts %v: want 4 bins holding all 12 values, the last open-ended", labels, counts)
	}
	if l, c := histogram([]float64{5, 5}, 4); len(l) != 1 || c[0] != 2 {
		t.Errorf("equal values: %q %v, want one bin of 2", l, c)
	}
}

func TestNiceScale(t *testing.T) {
	for _, v := range []float64{0, 0.003, 1, 7, 42, 999, 123456} {
		top, step := niceScale(v)
		if top < v || step <= 0 || top/step > 10 {
			t.Errorf("niceScale(%v) = %v, %v", v, top, step)
		}
	}
}

func TestBuiltin(t *testing.T) {
	tests := []struct {
		name, builtin string
		opts          BuiltinOptions
		wantIn        string // in the code
		wantErr       string
	}{
		{name: "trivial", builtin: "trivial", wantIn: "return 1+1"},
		{name: "fanout defaults", builtin: "fanout", wantIn: `length: 10 }, () => callTool("demo__echo", {"text":"toolgate bench"})`},
		{name: "chain with a tool", builtin: "chain", opts: BuiltinOptions{Tool: "up__echo", Args: json.RawMessage(`{"text": "a"}`), Calls: 3}, wantIn: `i < 3; i++) { await callTool("up__echo", {"text":"a"})`},
		{name: "transform", builtin: "transform", wantIn: `callTool("demo__export_records", {"rows":1000})`},
		{name: "unknown", builtin: "nope", wantErr: "the built-in scripts are chain, fanout, fib, transform, trivial"},
		{name: "args not an object", builtin: "chain", opts: BuiltinOptions{Args: json.RawMessage(`[1]`)}, wantErr: "--args: want a JSON object"},
		{name: "args not JSON", builtin: "chain", opts: BuiltinOptions{Args: json.RawMessage(`{`)}, wantErr: "--args"},
		{name: "tool for a script without calls", builtin: "fib", opts: BuiltinOptions{Tool: "x"}, wantErr: "calls no tool"},
		{name: "calls for transform", builtin: "transform", opts: BuiltinOptions{Calls: 3}, wantErr: "--calls does not apply"},
		{name: "negative calls", builtin: "fanout", opts: BuiltinOptions{Calls: -1}, wantErr: "at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, err := Builtin(tt.builtin, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(code, tt.wantIn) {
				t.Errorf("code does not contain %q:\n%s", tt.wantIn, code)
			}
		})
	}
}

func TestCompareOutputs(t *testing.T) {
	rep := &CompareReport{Machine: DescribeMachine("test"), Settings: map[string]string{"files": "200"}, Report: &benchcompare.Report{
		Tasks: []benchcompare.TaskResult{
			{Name: "search", Description: "grep a tree", Direct: benchcompare.Mode{RoundTrips: 201, ContextBytes: 400000, ApproxTokens: 100000, Wall: time.Second, Answer: "7"},
				CodeMode: benchcompare.Mode{RoundTrips: 1, ContextBytes: 2000, ApproxTokens: 500, Wall: 300 * time.Millisecond, Answer: "7"}},
			{Name: "graph & <x>", Description: "entities", Direct: benchcompare.Mode{RoundTrips: 12, ContextBytes: 0, Answer: "a"},
				CodeMode: benchcompare.Mode{RoundTrips: 1, ContextBytes: 10, Answer: "b"}},
		},
	}}
	var out bytes.Buffer
	WriteCompareText(&out, rep)
	for _, want := range []string{"search", "201", "400000", "0.5%", "graph & <x>: the answers differ", "  files  200\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
	dir := t.TempDir()
	if err := WriteCompareDir(dir, rep); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, readFile(t, dir, CompareBytesChart))
	if md := string(readFile(t, dir, ReportFile)); !strings.Contains(md, "(compare-bytes.svg)") {
		t.Errorf("report.md does not show the chart:\n%s", md)
	}
}

// BenchmarkRunExecOverhead is what the exec runner itself adds to one
// execution: an execution that does nothing, timed and recorded.
func BenchmarkRunExecOverhead(b *testing.B) {
	noop := func(context.Context) (Execution, error) { return Execution{DurationMs: 1, Detailed: true}, nil }
	open := func(context.Context) (ExecFunc, func(), error) { return noop, nil, nil }
	b.ReportAllocs()
	if _, err := RunExec(context.Background(), ExecOptions{N: b.N, Concurrency: 1, Open: open}); err != nil {
		b.Fatal(err)
	}
}

func TestProgress(t *testing.T) {
	var nilBar *Progress
	nilBar.Update("x", 1, 2) // a nil bar draws nothing and does not panic
	nilBar.Done()
	if NewProgress(io.Discard, false) != nil {
		t.Error("a progress bar on something that is not a terminal")
	}
	var b bytes.Buffer
	p := NewProgress(&b, true)
	for i := 1; i <= 10; i++ {
		p.Update("executions", i, 10)
	}
	if !strings.Contains(b.String(), "[##############################] 10/10") {
		t.Errorf("the last update is always drawn; got %q", b.String())
	}
	p.Status("task search, direct")
	p.Done()
	if !strings.HasSuffix(b.String(), "\r"+strings.Repeat(" ", 80)+"\r") {
		t.Errorf("Done does not clear the line: %q", b.String())
	}
}

func TestFormatNumber(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 20: "20", 400000: "400000", 2.5: "2.50", 12.34: "12.3", 123.4: "123", 0.0123: "0.0123", -3: "-3"} {
		if got := formatNumber(v); got != want {
			t.Errorf("formatNumber(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestReportMarkdown: report.md holds real Markdown tables (a header, a
// delimiter row, one row per result, cells escaped), not text in a code
// block, and the same figures as the text form.
func TestReportMarkdown(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	m := Machine{Cores: 2, CPUModel: "Test | CPU", OS: "linux", Arch: "amd64", GoVersion: "go1.x", ToolgateVersion: "dev"}
	s := Summary{P50: 1.5, P90: 2, P99: 3.25, Max: 4, Mean: 1.75}
	ex := &ExecReport{Machine: m, Settings: map[string]string{"script": "a|b_c.js"}, Executions: 5, Succeeded: 5,
		Wall: s, Duration: &s, StartShare: f(0.25), wall: []float64{1, 2}}
	px := &ProxyReport{Machine: m, Settings: map[string]string{"tool": "demo__echo"}, Levels: []ProxyLevel{
		{Concurrency: 4, Targets: map[string]ProxyResult{"direct": {Calls: 5, LatencyMs: s, CallsPerSec: 100}, "gateway": {Calls: 5, LatencyMs: s, CallsPerSec: 90}}},
	}}
	cr := &CompareReport{Machine: m, Settings: map[string]string{}, Report: &benchcompare.Report{Tasks: []benchcompare.TaskResult{
		{Name: "t1", Description: "d1", Direct: benchcompare.Mode{RoundTrips: 5, ContextBytes: 1000}, CodeMode: benchcompare.Mode{RoundTrips: 1, ContextBytes: 100}}}}}
	for _, tt := range []struct {
		name  string
		write func(dir string) error
		rows  []string // lines the report must hold
	}{
		{"exec", func(dir string) error { return WriteExecDir(dir, ex) }, []string{
			"| script | a\\|b\\_c.js |",
			"| ms | p50 | p90 | p99 | max | mean |",
			"| --- | ---: | ---: | ---: | ---: | ---: |",
			"| wall (caller) | 1.50 | 2 | 3.25 | 4 | 1.75 |",
			"| instance start | n/a | n/a | n/a | n/a | n/a |",
			"- **start share:** 25.0% of execution time",
		}},
		{"proxy", func(dir string) error { return WriteProxyDir(dir, px) }, []string{
			"| concurrency | target | p50 ms | p90 ms | p99 ms | max ms | calls/s | errors |",
			"| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
			"| 4 | gateway | 1.50 | 2 | 3.25 | 4 | 90 | 0 |",
		}},
		{"compare", func(dir string) error { return WriteCompareDir(dir, cr) }, []string{
			"| task | mode | round trips | context bytes | ~tokens | wall ms | bytes ratio |",
			"| t1 | direct | 5 | 1000 | 0 | 0 |  |",
			"|  | code mode | 1 | 100 | 0 | 0 | 10.0% |",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tt.write(dir); err != nil {
				t.Fatal(err)
			}
			md := string(readFile(t, dir, ReportFile))
			if strings.Contains(md, "```") {
				t.Errorf("report.md still has a code block:\n%s", md)
			}
			lines := strings.Split(md, "\n")
			for _, want := range append([]string{"Machine: 2 cores, Test \\| CPU, linux/amd64, go1.x, toolgate dev", "| setting | value |", "| --- | --- |"}, tt.rows...) {
				if !slices.Contains(lines, want) {
					t.Errorf("report.md lacks the line %q:\n%s", want, md)
				}
			}
		})
	}
}
