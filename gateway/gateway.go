package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/alert"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

// Principal is who makes a call: the project it belongs to and, once keys
// exist, the key and the client's address. A Code Mode script calls as its
// caller's principal.
type Principal struct {
	Project  string
	KeyID    string
	ClientIP string
}

// ToolCall is one call on the tool path.
type ToolCall struct {
	Principal Principal
	// Name is the namespaced tool name a client sees (server__tool).
	Name string
	// Arguments is the JSON object of arguments (nil for none).
	Arguments json.RawMessage
	// Meta is the request's _meta; a progress token in it is mapped to
	// one of the gateway's own for the upstream call.
	Meta mcp.Meta
	// Session is the downstream MCP session the call came from; it receives
	// progress and the upstream's requests made during the call. It may be
	// nil (a call without a client session).
	Session *mcp.ServerSession

	// ExecutionID links the calls a Code Mode script makes to its
	// code.execution event.
	ExecutionID string

	// prepaid names the tool whose rate-limit tokens the HTTP layer
	// already took for this request.
	prepaid string

	// keepJSON asks the tool path to encode the result once, for both the
	// audit event's size and the response: result is the result as sent
	// and resultJSON its encoding (nil when it did not encode).
	keepJSON   bool
	result     *mcp.CallToolResult
	resultJSON []byte
	// upstreamJSON is the result as the upstream encoded it, when the
	// upstream call kept it (keepJSON, streamable HTTP upstreams).
	upstreamJSON json.RawMessage
}

// Options configure a Gateway. A nil *Options means defaults.
type Options struct {
	// Logger receives the gateway's structured logs (default slog.Default()).
	Logger *slog.Logger
	// Auth checks API keys; it is required unless the configuration turns
	// authentication off. The gateway gives it the keys the configuration
	// lists by hash.
	Auth *apikey.Authenticator
	// Limiter holds the rate-limit buckets (default: in memory).
	Limiter policy.Limiter
	// Audit receives every event; when it cannot be written, tool calls are
	// refused. Nil means no audit log.
	Audit *audit.Log
	// Alerter watches events for the alert rules. Nil means no alerts.
	Alerter *alert.Alerter
	// Sandbox runs Code Mode scripts; it is required when the
	// configuration enables code mode.
	Sandbox *sandbox.Engine
	// Pins keeps tool pins and approvals. Nil means the pins file in
	// dataDir (none without a dataDir).
	Pins PinStore
	// StoreProblems report, for /readyz, what is wrong with the shared
	// stores the gateway does not own (the key store, the audit
	// shipper): each returns "" when all is well.
	StoreProblems []func() string
}

// Gateway serves the projects of one configuration.
type Gateway struct {
	log     *slog.Logger
	auth    *apikey.Authenticator
	limiter policy.Limiter
	// ownLimiter is the default limiter New made, which Close stops.
	ownLimiter    *policy.MemoryLimiter
	acc           atomic.Pointer[access]
	metrics       *metrics
	audit         *audit.Log
	engine        *sandbox.Engine
	alerter       *alert.Alerter
	pins          PinStore // nil without a dataDir or Options.Pins
	storeProblems []func() string
	stop          chan struct{} // closed by Close: ends background loops
	life          lifecycle     // calls in flight, event streams, draining

	reloadMu sync.Mutex // one Start/Reload/Close at a time

	keyMu     sync.Mutex      // one RecordKeyChange at a time
	keysInLog map[string]bool // key changes in the log: found by the first RecordKeyChange, or written since

	mu       sync.RWMutex
	cfg      *config.Config
	projects map[string]*project
}

// New returns a gateway for cfg; Start connects its upstreams.
func New(cfg *config.Config, opts *Options) *Gateway {
	if opts == nil {
		opts = &Options{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	g := &Gateway{log: log, cfg: cfg, projects: map[string]*project{}, auth: opts.Auth, limiter: opts.Limiter, audit: opts.Audit, alerter: opts.Alerter, engine: opts.Sandbox, pins: opts.Pins, storeProblems: opts.StoreProblems}
	if g.limiter == nil {
		g.ownLimiter = policy.NewMemoryLimiter(nil)
		g.limiter = g.ownLimiter
	}
	g.metrics = newMetrics(g)
	g.stop = make(chan struct{})
	return g
}

// accessPolicy returns the access rules in force.
func (g *Gateway) accessPolicy() *access { return g.acc.Load() }

// StartupError lists what keeps a configuration from being served: name
// collisions and names that break the MCP rules, found once the upstreams
// have said what they offer.
type StartupError struct {
	Problems []string
}

func (e *StartupError) Error() string {
	return "configuration cannot be served:\n  " + strings.Join(e.Problems, "\n  ")
}

// Start connects every upstream, waits for each first attempt (at most the
// configured startup timeout; an upstream that is down keeps reconnecting in
// the background) and makes the tools visible. Name collisions and invalid
// names are a *StartupError, and nothing keeps running.
func (g *Gateway) Start(ctx context.Context) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.pins == nil && g.cfg.DataDir != "" {
		pins, err := openPinStore(filepath.Join(g.cfg.DataDir, PinsFile))
		if err != nil {
			return err
		}
		g.pins = pins
	}
	if g.pins != nil {
		go g.watchPins(g.stop)
	}
	return g.apply(ctx, g.cfg, true)
}

// Close stops every upstream (killing stdio process groups) and closes
// client sessions.
func (g *Gateway) Close() {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.mu.Lock()
	ps := slices.Collect(maps.Values(g.projects))
	g.projects = map[string]*project{}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(p.stop)
	}
	wg.Wait()
	if g.ownLimiter != nil {
		g.ownLimiter.Close()
	}
}

// Config returns the running configuration.
func (g *Gateway) Config() *config.Config {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg
}

func (g *Gateway) project(name string) *project {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.projects[name]
}

// Server returns the MCP server of a project, for serving it over another
// transport (stdio); nil if there is no such project.
func (g *Gateway) Server(projectName string) *mcp.Server {
	if p := g.project(projectName); p != nil {
		return p.server
	}
	return nil
}

// CallTool is the one tool path: every call, from an MCP client or from a
// Code Mode binding, goes through it. It finds the tool among those visible
// to the caller (a filtered tool is not found; a call without ExecutionID
// is a client's and sees only the tools the project lists, so with Code
// Mode on and codeMode.directTools off it finds no upstream tool), applies
// the upstream's deadline and calls it. A tool that fails returns a result with
// IsError; a refused call returns a *callerr.Error.
func (g *Gateway) CallTool(ctx context.Context, call *ToolCall) (*mcp.CallToolResult, error) {
	p := g.project(call.Principal.Project)
	if p == nil {
		return nil, &callerr.Error{Code: callerr.NotFound, Message: fmt.Sprintf("unknown project %q", call.Principal.Project)}
	}
	return g.callTool(ctx, p, call)
}

func (g *Gateway) callTool(ctx context.Context, p *project, call *ToolCall) (*mcp.CallToolResult, error) {
	start := time.Now()
	r := p.visibleTool(call)
	var res *mcp.CallToolResult
	err := g.auditHealthy()
	if err == nil {
		res, err = g.callRoute(ctx, p, r, call)
	}
	switch {
	case call.keepJSON && res != nil && res.Content != nil && call.upstreamJSON != nil:
		// The result as the upstream encoded it, already a complete one.
		call.result, call.resultJSON = res, call.upstreamJSON
	case call.keepJSON && res != nil:
		res = normalResult(res)
		if b, jerr := json.Marshal(res); jerr == nil {
			call.result, call.resultJSON = res, b
		}
	}
	if aerr := g.record(p, r, call, res, err, time.Since(start)); aerr != nil {
		// Fail closed: a call that cannot be recorded, answered or
		// refused, is not answered.
		return nil, errNotRecorded(aerr)
	}
	return res, err
}

// visibleTool is the route of the tool call names, as its caller sees
// the project: a script (its calls carry the execution's id) every tool
// the filters let through, a client the tools listed for it.
func (p *project) visibleTool(call *ToolCall) *route {
	if call.ExecutionID != "" {
		return p.reg.lookupTool(call.Name)
	}
	return p.reg.lookupCallable(call.Name)
}

// errNotRecorded is the answer to a call whose audit event could not be
// written.
func errNotRecorded(err error) *callerr.Error {
	return &callerr.Error{Code: callerr.Unavailable, Message: "the call could not be recorded in the audit log: " + err.Error()}
}

// outcome names how a call ended, for metrics and the audit log.
func outcome(res *mcp.CallToolResult, err error) string {
	var ce *callerr.Error
	var rpcErr *jsonrpc.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &rpcErr):
		return "upstream_error"
	case err != nil:
		return "error"
	case res != nil && res.IsError:
		return "tool_error"
	}
	return "ok"
}

// record accounts for one call on the tool path: metrics and the audit
// event, written before the call is answered.
func (g *Gateway) record(p *project, r *route, call *ToolCall, res *mcp.CallToolResult, err error, d time.Duration) error {
	out := outcome(res, err)
	server, tool := "", ""
	if r != nil {
		server, tool = r.up.cfg.Name, call.Name
	}
	reached := r != nil && out != callerr.RateLimited && out != callerr.Unavailable && out != callerr.Overloaded
	g.metrics.observeCall(p.name, server, tool, out, d, reached)
	return g.emit(callEvent(p.name, r, call, res, err, out, d))
}

// callRoute calls the tool of route r (nil when no visible tool has the
// name).
func (g *Gateway) callRoute(ctx context.Context, p *project, r *route, call *ToolCall) (*mcp.CallToolResult, error) {
	if r == nil {
		return nil, &callerr.Error{Code: callerr.NotFound, Message: fmt.Sprintf("unknown tool %q", clip.Text(call.Name, sandbox.MaxToolNameBytes))}
	}
	if call.prepaid != call.Name {
		if err := g.takeTokens(ctx, call.Principal, call.Name); err != nil {
			return nil, err
		}
	}
	conn, err := r.up.live()
	if err != nil {
		return nil, &callerr.Error{Code: callerr.Unavailable, Message: err.Error()}
	}
	params := &mcp.CallToolParams{Name: r.upstream, Meta: call.Meta}
	if len(call.Arguments) > 0 && string(call.Arguments) != "null" {
		params.Arguments = call.Arguments
	}
	if tok := call.Meta.GetMeta()["progressToken"]; tok != nil && call.Session != nil {
		upTok, forget := p.relay.progressToken(call.Session, tok, ctx)
		defer forget()
		params.Meta = maps.Clone(call.Meta)
		params.Meta["progressToken"] = upTok
	}
	cctx, cancel := context.WithTimeout(ctx, r.up.callTimeout)
	defer cancel()
	defer r.up.track(call.Session, ctx)()
	var res *mcp.CallToolResult
	if conn.calls != nil {
		var raw json.RawMessage
		res, raw, err = conn.calls.callTool(cctx, params)
		if call.keepJSON {
			call.upstreamJSON = raw
		}
	} else {
		res, err = conn.session.CallTool(cctx, params)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // the caller cancelled; the upstream was told
		}
		if cctx.Err() == context.DeadlineExceeded {
			return nil, &callerr.Error{Code: callerr.Timeout, Message: fmt.Sprintf("tool %q did not answer within %v", call.Name, r.up.callTimeout)}
		}
		var rpcErr *jsonrpc.Error
		if errors.As(err, &rpcErr) {
			return nil, rpcErr // the upstream's own protocol error, unchanged
		}
		return nil, &callerr.Error{Code: callerr.Unavailable, Message: fmt.Sprintf("server %q failed during the call: %v", r.up.cfg.Name, err)}
	}
	return res, nil
}

// toMCPResult turns the tool path's outcome into what an MCP client gets:
// an unknown (or hidden) tool is the same protocol error the MCP SDK gives
// for a tool it does not have; other refusals are tool errors the agent can
// read.
func toMCPResult(res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	var ce *callerr.Error
	if errors.As(err, &ce) {
		switch ce.Code {
		case callerr.NotFound:
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: ce.Message}
		case callerr.RateLimited:
			data, _ := json.Marshal(map[string]any{"retryAfterMs": retryMs(ce.RetryAfter)})
			return nil, &jsonrpc.Error{Code: codeRateLimited, Message: ce.Message, Data: data}
		case callerr.Overloaded:
			return nil, retryableError(codeOverloaded, ce) // the rate-limit store is out of reach
		}
		r := &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: ce.Message}}}
		return r, nil
	}
	return res, err
}

// ProjectStatus is one project's part of /readyz.
type ProjectStatus struct {
	Ready     bool                      `json:"ready"`
	Tools     int                       `json:"tools"`
	Upstreams map[string]UpstreamStatus `json:"upstreams"`
	Problems  []string                  `json:"problems,omitempty"`
}

// UpstreamStatus is one upstream's part of /readyz.
type UpstreamStatus struct {
	State     string `json:"state"`
	Transport string `json:"transport"`
	Tools     int    `json:"tools"`
	Restarts  int    `json:"restarts"`
	Error     string `json:"error,omitempty"`
}

// Status reports every project and upstream; ready is true when every
// enabled upstream is ready.
func (g *Gateway) Status() (ready bool, projects map[string]ProjectStatus) {
	g.mu.RLock()
	ps := maps.Clone(g.projects)
	g.mu.RUnlock()
	ready = g.auditHealthy() == nil
	retention := g.auditRetentionProblem()
	shared := g.sharedProblems()
	projects = map[string]ProjectStatus{}
	for name, p := range ps {
		st := p.status()
		ready = ready && st.Ready
		if retention != "" {
			// Said, not made a reason to be unready: the disk filling up
			// is the operator's to fix, and being unready would let a
			// burst of events take the gateway out of service.
			st.Problems = append(st.Problems, retention)
		}
		st.Problems = append(st.Problems, shared...)
		projects[name] = st
	}
	return ready, projects
}
