package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/bench"
	"github.com/toolgate/toolgate/internal/benchcompare"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/mcpclient"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/sandbox"
)

func newBench(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure what a Code Mode execution and a proxied tool call cost, and what Code Mode saves",
		Long: `Benchmarks for operators: exec runs one script many times through the real
sandbox and tool path, proxy compares tool calls made directly with the same
calls through the gateway, compare runs fixed tasks as direct tool calls and
as one Code Mode script. Every report names the machine and all settings.

Without -c, exec and proxy use the built-in demo upstream in process, so
they work on a fresh machine. Benchmark traffic is audited like any other,
into a temporary folder rather than the configuration's audit log.`,
	}
	cmd.AddCommand(newBenchExec(g), newBenchProxy(g), newBenchCompare(g))
	return cmd
}

// benchOutput are the output flags every bench subcommand takes.
type benchOutput struct {
	json bool
	out  string
}

func (o *benchOutput) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.json, "json", false, "print the report as JSON")
	cmd.Flags().StringVar(&o.out, "out", "", "also write report.md and SVG charts into this folder")
}

// benchLogger is the logger of a bench run: warnings and errors only unless
// --log-level says otherwise, so the report is not lost among the gateway's
// start-up lines.
func benchLogger(cmd *cobra.Command, g *globals) (*slog.Logger, error) {
	if f := cmd.Flag("log-level"); f != nil && !f.Changed {
		g.logLevel = "warn"
	}
	return g.logger()
}

// progressFor returns a progress bar on stderr when it is a terminal.
func progressFor(g *globals) *bench.Progress {
	f, ok := g.stderr.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	return bench.NewProgress(f, err == nil && st.Mode()&os.ModeCharDevice != 0)
}

// interruptible ends ctx on SIGINT or SIGTERM, so that an interrupted
// run still stops its servers and removes its temporary folder.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// benchConfig loads the configuration for a bench run, or starts the
// demo upstream and returns its configuration when there is none. Either
// way its data (audit log, tool pins) goes to a temporary folder that
// cleanup removes; key is the demo's API key ("" with a file).
func benchConfig(ctx context.Context, g *globals, log *slog.Logger) (cfg *config.Config, key string, cleanup func(), err error) {
	path, err := config.Find(g.config)
	if err != nil {
		return nil, "", nil, err
	}
	// The demo upstream stops when demoCtx ends.
	demoCtx, stopDemo := context.WithCancel(ctx)
	if path == "" {
		cfg, key, err = startDemo(demoCtx, log, "")
	} else {
		cfg, err = config.Load(path)
	}
	if err != nil {
		stopDemo()
		return nil, "", nil, err
	}
	dir, err := os.MkdirTemp("", "toolgate-bench-")
	if err != nil {
		stopDemo()
		return nil, "", nil, err
	}
	cfg.DataDir, cfg.Audit.Path = dir, filepath.Join(dir, "audit.jsonl")
	return cfg, key, func() { stopDemo(); os.RemoveAll(dir) }, nil
}

func configSetting(g *globals) string {
	path, _ := config.Find(g.config)
	return displayPath(path)
}

// ---- exec ----

type benchExecFlags struct {
	benchOutput
	script      string
	builtin     string
	n           int
	concurrency int
	warmup      int
	project     string
	url         string
	key         string
	tool        string
	args        string
	calls       int
}

func newBenchExec(g *globals) *cobra.Command {
	f := &benchExecFlags{}
	var names []string
	for _, n := range bench.BuiltinNames() {
		names = append(names, "  "+n+": "+bench.BuiltinDescription(n))
	}
	cmd := &cobra.Command{
		Use:   "exec [--script FILE.js | --builtin NAME]",
		Short: "Run a script many times through the sandbox and tool path and report what it costs",
		Long: `Run a Code Mode script -n times over --concurrency workers, in process
through the real sandbox and tool path (as toolgate run does), or against a
running gateway with --url and --key (an MCP client calling execute_code).

Reports wall time percentiles, the sandbox's own timing split into instance
start and run, CPU time and peak interpreter memory per execution (in
process), tool calls and the share of time spent awaiting them, executions
per second, and the limits hit.

Built-in scripts (--builtin, default trivial):
` + strings.Join(names, "\n") + `

fanout, chain and transform call the demo's tools; with -c, name a tool of
the configuration with --tool (and --args).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchExec(ctxOf(cmd), cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.script, "script", "", "the script to run (the body of an async function, as for execute_code)")
	fl.StringVar(&f.builtin, "builtin", "", "a built-in script: "+strings.Join(bench.BuiltinNames(), ", ")+" (default trivial)")
	fl.IntVarP(&f.n, "n", "n", 1000, "timed executions")
	fl.IntVar(&f.concurrency, "concurrency", 8, "executions in flight at once")
	fl.IntVar(&f.warmup, "warmup", 20, "untimed executions first (the first one must succeed or end on a limit)")
	fl.StringVar(&f.project, "project", config.DefaultProject, "project whose tools the script calls (in process)")
	fl.StringVar(&f.url, "url", "", "benchmark a running gateway at this MCP endpoint instead (e.g. http://127.0.0.1:8080/mcp)")
	fl.StringVar(&f.key, "key", "", "API key for --url")
	fl.StringVar(&f.tool, "tool", "", "tool a built-in script calls (fanout, chain: demo__echo; transform: demo__export_records)")
	fl.StringVar(&f.args, "args", "", "JSON object of arguments for --tool")
	fl.IntVar(&f.calls, "calls", 0, "calls made by fanout and chain (default 10)")
	f.register(cmd)
	return cmd
}

// execCode returns the script to benchmark and the settings naming it.
func execCode(f *benchExecFlags) (string, map[string]string, error) {
	if f.script != "" && f.builtin != "" {
		return "", nil, usageError{errors.New("give --script or --builtin, not both")}
	}
	if f.script != "" {
		if f.tool != "" || f.args != "" || f.calls != 0 {
			return "", nil, usageError{errors.New("--tool, --args and --calls apply to built-in scripts only")}
		}
		code, err := os.ReadFile(f.script)
		if err != nil {
			return "", nil, fmt.Errorf("--script: %w", err)
		}
		if len(strings.TrimSpace(string(code))) == 0 {
			return "", nil, fmt.Errorf("--script: %s is empty", f.script)
		}
		return string(code), map[string]string{"script": f.script}, nil
	}
	name := f.builtin
	if name == "" {
		name = "trivial"
	}
	opts := bench.BuiltinOptions{Tool: f.tool, Calls: f.calls}
	if f.args != "" {
		opts.Args = json.RawMessage(f.args)
	}
	code, settings, err := bench.Builtin(name, opts)
	if err != nil {
		return "", nil, usageError{err}
	}
	settings["builtin"] = name
	return code, settings, nil
}

func runBenchExec(ctx context.Context, cmd *cobra.Command, g *globals, f *benchExecFlags) error {
	switch {
	case f.n < 1:
		return usageError{fmt.Errorf("-n must be at least 1, got %d", f.n)}
	case f.concurrency < 1:
		return usageError{fmt.Errorf("--concurrency must be at least 1, got %d", f.concurrency)}
	case f.warmup < 0:
		return usageError{fmt.Errorf("--warmup must not be negative, got %d", f.warmup)}
	}
	code, settings, err := execCode(f)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	if f.key != "" && f.url == "" {
		return usageError{errors.New("--key goes with --url")}
	}
	log, err := benchLogger(cmd, g)
	if err != nil {
		return err
	}
	settings["n"] = strconv.Itoa(f.n)
	settings["concurrency"] = strconv.Itoa(f.concurrency)
	settings["warmup"] = strconv.Itoa(f.warmup)

	var open func(ctx context.Context) (bench.ExecFunc, func(), error)
	if f.url != "" {
		settings["target"] = f.url
		open = func(ctx context.Context) (bench.ExecFunc, func(), error) {
			cs, err := connectMCP(ctx, f.url, f.key)
			if err != nil {
				return nil, nil, err
			}
			return remoteExec(cs, code), func() { cs.Close() }, nil
		}
	} else {
		settings["GOGC"] = setServeGC()
		cfg, _, cleanup, err := benchConfig(ctx, g, log)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg.CodeMode.Enabled = true
		cm := cfg.CodeMode
		settings["target"] = "in process, config " + configSetting(g) + ", project " + f.project
		settings["codeMode"] = fmt.Sprintf("timeout=%s memoryLimitMB=%d maxToolCalls=%d maxConcurrentToolCalls=%d maxConcurrentExecutions=%d",
			cm.Timeout.D(), cm.MemoryLimitMB, cm.MaxToolCalls, cm.MaxConcurrentToolCalls, cm.MaxConcurrentExecutions)
		gw, release, err := openGateway(ctx, cfg, log, false)
		if err != nil {
			return err
		}
		defer release()
		if gw.Server(f.project) == nil {
			return usageError{fmt.Errorf("--project: no project %q in the configuration", f.project)}
		}
		pr := gateway.Principal{Project: f.project, ClientIP: "local"}
		exec := func(ctx context.Context) (bench.Execution, error) {
			res, err := gw.ExecuteCode(ctx, f.project, pr, code)
			if err != nil {
				return bench.Execution{}, err
			}
			return fromSandbox(res), nil
		}
		open = func(context.Context) (bench.ExecFunc, func(), error) { return exec, nil, nil }
	}

	progress := progressFor(g)
	rep, err := bench.RunExec(ctx, bench.ExecOptions{
		N: f.n, Concurrency: f.concurrency, Warmup: f.warmup, Open: open, InProcess: f.url == "",
		Progress: func(done, total int) { progress.Update("executions", done, total) },
	})
	progress.Done()
	if err != nil {
		var sf *bench.ScriptFailure
		if errors.As(err, &sf) {
			return err
		}
		return fmt.Errorf("bench exec: %w", err)
	}
	rep.Machine = bench.DescribeMachine(gateway.Version)
	rep.Settings = settings
	if f.out != "" {
		if err := bench.WriteExecDir(f.out, rep); err != nil {
			return err
		}
	}
	if f.json {
		return writeJSON(g.stdout, rep)
	}
	bench.WriteExecText(g.stdout, rep)
	return nil
}

// setServeGC applies serve's garbage collector setting, so that in-process
// figures match a served gateway, and returns it for the report.
func setServeGC() string {
	if v := os.Getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(400)
	return "400 (as toolgate serve)"
}

func fromSandbox(res *sandbox.Result) bench.Execution {
	ex := bench.Execution{
		DurationMs: res.DurationMs, Detailed: true, StartMs: res.StartMs, WaitMs: res.WaitMs,
		PeakMemoryBytes: res.PeakMemoryBytes,
	}
	for _, c := range res.ToolCalls {
		ex.ToolCalls = append(ex.ToolCalls, bench.ToolCall{OK: c.OK, Ms: c.Ms})
	}
	if e := res.Error; e != nil {
		ex.ErrorName, ex.ErrorMessage, ex.ErrorLine, ex.Limit = e.Name, e.Message, e.Line, e.Limit
	}
	return ex
}

// remoteExec calls execute_code on a running gateway.
func remoteExec(cs *mcp.ClientSession, code string) bench.ExecFunc {
	params := &mcp.CallToolParams{Name: gateway.ExecuteCodeTool, Arguments: map[string]any{"code": code}}
	return func(ctx context.Context) (bench.Execution, error) {
		res, err := cs.CallTool(ctx, params)
		if err != nil {
			return bench.Execution{}, err
		}
		if res.StructuredContent == nil {
			return bench.Execution{}, fmt.Errorf("%s answered without a result: %s", gateway.ExecuteCodeTool, mcpclient.ResultText(res))
		}
		raw, err := json.Marshal(res.StructuredContent)
		if err != nil {
			return bench.Execution{}, err
		}
		var out gateway.ExecutionOutput
		if err := json.Unmarshal(raw, &out); err != nil {
			return bench.Execution{}, fmt.Errorf("decoding the %s result: %w", gateway.ExecuteCodeTool, err)
		}
		ex := bench.Execution{DurationMs: out.DurationMs}
		for _, c := range out.ToolCalls {
			ex.ToolCalls = append(ex.ToolCalls, bench.ToolCall{OK: c.OK, Ms: c.Ms})
		}
		if e := out.Error; e != nil {
			ex.ErrorName, ex.ErrorMessage, ex.ErrorLine, ex.Limit = e.Name, e.Message, e.Line, e.Limit
		}
		return ex, nil
	}
}

// connectMCP opens an MCP session over streamable HTTP, with the key as a
// bearer token when there is one. Each session has a connection pool of
// its own, so that concurrent sessions do not measure new connections.
func connectMCP(ctx context.Context, url, key string) (*mcp.ClientSession, error) {
	return connectMCPHeader(ctx, url, mcpclient.Bearer(key))
}

func connectMCPHeader(ctx context.Context, url string, headers map[string]string) (*mcp.ClientSession, error) {
	hc := &http.Client{Transport: &mcpclient.HeaderTransport{Base: http.DefaultTransport.(*http.Transport).Clone(), Headers: headers}}
	client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-bench", Version: gateway.Version}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	return cs, nil
}

// ---- proxy ----

type benchProxyFlags struct {
	benchOutput
	n           int
	concurrency []int
	warmup      int
	tool        string
	args        string
	project     string
}

func newBenchProxy(g *globals) *cobra.Command {
	f := &benchProxyFlags{}
	cmd := &cobra.Command{
		Use:   "proxy [-c config --tool SERVER__TOOL --args JSON]",
		Short: "Compare tool calls made directly with the same calls through the gateway",
		Long: `Call one tool -n times at each --concurrency level, directly on its upstream
server and through the gateway (in process, on loopback HTTP, keys
required), both with MCP clients over streamable HTTP, and report latency
percentiles and calls per second of each, so the gateway's own cost shows.

Without -c the upstream is the built-in demo on loopback and the tool its
echo. With -c, --tool names a tool as clients see it (server__tool); its
server is reached directly by its url, or started a second time from its
command for the direct calls (one process and one session shared by the
direct workers, as the gateway shares one).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchProxy(ctxOf(cmd), cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&f.n, "n", "n", 2000, "timed calls per target and concurrency level")
	fl.IntSliceVar(&f.concurrency, "concurrency", []int{1, 4, 16}, "concurrency levels (workers, each with its own session)")
	fl.IntVar(&f.warmup, "warmup", 50, "untimed calls per new session")
	fl.StringVar(&f.tool, "tool", "", "the tool to call, as clients see it (default demo__echo without -c)")
	fl.StringVar(&f.args, "args", "", `JSON object of arguments (default {"text": "toolgate bench"} without -c)`)
	fl.StringVar(&f.project, "project", config.DefaultProject, "project of --tool")
	f.register(cmd)
	return cmd
}

func runBenchProxy(ctx context.Context, cmd *cobra.Command, g *globals, f *benchProxyFlags) error {
	if f.n < 1 {
		return usageError{fmt.Errorf("-n must be at least 1, got %d", f.n)}
	}
	if f.warmup < 0 {
		return usageError{fmt.Errorf("--warmup must not be negative, got %d", f.warmup)}
	}
	for _, c := range f.concurrency {
		if c < 1 {
			return usageError{fmt.Errorf("--concurrency: levels must be at least 1, got %d", c)}
		}
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	log, err := benchLogger(cmd, g)
	if err != nil {
		return err
	}
	path, err := config.Find(g.config)
	if err != nil {
		return err
	}
	tool, argsText := f.tool, f.args
	if path == "" {
		if tool == "" {
			tool = "demo__echo"
		}
		if argsText == "" {
			argsText = `{"text": "toolgate bench"}`
		}
	} else if tool == "" {
		return usageError{errors.New("--tool: name the tool to call (server__tool) in the configuration's project")}
	}
	if argsText == "" {
		argsText = "{}"
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(argsText), &args); err != nil || args == nil {
		return usageError{fmt.Errorf("--args: want a JSON object of tool arguments, got %s", argsText)}
	}
	gc := setServeGC()
	cfg, demoKey, cleanup, err := benchConfig(ctx, g, log)
	if err != nil {
		return err
	}
	defer cleanup()
	pc := cfg.Projects[f.project]
	if pc == nil {
		return usageError{fmt.Errorf("--project: no project %q in the configuration", f.project)}
	}
	srv, upstreamTool := serverOfTool(pc, tool)
	if srv == nil {
		return usageError{fmt.Errorf("--tool: %q belongs to none of the servers of project %q (tools are named server__tool)", tool, f.project)}
	}
	// The benchmark calls the tool as a client: with Code Mode on, a
	// client may do so only with codeMode.directTools.
	cfg.CodeMode.DirectTools = true
	endpoint, key, stop, err := serveGateway(ctx, cfg, log, demoKey)
	if err != nil {
		return err
	}
	defer stop()
	if f.project != config.DefaultProject {
		endpoint = strings.TrimSuffix(endpoint, "/mcp") + "/v1/mcp/" + f.project
	}

	// A server over stdio is one process with one session, which the
	// gateway shares between all its clients; the direct workers share one
	// too, rather than each starting a process of its own.
	var shared *mcp.ClientSession
	defer func() {
		if shared != nil {
			shared.Close()
		}
	}()
	targets := []bench.Target{
		{Name: "direct", Connect: func(ctx context.Context) (bench.Session, error) {
			if srv.URL == "" && shared != nil {
				return &toolSession{cs: shared, params: &mcp.CallToolParams{Name: upstreamTool, Arguments: args}, keepOpen: true}, nil
			}
			cs, err := connectServer(ctx, srv)
			if err != nil {
				return nil, err
			}
			if srv.URL == "" {
				shared = cs
				return &toolSession{cs: cs, params: &mcp.CallToolParams{Name: upstreamTool, Arguments: args}, keepOpen: true}, nil
			}
			return &toolSession{cs: cs, params: &mcp.CallToolParams{Name: upstreamTool, Arguments: args}}, nil
		}},
		{Name: "gateway", Connect: func(ctx context.Context) (bench.Session, error) {
			cs, err := connectMCP(ctx, endpoint, key)
			if err != nil {
				return nil, err
			}
			return &toolSession{cs: cs, params: &mcp.CallToolParams{Name: tool, Arguments: args}}, nil
		}},
	}
	progress := progressFor(g)
	rep, err := bench.RunProxy(ctx, bench.ProxyOptions{
		N: f.n, Levels: f.concurrency, Warmup: f.warmup, Targets: targets,
		Progress: func(level int, target string, done, total int) {
			progress.Update(fmt.Sprintf("c=%d %s", level, target), done, total)
		},
	})
	progress.Done()
	if err != nil {
		return fmt.Errorf("bench proxy: %w", err)
	}
	compact, _ := json.Marshal(args)
	var levels []string
	for _, c := range f.concurrency {
		levels = append(levels, strconv.Itoa(c))
	}
	rep.Machine = bench.DescribeMachine(gateway.Version)
	rep.Settings = map[string]string{
		"config": configSetting(g), "project": f.project, "tool": tool, "upstreamTool": upstreamTool,
		"args": string(compact), "n": strconv.Itoa(f.n), "concurrency": strings.Join(levels, ","),
		"warmup": strconv.Itoa(f.warmup), "upstream": describeServer(srv),
		"gateway": "in process, streamable HTTP on loopback, API key required", "GOGC": gc,
	}
	if f.out != "" {
		if err := bench.WriteProxyDir(f.out, rep); err != nil {
			return err
		}
	}
	if f.json {
		return writeJSON(g.stdout, rep)
	}
	bench.WriteProxyText(g.stdout, rep)
	return nil
}

// toolSession makes one tool call on an MCP session.
type toolSession struct {
	cs       *mcp.ClientSession
	params   *mcp.CallToolParams
	keepOpen bool // the session is shared and closed by its owner
}

func (s *toolSession) Call(ctx context.Context) error {
	res, err := s.cs.CallTool(ctx, s.params)
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %s", mcpclient.ResultText(res))
	}
	return nil
}

func (s *toolSession) Close() error {
	if s.keepOpen {
		return nil
	}
	return s.cs.Close()
}

// serverOfTool finds the server of a namespaced tool name and the name the
// server itself gives the tool.
func serverOfTool(p *config.Project, tool string) (*config.Server, string) {
	for _, name := range slices.Sorted(maps.Keys(p.MCPServers)) {
		s := p.MCPServers[name]
		prefix := s.Name + gateway.NamespaceSeparator
		if s.Prefix != nil {
			prefix = *s.Prefix
		}
		if rest, ok := strings.CutPrefix(tool, prefix); ok && rest != "" && !s.Disabled {
			return s, rest
		}
	}
	return nil, ""
}

func describeServer(s *config.Server) string {
	if s.URL != "" {
		return s.Name + " at " + s.URL
	}
	return s.Name + ": " + strings.Join(append([]string{s.Command}, s.Args...), " ")
}

// connectServer opens a session directly with an upstream server, as the
// gateway would (its url and headers, or its command over stdio).
func connectServer(ctx context.Context, s *config.Server) (*mcp.ClientSession, error) {
	switch {
	case s.URL != "" && s.Transport == config.TransportSSE:
		client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-bench", Version: gateway.Version}, nil)
		hc := &http.Client{Transport: &mcpclient.HeaderTransport{Base: http.DefaultTransport.(*http.Transport).Clone(), Headers: s.Headers}}
		cs, err := client.Connect(ctx, &mcp.SSEClientTransport{Endpoint: s.URL, HTTPClient: hc}, nil)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", s.URL, err)
		}
		return cs, nil
	case s.URL != "":
		return connectMCPHeader(ctx, s.URL, s.Headers)
	default:
		c := exec.Command(s.Command, s.Args...)
		c.Dir = s.Cwd
		c.Env = os.Environ()
		for k, v := range s.Env {
			c.Env = append(c.Env, k+"="+v)
		}
		c.Stderr = io.Discard
		client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-bench", Version: gateway.Version}, nil)
		cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: c, TerminateDuration: 2 * time.Second}, nil)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", s.Command, err)
		}
		return cs, nil
	}
}

// serveGateway opens the gateway of cfg and serves it over HTTP on a free
// loopback port. When cfg requires keys, key is used if given, otherwise a
// fresh key is generated and listed (by hash) in every project. It returns
// the default project's MCP endpoint, the key ("" when auth is off) and
// what stops it all.
func serveGateway(ctx context.Context, cfg *config.Config, log *slog.Logger, key string) (endpoint, k string, stop func(), err error) {
	if cfg.AuthRequired() && key == "" {
		if key, _, _, err = apikey.Generate(); err != nil {
			return "", "", nil, err
		}
		for _, p := range cfg.Projects {
			p.APIKeys = append(p.APIKeys, config.APIKey{Name: "toolgate-bench", SHA256: apikey.Hash(key)})
		}
	}
	if !cfg.AuthRequired() {
		key = ""
	}
	// A configuration built in memory has no folder of its own: its data
	// (audit log, tool pins) goes to a temporary one rather than beside
	// the working directory.
	removeDir := func() {}
	if !filepath.IsAbs(cfg.DataDir) {
		dir, err := os.MkdirTemp("", "toolgate-bench-")
		if err != nil {
			return "", "", nil, err
		}
		removeDir = func() { os.RemoveAll(dir) }
		cfg.DataDir, cfg.Audit.Path = dir, filepath.Join(dir, "audit.jsonl")
	} else if cfg.Audit.Path == "" {
		cfg.Audit.Path = filepath.Join(cfg.DataDir, "audit.jsonl")
	}
	gw, release, err := openGateway(ctx, cfg, log, false)
	if err != nil {
		removeDir()
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		release()
		removeDir()
		return "", "", nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { _ = srv.Serve(ln) }()
	stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		release()
		removeDir()
	}
	endpoint = "http://" + ln.Addr().String() + "/mcp"
	if cfg.Projects[config.DefaultProject] == nil {
		for _, name := range slices.Sorted(maps.Keys(cfg.Projects)) {
			endpoint = "http://" + ln.Addr().String() + "/v1/mcp/" + name
			break
		}
	}
	return endpoint, key, stop, nil
}

// ---- compare ----

type benchCompareFlags struct {
	benchOutput
	tasks   []string
	npmDir  string
	workDir string
}

func newBenchCompare(g *globals) *cobra.Command {
	f := &benchCompareFlags{}
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Run fixed tasks as direct tool calls and as one Code Mode script, and compare",
		Long: `Run fixed tasks against real upstream servers (the npm server-filesystem on a
generated tree of files, and server-memory) both ways: as the sequence of
direct tool calls an agent would make, and as one Code Mode script, each
through a gateway on loopback with a key required. Reports round trips,
bytes of tool output that would enter the model's context (and about a
quarter as many tokens) and wall time for each way, and the ratio of bytes.

The npm servers come from --npm-dir (an npm project folder or its
node_modules), else $TOOLGATE_NPM_DIR, else e2e/npm/node_modules found
from the working folder upward (a source checkout). Without any of them,
the first run installs the pinned versions with npm ci (Node.js and npm
needed) into toolgate/bench-compare-npm in the user's cache folder
($XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS),
printing npm's progress on stderr; later runs reuse them.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchCompare(ctxOf(cmd), cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.tasks, "task", nil, "run only these tasks (default all)")
	fl.StringVar(&f.npmDir, "npm-dir", "", "npm project folder, or its node_modules, holding the npm MCP servers (default: installed into the cache folder on first use)")
	fl.StringVar(&f.workDir, "work-dir", "", "scratch folder (default a temporary one, removed afterwards)")
	f.register(cmd)
	return cmd
}

// compareRun is benchcompare.Run, replaceable by tests.
var compareRun = benchcompare.Run

func runBenchCompare(ctx context.Context, cmd *cobra.Command, g *globals, f *benchCompareFlags) error {
	ctx, stop := interruptible(ctx)
	defer stop()
	log, err := benchLogger(cmd, g)
	if err != nil {
		return err
	}
	gc := setServeGC()
	progress := progressFor(g)
	runs := 0
	rep, err := compareRun(ctx, benchcompare.Options{
		NPMDir: f.npmDir, WorkDir: f.workDir, Tasks: f.tasks, InstallProgress: g.stderr,
		Progress: func(task, mode string) {
			runs++
			progress.Status(fmt.Sprintf("run %d: task %s, %s", runs, task, mode))
		},
		Serve: func(ctx context.Context, cfg *config.Config) (string, string, func(), error) {
			return serveGateway(ctx, cfg, log, "")
		},
	})
	progress.Done()
	if err != nil {
		return fmt.Errorf("bench compare: %w", err)
	}
	return writeCompare(g, f, rep, gc)
}

// writeCompare renders a compare report in every output asked for.
func writeCompare(g *globals, f *benchCompareFlags, r *benchcompare.Report, gc string) error {
	settings := map[string]string{}
	maps.Copy(settings, r.Settings)
	if len(f.tasks) > 0 {
		settings["tasks"] = strings.Join(f.tasks, ",")
	}
	settings["gateway"] = "in process, streamable HTTP on loopback, API key required"
	settings["GOGC"] = gc
	rep := &bench.CompareReport{Machine: bench.DescribeMachine(gateway.Version), Settings: settings, Report: r}
	if f.out != "" {
		if err := bench.WriteCompareDir(f.out, rep); err != nil {
			return err
		}
	}
	if f.json {
		return writeJSON(g.stdout, rep)
	}
	bench.WriteCompareText(g.stdout, rep)
	return nil
}
