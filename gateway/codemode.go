package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bindings"
	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

// Names of the Code Mode tools.
const (
	ExecuteCodeTool = "execute_code"
	SearchToolsTool = "search_tools"
	hostFn          = "__toolgate_call"
)

// FetchRateName is the name under which a script's fetch requests are
// rate-limited: each request takes one token from the caller's project and
// key buckets, as a tool call does, and from toolLimits["codeMode:fetch"]
// when the project sets one. The colon keeps it apart from every real tool
// name (MCP names are made of A-Z a-z 0-9 _ . -), so a server's own "fetch"
// tool never shares its budget.
const FetchRateName = "codeMode:fetch"

// codeTools is a project's tools as Code Mode shows them, derived from its
// registry at each rebuild.
type codeTools struct {
	tools        []bindings.Tool
	prelude      string
	declarations string

	// granted holds the views of the tools that access tokens' grants
	// see, by grant key (at most maxGrantViews; more are made per call).
	mu      sync.Mutex
	granted map[string]*codeTools
}

// maxGrantViews bounds the views of a project's tools kept for grants.
const maxGrantViews = 64

// forGrant returns the tools as Code Mode shows them to a caller with
// grant: its scripts get bindings and declarations for the tools it may
// call, and no other.
func (ct *codeTools) forGrant(grant *toolGrant) *codeTools {
	if grant == nil {
		return ct
	}
	ct.mu.Lock()
	v := ct.granted[grant.key]
	ct.mu.Unlock()
	if v != nil {
		return v
	}
	v = &codeTools{}
	for _, t := range ct.tools {
		if grant.allows(t.FullName) {
			v.tools = append(v.tools, t)
		}
	}
	v.prelude = bindings.Prelude(v.tools, hostFn)
	v.declarations = bindings.Declarations(v.tools)
	ct.mu.Lock()
	if ct.granted == nil {
		ct.granted = map[string]*codeTools{}
	}
	if len(ct.granted) < maxGrantViews {
		ct.granted[grant.key] = v
	}
	ct.mu.Unlock()
	return v
}

// codeDescriptionFor is execute_code's description for a caller with
// grant.
func (r *registry) codeDescriptionFor(grant *toolGrant) string {
	return executeCodeDescription(r.gw.Config().CodeMode, r.codeTools().forGrant(grant))
}

func newCodeTools(rs routes) *codeTools {
	ct := &codeTools{}
	for _, name := range slices.Sorted(maps.Keys(rs.tools)) {
		r := rs.tools[name]
		def := r.def.(*mcp.Tool)
		in, _ := json.Marshal(def.InputSchema)
		var out json.RawMessage
		if def.OutputSchema != nil {
			out, _ = json.Marshal(def.OutputSchema)
		}
		ct.tools = append(ct.tools, bindings.Tool{Server: r.up.cfg.Name, Name: r.upstream, FullName: name, Description: def.Description, InputSchema: in, OutputSchema: out})
	}
	ct.prelude = bindings.Prelude(ct.tools, hostFn)
	ct.declarations = bindings.Declarations(ct.tools)
	return ct
}

const executeCodeIntro = `Run a JavaScript program that calls this gateway's tools, and get back only what it returns.

The code is the body of an async function: use await, and "return value" to hand a value back. Call tools as
  await tools.<server>.<tool>(args)   or   await callTool("<server>__<tool>", args)
(each server is also a global of its own name unless that would shadow a built-in). Calls may run concurrently with Promise.all. A tool result is its structuredContent, else its text parsed as JSON when it is JSON, else its content array. A failed call rejects with an Error whose .code is "not_found", "rate_limited", "timeout", "tool_error", ... console.log/info/warn/error are captured and returned.

Limits: %s wall clock (tool calls included), %d MiB of memory, %d tool calls, %d KiB of code, %d KiB of output. No filesystem, no environment, no timers beyond the run%s.
`

// executeCodeDescription embeds the declarations when they fit the budget.
func executeCodeDescription(cm config.CodeMode, ct *codeTools) string {
	fetch := ", no network"
	if cm.AllowFetch {
		fetch = "; fetch(url) reaches public http(s) hosts"
		if len(cm.FetchAllowHosts) > 0 {
			fetch += " matching " + strings.Join(cm.FetchAllowHosts, ", ")
		}
	}
	d := fmt.Sprintf(executeCodeIntro, cm.Timeout.D(), cm.MemoryLimitMB, cm.MaxToolCalls, cm.MaxCodeBytes>>10, cm.MaxOutputBytes>>10, fetch)
	if len(ct.declarations) <= cm.DeclarationBudgetBytes {
		return d + "\nThe tools, as TypeScript declarations:\n\n" + ct.declarations
	}
	return d + fmt.Sprintf("\nThere are %d tools, too many to list here: call %s with a query (or none) to get the TypeScript declarations of the ones you need before writing code.\n", len(ct.tools), SearchToolsTool)
}

var (
	executeCodeSchema = &jsonschema.Schema{
		Type:     "object",
		Required: []string{"code"},
		Properties: map[string]*jsonschema.Schema{
			"code": {Type: "string", Description: "JavaScript: the body of an async function."},
		},
	}
	searchToolsSchema = &jsonschema.Schema{
		Type: "object",
		Properties: map[string]*jsonschema.Schema{
			"query": {Type: "string", Description: "Words to look for in server names, tool names and descriptions; empty for all tools."},
		},
	}
)

// publishCodeMode registers, updates or removes execute_code and
// search_tools. The caller holds syncMu.
func (r *registry) publishCodeMode(cm config.CodeMode, ct *codeTools) {
	r.mu.Lock()
	cur := r.codeDesc
	r.mu.Unlock()
	desc := ""
	if cm.Enabled {
		desc = executeCodeDescription(cm, ct)
	}
	switch {
	case desc == cur:
		return
	case desc == "":
		r.server.RemoveTools(ExecuteCodeTool, SearchToolsTool)
	default:
		if cur == "" {
			r.server.AddTool(&mcp.Tool{
				Name:        SearchToolsTool,
				Description: "TypeScript declarations of the tools " + ExecuteCodeTool + " can call, filtered by a query.",
				InputSchema: searchToolsSchema,
				Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
			}, r.serve.tool)
		}
		r.server.AddTool(&mcp.Tool{Name: ExecuteCodeTool, Description: desc, InputSchema: executeCodeSchema}, r.serve.tool)
	}
	r.mu.Lock()
	r.codeDesc = desc
	r.mu.Unlock()
}

// A call of execute_code or search_tools is a tool call like any other
// for everything but the upstream: it goes through the tool path's steps
// (toolpath.go), charged to the caller's rate limits, recorded in the
// audit log as a tool.call event (ratelimit.hit or tool.denied when
// refused) before it is answered, and counted in toolgate_tool_calls_total
// without a server. The event of execute_code carries the executionId that
// links it with the code.execution event and with the calls its script
// made, each of which is charged and recorded on its own.

// searchTools is the call step of search_tools: the declarations of the
// tools matching the query.
func (p *project) searchTools(call *ToolCall) *mcp.CallToolResult {
	var in struct {
		Query string `json:"query"`
	}
	if len(call.Arguments) > 0 {
		if err := json.Unmarshal(call.Arguments, &in); err != nil {
			return errorResult("search_tools takes {query?: string}: " + err.Error())
		}
	}
	found := bindings.Search(p.reg.codeTools().forGrant(call.Principal.grant).tools, in.Query)
	if len(found) == 0 {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("No tool matches %q.", in.Query)}}}
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: bindings.Declarations(found)}}}
}

// executeCodeCall is the call step of execute_code: the script runs as the
// call's principal, as execution execID.
func (p *project) executeCodeCall(ctx context.Context, call *ToolCall, execID string) (*mcp.CallToolResult, error) {
	var in struct {
		Code *string `json:"code"`
	}
	if err := json.Unmarshal(call.Arguments, &in); err != nil || in.Code == nil {
		return errorResult(`execute_code takes {"code": string}: the JavaScript to run`), nil
	}
	res, err := p.gw.executeCode(ctx, p, call.Principal, *in.Code, call.Session, execID)
	if err != nil {
		return nil, err
	}
	return executionResult(res), nil
}

// ExecutionOutput is the structuredContent of execute_code.
type ExecutionOutput struct {
	Result     json.RawMessage          `json:"result"`
	Logs       []sandbox.LogLine        `json:"logs"`
	ToolCalls  []sandbox.ToolCallRecord `json:"toolCalls"`
	DurationMs float64                  `json:"durationMs"`
	Error      *sandbox.ScriptError     `json:"error,omitempty"`
	Truncated  bool                     `json:"truncated,omitempty"`
}

// executionResult renders a script's outcome for the agent: structured,
// and as text.
func executionResult(res *sandbox.Result) *mcp.CallToolResult {
	out := ExecutionOutput{Result: res.Result, Logs: res.Logs, ToolCalls: res.ToolCalls, DurationMs: res.DurationMs, Error: res.Error, Truncated: res.Truncated}
	if out.Result == nil {
		out.Result = json.RawMessage("null")
	}
	if out.Logs == nil {
		out.Logs = []sandbox.LogLine{}
	}
	if out.ToolCalls == nil {
		out.ToolCalls = []sandbox.ToolCallRecord{}
	}
	var b strings.Builder
	if res.Error != nil {
		fmt.Fprintf(&b, "%s: %s\n", res.Error.Name, res.Error.Message)
		if res.Error.Limit != "" {
			fmt.Fprintf(&b, "limit: %s\n", res.Error.Limit)
		}
		if res.Error.Stack != "" {
			fmt.Fprintf(&b, "%s\n", strings.TrimRight(res.Error.Stack, "\n"))
		}
	} else {
		fmt.Fprintf(&b, "result: %s\n", out.Result)
	}
	for _, l := range out.Logs {
		fmt.Fprintf(&b, "[%s] %s\n", l.Level, l.Message)
	}
	fmt.Fprintf(&b, "%d tool calls, %.0f ms", len(out.ToolCalls), out.DurationMs)
	if out.Truncated {
		b.WriteString(" (output truncated at codeMode.maxOutputBytes)")
	}
	return &mcp.CallToolResult{IsError: res.Error != nil, StructuredContent: out, Content: []mcp.Content{&mcp.TextContent{Text: b.String()}}}
}

// ExecuteCode runs a script as principal in project, through the same tool
// path as a direct call (for `toolgate run` and benchmarks).
func (g *Gateway) ExecuteCode(ctx context.Context, project string, pr Principal, code string) (*sandbox.Result, error) {
	p := g.project(project)
	if p == nil {
		return nil, fmt.Errorf("unknown project %q", project)
	}
	pr.Project = project
	return g.executeCode(ctx, p, pr, code, nil, newExecutionID())
}

func (g *Gateway) executeCode(ctx context.Context, p *project, pr Principal, code string, ss *mcp.ServerSession, execID string) (*sandbox.Result, error) {
	cfg := g.Config()
	cm := cfg.CodeMode
	if !cm.Enabled || g.engine == nil {
		return nil, &callerr.Error{Code: callerr.NotFound, Message: "code mode is not enabled"}
	}
	release, err := p.execs.acquire(ctx, cm.MaxConcurrentExecutions)
	if err != nil {
		return nil, err
	}
	defer release()
	ct := p.reg.codeTools().forGrant(pr.grant)
	tc := &scriptCaller{p: p, pr: pr, execID: execID, session: ss}
	req := &sandbox.Request{
		Code:    code,
		Prelude: ct.prelude,
		Caller:  bindings.Bridge(tc),
	}
	if cm.AllowFetch {
		req.Fetch = &sandbox.FetchPolicy{
			AllowHosts:       cm.FetchAllowHosts,
			MaxResponseBytes: cm.FetchMaxResponseBytes,
			MaxRequests:      cm.FetchMaxRequests,
			BeforeRequest: func(ctx context.Context, method, host string) error {
				return g.takeFetchTokens(ctx, p, pr, execID, method, host)
			},
			OnRequest: func(method, host string, status int, n int64) {
				_ = g.emit(&audit.Event{Type: audit.EventCodeFetch, Project: p.name, KeyID: pr.KeyID, Subject: pr.Subject, ClientIP: pr.ClientIP, ExecutionID: execID, Method: method, Host: host, Status: status, Bytes: n})
			},
		}
	}
	lim := sandbox.Limits{
		Timeout: cm.Timeout.D(), MemoryLimitMB: cm.MemoryLimitMB, MaxStackKB: cm.MaxStackKB,
		MaxToolCalls: cm.MaxToolCalls, MaxConcurrentToolCalls: cm.MaxConcurrentToolCalls,
		MaxCodeBytes: cm.MaxCodeBytes, MaxOutputBytes: cm.MaxOutputBytes,
		// A script's call carries no more than a client's request may.
		MaxArgumentBytes: int(min(cfg.Limits.MaxRequestBodyBytes, math.MaxInt32)),
	}
	res, err := g.engine.Run(ctx, req, lim)
	if err != nil {
		g.log.Error("code execution failed inside the gateway", "execution", execID, "error", err)
		return nil, fmt.Errorf("code execution %s failed inside the gateway", execID)
	}
	ev := &audit.Event{Type: audit.EventCodeExecution, Project: p.name, KeyID: pr.KeyID, Subject: pr.Subject, ClientIP: pr.ClientIP, ExecutionID: execID,
		DurationMs: res.DurationMs, ToolCalls: len(res.ToolCalls), Outcome: "ok"}
	limit := ""
	if res.Error != nil {
		ev.Outcome, ev.Error = "error", res.Error.Name+": "+res.Error.Message
		if res.Error.Limit != "" {
			limit = res.Error.Limit
			ev.LimitsHit = []string{limit}
			ev.Outcome = "limit"
		}
	}
	g.metrics.observeExecution(p.name, ev.Outcome, limit, res)
	if err := g.emit(ev); err != nil {
		return nil, &callerr.Error{Code: callerr.Unavailable, Message: "the execution could not be recorded in the audit log: " + err.Error()}
	}
	return res, nil
}

// scriptCaller is the tool path as a script's bindings see it: every call
// runs as the script's caller and is linked to the execution.
type scriptCaller struct {
	p       *project
	pr      Principal
	execID  string
	session *mcp.ServerSession
}

var _ bindings.ToolCaller = (*scriptCaller)(nil)

func (c *scriptCaller) CallTool(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error) {
	res, _, err := c.p.callTool(ctx, &ToolCall{Principal: c.pr, Name: name, Arguments: args, ExecutionID: c.execID, Session: c.session}, answerDecoded)
	return res, scriptError(err)
}

// scriptError is a refusal as the script sees it: a rate-limited call
// keeps its retry hint (the Error carries retryAfterMs, as the direct
// path's JSON-RPC error carries data.retryAfterMs); other refusals carry
// none.
func scriptError(err error) error {
	var ce *callerr.Error
	if errors.As(err, &ce) && ce.Code != callerr.RateLimited && ce.RetryAfter != 0 {
		return &callerr.Error{Code: ce.Code, Message: ce.Message}
	}
	return err
}

// takeFetchTokens charges one fetch request of a script to its caller's
// buckets (see FetchRateName). A refusal is audited as ratelimit.hit, as a
// refused tool call is, and rejects the fetch with code "rate_limited" and
// retryAfterMs.
func (g *Gateway) takeFetchTokens(ctx context.Context, p *project, pr Principal, execID, method, host string) error {
	ce := g.takeTokens(ctx, pr, FetchRateName)
	if ce == nil {
		return nil
	}
	ev := rateLimitEvent(p.name, pr, FetchRateName, ce)
	ev.ExecutionID, ev.Method, ev.Host = execID, method, host
	if err := g.emit(ev); err != nil {
		// Like a refused tool call: a refusal that cannot be recorded fails.
		return errNotRecorded(err)
	}
	return ce
}

// executions are a project's running Code Mode executions, bounded by
// codeMode.maxConcurrentExecutions. The zero value is ready to use.
type executions struct {
	mu    sync.Mutex
	slots *execSlots // made by the first execution
}

// acquire takes one of the execution slots, under the bound limit in
// force, waiting briefly when all are busy; it returns the func that gives
// the slot back.
func (e *executions) acquire(ctx context.Context, limit int) (func(), error) {
	e.mu.Lock()
	if e.slots == nil {
		e.slots = newExecSlots(limit)
	} else {
		e.slots.resize(limit)
	}
	slots := e.slots
	e.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, executionQueueWait)
	defer cancel()
	if err := slots.sem.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &callerr.Error{Code: callerr.Overloaded, RetryAfter: overloadRetryAfter,
			Message: fmt.Sprintf("%d executions are already running in this project (codeMode.maxConcurrentExecutions); retry after %d ms", limit, retryMs(overloadRetryAfter))}
	}
	return slots.release, nil
}

// execSlots bounds concurrent executions on a semaphore.Weighted of fixed
// capacity whose units beyond the bound are held by execSlots itself. A
// reload may change the bound while executions run: a larger one frees
// slots at once, a smaller one is reached as running executions end
// (their slots are withheld instead of freed), so the executions running
// never exceed the bound in force for long.
type execSlots struct {
	sem   *semaphore.Weighted
	mu    sync.Mutex
	limit int64
	owed  int64 // slots to withhold from executions that end, after a shrink
}

const slotCapacity = math.MaxInt32

func newExecSlots(limit int) *execSlots {
	s := &execSlots{sem: semaphore.NewWeighted(slotCapacity), limit: int64(limit)}
	s.sem.TryAcquire(slotCapacity - int64(limit))
	return s
}

// resize sets the bound.
func (s *execSlots) resize(limit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := int64(limit) - s.limit
	s.limit = int64(limit)
	if d > 0 {
		pay := min(d, s.owed)
		s.owed -= pay
		if d -= pay; d > 0 {
			s.sem.Release(d)
		}
		return
	}
	for ; d < 0; d++ {
		if !s.sem.TryAcquire(1) {
			s.owed += -d
			return
		}
	}
}

// release gives back one execution's slot.
func (s *execSlots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owed > 0 {
		s.owed--
		return
	}
	s.sem.Release(1)
}

// executionQueueWait is how long an execution waits for a free slot.
var executionQueueWait = 2 * time.Second

func newExecutionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "x" + hex.EncodeToString(b[:])
}
