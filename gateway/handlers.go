package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
)

// The handlers of a project's MCP server for what its upstreams serve
// besides tools (tools/call is the tool path's, toolpath.go): prompts/get,
// resources/read, completion/complete and resource subscriptions. The
// lists are the MCP server's own, kept by the registry.

func (p *project) handlePrompt(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	r := p.reg.prompt(req.Params.Name)
	if r == nil {
		return nil, fmt.Errorf("unknown prompt %q", req.Params.Name)
	}
	var res *mcp.GetPromptResult
	err := p.meteredCall(ctx, "prompts/get", req.Extra, req.Session, r.up, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.GetPrompt(ctx, &mcp.GetPromptParams{Meta: req.Params.Meta, Name: r.upstream, Arguments: req.Params.Arguments})
		return err
	})
	return res, err
}

func (p *project) handleResource(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	r := p.reg.resourceRoute(req.Params.URI)
	if r == nil || !r.rules.resources.Allows(req.Params.URI) {
		return nil, mcp.ResourceNotFoundError(req.Params.URI)
	}
	var res *mcp.ReadResourceResult
	err := p.meteredCall(ctx, "resources/read", req.Extra, req.Session, r.up, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{Meta: req.Params.Meta, URI: req.Params.URI})
		return err
	})
	return res, err
}

func (p *project) complete(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	ref := req.Params.Ref
	if ref == nil {
		return nil, fmt.Errorf("completion: missing ref")
	}
	r := p.reg.completionRoute(ref)
	if r == nil {
		return nil, fmt.Errorf("completion: unknown reference %s %q", ref.Type, ref.Name+ref.URI)
	}
	upRef := *ref
	if ref.Type == "ref/prompt" {
		upRef.Name = r.upstream
	}
	if _, cat := r.up.snapshot(); cat.caps == nil || cat.caps.Completions == nil {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	params := *req.Params
	params.Ref = &upRef
	var res *mcp.CompleteResult
	err := p.meteredCall(ctx, "completion/complete", req.Extra, req.Session, r.up, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.Complete(ctx, &params)
		return err
	})
	return res, err
}

// subscriptions count the clients subscribed to each resource URI, so
// that the project keeps one upstream subscription per URI however many
// clients subscribe (the MCP server tracks which clients get updates).
type subscriptions struct {
	mu    sync.Mutex
	byURI map[string]int
}

// change adds delta to uri's count and returns it before and after.
func (s *subscriptions) change(uri string, delta int) (before, after int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byURI == nil {
		s.byURI = map[string]int{}
	}
	before = s.byURI[uri]
	after = max(before+delta, 0)
	s.byURI[uri] = after
	return before, after
}

func (p *project) subscribe(ctx context.Context, req *mcp.SubscribeRequest) error {
	return p.changeSubscription(ctx, req.Params.URI, +1, req.Session)
}

func (p *project) unsubscribe(ctx context.Context, req *mcp.UnsubscribeRequest) error {
	return p.changeSubscription(ctx, req.Params.URI, -1, req.Session)
}

// changeSubscription subscribes upstream when the first client subscribes
// to uri, and unsubscribes when the last one leaves.
func (p *project) changeSubscription(ctx context.Context, uri string, delta int, ss *mcp.ServerSession) error {
	r := p.reg.resourceRoute(uri)
	if r == nil {
		return mcp.ResourceNotFoundError(uri)
	}
	before, after := p.subs.change(uri, delta)
	if (before == 0) == (after == 0) {
		return nil
	}
	return upstreamCall(ctx, r.up, ss, func(ctx context.Context, cs *mcp.ClientSession) error {
		if after > 0 {
			return cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
		}
		return cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri})
	})
}

// charge takes the rate-limit tokens of one request of pr: the project's
// and the key's buckets, and toolLimits[tool] when tool names an entry. A
// refusal is audited (ratelimit.hit, with reason) and returned as the
// JSON-RPC error a client gets: -32029 with data.retryAfterMs.
func (p *project) charge(ctx context.Context, pr Principal, tool, reason string) error {
	ce := p.gw.takeTokens(ctx, pr, tool)
	if ce == nil {
		return nil
	}
	ev := rateLimitEvent(p.name, pr, tool, ce)
	ev.Reason = reason
	if err := p.gw.emit(ev); err != nil {
		return errNotRecorded(err)
	}
	if ce.Code == callerr.Overloaded {
		return retryableError(codeOverloaded, ce)
	}
	return retryableError(codeRateLimited, ce)
}

// meteredCall is upstreamCall for a client's request other than tools/call
// that reaches an upstream (prompts/get, resources/read,
// completion/complete): the project's and the key's rate limits and the
// gateway's admission (limits.maxInFlightCalls, and a shutdown's drain)
// apply to it as to a tool call. toolLimits do not: they name tools.
func (p *project) meteredCall(ctx context.Context, method string, extra *mcp.RequestExtra, ss *mcp.ServerSession, u *upstream, fn func(context.Context, *mcp.ClientSession) error) error {
	if err := p.charge(ctx, requestOf(extra).principal(p.name), "", method); err != nil {
		return err
	}
	s, r := p.gw.admit(p.name, sessionID(ss))
	if r != nil {
		return r.rpcError()
	}
	defer s.done()
	ctx = s.bind(ctx)
	err := upstreamCall(ctx, u, ss, fn)
	if cut := shutdownCut(ctx); cut != nil {
		return cut
	}
	return err
}

// upstreamCall runs fn with u's session and u's call deadline, tracking the
// downstream session for relayed requests.
func upstreamCall(ctx context.Context, u *upstream, ss *mcp.ServerSession, fn func(context.Context, *mcp.ClientSession) error) error {
	cs, err := u.session()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, u.callTimeout)
	defer cancel()
	defer u.track(ss, ctx)()
	if err := fn(ctx, cs); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("server %q did not answer within %v", u.cfg.Name, u.callTimeout)
		}
		return err
	}
	return nil
}
