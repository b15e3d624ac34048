package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
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
	session *mcp.ServerSession // nil for a call of protocol 2026-07-28
}

// directCallKey names a call in flight for notifications/cancelled: the
// session id and the request id, as JSON.
type directCallKey struct {
	session string
	id      string
}

// prepareDirectCall reports whether the access layer may answer msg, a
// peeked tools/call that pc opened on the tool path, itself: one request
// with an id, the version tag and parameters the SDK accepts, a tool the
// client may call whose schema asks for no Mcp-Param-* headers, and
// either
//
//   - of session s (checked by checkTransport; nil when the request names
//     none): only a progress token in _meta, a protocol version the SDK's
//     session serves for it, the session initialized, and its event
//     stream open (what the upstream sends during the call is relayed
//     there; without one, the SDK answers and the messages go on the
//     call's own stream, relay.go); or
//   - of protocol 2026-07-28 (stateless): only the protocol version, the
//     client's capabilities and its name in _meta, each as the SDK
//     accepts them (a progress token or a log level asks for messages on
//     the call's stream: the SDK answers those).
func (p *project) prepareDirectCall(r *http.Request, s *session, stateless bool, msg *rpcMessage, pc *pathCall) (*directCall, bool) {
	if !directCallsOn.Load() || msg.Version != "2.0" || msg.Params.Name == "" {
		return nil, false
	}
	if stateless {
		if r.Header.Get(protocolVersionHeader) != versionStateless || !statelessMeta(msg.Params.Meta) {
			return nil, false
		}
	} else {
		if s == nil || s.streams.Load() == 0 {
			return nil, false
		}
		if v := r.Header.Get(protocolVersionHeader); v != "" && (!slices.Contains(downstreamProtocolVersions, v) || statelessVersion(v)) {
			return nil, false // not a version of sessions: the SDK's answer
		}
		for k := range msg.Params.Meta {
			if k != "progressToken" {
				return nil, false
			}
		}
	}
	id, ok := requestID(msg.ID)
	if !ok {
		return nil, false
	}
	if pc.target.route == nil || pc.target.route.paramHeaders {
		return nil, false // unknown, hidden, not callable directly, a Code Mode tool, or one with Mcp-Param-* headers
	}
	if stateless {
		return &directCall{id: id, params: msg.Params}, true
	}
	if s.ss.InitializeParams() == nil {
		return nil, false
	}
	return &directCall{id: id, params: msg.Params, session: s.ss}, true
}

// statelessMeta reports whether meta, the _meta of a request of protocol
// 2026-07-28, holds only the protocol version, the client's capabilities
// and its clientInfo, and the SDK accepts both (its validateRequestMeta).
func statelessMeta(meta mcp.Meta) bool {
	if len(meta) > 3 || meta[metaClientCapabilities] == nil {
		return false
	}
	for k, v := range meta {
		switch k {
		case metaProtocolVersion:
		case metaClientCapabilities:
			var caps struct {
				mcp.ClientCapabilities
				Roots *mcp.RootCapabilities `json:"roots,omitempty"`
			}
			if !remarshals(v, &caps) {
				return false
			}
		case metaClientInfo:
			var info *mcp.Implementation
			if v == nil || !remarshals(v, &info) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// remarshals reports whether v, a value decoded from JSON, decodes as out
// does, as the SDK reads values of _meta.
func remarshals(v, out any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	_, err = sdkParse(b, out)
	return err == nil
}

// serveDirectCall answers c, opened on the tool path as pc: the rest of
// the path, then the JSON-RPC response. claim holds the call's id in its
// session until then.
func (g *Gateway) serveDirectCall(w http.ResponseWriter, r *http.Request, pc *pathCall, c *directCall, claim *callClaim) {
	p := pc.p
	var ctx context.Context
	var cancel context.CancelFunc
	if c.session == nil {
		// Protocol 2026-07-28: the call lives as long as its POST.
		ctx, cancel = context.WithCancel(r.Context())
		defer cancel()
	} else {
		key := directCallKey{session: c.session.ID(), id: idText(c.id)}
		// As in the SDK, a dropped connection does not cancel the call
		// (the transport's rules: only notifications/cancelled does).
		ctx, cancel = context.WithCancel(context.WithoutCancel(r.Context()))
		defer cancel()
		entry := &cancel
		p.direct.track(key, entry)
		defer p.direct.forget(key, entry)
	}

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
	if c.session == nil && resp.Result != nil {
		resp.Result = p.statelessResult(resp.Result, res)
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
	if c.session == nil {
		if status := statelessErrorStatus(resp.Error); status != 0 {
			// As the SDK answers these errors of 2026-07-28: the
			// response alone, with the status the protocol gives it.
			w.Header().Set("Cache-Control", "no-cache, no-transform")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write(b)
			return
		}
	}
	writeSSEResponse(w, b)
}

// statelessResult is result, a tools/call result as the access layer
// encodes it for a session (res decoded, when known), as protocol
// 2026-07-28 sends it: with "resultType": "complete" and the gateway's
// serverInfo in _meta (unless the result names one), as the SDK adds them.
func (p *project) statelessResult(result json.RawMessage, res *mcp.CallToolResult) json.RawMessage {
	trimmed := bytes.TrimSpace(result)
	var meta mcp.Meta
	if res != nil {
		meta = res.Meta
	}
	if len(trimmed) < 2 || trimmed[0] != '{' || bytes.Contains(trimmed, []byte(`"resultType"`)) || (meta == nil && bytes.Contains(trimmed, []byte(`"_meta"`))) {
		// Not what the access layer encodes: decode it as the SDK would.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &m); err != nil {
			return result
		}
		m["resultType"] = json.RawMessage(`"complete"`)
		var md map[string]json.RawMessage
		_ = json.Unmarshal(m["_meta"], &md)
		if md == nil {
			md = map[string]json.RawMessage{}
		}
		if _, ok := md[mcp.MetaKeyServerInfo]; !ok {
			md[mcp.MetaKeyServerInfo] = p.serverInfo
		}
		m["_meta"], _ = json.Marshal(md)
		out, _ := json.Marshal(m)
		return out
	}
	out := make([]byte, 0, len(trimmed)+len(p.serverInfo)+96)
	out = append(out, '{')
	if meta == nil {
		out = append(out, `"_meta":{"`+mcp.MetaKeyServerInfo+`":`...)
		out = append(out, p.serverInfo...)
		out = append(out, "},"...)
	} else if _, ok := meta[mcp.MetaKeyServerInfo]; !ok {
		// The result's own _meta, with the serverInfo added: encoded
		// again.
		r := *res
		r.Meta = maps.Clone(meta)
		r.Meta[mcp.MetaKeyServerInfo] = json.RawMessage(p.serverInfo)
		b, err := json.Marshal(normalResult(&r))
		if err != nil {
			return result
		}
		return append(b[:len(b)-1], `,"resultType":"complete"}`...)
	}
	out = append(out, `"resultType":"complete"`...)
	if len(bytes.TrimSpace(trimmed[1:len(trimmed)-1])) > 0 {
		out = append(out, ',')
	}
	out = append(out, trimmed[1:]...)
	return out
}

// statelessErrorStatus is the HTTP status protocol 2026-07-28 gives the
// answer with error e (0: an event of the stream, as any answer): 404 for
// an unknown method, 400 for invalid params, an unsupported version or
// missing client capabilities.
func statelessErrorStatus(e error) int {
	var je *jsonrpc.Error
	if e == nil || !errors.As(e, &je) {
		return 0
	}
	switch je.Code {
	case jsonrpc.CodeMethodNotFound:
		return http.StatusNotFound
	case jsonrpc.CodeInvalidParams, codeUnsupportedVersion, codeMissingCapabilities:
		return http.StatusBadRequest
	}
	return 0
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
