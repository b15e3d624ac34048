package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// What an upstream sends during a call (progress, log messages, sampling,
// elicitation and roots requests) is relayed to the client that made the
// call, on that call's own response stream when the MCP SDK answers the
// call (the messages are sent under a context that carries the call's
// values, by which the SDK tells which request they belong to), else on
// the session's event stream (its GET). The access layer answers a call
// only while the session has its event stream open (fastpath.go), so
// either way the messages have somewhere to go. A message the SDK's
// transport did not deliver (the call's stream ended: its answer was
// sent, or the client went away) goes to the event stream instead; a
// request the event stream did not take either (it closed, or is being
// reopened) is sent again, with a short backoff, as long as the upstream
// waits for the answer and the caller's call is in flight.

// relay carries what a project's upstreams send to its clients during
// their calls: progress (under a token of the gateway's own per call, mapped
// back to the client's), log messages, resource updates, and the
// upstreams' sampling, elicitation and roots requests.
type relay struct {
	project string
	server  *mcp.Server
	log     *slog.Logger

	mu       sync.Mutex
	seq      uint64
	progress map[string]progressTarget // by the token the upstream got
}

type progressTarget struct {
	ss    *mcp.ServerSession
	token any
	call  context.Context // of the call the token belongs to
}

// progressGrace is how long a progress token mapping outlives its call. The
// MCP SDK reads an upstream's result as soon as it arrives but hands the
// notifications that came before it to their handler through a queue, so
// the progress an upstream sends just before its result is often handled
// after the call has returned; without the grace it would be dropped.
var progressGrace = 10 * time.Second

// progressToken maps a client's progress token to a fresh token for the
// upstream call (of session ss, under ctx); the returned func forgets the
// mapping after progressGrace.
func (r *relay) progressToken(ss *mcp.ServerSession, token any, ctx context.Context) (string, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.progress == nil {
		r.progress = map[string]progressTarget{}
	}
	r.seq++
	t := fmt.Sprintf("tg-%s-%d", r.project, r.seq)
	r.progress[t] = progressTarget{ss: ss, token: token, call: ctx}
	return t, func() {
		time.AfterFunc(progressGrace, func() {
			r.mu.Lock()
			delete(r.progress, t)
			r.mu.Unlock()
		})
	}
}

// clientOptions are the handlers of u's client session that carry u's
// notifications and requests to the project's clients.
func (r *relay) clientOptions(u *upstream) *mcp.ClientOptions {
	return &mcp.ClientOptions{
		Logger: sdkLogger(r.log),
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:  &mcp.RootCapabilities{},
			Sampling: &mcp.SamplingCapabilities{},
			// Relayed by elicitMiddleware.
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}},
		},
		CreateMessageWithToolsHandler: func(ctx context.Context, req *mcp.CreateMessageWithToolsRequest) (*mcp.CreateMessageWithToolsResult, error) {
			ss, err := relayTarget(u, "sampling")
			if err != nil {
				return nil, err
			}
			return relayRequest(ctx, u, ss, func(ctx context.Context) (*mcp.CreateMessageWithToolsResult, error) {
				return ss.CreateMessageWithTools(ctx, req.Params)
			})
		},
		ToolListChangedHandler:     func(context.Context, *mcp.ToolListChangedRequest) { u.requestRefresh() },
		PromptListChangedHandler:   func(context.Context, *mcp.PromptListChangedRequest) { u.requestRefresh() },
		ResourceListChangedHandler: func(context.Context, *mcp.ResourceListChangedRequest) { u.requestRefresh() },
		ResourceUpdatedHandler: func(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			_ = r.server.ResourceUpdated(ctx, req.Params)
		},
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			r.relayLog(ctx, u, req.Params)
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			token, _ := req.Params.ProgressToken.(string)
			r.mu.Lock()
			target, ok := r.progress[token]
			r.mu.Unlock()
			if !ok {
				return
			}
			params := *req.Params
			params.ProgressToken = target.token
			_ = relayNotice(ctx, target.call, func(ctx context.Context) error { return target.ss.NotifyProgress(ctx, &params) })
		},
	}
}

// rootsMiddleware answers an upstream's roots/list with the roots of the
// client whose call is in flight, or with no roots when there is none.
func rootsMiddleware(u *upstream) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "roots/list" {
				return next(ctx, method, req)
			}
			ss, _ := u.caller() // no roots when no single caller is known
			if ss == nil || ss.InitializeParams() == nil || ss.InitializeParams().Capabilities == nil ||
				ss.InitializeParams().Capabilities.RootsV2 == nil {
				return &mcp.ListRootsResult{Roots: []*mcp.Root{}}, nil
			}
			return relayRequest(ctx, u, ss, func(ctx context.Context) (*mcp.ListRootsResult, error) {
				return ss.ListRoots(ctx, nil)
			})
		}
	}
}

// relayTarget is the client that gets a server-to-client request of u: the
// one client with calls in flight on u.
func relayTarget(u *upstream, what string) (*mcp.ServerSession, error) {
	ss, ambiguous := u.caller()
	if ambiguous {
		return nil, fmt.Errorf("toolgate: %s request from server %q while calls of several clients are in flight; it cannot be attributed to one of them, so it is refused", what, u.cfg.Name)
	}
	if ss == nil {
		return nil, fmt.Errorf("toolgate: %s request from server %q outside any client call; nothing to relay it to", what, u.cfg.Name)
	}
	return ss, nil
}

// relayLog sends an upstream's log message to the clients with a call in
// flight on it (or one that ended within relayGrace), or else to every
// client of the project. Each client's own logging level filters what it
// receives.
func (r *relay) relayLog(ctx context.Context, u *upstream, params *mcp.LoggingMessageParams) {
	msg := *params
	if msg.Logger == "" {
		msg.Logger = u.cfg.Name
	}
	targets := u.logTargets()
	if len(targets) == 0 {
		targets = slices.Collect(r.server.Sessions())
	}
	seen := map[*mcp.ServerSession]bool{}
	for _, ss := range targets {
		if seen[ss] {
			continue
		}
		seen[ss] = true
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = relayNotice(lctx, u.callContext(ss), func(ctx context.Context) error { return ss.Log(ctx, &msg) })
		cancel()
	}
}

// codeRejected is the JSON-RPC code of a message the SDK's transport did
// not deliver.
const codeRejected = -32005

// undelivered reports whether err says the SDK's transport did not
// deliver a message.
func undelivered(err error) bool {
	var werr *jsonrpc.Error
	return err != nil && errors.As(err, &werr) && werr.Code == codeRejected
}

// Backoff of a relayed request waiting for its client's event stream.
var (
	relayRetryMin = 10 * time.Millisecond
	relayRetryMax = 250 * time.Millisecond
)

// relayUndelivered is called each time a relayed request was delivered
// nowhere (tests wait for it).
var relayUndelivered = func() {}

// relatedCtx is the context of a relayed message: the relay's deadline and
// cancellation, with the values of the call it belongs to.
type relatedCtx struct {
	context.Context
	call context.Context
}

func (c relatedCtx) Value(k any) any {
	if v := c.call.Value(k); v != nil {
		return v
	}
	return c.Context.Value(k)
}

// relate returns ctx with the values of call (nil for none).
func relate(ctx, call context.Context) context.Context {
	if call == nil {
		return ctx
	}
	return relatedCtx{ctx, call}
}

// relayRequest sends a relayed request with send, to ss, a client with a
// call in flight on u: on that call's stream, else on the session's event
// stream, again until ctx ends or ss has no call in flight on u any more.
func relayRequest[R any](ctx context.Context, u *upstream, ss *mcp.ServerSession, send func(context.Context) (R, error)) (R, error) {
	if call := u.callContext(ss); call != nil {
		if res, err := send(relate(ctx, call)); !undelivered(err) {
			return res, err
		}
	}
	wait := relayRetryMin
	for {
		res, err := send(ctx)
		if !undelivered(err) {
			return res, err
		}
		relayUndelivered()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
		if cur, _ := u.caller(); cur != ss {
			return res, err
		}
		wait = min(2*wait, relayRetryMax)
	}
}

// relayNotice sends a relayed notification with send: under the context of
// call (nil for none) first, on the session's event stream when that was
// not delivered.
func relayNotice(ctx, call context.Context, send func(context.Context) error) error {
	if call != nil {
		if err := send(relate(ctx, call)); !undelivered(err) {
			return err
		}
	}
	return send(ctx)
}

// elicitMiddleware answers an upstream's elicitation/create by relaying it
// (the SDK's own handling, with its checks, is never reached).
func elicitMiddleware(u *upstream) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			er, ok := req.(*mcp.ElicitRequest)
			if method != "elicitation/create" || !ok || er.Params == nil {
				return next(ctx, method, req)
			}
			ss, err := relayTarget(u, "elicitation")
			if err != nil {
				return nil, err
			}
			return relayRequest(ctx, u, ss, func(ctx context.Context) (*mcp.ElicitResult, error) {
				return relayElicit(ctx, ss, er.Params)
			})
		}
	}
}

// elicitParamsKey carries the upstream's parameters from relayElicit to
// sendElicitParams.
type elicitParamsKey struct{}

// relayElicit sends params to ss's client and returns its answer. The
// session's Elicit is given the parameters without their schema, so that
// it checks nothing, and sendElicitParams puts the upstream's parameters
// back into the request it sends.
func relayElicit(ctx context.Context, ss *mcp.ServerSession, params *mcp.ElicitParams) (*mcp.ElicitResult, error) {
	bare := *params
	bare.RequestedSchema = nil
	return ss.Elicit(context.WithValue(ctx, elicitParamsKey{}, params), &bare)
}

// sendElicitParams is the MCP sending middleware of a project's server that
// sends an elicitation/create made by relayElicit with the upstream's
// parameters, unchanged.
func sendElicitParams(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method == "elicitation/create" {
			if params, ok := ctx.Value(elicitParamsKey{}).(*mcp.ElicitParams); ok {
				// The session sends its requests typed by the Params
				// interface.
				switch sr := req.(type) {
				case *mcp.ServerRequest[mcp.Params]:
					req = &mcp.ServerRequest[mcp.Params]{Session: sr.Session, Params: params, Extra: sr.Extra}
				case *mcp.ServerRequest[*mcp.ElicitParams]:
					req = &mcp.ServerRequest[*mcp.ElicitParams]{Session: sr.Session, Params: params, Extra: sr.Extra}
				}
			}
		}
		return next(ctx, method, req)
	}
}
