package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A request to a project's MCP endpoint is answered one of two ways: by
// the access layer itself (a tools/call, fastpath.go) or by the MCP SDK
// (its stateless handler for protocol 2026-07-28, the transport of the
// request's session for older versions, sessions.go). So that the two can
// never disagree, every check of the transport that decides whether a
// request is served at all runs once, here, in front of both: the
// protocol version header, the method, Content-Type, Accept, the session
// the request names (and the key that opened it), Last-Event-ID, JSON-RPC
// batches of the versions that have none, the ids of calls already in
// flight in that session, and, for 2026-07-28, the agreement of the
// Mcp-Protocol-Version, Mcp-Method and Mcp-Name headers with the body.
// Each refusal is the one the SDK's handler gives (status, text, headers),
// so a request answered here or there reads the same; the SDK's own
// copies of these checks are never reached.
//
// One check is left to the SDK: the Mcp-Param-* headers of a tool whose
// input schema names some (x-mcp-header); the access layer does not
// answer calls of such tools itself.

// transportChecksOn switches these checks on; tests switch them off (and
// with them the access layer's own answers) to compare their refusals with
// the SDK's.
var transportChecksOn atomic.Bool

func init() { transportChecksOn.Store(true) }

// Header names and protocol versions of the streamable HTTP transport.
const (
	protocolVersionHeader = "Mcp-Protocol-Version"
	sessionIDHeader       = "Mcp-Session-Id"
	lastEventIDHeader     = "Last-Event-ID"
	methodHeader          = "Mcp-Method"
	nameHeader            = "Mcp-Name"
	// versionStateless is the first protocol version without sessions:
	// every request carries the version, in its header and in its _meta.
	versionStateless = "2026-07-28"
	// versionNoBatch is the first version without JSON-RPC batches.
	versionNoBatch = "2025-06-18"
	// versionAssumed is the version of a request without the header.
	versionAssumed = "2025-03-26"
)

// JSON-RPC error codes of protocol 2026-07-28.
const (
	codeHeaderMismatch      = -32020
	codeMissingCapabilities = -32021
	codeUnsupportedVersion  = -32022
)

// servedVersions are the protocol versions a project's MCP server
// negotiates, in the SDK's order (newest first), as its refusal lists them.
var servedVersions = slices.DeleteFunc(mcp.SupportedProtocolVersions(), func(v string) bool {
	return !slices.Contains(downstreamProtocolVersions, v)
})

// statelessVersion reports whether v, a request's protocol version
// header, is one of the versions without sessions.
func statelessVersion(v string) bool { return v >= versionStateless }

// transportRefusal is a request the transport refuses, as the SDK's handler
// words it (http.Error's plain text, turned into a JSON-RPC error like
// every refusal of the gateway).
type transportRefusal struct {
	status int
	text   string
	allow  string // the Allow header of a 405
}

func (t *transportRefusal) write(w http.ResponseWriter) {
	w.Header().Set("X-Content-Type-Options", "nosniff") // http.Error's
	if t.allow != "" {
		w.Header().Set("Allow", t.allow)
	}
	rpcError(w, t.status, codeInvalidRequest, t.text, nil)
}

// checkTransport applies the transport's rules to r's method and headers,
// in the order the SDK's handlers apply them, and returns the session r
// names (nil for none), held for the request (session.release). A request
// of a version without sessions (stateless) is a POST and names none.
func (p *project) checkTransport(r *http.Request, pr Principal, stateless bool) (*session, *transportRefusal) {
	if v := r.Header.Get(protocolVersionHeader); v != "" && !slices.Contains(servedVersions, v) && !statelessVersion(v) {
		return nil, &transportRefusal{status: http.StatusBadRequest, text: "Bad Request: Unsupported protocol version (supported versions: " + strings.Join(servedVersions, ",") + ")"}
	}
	if stateless {
		if r.Method != http.MethodPost {
			return nil, &transportRefusal{status: http.StatusMethodNotAllowed, text: "Method Not Allowed", allow: "POST"}
		}
		if baseMediaType(r.Header.Get("Content-Type")) != "application/json" {
			return nil, &transportRefusal{status: http.StatusUnsupportedMediaType, text: "Content-Type must be 'application/json'"}
		}
		if jsonOK, streamOK := accepts(r.Header.Values("Accept")); !jsonOK || !streamOK {
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "Accept must contain both 'application/json' and 'text/event-stream'"}
		}
		return nil, nil
	}
	sid := r.Header.Get(sessionIDHeader)
	switch r.Method {
	case http.MethodPost:
		if baseMediaType(r.Header.Get("Content-Type")) != "application/json" {
			return nil, &transportRefusal{status: http.StatusUnsupportedMediaType, text: "Content-Type must be 'application/json'"}
		}
		if jsonOK, streamOK := accepts(r.Header.Values("Accept")); !jsonOK || !streamOK {
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "Accept must contain both 'application/json' and 'text/event-stream'"}
		}
		if sid == "" {
			return nil, nil // a new session
		}
		s, ref := p.session(sid, pr)
		if ref != nil {
			return nil, ref
		}
		if len(r.Header.Values(lastEventIDHeader)) > 0 {
			s.release()
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "can't send Last-Event-ID for POST request"}
		}
		return s, nil
	case http.MethodGet:
		if _, streamOK := accepts(r.Header.Values("Accept")); !streamOK {
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "Accept must contain 'text/event-stream' for GET requests"}
		}
		if sid == "" {
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "Bad Request: GET requires an Mcp-Session-Id header"}
		}
		s, ref := p.session(sid, pr)
		if ref != nil {
			return nil, ref
		}
		if len(r.Header.Values(lastEventIDHeader)) > 0 {
			s.release()
			if eid := r.Header.Get(lastEventIDHeader); !validEventID(eid) {
				return nil, &transportRefusal{status: http.StatusBadRequest, text: fmt.Sprintf("malformed Last-Event-ID %q", eid)}
			}
			// Resuming a stream needs an event store, which the gateway
			// does not keep.
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "stream replay unsupported"}
		}
		return s, nil
	case http.MethodDelete:
		if sid == "" {
			return nil, &transportRefusal{status: http.StatusBadRequest, text: "Bad Request: DELETE requires an Mcp-Session-Id header"}
		}
		return p.session(sid, pr)
	default:
		return nil, &transportRefusal{status: http.StatusMethodNotAllowed, text: "Method Not Allowed", allow: "GET, POST, DELETE"}
	}
}

// checkBatch refuses a JSON-RPC batch (msg, of body) under a protocol
// version that has none, as the SDK's transport does once it has read the
// batch's messages (one it cannot read it refuses otherwise).
func checkBatch(r *http.Request, body []byte, msg *rpcMessage) *transportRefusal {
	if !msg.Batch {
		return nil
	}
	v := r.Header.Get(protocolVersionHeader)
	if v == "" {
		v = versionAssumed
	}
	if v < versionNoBatch {
		return nil
	}
	var raws []json.RawMessage
	if _, err := sdkParse(bytes.TrimSpace(body), &raws); err != nil || len(raws) == 0 {
		return nil
	}
	for _, raw := range raws {
		if _, err := jsonrpc.DecodeMessage(raw); err != nil {
			return nil
		}
	}
	return &transportRefusal{status: http.StatusBadRequest, text: fmt.Sprintf("JSON-RPC batching is not supported in %s and later (request version: %s)", versionNoBatch, v)}
}

// messageRefusal is a POST refused with a JSON-RPC error that answers its
// message (the form the SDK gives the refusals of protocol 2026-07-28).
type messageRefusal struct {
	status int
	id     jsonrpc.ID
	err    *jsonrpc.Error
}

func (m *messageRefusal) write(w http.ResponseWriter) {
	b, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: m.id, Error: m.err})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(m.status)
	_, _ = w.Write(b)
}

// Flags of the methods a server receives, as the SDK checks a request's
// method before anything else of a POST.
const (
	methodNotification   = 1 << iota // a notification: no id
	methodParamsOptional             // params may be missing
)

// serverMethods are the methods the project's MCP server receives.
var serverMethods = map[string]int{
	"completion/complete":              0,
	"server/discover":                  methodParamsOptional,
	"initialize":                       0,
	"ping":                             methodParamsOptional,
	"prompts/list":                     methodParamsOptional,
	"prompts/get":                      0,
	"tools/list":                       methodParamsOptional,
	"tools/call":                       0,
	"resources/list":                   methodParamsOptional,
	"resources/templates/list":         methodParamsOptional,
	"resources/read":                   0,
	"logging/setLevel":                 0,
	"resources/subscribe":              0,
	"subscriptions/listen":             0,
	"resources/unsubscribe":            0,
	"notifications/cancelled":          methodNotification | methodParamsOptional,
	"notifications/initialized":        methodNotification | methodParamsOptional,
	"notifications/roots/list_changed": methodNotification | methodParamsOptional,
	"notifications/progress":           methodNotification,
}

// Per-request _meta keys of protocol 2026-07-28 (the SDK's MetaKey*).
const (
	metaProtocolVersion    = mcp.MetaKeyProtocolVersion
	metaClientCapabilities = mcp.MetaKeyClientCapabilities
	metaClientInfo         = mcp.MetaKeyClientInfo
)

// checkStateless applies the rules of protocol 2026-07-28 to the message
// of a POST (body, msg as the access layer read it), in the order the
// SDK's transport applies them: a request whose _meta carries a protocol
// version, and every request sent with a 2026-07-28 header, must carry
// that version in both, and, with that header, Mcp-Method must name the
// body's method, and Mcp-Name the tool, prompt or resource a tools/call,
// prompts/get or resources/read names (400, HeaderMismatch). A body the
// SDK refuses for another reason first (not one JSON-RPC message of a
// method it knows) is left to it.
func checkStateless(r *http.Request, body []byte, msg *rpcMessage) *messageRefusal {
	req, metaVersion, peeked := statelessRequest(body, msg)
	if req == nil {
		return nil
	}
	flags, known := serverMethods[req.Method]
	if !known || (flags&methodNotification != 0) == req.IsCall() || (flags&methodParamsOptional == 0 && len(req.Params) == 0) {
		return nil
	}
	header := r.Header.Get(protocolVersionHeader)
	if (req.IsCall() && statelessVersion(header)) || metaVersion != "" {
		switch {
		case header == "":
			return headerMismatch(req.ID, fmt.Sprintf("%s header is required for requests carrying %q", protocolVersionHeader, metaProtocolVersion))
		case metaVersion == "":
			return &messageRefusal{status: http.StatusBadRequest, id: req.ID, err: &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("missing or invalid _meta field %q", metaProtocolVersion)}}
		case header != metaVersion:
			return headerMismatch(req.ID, fmt.Sprintf("%s header %q does not match request %s %q", protocolVersionHeader, header, metaProtocolVersion, metaVersion))
		}
	}
	if !statelessVersion(header) {
		return nil
	}
	method := r.Header.Get(methodHeader)
	if method == "" {
		return headerMismatch(req.ID, "missing required Mcp-Method header")
	}
	if method != req.Method {
		return headerMismatch(req.ID, fmt.Sprintf("header mismatch: Mcp-Method header value '%s' does not match body value '%s'", method, req.Method))
	}
	switch req.Method {
	case "tools/call", "resources/read", "prompts/get":
		name := r.Header.Get(nameHeader)
		if name == "" {
			return headerMismatch(req.ID, fmt.Sprintf("missing required Mcp-Name header for method %q", req.Method))
		}
		var inBody string
		var ok bool
		if peeked {
			inBody, ok = msg.Params.Name, argumentsDecode(msg.Params.Arguments)
		} else {
			inBody, ok = requestName(req.Method, req.Params)
		}
		if !ok {
			return headerMismatch(req.ID, fmt.Sprintf("failed to extract name from parameters for method %q", req.Method))
		}
		if name != inBody {
			return headerMismatch(req.ID, fmt.Sprintf("header mismatch: Mcp-Name header value '%s' does not match body value '%s'", name, inBody))
		}
	}
	return nil
}

// statelessRequest is the request of body as the SDK decodes it
// (jsonrpc.DecodeMessage, which decodeMessage does without its 64 KiB
// buffer) and the protocol version its _meta carries; nil when the body is
// no single request. A tools/call the access layer read whole (msg) is not
// decoded again (peeked): its decoding is the SDK's, field by field.
func statelessRequest(body []byte, msg *rpcMessage) (req *jsonrpc.Request, metaVersion string, peeked bool) {
	if msg.Method == "tools/call" && msg.Version == "2.0" {
		if id, ok := requestID(msg.ID); ok {
			return &jsonrpc.Request{ID: id, Method: msg.Method, Params: msg.RawParams}, msg.MetaVersion, true
		}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, "", false
	}
	m, err := decodeMessage(trimmed)
	if err != nil {
		return nil, "", false
	}
	req, ok := m.(*jsonrpc.Request)
	if !ok {
		return nil, "", false
	}
	return req, requestMetaVersion(req.Params), false
}

// argumentsDecode reports whether a tools/call's arguments (raw JSON)
// decode as the SDK's CallToolParams holds them, as any: the one field in
// which it differs from CallToolParamsRaw, so that, with those decoded,
// the SDK reads the call's name. A number past float64 fails.
func argumentsDecode(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return true
	}
	var v any
	_, err := sdkParse(raw, &v)
	return err == nil
}

func headerMismatch(id jsonrpc.ID, msg string) *messageRefusal {
	return &messageRefusal{status: http.StatusBadRequest, id: id, err: &jsonrpc.Error{Code: codeHeaderMismatch, Message: msg}}
}

// requestMetaVersion is the protocol version a request's params carry in
// their _meta, as the SDK reads it: "" when there is none or it is not a
// string.
func requestMetaVersion(params json.RawMessage) string {
	if len(params) == 0 || params[0] != '{' {
		return ""
	}
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if _, err := sdkParse(params, &p); err != nil {
		return ""
	}
	raw := p.Meta[metaProtocolVersion]
	if len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	var v string
	if _, err := sdkParse(raw, &v); err != nil {
		return ""
	}
	return v
}

// requestName is what a tools/call, prompts/get or resources/read names
// (the tool, the prompt, the resource's URI), as the SDK reads it for the
// Mcp-Name header.
func requestName(method string, params json.RawMessage) (string, bool) {
	var err error
	var name string
	switch method {
	case "tools/call":
		var p mcp.CallToolParams
		_, err = sdkParse(params, &p)
		name = p.Name
	case "prompts/get":
		var p mcp.GetPromptParams
		_, err = sdkParse(params, &p)
		name = p.Name
	case "resources/read":
		var p mcp.ReadResourceParams
		_, err = sdkParse(params, &p)
		name = p.URI
	}
	return name, err == nil
}

// accepts reads Accept headers as the SDK does: media types without their
// parameters, wildcards included.
func accepts(values []string) (jsonOK, streamOK bool) {
	for _, value := range values {
		for raw := range strings.SplitSeq(value, ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(raw), ";")
			base = strings.TrimSpace(base)
			switch {
			case strings.EqualFold(base, "application/json"), strings.EqualFold(base, "application/*"):
				jsonOK = true
			case strings.EqualFold(base, "text/event-stream"), strings.EqualFold(base, "text/*"):
				streamOK = true
			case base == "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK, streamOK
}

// baseMediaType is the media type of a Content-Type header, "" when it
// does not parse.
func baseMediaType(value string) string {
	if value == "application/json" {
		return value // what mime.ParseMediaType says, without its allocations
	}
	mt, _, err := mime.ParseMediaType(value)
	if err != nil {
		return ""
	}
	return mt
}

// validEventID reports whether id has the form of the SDK's event ids,
// stream_index.
func validEventID(id string) bool {
	parts := strings.Split(id, "_")
	if len(parts) != 2 {
		return false
	}
	n, err := strconv.Atoi(parts[1])
	return err == nil && n >= 0
}

// callClaim holds the request ids of one POST's calls in their session
// while they are in flight, as the SDK's transport holds them: until the
// answer is written. A call the access layer answers is released just
// before its answer; one the SDK answers when the SDK writes its answer on
// the POST's stream (answerWriter), or, for a POST the SDK refuses whole,
// when it writes the refusal. A client that goes away leaves the calls
// running in the SDK: they are released once the POST's handler has
// returned and every handler the SDK started for the POST has ended.
type callClaim struct {
	s *session

	mu      sync.Mutex
	ids     []string // held, as JSON
	running int      // the SDK's handlers of the POST, started, not ended
	posted  bool     // the POST's handler returned
}

// claim takes ids for a POST of s, or returns the first of them already in
// flight.
func (s *session) claim(ids []jsonrpc.ID) (*callClaim, jsonrpc.ID, bool) {
	c := &callClaim{s: s, ids: make([]string, 0, len(ids))}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.calls[idText(id)] {
			return nil, id, false
		}
	}
	for _, id := range ids {
		t := idText(id)
		if !s.calls[t] { // a batch may repeat an id: the SDK keeps one
			s.calls[t] = true
			c.ids = append(c.ids, t)
		}
	}
	return c, jsonrpc.ID{}, true
}

// release gives back every id still held.
func (c *callClaim) release() {
	c.mu.Lock()
	ids := c.ids
	c.ids = nil
	c.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	c.s.mu.Lock()
	for _, t := range ids {
		delete(c.s.calls, t)
	}
	c.s.mu.Unlock()
}

// answered gives back id (as JSON), whose answer is about to be written.
func (c *callClaim) answered(id string) {
	c.mu.Lock()
	i := slices.Index(c.ids, id)
	if i >= 0 {
		c.ids = slices.Delete(c.ids, i, i+1)
	}
	c.mu.Unlock()
	if i >= 0 {
		c.s.mu.Lock()
		delete(c.s.calls, id)
		c.s.mu.Unlock()
	}
}

// handlerStarted and handlerEnded bracket one of the SDK's handlers of the
// POST's messages.
func (c *callClaim) handlerStarted() {
	c.mu.Lock()
	c.running++
	c.mu.Unlock()
}

func (c *callClaim) handlerEnded() {
	c.mu.Lock()
	c.running--
	end := c.posted && c.running == 0
	c.mu.Unlock()
	if end {
		c.release()
	}
}

// postEnded notes that the POST's handler returned.
func (c *callClaim) postEnded() {
	c.mu.Lock()
	c.posted = true
	end := c.running == 0
	c.mu.Unlock()
	if end {
		c.release()
	}
}

// sawAnswers releases the calls whose answers are in b, one event the SDK
// writes on a POST's stream.
func (c *callClaim) sawAnswers(b []byte) {
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		b = rest
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method json.RawMessage `json:"method"`
		}
		if _, err := sdkParse(data, &m); err != nil || len(m.Method) > 0 {
			continue // not a response
		}
		if id, ok := requestID(m.ID); ok {
			c.answered(idText(id))
		}
	}
}

// writeDuplicate refuses a call whose id is in flight in its session, with
// the SDK's answer (whose stream headers are set by then).
func writeDuplicate(w http.ResponseWriter, id jsonrpc.ID) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Connection", "keep-alive")
	h.Set("Content-Type", "application/json")
	b, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: &jsonrpc.Error{
		Code:    jsonrpc.CodeInvalidRequest,
		Message: fmt.Sprintf("duplicate in-flight request ID %v", id.Raw()),
	}})
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(b)
}

// claimable reports whether the SDK reads the calls of msg, a POST's
// message, as calls to track: it refuses a batch under protocol versions
// that have none.
func claimable(r *http.Request, msg *rpcMessage) bool {
	if len(msg.Calls) == 0 {
		return false
	}
	if !msg.Batch {
		return true
	}
	v := r.Header.Get(protocolVersionHeader)
	if v == "" {
		v = versionAssumed
	}
	return v < versionNoBatch
}

// trackSessions is the MCP middleware that tells a POST's callClaim when
// the SDK's handlers of its requests start and end.
func (p *project) trackSessions(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if strings.HasPrefix(method, "notifications/") {
			return next(ctx, method, req)
		}
		gr := requestOf(req.GetExtra())
		if gr != nil && gr.claim != nil {
			gr.claim.handlerStarted()
			defer gr.claim.handlerEnded()
		}
		return next(ctx, method, req)
	}
}

// writeSSEResponse writes resp as the SDK's handler answers a POST that
// holds one call: one event on a stream.
func writeSSEResponse(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Content-Type", "text/event-stream")
	h.Set("Connection", "keep-alive")
	buf := make([]byte, 0, len(b)+32)
	buf = append(buf, "event: message\ndata: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	_, _ = w.Write(buf)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
