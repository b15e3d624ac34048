package gateway

import (
	"context"
	"errors"
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
