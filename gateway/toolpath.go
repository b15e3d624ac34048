package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/sandbox"
)

// The one tool path. Every tool call, whoever makes it (a client through
// the MCP SDK's handler, over HTTP or another transport; a client whose
// call the access layer answers itself, fastpath.go; a Code Mode script's
// binding; a call of execute_code or search_tools), goes through the same
// steps, each in one place:
//
//  1. admission (Gateway.admit, lifecycle.go): limits.maxInFlightCalls and
//     a shutdown's drain. A script's calls run in the slot of the
//     execute_code call that runs the script.
//  2. visibility (registry.visible): the tool the caller may see by that
//     name. Anything else is not found, whether it does not exist or a
//     filter hides it.
//  3. rate limits (Gateway.takeTokens, limits.go): the project's, the
//     key's and the tool's buckets, for a call of a visible tool.
//  4. the audit log's health: a call that could not be recorded is not
//     run.
//  5. the call: the upstream's tool (callRoute), or execute_code and
//     search_tools (codemode.go); a refusal as not found when nothing was
//     visible.
//  6. the audit event and the metrics (Gateway.record, audit.go), written
//     before the call is answered.
//
// Steps 1-3 decide whether a call runs (pathCall.open), the others run it
// (pathCall.finish). For a POST that holds one tools/call, the access layer
// opens the call before the MCP SDK reads the request (access.go), so
// that a refusal is answered there as HTTP (503, 429); the call then goes
// on, admitted and charged, to whichever answers it. Everywhere else the
// call is opened where it reaches the path.

// Principal is who makes a call: the project it belongs to, the API key
// or the subject of the OAuth access token the request presented, and
// the client's address. A Code Mode script calls as its caller's
// principal.
type Principal struct {
	Project string
	KeyID   string
	// Subject is the sub claim of the access token ("" for an API key).
	Subject  string
	ClientIP string
	// grant is what the token's scopes and groups let it see; nil sees
	// all the project shows (authn.go).
	grant *toolGrant
}

// owner is who the principal's sessions and per-key budgets belong to:
// its key, or its token's subject; "" without authentication.
func (pr Principal) owner() string {
	switch {
	case pr.KeyID != "":
		return pr.KeyID
	case pr.Subject != "":
		return "sub:" + pr.Subject
	}
	return ""
}

// who names the owner in a message.
func (pr Principal) who() string {
	if pr.KeyID == "" && pr.Subject != "" {
		return fmt.Sprintf("subject %q", clip.Text(pr.Subject, 64))
	}
	return "key " + pr.KeyID
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
	// ExecutionID is set on the calls a Code Mode script makes: the id of
	// its execution, which links them to its code.execution event. A call
	// without one is a client's.
	ExecutionID string
}

// CallTool runs call on the one tool path, as a client's call when it has
// no ExecutionID and as a script's when it has one. A tool that fails
// returns a result with IsError; a refused call returns a *callerr.Error
// (or the upstream's own JSON-RPC error, unchanged).
func (g *Gateway) CallTool(ctx context.Context, call *ToolCall) (*mcp.CallToolResult, error) {
	p := g.project(call.Principal.Project)
	if p == nil {
		return nil, &callerr.Error{Code: callerr.NotFound, Message: fmt.Sprintf("unknown project %q", call.Principal.Project)}
	}
	res, _, err := p.callTool(ctx, call, answerDecoded)
	return res, err
}

// callTool runs call on the tool path from its first step.
func (p *project) callTool(ctx context.Context, call *ToolCall, how answer) (*mcp.CallToolResult, []byte, error) {
	var pc pathCall
	if r := pc.open(ctx, p, call, sessionID(call.Session)); r != nil {
		return nil, nil, r.rpcError()
	}
	return pc.finish(ctx, how)
}

// answer is how a call is answered, which its record (written before the
// answer) depends on.
type answer int

const (
	// answerDecoded: the caller gets the result decoded; the MCP SDK
	// encodes it for a client.
	answerDecoded answer = iota
	// answerEncoded: the caller sends the tool path's encoding of the
	// result (the access layer): the upstream's own bytes when they hold
	// the whole result, else the result as the SDK would send it. The
	// record gives the size of what is sent.
	answerEncoded
	// answerHTTP: the rate limits refused the call at the HTTP layer,
	// before the MCP SDK read the request, and the refusal is answered
	// there (refuseCall): recorded as the refusal of a request, not
	// counted among the tool calls.
	answerHTTP
)

// target is what a call reaches, as the visibility step found it: a tool of
// an upstream, one of Code Mode's tools, or nothing.
type target struct {
	route *route // a tool of an upstream
	meta  string // ExecuteCodeTool or SearchToolsTool
}

func (t target) found() bool { return t.route != nil || t.meta != "" }

// pathCall is one call on its way through the tool path.
type pathCall struct {
	p      *project
	call   *ToolCall
	start  time.Time
	slot   slot   // its admission; none for a script's call
	target target // what it reaches
	// execID links the call's audit event to an execution: the script's
	// that made it, or, for a call of execute_code, the one it starts.
	execID string
	// refused is the rate limits' refusal, recorded by finish.
	refused *callerr.Error
	// hand passes a call opened by the access layer to the handler that
	// answers it (handOpen, handTaken, handReleased).
	hand atomic.Int32
}

const (
	handOpen int32 = iota
	handTaken
	handReleased
)

// open runs the steps that decide whether call runs: admission (for a
// client's call; session is the id of its session, "" for none),
// visibility and rate limits. A refusal by admission is returned, to be
// answered and not recorded, as a shutdown or an overload refuses any
// work; a refusal by the rate limits stays with the call, which finish
// records (or the access layer, which answers it, access.go).
func (pc *pathCall) open(ctx context.Context, p *project, call *ToolCall, session string) *refusal {
	pc.p, pc.call, pc.start, pc.execID = p, call, time.Now(), call.ExecutionID
	if call.ExecutionID == "" {
		s, r := p.gw.admit(p.name, session)
		if r != nil {
			return r
		}
		pc.slot = s
	}
	pc.target = p.reg.visible(call.Name, call.ExecutionID != "", call.Principal.grant)
	if !pc.target.found() {
		return nil
	}
	if pc.target.meta == ExecuteCodeTool {
		pc.execID = newExecutionID()
	}
	pc.refused = p.gw.takeTokens(ctx, call.Principal, call.Name)
	return nil
}

// finish runs the rest of the path for an opened call: the audit log's
// health, the call itself, and its record, under a context that a shutdown
// cancels once its grace period is over. It returns the result (encoded
// as well for answerEncoded, when it encodes) or the refusal.
func (pc *pathCall) finish(ctx context.Context, how answer) (res *mcp.CallToolResult, wire []byte, err error) {
	ctx = pc.slot.bind(ctx)
	defer pc.slot.done()
	g := pc.p.gw
	var raw json.RawMessage
	if pc.refused != nil {
		err = pc.refused
	} else if err = g.auditHealthy(); err == nil {
		res, raw, err = pc.run(ctx)
	}
	if how == answerEncoded && res != nil {
		if raw != nil && res.Content != nil {
			wire = raw // already a complete result
		} else {
			res = normalResult(res)
			wire, _ = json.Marshal(res) // nil when it does not encode
		}
	}
	if aerr := g.record(pc, how, res, wire, err); aerr != nil {
		// Fail closed: a call that cannot be recorded, answered or
		// refused, is not answered.
		res, wire, err = nil, nil, errNotRecorded(aerr)
	}
	if pc.slot.held() {
		if cut := shutdownCut(ctx); cut != nil {
			return nil, nil, cut // recorded as cancelled
		}
	}
	return res, wire, err
}

// run is the call step: the target's own work.
func (pc *pathCall) run(ctx context.Context) (*mcp.CallToolResult, json.RawMessage, error) {
	switch {
	case pc.target.meta == SearchToolsTool:
		return pc.p.searchTools(pc.call), nil, nil
	case pc.target.meta == ExecuteCodeTool:
		res, err := pc.p.executeCodeCall(ctx, pc.call, pc.execID)
		return res, nil, err
	case pc.target.route == nil:
		return nil, nil, &callerr.Error{Code: callerr.NotFound, Message: fmt.Sprintf("unknown tool %q", clip.Text(pc.call.Name, sandbox.MaxToolNameBytes))}
	}
	return pc.p.callRoute(ctx, pc.target.route, pc.call)
}

// take hands a call opened by the access layer to the code that answers
// it; the call's duration counts from here, as for a call opened where it
// is answered. It fails when the access layer gave the call's slot back
// first: its POST ended (the client went away) before the MCP SDK started
// the call.
func (pc *pathCall) take() bool {
	if !pc.hand.CompareAndSwap(handOpen, handTaken) {
		return false
	}
	pc.start = time.Now()
	return true
}

// release gives back the slot of a call opened by the access layer that
// nothing took.
func (pc *pathCall) release() {
	if pc.hand.CompareAndSwap(handOpen, handReleased) {
		pc.slot.done()
	}
}

// reopen is a call whose slot the access layer gave back, opened again for
// the handler that answers it: admitted anew, with the visibility and the
// charge already found (found once, charged once).
func (pc *pathCall) reopen(call *ToolCall, session string) (*pathCall, *refusal) {
	s, r := pc.p.gw.admit(pc.p.name, session)
	if r != nil {
		return nil, r
	}
	return &pathCall{p: pc.p, call: call, start: time.Now(), slot: s, target: pc.target, execID: pc.execID, refused: pc.refused}, nil
}

// maxArgumentsDepth is the nesting of a call's arguments that the
// tools/call message carrying them keeps within maxJSONDepth: the message
// and its params take two levels.
const maxArgumentsDepth = maxJSONDepth - 2

// callRoute calls the tool of route r.
func (p *project) callRoute(ctx context.Context, r *route, call *ToolCall) (*mcp.CallToolResult, json.RawMessage, error) {
	conn, err := r.up.live()
	if err != nil {
		return nil, nil, &callerr.Error{Code: callerr.Unavailable, Message: err.Error()}
	}
	if !nestsWithin(call.Arguments, maxArgumentsDepth) {
		// The upstream would refuse the message as malformed, which ends
		// its session for every caller.
		return nil, nil, &callerr.Error{Code: callerr.InvalidArguments, Message: fmt.Sprintf("the arguments nest deeper than %d levels, more than an MCP message carries", maxArgumentsDepth)}
	}
	params := &mcp.CallToolParams{Name: r.upstream, Meta: upstreamMeta(call.Meta)}
	if len(call.Arguments) > 0 && string(call.Arguments) != "null" {
		params.Arguments = call.Arguments
	}
	if tok := call.Meta.GetMeta()["progressToken"]; tok != nil && call.Session != nil {
		upTok, forget := p.relay.progressToken(call.Session, tok, ctx)
		defer forget()
		params.Meta = maps.Clone(params.Meta)
		params.Meta["progressToken"] = upTok
	}
	cctx, cancel := context.WithTimeout(ctx, r.up.callTimeout)
	defer cancel()
	if call.Session == nil && call.Meta[metaProtocolVersion] != nil {
		defer r.up.trackSessionless()() // a client of 2026-07-28 the access layer answers
	} else {
		defer r.up.track(call.Session, ctx)()
	}
	var res *mcp.CallToolResult
	var raw json.RawMessage
	if conn.calls != nil {
		res, raw, err = conn.calls.callTool(cctx, params)
	} else {
		res, err = conn.session.CallTool(cctx, params)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err() // the caller cancelled; the upstream was told
		}
		if cctx.Err() == context.DeadlineExceeded {
			return nil, nil, &callerr.Error{Code: callerr.Timeout, Message: fmt.Sprintf("tool %q did not answer within %v", call.Name, r.up.callTimeout)}
		}
		var rpcErr *jsonrpc.Error
		if errors.As(err, &rpcErr) {
			return nil, nil, rpcErr // the upstream's own protocol error, unchanged
		}
		return nil, nil, &callerr.Error{Code: callerr.Unavailable, Message: fmt.Sprintf("server %q failed during the call: %v", r.up.cfg.Name, err)}
	}
	return res, raw, nil
}

// toolCalls is the MCP middleware that answers every tools/call on the
// tool path (handleTool), over every transport: the MCP server's table of
// tools serves tools/list only. A name the project does not show (unknown,
// filtered, or an upstream tool that Code Mode keeps for scripts) is
// refused on the path like any other, so the refusal is counted and
// recorded, with the error the MCP SDK gives for a tool it does not have.
func (p *project) toolCalls(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		ctr, ok := req.(*mcp.CallToolRequest)
		if method != "tools/call" || !ok || ctr.Params == nil {
			return next(ctx, method, req)
		}
		res, err := p.handleTool(ctx, ctr)
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}

// handleTool answers a tools/call of the project's MCP server (the
// handler of every tool it registers, which toolCalls answers first):
// the call goes on the tool path, from the access layer's verdict when it
// opened the call (access.go), and is answered as the SDK answers.
func (p *project) handleTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	gr := requestOf(req.Extra)
	call := &ToolCall{
		Principal: gr.principal(p.name),
		Name:      req.Params.Name,
		Arguments: req.Params.Arguments,
		Meta:      req.Params.Meta,
		Session:   req.Session,
	}
	var res *mcp.CallToolResult
	var err error
	switch pc := gr.opened(call.Name); {
	case pc == nil:
		res, _, err = p.callTool(ctx, call, answerDecoded)
	case pc.take():
		pc.call = call
		res, _, err = pc.finish(ctx, answerDecoded)
	default:
		again, r := pc.reopen(call, sessionID(req.Session))
		if r != nil {
			return nil, r.rpcError()
		}
		res, _, err = again.finish(ctx, answerDecoded)
	}
	if res, err = toMCPResult(res, err); err != nil || res == nil {
		return nil, err
	}
	res = normalResult(res) // as the SDK sends a tool's result
	if statelessVersion(req.ProtocolVersion()) {
		res = completeResult(res)
	}
	return res, nil
}

// completeTemplate is a result whose resultType is "complete".
var completeTemplate = func() (r mcp.CallToolResult) {
	if err := r.UnmarshalJSON([]byte(`{"content":[],"resultType":"complete"}`)); err != nil {
		panic(err)
	}
	return r
}()

// completeResult is res marked as a complete result (resultType
// "complete"), as the SDK marks the results of its own tool handlers for
// a client of protocol 2026-07-28. The SDK lets only its decoder set that
// field: the mark is copied from a decoded result.
func completeResult(res *mcp.CallToolResult) *mcp.CallToolResult {
	out := completeTemplate
	out.Meta, out.Content, out.StructuredContent, out.IsError = res.Meta, res.Content, res.StructuredContent, res.IsError
	out.InputRequests, out.RequestState = res.InputRequests, res.RequestState
	return &out
}

// requestMetaKeys are the keys of a request's _meta that carry what
// initialize carried before protocol 2026-07-28: they describe the client
// to the gateway, which speaks the upstream's own version with it.
var requestMetaKeys = []string{metaProtocolVersion, metaClientCapabilities, metaClientInfo, mcp.MetaKeyLogLevel}

// upstreamMeta is a client's _meta as an upstream gets it: without the
// per-request keys of protocol 2026-07-28 (an upstream on an older version
// reads a protocol version there as a request of 2026-07-28, which its
// session does not serve).
func upstreamMeta(m mcp.Meta) mcp.Meta {
	found := 0
	for _, k := range requestMetaKeys {
		if _, ok := m[k]; ok {
			found++
		}
	}
	switch found {
	case 0:
		return m
	case len(m):
		return nil // nothing of it goes upstream: no copy
	}
	out := maps.Clone(m)
	for _, k := range requestMetaKeys {
		delete(out, k)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sessionID is the id of ss, "" for none.
func sessionID(ss *mcp.ServerSession) string {
	if ss == nil {
		return ""
	}
	return ss.ID()
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

// toMCPResult turns the tool path's outcome into what an MCP client gets:
// an unknown (or hidden) tool is the same protocol error the MCP SDK gives
// for a tool it does not have; a refusal by a rate limit or a full gateway
// is a retryable protocol error; other refusals are tool errors the agent
// can read.
func toMCPResult(res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	var ce *callerr.Error
	if errors.As(err, &ce) {
		switch ce.Code {
		case callerr.NotFound:
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: ce.Message}
		case callerr.RateLimited:
			return nil, retryableError(codeRateLimited, ce)
		case callerr.Overloaded:
			return nil, retryableError(codeOverloaded, ce) // the rate-limit store is out of reach, or every execution slot stayed busy
		}
		return errorResult(ce.Message), nil
	}
	return res, err
}

// normalResult is res as the SDK's server sends it: content is a list,
// never null.
func normalResult(res *mcp.CallToolResult) *mcp.CallToolResult {
	if res.Content != nil {
		return res
	}
	r := *res
	r.Content = []mcp.Content{}
	return &r
}

func errorResult(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}
