package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The MCP SDK's streamable HTTP server answers a tools/call through a chain
// of goroutines: the POST's handler hands the message to the session's
// reader, which starts a handler goroutine, whose result travels back over
// a stream to the POST's handler. On two cores each hand-off wakes a thread,
// and together they cost about as much CPU as the upstream call itself
// (benchmarks/README.md). So the
// access layer answers the common case, a POST that holds one tools/call of
// a session the project's server holds, itself: it runs the one tool path
// (opened by the access layer as for every POST holding one tools/call,
// toolpath.go) on the POST's own goroutine and writes the JSON-RPC
// response as the SDK would.
// Everything else, and every case below that this code does not decide
// exactly as the SDK does, goes to the SDK's handler unchanged. Both ways
// sit behind the same transport checks (front.go), and the answer is
// written as the SDK writes it: one event of an event stream.
//
// Nothing an upstream sends during the call is lost: the gateway relays
// progress, log messages and the upstream's requests to the caller's session
// under contexts of their own, which the SDK sends on the session's
// standalone stream whichever way the call came in. A client's
// notifications/cancelled for a call answered here cancels it
// (directCalls.cancel), as the SDK would.

// directCallsOn switches the access layer's own answers on; tests switch
// them off to compare them with the SDK's.
var directCallsOn atomic.Bool

func init() { directCallsOn.Store(true) }

// directCall is a tools/call the access layer answers itself.
type directCall struct {
	id      jsonrpc.ID
	params  mcp.CallToolParamsRaw
	session *mcp.ServerSession
}

// directCallKey names a call in flight for notifications/cancelled: the
// session id and the request id, as JSON.
type directCallKey struct {
	session string
	id      string
}

// prepareDirectCall reports whether the access layer may answer msg, a
// peeked tools/call of session s (checked by checkTransport; nil when the
// request names none) that pc opened on the tool path, itself: one request with an id, the version tag and
// parameters the SDK accepts, a tool the client may call, only a progress
// token in _meta, a protocol version the SDK's session serves for it, the
// session initialized, and its event stream open (what the upstream sends
// during the call is relayed there; without one, the SDK answers and the
// messages go on the call's own stream, relay.go).
func (p *project) prepareDirectCall(r *http.Request, s *session, msg *rpcMessage, pc *pathCall) (*directCall, bool) {
	if s == nil || !directCallsOn.Load() || msg.Version != "2.0" || msg.Params.Name == "" || s.streams.Load() == 0 {
		return nil, false
	}
	if v := r.Header.Get(protocolVersionHeader); v != "" && !slices.Contains(downstreamProtocolVersions, v) {
		return nil, false // newer versions: the SDK's answer
	}
	id, ok := requestID(msg.ID)
	if !ok {
		return nil, false
	}
	for k := range msg.Params.Meta {
		if k != "progressToken" {
			return nil, false
		}
	}
	if pc.target.route == nil {
		return nil, false // unknown, hidden, not callable directly, or a Code Mode tool
	}
	if s.ss.InitializeParams() == nil {
		return nil, false
	}
	return &directCall{id: id, params: msg.Params, session: s.ss}, true
}

// serveDirectCall answers c, opened on the tool path as pc: the rest of
// the path, then the JSON-RPC response. claim holds the call's id in its
// session until then.
func (g *Gateway) serveDirectCall(w http.ResponseWriter, r *http.Request, pc *pathCall, c *directCall, claim *callClaim) {
	p := pc.p
	key := directCallKey{session: c.session.ID(), id: idText(c.id)}
	// As in the SDK, a dropped connection does not cancel the call (the
	// transport's rules: only notifications/cancelled does).
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	entry := &cancel
	p.direct.track(key, entry)
	defer p.direct.forget(key, entry)

	pc.take()
	res, wire, err := pc.finish(ctx, answerEncoded)
	resp := &jsonrpc.Response{ID: c.id}
	switch {
	case err == nil && wire != nil:
		resp.Result = wire
	default:
		res, err = toMCPResult(res, err)
		if err != nil {
			resp.Error = err
			break
		}
		if res == nil {
			resp.Error = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the tool path returned no result"}
			break
		}
		resp.Result, err = json.Marshal(normalResult(res))
		if err != nil {
			resp.Result, resp.Error = nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "encoding the result: " + err.Error()}
		}
	}
	b, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		http.Error(w, "encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	g.metrics.accessCalls.WithLabelValues(p.name).Inc()
	if claim != nil {
		claim.release() // as the SDK, before the answer goes out
	}
	writeSSEResponse(w, b)
}

// directCalls are the cancel funcs of the calls the access layer is
// answering itself, for notifications/cancelled. (The transport checks
// refuse a second call under an id in flight in the same session, so a
// key holds one call; forgetting a call never drops another's.)
type directCalls struct {
	mu    sync.Mutex
	calls map[directCallKey][]*context.CancelFunc
}

// track registers the cancel func of a call in flight.
func (d *directCalls) track(k directCallKey, cancel *context.CancelFunc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.calls == nil {
		d.calls = map[directCallKey][]*context.CancelFunc{}
	}
	d.calls[k] = append(d.calls[k], cancel)
}

// forget drops the cancel func of a call that ended.
func (d *directCalls) forget(k directCallKey, cancel *context.CancelFunc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rest := slices.DeleteFunc(d.calls[k], func(c *context.CancelFunc) bool { return c == cancel })
	if len(rest) == 0 {
		delete(d.calls, k)
	} else {
		d.calls[k] = rest
	}
}

// cancel acts on a client's notifications/cancelled in body: when it names
// a call of session sid that the access layer is answering, that call is
// cancelled (and the upstream told, as for any cancelled call). The
// notification then goes on to the SDK, which ignores ids it does not
// know.
func (d *directCalls) cancel(sid string, body []byte) {
	if sid == "" {
		return
	}
	var n struct {
		Params struct {
			RequestID json.RawMessage `json:"requestId"`
		} `json:"params"`
	}
	if _, err := sdkParse(bytes.TrimSpace(body), &n); err != nil || len(n.Params.RequestID) == 0 {
		return
	}
	id, ok := requestID(n.Params.RequestID)
	if !ok {
		return
	}
	d.mu.Lock()
	calls := slices.Clone(d.calls[directCallKey{session: sid, id: idText(id)}])
	d.mu.Unlock()
	for _, cancel := range calls {
		(*cancel)()
	}
}
