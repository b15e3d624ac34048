package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastschema/qjs"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bindings"
	"github.com/toolgate/toolgate/internal/bench"
	"github.com/toolgate/toolgate/sandbox"
)

// Code Mode engine benchmarks. Run with
//
//	go test ./benchmarks/ -run '^$' -bench Sandbox -benchtime 2s
//
// Targets: trivial script p50 <= 1 ms and >= 200 exec/s on 2 cores; one
// binding call <= 20 us; process start to first execution with the on-disk
// cache <= 300 ms; <= 2 MiB per idle pooled interpreter; 200 concurrent
// executions awaiting a slow tool < 1 GiB RSS; fib(25) guarded <= 1.3x
// unguarded.

const sandboxPrelude = `
const call = __toolgate_call;
globalThis.callTool = (name, args) => call(name, JSON.stringify(args ?? {}));
`

func sandboxCacheDir() string {
	return filepath.Join(os.TempDir(), "toolgate-sandbox-bench-cache")
}

func newSandbox(b *testing.B, pool int) *sandbox.Engine {
	b.Helper()
	e, err := sandbox.NewEngine(context.Background(), &sandbox.EngineOptions{CacheDir: sandboxCacheDir(), PoolSize: pool})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

func runOK(b *testing.B, e *sandbox.Engine, req *sandbox.Request) *sandbox.Result {
	res, err := e.Run(context.Background(), req, sandbox.Limits{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if res.Error != nil {
		b.Fatal(res.Error)
	}
	return res
}

func echo(_ context.Context, _ string, args []byte) ([]byte, error) { return args, nil }

// BenchmarkSandboxTrivial is `return 1+1` end to end with a warm pool.
func BenchmarkSandboxTrivial(b *testing.B) {
	trivial(b, &sandbox.Request{Code: "return 1+1"})
}

// BenchmarkSandboxTrivialBindings is the same with the gateway's generated
// bindings for a dozen tools on three servers as the prelude, as
// Gateway.ExecuteCode runs it: what the prelude adds to an execution's
// start (the engine evaluates a prelude text once and starts later
// executions from a copy of the state it left).
func BenchmarkSandboxTrivialBindings(b *testing.B) {
	var tools []bindings.Tool
	for _, server := range []string{"demo", "files", "memory"} {
		for _, name := range []string{"echo", "add", "read_file", "search"} {
			tools = append(tools, bindings.Tool{Server: server, Name: name, FullName: server + "__" + name})
		}
	}
	trivial(b, &sandbox.Request{Code: "return 1+1", Prelude: bindings.Prelude(tools, "__toolgate_call")})
}

func trivial(b *testing.B, req *sandbox.Request) {
	e := newSandbox(b, 8)
	var lat []time.Duration
	b.ReportAllocs()
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		t := time.Now()
		runOK(b, e, req)
		lat = append(lat, time.Since(t))
	}
	b.ReportMetric(float64(len(lat))/time.Since(start).Seconds(), "exec/s")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(len(lat)), "cpu-us/exec")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkSandboxTrivialParallel is the same from as many goroutines as
// GOMAXPROCS, for throughput.
func BenchmarkSandboxTrivialParallel(b *testing.B) {
	e := newSandbox(b, 8)
	req := &sandbox.Request{Code: "return 1+1"}
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			runOK(b, e, req)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "exec/s")
}

// BenchmarkSandboxToolCallLoop awaits 1,000 binding calls in sequence,
// with the minimal prelude of the sandbox package's documentation.
func BenchmarkSandboxToolCallLoop(b *testing.B) {
	toolCallLoop(b, &sandbox.Request{
		Code:    "let s = 0; for (let i = 0; i < 1000; i++) s += (await callTool('echo', {i})).i; return s",
		Prelude: sandboxPrelude, Caller: echo,
	})
}

// BenchmarkSandboxToolCallLoopBindings is the same loop through the
// gateway's bindings: the generated prelude (argument checks, error
// mapping, tools.<server>.<tool>) and bindings.Invoke turning an MCP
// result into the script's value, with an in-process echo ToolCaller.
func BenchmarkSandboxToolCallLoopBindings(b *testing.B) {
	tools := []bindings.Tool{{Server: "demo", Name: "echo", FullName: "demo__echo"}}
	var tc echoToolCaller
	toolCallLoop(b, &sandbox.Request{
		Code:    "let s = 0; for (let i = 0; i < 1000; i++) s += (await tools.demo.echo({i})).i; return s",
		Prelude: bindings.Prelude(tools, "__toolgate_call"),
		Caller: func(ctx context.Context, name string, args []byte) ([]byte, error) {
			v, err := bindings.Invoke(ctx, tc, name, args)
			if err != nil {
				return nil, err
			}
			return v, nil
		},
	})
}

// echoToolCaller answers every call with its arguments as structuredContent.
type echoToolCaller struct{}

func (echoToolCaller) CallTool(_ context.Context, _ string, args json.RawMessage) (*mcp.CallToolResult, error) {
	return &mcp.CallToolResult{StructuredContent: args, Content: []mcp.Content{}}, nil
}

func toolCallLoop(b *testing.B, req *sandbox.Request) {
	e := newSandbox(b, 4)
	b.ReportAllocs()
	start, cpu := time.Now(), cpuTime()
	n := 0
	for b.Loop() {
		res, err := e.Run(context.Background(), req, sandbox.Limits{Timeout: time.Minute, MaxToolCalls: 1000})
		if err != nil || res.Error != nil || string(res.Result) != "499500" {
			b.Fatalf("%v %+v %s", err, res.Error, res.Result)
		}
		n++
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(n*1000), "us/call")
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(n*1000), "cpu-us/call")
}

// cpuTime is the CPU time (user and system, all threads) this process has
// used: on a shared machine a steadier figure than wall-clock time.
func cpuTime() time.Duration {
	d, _ := bench.ProcessCPU()
	return d
}

const fib = "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) }"

// BenchmarkSandboxFib25 compares fib(25) in the guarded engine (the
// interpreter instrumented so that every loop and recursive call counts
// toward a check of the deadline, native built-ins included) with the same
// QuickJS build run by qjs without any guard, and with qjs under wazero's
// own guard, CloseOnContextDone (a check of the module's close flag in
// every loop and call). qjs keeps the wazero settings of the first runtime
// a process creates, so that last one runs in a child process.
func BenchmarkSandboxFib25(b *testing.B) {
	b.Run("guarded", func(b *testing.B) {
		e := newSandbox(b, 2)
		req := &sandbox.Request{Code: fib + "; const t = performance.now(); fib(25); return performance.now() - t"}
		var ms float64
		n := 0
		for b.Loop() {
			res := runOK(b, e, req)
			v, _ := strconv.ParseFloat(string(res.Result), 64)
			ms += v
			n++
		}
		b.ReportMetric(ms/float64(n), "fib-ms")
	})
	b.Run("unguarded", func(b *testing.B) {
		newSandbox(b, -1) // the same cache folder as the guarded engine
		b.ReportMetric(qjsFib25(b, b.N, false), "fib-ms")
	})
	b.Run("closeOnContextDone", func(b *testing.B) {
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(exe, "-test.run", "^TestFib25CloseOnContextDoneHelper$")
		cmd.Env = append(os.Environ(), "TOOLGATE_FIB25_RUNS="+strconv.Itoa(b.N))
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		_, after, ok := strings.Cut(string(out), "fib-ms ")
		ms, perr := strconv.ParseFloat(strings.Fields(after + " x")[0], 64)
		if !ok || perr != nil {
			b.Fatalf("no figure in %s", out)
		}
		b.ReportMetric(ms, "fib-ms")
	})
}

// qjsFib25 runs fib(25) n times in one qjs runtime and returns the mean
// milliseconds per run.
func qjsFib25(b testing.TB, n int, closeOnDone bool) float64 {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rt, err := qjs.New(qjs.Option{
		CWD: filepath.Join(sandboxCacheDir(), ".no-filesystem", "absent"), Stdout: discard{}, Stderr: discard{},
		Context: ctx, CloseOnContextDone: closeOnDone,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	if v, err := rt.Eval("fib.js", qjs.Code(fib)); err != nil {
		b.Fatal(err)
	} else {
		v.Free()
	}
	var total time.Duration
	for range n {
		t := time.Now()
		v, err := rt.Eval("run.js", qjs.Code("fib(25)"))
		total += time.Since(t)
		if err != nil {
			b.Fatal(err)
		}
		v.Free()
	}
	return float64(total.Microseconds()) / 1000 / float64(n)
}

// TestFib25CloseOnContextDoneHelper is the child process of
// BenchmarkSandboxFib25/closeOnContextDone.
func TestFib25CloseOnContextDoneHelper(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("TOOLGATE_FIB25_RUNS"))
	if runs <= 0 {
		t.Skip("helper for BenchmarkSandboxFib25")
	}
	fmt.Printf("fib-ms %.3f\n", qjsFib25(t, runs, true))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestSandboxStartupHelper is the child process of BenchmarkSandboxStartup.
func TestSandboxStartupHelper(t *testing.T) {
	if os.Getenv("TOOLGATE_SANDBOX_STARTUP") == "" {
		t.Skip("helper for BenchmarkSandboxStartup")
	}
	e, err := sandbox.NewEngine(context.Background(), &sandbox.EngineOptions{CacheDir: os.Getenv("TOOLGATE_SANDBOX_STARTUP"), PoolSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Run(context.Background(), &sandbox.Request{Code: "return 1+1"}, sandbox.Limits{})
	if err != nil || string(res.Result) != "2" {
		t.Fatal(err, res)
	}
}

// BenchmarkSandboxStartup measures a fresh process from start to the end of
// its first execution, with the compilation cache on disk (warmed by a first
// run that is not timed).
func BenchmarkSandboxStartup(b *testing.B) {
	dir := b.TempDir()
	child := func() time.Duration {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxStartupHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "TOOLGATE_SANDBOX_STARTUP="+dir)
		t := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		return time.Since(t)
	}
	cold := child()
	var total time.Duration
	n := 0
	for b.Loop() {
		total += child()
		n++
	}
	b.ReportMetric(float64(cold.Milliseconds()), "cold-ms")
	b.ReportMetric(float64(total.Milliseconds())/float64(n), "cached-ms")
}

func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skip("no /proc/self/statm")
	}
	f := strings.Fields(string(data))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkSandboxIdleMemory reports the resident memory per warm pooled
// interpreter.
func BenchmarkSandboxIdleMemory(b *testing.B) {
	const n = 40
	newSandbox(b, 1) // compile and warm up first
	for b.Loop() {
		before := rssBytes(b)
		e := newSandbox(b, n)
		deadline := time.Now().Add(time.Minute)
		for e.Ready() < n {
			if time.Now().After(deadline) {
				b.Fatal("pool did not fill")
			}
			time.Sleep(10 * time.Millisecond) // polling a gauge; no event to wait on
		}
		b.ReportMetric(float64(rssBytes(b)-before)/n/(1<<20), "MiB/instance")
		e.Close()
	}
}

// BenchmarkSandbox200Concurrent holds 200 executions, each awaiting a slow
// tool, and reports the process RSS while all are in flight.
func BenchmarkSandbox200Concurrent(b *testing.B) {
	const n = 200
	e := newSandbox(b, -1)
	req := &sandbox.Request{Code: "return await callTool('slow', {})", Prelude: sandboxPrelude}
	for b.Loop() {
		var entered sync.WaitGroup
		entered.Add(n)
		release := make(chan struct{})
		req.Caller = func(ctx context.Context, _ string, args []byte) ([]byte, error) {
			entered.Done()
			<-release
			return args, nil
		}
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				res, err := e.Run(context.Background(), req, sandbox.Limits{Timeout: time.Minute})
				if err == nil && res.Error != nil {
					err = res.Error
				}
				if err != nil {
					errs <- err
				}
			})
		}
		entered.Wait()
		b.ReportMetric(float64(rssBytes(b))/(1<<20), "RSS-MiB")
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(fmt.Errorf("execution failed: %w", err))
		}
	}
}

// BenchmarkWorkerPipeRoundTrip puts a number on the other way to stop a
// runaway script, a worker process killed on overrun: every binding call
// would then cross a pipe to the worker and back. It sends a binding
// call's worth of bytes (64) to a child process that echoes them.
func BenchmarkWorkerPipeRoundTrip(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^TestPipeEchoHelper$")
	cmd.Env = append(os.Environ(), "TOOLGATE_PIPE_ECHO=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		if _, err := in.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(out, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/1000, "us/roundtrip")
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N)/1000, "parent-cpu-us/roundtrip")
}

// TestPipeEchoHelper is the child of BenchmarkWorkerPipeRoundTrip.
func TestPipeEchoHelper(t *testing.T) {
	if os.Getenv("TOOLGATE_PIPE_ECHO") == "" {
		t.Skip("helper for BenchmarkWorkerPipeRoundTrip")
	}
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(os.Stdin, buf); err != nil {
			return
		}
		if _, err := os.Stdout.Write(buf); err != nil {
			return
		}
	}
}
