package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sjson "github.com/segmentio/encoding/json"
)

// What an upstream sends on a call's stream besides the call's response
// (progress, log messages, list changes, and its own requests: sampling,
// elicitation, roots, ping) is handled here as the MCP SDK's client
// session handles the messages of its own streams: by the same handlers
// (the client's receiving middleware and its ClientOptions, see
// clientHandler), given the same typed requests, with a request answered
// by a POST on the session and cancelled by the upstream's
// notifications/cancelled. The SDK offers no way to hand a session a
// message read elsewhere, so the steps it takes before its handlers
// (checking the message, decoding the parameters) are restated below
// from its table of client methods. The tests hold the answers that the
// SDK's session gave to the same messages (TestStreamCallerAnswersOnItsStream).

// clientHandler returns what client runs for each message its servers
// send: its receiving middleware, then the SDK's own dispatch to the
// handlers of its ClientOptions. It is captured by a middleware that
// changes nothing, so it must be called after the client's other
// receiving middleware was added.
func clientHandler(client *mcp.Client) mcp.MethodHandler {
	var h mcp.MethodHandler
	client.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		h = next
		return next
	})
	return h
}

// incomingMethod is a method an upstream may send its client.
type incomingMethod struct {
	notification bool // a notification, not a request
	// request builds the typed request the handlers take.
	request func(cs *mcp.ClientSession, params json.RawMessage) (mcp.Request, error)
}

// incomingMethods are the methods a client session of the SDK handles,
// with the parameters and flags of its table. (The SDK's table also lists
// completion/complete, which it would send back to the server as a
// request of its own; a server has no reason to send it, and it is
// answered as an unknown method.)
var incomingMethods = map[string]incomingMethod{
	"ping":                                     method[mcp.PingParams](false, true),
	"roots/list":                               method[mcp.ListRootsParams](false, true),
	"sampling/createMessage":                   method[mcp.CreateMessageWithToolsParams](false, false),
	"elicitation/create":                       method[mcp.ElicitParams](false, true),
	"notifications/cancelled":                  method[mcp.CancelledParams](true, true),
	"notifications/tools/list_changed":         method[mcp.ToolListChangedParams](true, true),
	"notifications/prompts/list_changed":       method[mcp.PromptListChangedParams](true, true),
	"notifications/resources/list_changed":     method[mcp.ResourceListChangedParams](true, true),
	"notifications/resources/updated":          method[mcp.ResourceUpdatedNotificationParams](true, true),
	"notifications/message":                    method[mcp.LoggingMessageParams](true, false),
	"notifications/progress":                   method[mcp.ProgressNotificationParams](true, false),
	"notifications/elicitation/complete":       method[mcp.ElicitationCompleteParams](true, true),
	"notifications/subscriptions/acknowledged": method[mcp.SubscriptionsAcknowledgedParams](true, true),
}

// method describes a method whose parameters are a T, optional when they
// may be missing or null.
func method[T any, P interface {
	*T
	mcp.Params
}](notification, optional bool) incomingMethod {
	m := incomingMethod{notification: notification}
	m.request = func(cs *mcp.ClientSession, raw json.RawMessage) (mcp.Request, error) {
		var p P
		if len(raw) > 0 {
			if _, err := sjson.Parse(raw, &p, sdkFlags); err != nil {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("invalid params: unmarshaling %q into a %T: %v", raw, p, err)}
			}
		}
		if p == nil { // absent, or null
			if !optional {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: `invalid request: missing required "params"`}
			}
			p = new(T)
		}
		return &mcp.ClientRequest[P]{Session: cs, Params: p}, nil
	}
	return m
}

// incoming handles msg, a message on the stream of a call running under
// call, other than the call's response. A notification is handled before
// the next message is read, so that the client sees the call's progress
// and logs before its result, under a context that ends with the call
// but has none of its values (the handlers relay some messages to other
// clients; the SDK, too, handles its streams' messages under a context of
// the session's). A request is answered in the background, as the SDK
// answers one, for as long as the session lasts or until the upstream
// cancels it.
func (c *streamCaller) incoming(call context.Context, msg jsonrpc.Message) {
	req, ok := msg.(*jsonrpc.Request)
	if !ok {
		return // a response on another call's stream: no call of this session waits for it
	}
	m, known := incomingMethods[req.Method]
	if !req.IsCall() {
		if !known || !m.notification {
			return // the SDK drops a notification it cannot handle
		}
		if req.Method == "notifications/cancelled" {
			c.cancelRequest(req.Params)
		}
		if r, err := m.request(c.session, req.Params); err == nil {
			ctx, cancel := context.WithCancel(c.ctx)
			stop := context.AfterFunc(call, cancel)
			_, _ = c.handle(ctx, req.Method, r)
			stop()
			cancel()
		}
		return
	}
	var r mcp.Request
	var err error
	switch {
	case !known:
		err = &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: fmt.Sprintf("method not found: %q", req.Method)}
	case m.notification:
		err = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: fmt.Sprintf("invalid request: unexpected id for %q", req.Method)}
	default:
		r, err = m.request(c.session, req.Params)
	}
	rctx, ok := c.startRequest(req.ID)
	if !ok {
		go c.answer(req.ID, nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: fmt.Sprintf("invalid request: request ID %v already in use", req.ID.Raw())})
		return
	}
	go func() {
		defer c.endRequest(req.ID)
		var res mcp.Result
		if err == nil {
			res, err = c.handle(rctx, req.Method, r)
		}
		c.answer(req.ID, res, err)
	}()
}

// upstreamRequests are the upstream's requests a streamCaller is
// answering, by ID, for its notifications/cancelled.
type upstreamRequests struct {
	mu     sync.Mutex
	cancel map[jsonrpc.ID]context.CancelFunc
}

// startRequest returns the context of the request with id, or false when
// a request with that ID is being answered already.
func (c *streamCaller) startRequest(id jsonrpc.ID) (context.Context, bool) {
	c.requests.mu.Lock()
	defer c.requests.mu.Unlock()
	if _, dup := c.requests.cancel[id]; dup {
		return nil, false
	}
	if c.requests.cancel == nil {
		c.requests.cancel = map[jsonrpc.ID]context.CancelFunc{}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.requests.cancel[id] = cancel
	return ctx, true
}

// endRequest forgets the request with id once it is answered.
func (c *streamCaller) endRequest(id jsonrpc.ID) {
	c.requests.mu.Lock()
	defer c.requests.mu.Unlock()
	if cancel, ok := c.requests.cancel[id]; ok {
		cancel()
		delete(c.requests.cancel, id)
	}
}

// cancelRequest cancels the request that the parameters of a
// notifications/cancelled name, if it is one being answered here.
func (c *streamCaller) cancelRequest(params json.RawMessage) {
	var p mcp.CancelledParams
	if _, err := sjson.Parse(params, &p, sdkFlags); err != nil {
		return
	}
	id, err := jsonrpc.MakeID(p.RequestID)
	if err != nil {
		return
	}
	c.requests.mu.Lock()
	cancel := c.requests.cancel[id]
	c.requests.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// answerTimeout bounds the POST that carries an answer to the upstream.
const answerTimeout = 30 * time.Second

// answer sends the upstream the response to its request with id: res,
// or err as the SDK encodes a handler's error. Like the SDK's client, it
// ends the session when the upstream refuses the POST with a status that
// is not temporary, and leaves it alone when the POST did not get there.
func (c *streamCaller) answer(id jsonrpc.ID, res mcp.Result, err error) {
	resp := &jsonrpc.Response{ID: id, Error: err}
	if err == nil {
		if res == nil {
			resp.Error = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "internal error: no result"}
		} else if resp.Result, err = marshalResult(res); err != nil {
			resp.Error = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("internal error: encoding the result: %v", err)}
		}
	}
	body, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, answerTimeout)
	defer cancel()
	hr, err := c.post(ctx, body)
	if err != nil {
		return
	}
	defer hr.Body.Close()
	if hr.StatusCode < 200 || hr.StatusCode >= 300 {
		_ = c.refused(hr)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(hr.Body, 1<<20))
}

// marshalResult encodes a handler's result as the SDK does: without
// escaping HTML characters.
func marshalResult(res mcp.Result) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(res); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
