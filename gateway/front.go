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
// the access layer itself (a tools/call, fastpath.go) or by the MCP SDK's
// streamable HTTP handler. So that the two can never disagree, every check
// of the transport that decides whether a request is served at all runs
// once, here, in front of both: the protocol version header, the method,
// Content-Type, Accept, the session the request names (and the key that
// opened it), Last-Event-ID, and the ids of calls already in flight in that
// session. Each refusal is the one the SDK's handler gives (status, text,
// headers), so a request answered here or there reads the same; the SDK's
// own copies of these checks are never reached.

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
	// versionStateless is the first protocol version without sessions;
	// the SDK's handler lets its requests through its version check and
	// refuses them later (the gateway serves older versions).
	versionStateless = "2026-07-28"
	// versionNoBatch is the first version without JSON-RPC batches.
	versionNoBatch = "2025-06-18"
	// versionAssumed is the version of a request without the header.
	versionAssumed = "2025-03-26"
)

// servedVersions are the protocol versions a project's MCP server
// negotiates, in the SDK's order (newest first), as its refusal lists them.
var servedVersions = slices.DeleteFunc(mcp.SupportedProtocolVersions(), func(v string) bool {
	return !slices.Contains(downstreamProtocolVersions, v)
})

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
// in the order the SDK's handler applies them, and returns the session r
// names (nil for none).
func (p *project) checkTransport(r *http.Request, pr Principal) (*session, *transportRefusal) {
	if v := r.Header.Get(protocolVersionHeader); v != "" && !slices.Contains(servedVersions, v) && v < versionStateless {
		return nil, &transportRefusal{status: http.StatusBadRequest, text: "Bad Request: Unsupported protocol version (supported versions: " + strings.Join(servedVersions, ",") + ")"}
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
		s, ref := p.sessions.lookup(sid, pr)
		if ref != nil {
			return nil, ref
		}
		if len(r.Header.Values(lastEventIDHeader)) > 0 {
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
		s, ref := p.sessions.lookup(sid, pr)
		if ref != nil {
			return nil, ref
		}
		if len(r.Header.Values(lastEventIDHeader)) > 0 {
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
		return p.sessions.lookup(sid, pr)
	default:
		return nil, &transportRefusal{status: http.StatusMethodNotAllowed, text: "Method Not Allowed", allow: "GET, POST, DELETE"}
	}
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

// session is what the access layer knows of an open MCP session of a
// project: the SDK's session, the key that opened it, and the ids of the
// calls in flight in it, however they are answered.
type session struct {
	id  string
	ss  *mcp.ServerSession
	key string // "" when keys are not required

	mu    sync.Mutex
	calls map[string]bool // request ids (as JSON) of calls in flight

	// streams counts the session's event streams (GET) the SDK has
	// opened: messages relayed on the session's behalf go there.
	streams atomic.Int32
}

// sessions are the open HTTP sessions of a project's MCP server by id,
// and their number by the key that opened them
// (limits.maxSessionsPerKey).
type sessions struct {
	mu     sync.Mutex
	byID   map[string]*session
	perKey map[string]int
}

// lookup returns the open session sid, or the SDK's refusal: 404 for a
// session it does not hold, 403 for one another key opened.
func (ss *sessions) lookup(sid string, pr Principal) (*session, *transportRefusal) {
	ss.mu.Lock()
	s := ss.byID[sid]
	ss.mu.Unlock()
	if s == nil {
		return nil, &transportRefusal{status: http.StatusNotFound, text: "session not found"}
	}
	if s.key != "" && s.key != pr.owner() {
		return nil, &transportRefusal{status: http.StatusForbidden, text: "session user mismatch"}
	}
	return s, nil
}

// add records an initialized session of the SDK, opened with key, until
// it closes.
func (ss *sessions) add(sdk *mcp.ServerSession, key string) {
	id := sdk.ID()
	if id == "" {
		return // not an HTTP session (stdio)
	}
	ss.mu.Lock()
	if ss.byID[id] != nil {
		ss.mu.Unlock()
		return
	}
	s := &session{id: id, ss: sdk, key: key, calls: map[string]bool{}}
	if ss.byID == nil {
		ss.byID = map[string]*session{}
		ss.perKey = map[string]int{}
	}
	ss.byID[id] = s
	ss.perKey[key]++
	ss.mu.Unlock()
	go func() {
		_ = sdk.Wait()
		ss.forget(s)
	}()
}

// forget drops s once it is closed (at once for a DELETE, which closes it
// before it answers, so that the next request of that id is refused here
// as by the SDK).
func (ss *sessions) forget(s *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.byID[s.id] != s {
		return
	}
	delete(ss.byID, s.id)
	if ss.perKey[s.key]--; ss.perKey[s.key] <= 0 {
		delete(ss.perKey, s.key)
	}
}

// of counts the open sessions of key.
func (ss *sessions) of(key string) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.perKey[key]
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

// trackSessions is the MCP middleware that records each session once it
// is initialized, and tells a POST's callClaim when the SDK's handlers of
// its requests start and end.
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
		res, err := next(ctx, method, req)
		if method == "initialize" && err == nil {
			if ss, ok := req.GetSession().(*mcp.ServerSession); ok && ss != nil {
				p.sessions.add(ss, gr.principal(p.name).owner())
			}
		}
		return res, err
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
