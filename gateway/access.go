package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sjson "github.com/segmentio/encoding/json"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
)

// JSON-RPC error codes of refusals made at the HTTP layer and on the tool
// path (server-defined range of JSON-RPC).
const (
	codeUnauthorized = -32001
	codeForbidden    = -32003
	codeRateLimited  = -32029
	codeTooLarge     = -32013

	codeParseError     = -32700 // JSON-RPC: the body is not JSON
	codeInvalidRequest = -32600 // JSON-RPC: not a valid request object
)

// access is the compiled access policy of one running configuration.
type access struct {
	authRequired bool
	proxies      *policy.ProxyTrust
	ips          *policy.IPRules            // the gateway's
	projectIPs   map[string]*policy.IPRules // each project's
	hosts        *hostRules                 // the gateway's routes'
	projectHosts map[string]*hostRules      // each project's endpoint
	rates        map[string]config.RateLimit
	toolRates    map[string]map[string]config.ToolLimit
	maxBody      int64
	maxSessions  int
	maxInFlight  int
}

func compileAccess(cfg *config.Config) (*access, error) {
	a := &access{
		authRequired: cfg.AuthRequired(),
		projectIPs:   map[string]*policy.IPRules{},
		hosts:        compileHostRules(cfg.Listen, cfg.AllowedHosts, cfg.AllowedOrigins),
		projectHosts: map[string]*hostRules{},
		rates:        map[string]config.RateLimit{},
		toolRates:    map[string]map[string]config.ToolLimit{},
		maxBody:      cfg.Limits.MaxRequestBodyBytes,
		maxSessions:  cfg.Limits.MaxSessionsPerKey,
		maxInFlight:  cfg.Limits.MaxInFlightCalls,
	}
	var err error
	if a.proxies, err = policy.NewProxyTrust(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("trustedProxies: %w", err)
	}
	if a.ips, err = policy.NewIPRules(cfg.AllowedIPs, cfg.DeniedIPs); err != nil {
		return nil, fmt.Errorf("allowedIPs/deniedIPs: %w", err)
	}
	for name, p := range cfg.Projects {
		if a.projectIPs[name], err = policy.NewIPRules(p.AllowedIPs, p.DeniedIPs); err != nil {
			return nil, fmt.Errorf("projects.%s allowedIPs/deniedIPs: %w", name, err)
		}
		a.projectHosts[name] = compileHostRules(cfg.Listen,
			append(slices.Clone(cfg.AllowedHosts), p.AllowedHosts...),
			append(slices.Clone(cfg.AllowedOrigins), p.AllowedOrigins...))
		a.rates[name] = p.RateLimit
		a.toolRates[name] = p.ToolLimits
	}
	return a, nil
}

// configKeys lists the keys a configuration names by hash.
func configKeys(cfg *config.Config) []apikey.ConfigKey {
	var keys []apikey.ConfigKey
	for name, p := range cfg.Projects {
		for _, k := range p.APIKeys {
			keys = append(keys, apikey.ConfigKey{Name: k.Name, Project: name, SHA256: strings.ToLower(k.SHA256)})
		}
	}
	return keys
}

// buckets are the token buckets one tool call of principal takes.
func (a *access) buckets(pr Principal, tool string) []policy.Bucket {
	rl := a.rates[pr.Project]
	bs := make([]policy.Bucket, 0, 3)
	if rl.RequestsPerMinute > 0 {
		bs = append(bs, policy.Bucket{Key: "p\x00" + pr.Project, Rate: policy.Rate{PerMinute: rl.RequestsPerMinute, Burst: burst(rl.Burst, rl.RequestsPerMinute)}})
	}
	if rl.PerKeyRequestsPerMinute > 0 && pr.KeyID != "" {
		bs = append(bs, policy.Bucket{Key: "k\x00" + pr.Project + "\x00" + pr.KeyID, Rate: policy.Rate{PerMinute: rl.PerKeyRequestsPerMinute, Burst: burst(rl.PerKeyBurst, rl.PerKeyRequestsPerMinute)}})
	}
	if tl, ok := a.toolRates[pr.Project][tool]; ok && tl.RequestsPerMinute > 0 {
		bs = append(bs, policy.Bucket{Key: "t\x00" + pr.Project + "\x00" + tool, Rate: policy.Rate{PerMinute: tl.RequestsPerMinute, Burst: burst(tl.Burst, tl.RequestsPerMinute)}})
	}
	return bs
}

// burst defaults a bucket's size to one second's worth of its rate, at
// least 1.
func burst(b int, perMinute float64) int {
	if b > 0 {
		return b
	}
	return max(1, int(math.Ceil(perMinute/60)))
}

// retryMs is a retry hint in whole milliseconds, rounded up: a client that
// waits exactly that long finds the tokens there (truncating 997.6 ms to
// 997 had it refused once more, "retry after 1 ms").
func retryMs(d time.Duration) int64 { return max(1, int64((d+time.Millisecond-1)/time.Millisecond)) }

// takeTokens charges one tool call to the principal's buckets. When the
// limiter cannot decide (a shared store out of reach), the call is
// refused as overloaded: retryable, like a saturated gateway.
func (g *Gateway) takeTokens(ctx context.Context, pr Principal, tool string) error {
	a := g.accessPolicy()
	bs := a.buckets(pr, tool)
	if len(bs) == 0 {
		return nil
	}
	ok, wait, err := g.limiter.Take(ctx, bs...)
	if err != nil {
		g.log.Warn("rate limits cannot be checked: call refused", "project", pr.Project, "key", pr.KeyID, "tool", tool, "error", err)
		return limiterUnavailable(err)
	}
	if !ok {
		g.log.Info("rate limit hit", "project", pr.Project, "key", pr.KeyID, "tool", tool, "retryAfter", wait)
		g.metrics.rateLimited.WithLabelValues(pr.Project).Inc()
		return &callerr.Error{Code: callerr.RateLimited, Message: fmt.Sprintf("rate limit exceeded; retry after %d ms", retryMs(wait)), RetryAfter: wait}
	}
	return nil
}

// tokenExtraKey is where the principal travels in the MCP SDK's TokenInfo,
// which the SDK hands to every request of a session (and uses to bind the
// session to the key that opened it).
const (
	tokenPrincipal = "toolgate.principal"
	tokenPrepaid   = "toolgate.prepaid" // tool name whose tokens the HTTP layer took
)

// principalFrom returns the principal and the prepaid tool of an MCP
// request, as the access middleware recorded them.
func principalFrom(extra *mcp.RequestExtra, project string) (Principal, string) {
	if extra == nil || extra.TokenInfo == nil {
		return Principal{Project: project}, ""
	}
	pr, _ := extra.TokenInfo.Extra[tokenPrincipal].(Principal)
	if pr.Project == "" {
		pr.Project = project
	}
	prepaid, _ := extra.TokenInfo.Extra[tokenPrepaid].(string)
	return pr, prepaid
}

// guard wraps a project's MCP handler with the access checks, in this
// order: Host and Origin (hosts.go), client address, a declared body over
// the limit, API key, the transport's rules and the session
// (front.go), then, for a POST, the body, the ids of calls in flight, the
// session cap and, for tools/call, admission and rate limits. Each refusal
// is an HTTP error with a JSON-RPC body. A tools/call the access layer can
// answer as the SDK would is answered here (fastpath.go); everything else
// goes to the SDK's handler.
func (g *Gateway) guard(p *project) http.Handler {
	bearer := auth.RequireBearerToken(func(ctx context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		ti, _ := r.Context().Value(tokenInfoKey{}).(*auth.TokenInfo)
		if ti == nil {
			return nil, auth.ErrInvalidToken
		}
		return ti, nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})
	inner := bearer(p.http)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := g.accessPolicy()
		if !g.checkHostOrigin(w, r, a.projectHosts[p.name], p.name) {
			return
		}
		ip, err := a.proxies.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
		if err != nil {
			rpcError(w, http.StatusBadRequest, codeForbidden, "cannot tell the client address: "+err.Error(), nil)
			return
		}
		if !a.ips.Allows(ip) || !a.projectIPs[p.name].Allows(ip) {
			g.log.Warn("address refused", "project", p.name, "ip", ip)
			g.metrics.ipDenied.WithLabelValues(p.name).Inc()
			_ = g.emit(&audit.Event{Type: audit.EventIPDenied, Project: p.name, ClientIP: ip.String()})
			rpcError(w, http.StatusForbidden, codeForbidden, "forbidden: requests from "+ip.String()+" are not allowed", nil)
			return
		}
		if r.ContentLength > a.maxBody {
			// Refused before a byte of the body is read; net/http then
			// closes the connection instead of reading the rest.
			tooLarge(w, a.maxBody)
			return
		}
		pr := Principal{Project: p.name, ClientIP: ip.String()}
		if a.authRequired {
			key, err := g.auth.Authenticate(presentedKey(r), p.name)
			if err != nil {
				g.log.Info("authentication failed", "project", p.name, "ip", ip, "reason", err.Error())
				g.metrics.authFailures.WithLabelValues(p.name, authReason(err)).Inc()
				ev := &audit.Event{Type: audit.EventAuthFailure, Project: p.name, ClientIP: ip.String(), Reason: authReason(err)}
				var ae *apikey.AuthError
				if errors.As(err, &ae) {
					ev.KeyID = ae.KeyID
				}
				_ = g.emit(ev)
				w.Header().Set("WWW-Authenticate", `Bearer realm="toolgate"`)
				rpcError(w, http.StatusUnauthorized, codeUnauthorized, "unauthorized: "+err.Error(), nil)
				return
			}
			pr.KeyID = key.ID
			g.auth.RecordUse(key.ID)
		}
		var sess *session // the session the request names, as checked
		if transportChecksOn.Load() {
			var refusal *transportRefusal
			if sess, refusal = p.checkTransport(r, pr); refusal != nil {
				refusal.write(w)
				return
			}
		}
		// One allocation for the request's identity and its error writer.
		st := &guardRequest{ti: auth.TokenInfo{UserID: pr.KeyID, Extra: map[string]any{tokenPrincipal: pr}}}
		ti := &st.ti
		var body []byte      // of a POST
		var claim *callClaim // its calls' ids, while they are in flight
		defer func() {
			if claim != nil {
				claim.release() // refused here, or answered by the access layer
			}
		}()

		if r.Method == http.MethodPost {
			var err error
			body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
			if err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					tooLarge(w, a.maxBody)
					return
				}
				rpcError(w, http.StatusBadRequest, codeTooLarge, "reading the request body: "+err.Error(), nil)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			msg, err := peekMessage(body)
			if err != nil {
				var pe *peekError
				if errors.As(err, &pe) {
					rpcError(w, http.StatusBadRequest, pe.code, pe.msg, nil)
					return
				}
			}
			if sess != nil && claimable(r, &msg) {
				c, dup, ok := sess.claim(msg.callIDs())
				if !ok {
					writeDuplicate(w, dup)
					return
				}
				claim = c
			}
			switch msg.Method {
			case "initialize":
				if g.life.isDraining() {
					r := shuttingDown()
					g.refused(p.name, r)
					r.writeHTTP(w)
					return
				}
				if pr.KeyID != "" && a.maxSessions > 0 && p.sessions.of(pr.KeyID) >= a.maxSessions {
					rpcError(w, http.StatusTooManyRequests, codeRateLimited, fmt.Sprintf("key %s already has %d sessions open (limits.maxSessionsPerKey)", pr.KeyID, a.maxSessions), nil)
					return
				}
			case "notifications/cancelled":
				p.direct.cancel(r.Header.Get(sessionIDHeader), body)
			case "tools/call":
				// An early answer for a saturated or stopping gateway, before
				// the SDK decodes the request; admitCalls decides for calls
				// that pass.
				if r := g.life.check(a.maxInFlight); r != nil {
					g.refused(p.name, r)
					r.writeHTTP(w)
					return
				}
				if p.reg.lookupCallable(msg.Params.Name) != nil || p.reg.isCodeModeTool(msg.Params.Name) {
					if err := g.takeTokens(r.Context(), pr, msg.Params.Name); err != nil {
						var ce *callerr.Error
						if errors.As(err, &ce) && ce.Code == callerr.Overloaded {
							refuseUnavailable(g, w, p.name, pr, msg.Params.Name, ce)
							return
						}
						if errors.As(err, &ce) {
							if aerr := g.emit(&audit.Event{Type: audit.EventRateLimitHit, Project: p.name, KeyID: pr.KeyID, ClientIP: pr.ClientIP,
								Tool: msg.Params.Name, Decision: "deny", Outcome: callerr.RateLimited, Error: ce.Message}); aerr != nil {
								// A refusal that cannot be recorded fails like a call
								// that cannot be: the gateway answers nothing else.
								rpcError(w, http.StatusServiceUnavailable, jsonrpc.CodeInternalError, errNotRecorded(aerr).Message, nil)
								return
							}
							w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(ce.RetryAfter.Seconds())), 10))
							rpcError(w, http.StatusTooManyRequests, codeRateLimited, ce.Message, map[string]any{"retryAfterMs": retryMs(ce.RetryAfter)})
							return
						}
					}
					ti.Extra[tokenPrepaid] = msg.Params.Name
					// The common case, answered here (fastpath.go).
					if c, ok := p.prepareDirectCall(r, sess, &msg); ok {
						g.serveDirectCall(w, r, p, pr, c, claim)
						return
					}
				}
			}
		}
		ctx := context.WithValue(r.Context(), tokenInfoKey{}, ti)
		if r.Method == http.MethodGet {
			// A session's event stream: a drain closes it.
			sctx, release, refusal := g.life.stream(ctx, r.Header.Get(sessionIDHeader))
			if refusal != nil {
				g.refused(p.name, refusal)
				refusal.writeHTTP(w)
				return
			}
			defer release()
			defer g.closeStream(sctx, w)
			ctx = sctx
		}
		r = r.WithContext(ctx)
		// The SDK's bearer middleware reads the token from Authorization;
		// the verifier above ignores it and returns the checked identity.
		r.Header.Set("Authorization", "Bearer toolgate")
		ew := &st.ew
		ew.ResponseWriter = w
		if claim != nil {
			ti.Extra[tokenClaim] = claim
			ew.claim = claim
		}
		if r.Method == http.MethodGet {
			ew.events = sess
		}
		inner.ServeHTTP(ew, r)
		ew.closed()
		ew.finish(r.Method == http.MethodPost, body)
		if claim != nil {
			claim.postEnded()
			claim = nil
		}
		if r.Method == http.MethodDelete && sess != nil && ew.code == http.StatusNoContent {
			p.sessions.forget(sess)
		}
	})
}

// tooLarge refuses a request body over limits.maxRequestBodyBytes.
func tooLarge(w http.ResponseWriter, limit int64) {
	rpcError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body larger than %d bytes (limits.maxRequestBodyBytes)", limit), nil)
}

// rpcErrorWriter turns the plain-text refusals of the SDK's HTTP handler
// (a malformed message, an unknown session, a missing Accept header) into
// JSON-RPC error bodies, so that a client reads every refusal the same way.
// Everything else passes through untouched, streams included.
//
// With a claim (the ids of the POST's calls, front.go), it also releases
// each call as its answer goes out, and all of them with a refusal.
type rpcErrorWriter struct {
	http.ResponseWriter
	status int          // a refusal being held back; 0 while passing through
	text   bytes.Buffer // its text
	wrote  bool
	code   int // the status the handler wrote
	claim  *callClaim
	stream bool // the answer is an event stream

	events *session // of a GET: the session whose event stream this is
	opened bool     // the SDK opened it (counted in events.streams)
}

func (w *rpcErrorWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	w.code = code
	if w.claim != nil {
		if code >= 400 {
			w.claim.release() // the POST is refused whole
		}
		w.stream = strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")
	}
	if code >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rpcErrorWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.status != 0 {
		if w.text.Len() < 4096 {
			w.text.Write(b[:min(len(b), 4096-w.text.Len())])
		}
		return len(b), nil
	}
	if w.stream {
		w.claim.sawAnswers(b)
	}
	if w.events != nil && !w.opened && w.code == http.StatusOK {
		// The SDK writes the stream's first bytes once it delivers to it.
		w.opened = true
		w.events.streams.Add(1)
	}
	return w.ResponseWriter.Write(b)
}

// closed notes the end of the request.
func (w *rpcErrorWriter) closed() {
	if w.opened {
		w.events.streams.Add(-1)
	}
}

func (w *rpcErrorWriter) Flush() {
	if w.status != 0 {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *rpcErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish sends the held-back refusal as a JSON-RPC error: a parse error
// when the body of a POST was not JSON, else an invalid request.
func (w *rpcErrorWriter) finish(post bool, body []byte) {
	if w.status == 0 {
		return
	}
	code := codeInvalidRequest
	if post && !json.Valid(body) {
		code = codeParseError
	}
	rpcError(w.ResponseWriter, w.status, code, strings.TrimSpace(w.text.String()), nil)
}

type tokenInfoKey struct{}

// guardRequest is what guard keeps per request.
type guardRequest struct {
	ti auth.TokenInfo
	ew rpcErrorWriter
}

// presentedKey is the key in `Authorization: Bearer` or `X-API-Key`.
func presentedKey(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(rest)
		}
		return ""
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key"))
}

// rpcMessage is the part of a JSON-RPC request the access layer reads.
// For a tools/call it holds the parameters, and the version tag and id the
// access layer needs to answer the call itself (fastpath.go).
type rpcMessage struct {
	Method  string
	Version string
	ID      json.RawMessage
	Params  mcp.CallToolParamsRaw
	// Calls are the ids (as sent) of the requests in the body that expect
	// an answer (with Batch, those of a batch's requests); callIDs reads
	// them.
	Calls []json.RawMessage
	Batch bool
}

// peekError is a body the access layer refuses before the MCP handler:
// the handler must never act on a message the access layer read
// differently.
type peekError struct {
	code int
	msg  string
}

func (e *peekError) Error() string { return e.msg }

// rpcWire is the top level of a JSON-RPC message as the MCP SDK decodes it.
type rpcWire struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// sdkParse decodes as the MCP SDK does (its internal/json): with
// github.com/segmentio/encoding/json and exact key matching, so that a key
// in another case ("Method") or a repeated key means the same to both. The
// raw fields point into the body instead of copying it.
func sdkParse(b []byte, v any) (rest []byte, err error) {
	return sjson.Parse(b, v, sjson.DontMatchCaseInsensitiveStructFields|sjson.ZeroCopy)
}

// peekMessage returns the method, tool name and call ids of the message in
// a POST body, as the MCP handler will read them. A body that is not one JSON
// value (the handler's decoder would act on the first value and ignore the
// rest) is a parse error, and a batch that holds an initialize request an
// invalid request (MCP does not allow it, and the session cap is checked
// on a single initialize); both are *peekError. Anything else (an empty
// body, a message of the wrong shape, another batch) is left to the MCP
// handler, with an empty method when the body is no single request.
func peekMessage(body []byte) (rpcMessage, error) {
	var m rpcMessage
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return m, nil
	}
	switch trimmed[0] {
	case '{':
		var w rpcWire
		if err := parseOne(trimmed, &w); err != nil {
			return m, err
		}
		m.Method = wireMethod(w.Method)
		if len(w.ID) > 0 && m.Method != "" {
			m.Calls = []json.RawMessage{w.ID}
		}
		if m.Method == "tools/call" && len(w.Params) > 0 && w.Params[0] == '{' {
			if _, err := sdkParse(w.Params, &m.Params); err != nil {
				// Not an object of that shape: the handler refuses it.
				m.Params = mcp.CallToolParamsRaw{}
			} else {
				m.Version, m.ID = w.Version, w.ID
			}
		}
		return m, nil
	case '[':
		var batch []rpcWire
		if err := parseOne(trimmed, &batch); err != nil {
			return m, err
		}
		m.Batch = true
		for _, w := range batch {
			method := wireMethod(w.Method)
			if method == "initialize" {
				return m, &peekError{code: codeInvalidRequest, msg: "initialize must not be part of a JSON-RPC batch"}
			}
			if len(w.ID) > 0 && method != "" {
				m.Calls = append(m.Calls, w.ID)
			}
		}
		return m, nil
	default:
		if !json.Valid(trimmed) {
			return m, &peekError{code: codeParseError, msg: "the request body is not JSON"}
		}
		return m, nil
	}
}

// callIDs returns the ids of m's calls as the SDK reads them (null and
// other values are no call's).
func (m *rpcMessage) callIDs() []jsonrpc.ID {
	ids := make([]jsonrpc.ID, 0, len(m.Calls))
	for _, raw := range m.Calls {
		if id, ok := requestID(raw); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// wireMethod is the method a raw "method" value names; "" when it is not a
// string (the handler refuses such a message).
func wireMethod(raw json.RawMessage) string {
	var method string
	if len(raw) > 0 && raw[0] == '"' {
		_, _ = sdkParse(raw, &method)
	}
	return method
}

// parseOne decodes the one JSON value b must hold into v.
func parseOne(b []byte, v any) error {
	rest, err := sdkParse(b, v)
	if err != nil {
		if _, ok := err.(*sjson.UnmarshalTypeError); ok {
			return nil // a value of the wrong shape: the handler refuses it
		}
		return &peekError{code: codeParseError, msg: "the request body is not JSON: " + err.Error()}
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return &peekError{code: codeParseError, msg: "the request body holds more than one JSON value"}
	}
	return nil
}

func rpcError(w http.ResponseWriter, status, code int, msg string, data any) {
	e := map[string]any{"code": code, "message": msg}
	if data != nil {
		e["data"] = data
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": e})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// authReason is a short label for why a key was refused.
func authReason(err error) string {
	var ae *apikey.AuthError
	if errors.As(err, &ae) {
		return ae.Reason()
	}
	return "invalid"
}
