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

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

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
	// auth is each project's credentials (authn.go).
	auth map[string]*projectAuth
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

// tokenRequest is where a request's guardRequest travels in the MCP
// SDK's TokenInfo, which the SDK hands to the handlers of each message of
// the request (and whose UserID binds a session to the key that opened
// it).
const tokenRequest = "toolgate.request"

// requestOf returns what the access layer recorded about the HTTP request
// an MCP message came in; nil for a message of another transport.
func requestOf(extra *mcp.RequestExtra) *guardRequest {
	if extra == nil || extra.TokenInfo == nil {
		return nil
	}
	gr, _ := extra.TokenInfo.Extra[tokenRequest].(*guardRequest)
	return gr
}

// principal is the principal of the request in project: the one the
// access layer checked, or, for a message of another transport, the
// project's.
func (gr *guardRequest) principal(project string) Principal {
	if gr == nil {
		return Principal{Project: project}
	}
	return gr.pr
}

// opened returns the tools/call of tool name that the access layer opened
// on the tool path for this request, if any.
func (gr *guardRequest) opened(name string) *pathCall {
	if gr == nil || gr.opener == nil || gr.opener.call.Name != name {
		return nil
	}
	return gr.opener
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
		if a.authRequired && !g.authenticate(w, r, a, p, &pr) { // authn.go
			return
		}
		// A request of a version without sessions goes to the SDK's
		// stateless handler (or is answered here), whatever session it
		// names.
		stateless := statelessVersion(r.Header.Get(protocolVersionHeader))
		var sess *session // the session the request names, as checked, held
		if transportChecksOn.Load() {
			var refusal *transportRefusal
			if sess, refusal = p.checkTransport(r, pr, stateless); refusal != nil {
				refusal.write(w)
				return
			}
			if sess != nil {
				defer sess.release()
			}
		}
		// One allocation for what the access layer keeps of the request.
		st := &guardRequest{pr: pr}
		st.ti = auth.TokenInfo{UserID: pr.owner(), Extra: map[string]any{tokenRequest: st}}
		ti := &st.ti
		var body []byte      // of a POST
		var claim *callClaim // its calls' ids, while they are in flight
		listening := false   // the POST is a subscriptions/listen
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
			if msg.MetaVersion != "" && !stateless {
				// A request of protocol 2026-07-28 without its header:
				// refused as that protocol refuses it.
				stateless, sess = true, nil
			}
			if transportChecksOn.Load() {
				if stateless {
					if ref := checkStateless(r, body, &msg); ref != nil {
						ref.write(w)
						return
					}
				} else if ref := checkBatch(r, body, &msg); ref != nil {
					ref.write(w)
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
				if owner := pr.owner(); owner != "" && a.maxSessions > 0 && p.sessions.of(owner) >= a.maxSessions {
					rpcError(w, http.StatusTooManyRequests, codeRateLimited, fmt.Sprintf("%s already has %d sessions open (limits.maxSessionsPerKey)", pr.who(), a.maxSessions), nil)
					return
				}
				st.initialize = msg.InitParams
			case "notifications/cancelled":
				p.direct.cancel(r.Header.Get(sessionIDHeader), body)
			case "subscriptions/listen":
				listening = true
				if owner := pr.owner(); stateless && owner != "" && a.maxSessions > 0 {
					end, ok := p.sessions.openListen(owner, a.maxSessions)
					if !ok {
						rpcError(w, http.StatusTooManyRequests, codeRateLimited, fmt.Sprintf("%s already has %d subscriptions/listen streams open (limits.maxSessionsPerKey)", pr.who(), a.maxSessions), nil)
						return
					}
					defer end()
				}
			case "tools/call":
				// The steps of the tool path that decide whether the call
				// runs (admission, visibility, rate limits) run here,
				// before the SDK decodes the request, so that a refusal
				// is answered as HTTP; the call goes on, admitted and
				// charged, to whichever answers it: the access layer
				// itself, in the common case (fastpath.go), or the SDK's
				// handler (handleTool).
				call := &st.call
				*call = ToolCall{Principal: pr, Name: msg.Params.Name, Arguments: msg.Params.Arguments, Meta: msg.Params.Meta}
				if sess != nil {
					call.Session = sess.ss
				}
				pc := &st.path
				sid := ""
				if !stateless {
					sid = r.Header.Get(sessionIDHeader)
				}
				if ref := pc.open(r.Context(), p, call, sid); ref != nil {
					ref.writeHTTP(w)
					return
				}
				defer pc.release() // unless something took the call
				if pc.refused != nil {
					g.refuseCall(w, pc)
					return
				}
				st.opener = pc
				if c, ok := p.prepareDirectCall(r, sess, stateless, &msg, pc); ok {
					g.serveDirectCall(w, r, pc, c, claim)
					return
				}
			}
		}
		st.sess, st.stateless = sess, stateless
		ctx := context.WithValue(r.Context(), tokenInfoKey{}, ti)
		if r.Method == http.MethodGet || stateless && listening {
			// A session's event stream, or the stream of a
			// subscriptions/listen: a drain closes it.
			sid := ""
			if !stateless {
				sid = r.Header.Get(sessionIDHeader)
			}
			sctx, release, refusal := g.life.stream(ctx, sid)
			if refusal != nil {
				g.refused(p.name, refusal)
				refusal.writeHTTP(w)
				return
			}
			defer release()
			defer g.closeStream(sctx, w)
			ctx = sctx
			if a.authRequired {
				ctx = g.watchCredential(ctx, r, p, pr)
			}
		}
		r = r.WithContext(ctx)
		// The SDK's bearer middleware reads the token from Authorization;
		// the verifier above ignores it and returns the checked identity.
		r.Header.Set("Authorization", "Bearer toolgate")
		ew := &st.ew
		ew.ResponseWriter = w
		if claim != nil {
			st.claim = claim
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

// httpRequestOf returns what the access layer recorded about r, nil for a
// request it did not see.
func httpRequestOf(r *http.Request) *guardRequest {
	ti, _ := r.Context().Value(tokenInfoKey{}).(*auth.TokenInfo)
	if ti == nil {
		return nil
	}
	gr, _ := ti.Extra[tokenRequest].(*guardRequest)
	return gr
}

// guardRequest is what the access layer keeps of one request, in one
// allocation; the MCP middleware and handlers find it in the request's
// TokenInfo (requestOf).
type guardRequest struct {
	ti auth.TokenInfo
	ew rpcErrorWriter
	pr Principal
	// sess is the session the request names, as checked (front.go);
	// stateless says the request is of a version without sessions.
	sess      *session
	stateless bool
	// initialize holds the params of an initialize request.
	initialize json.RawMessage
	// claim holds the ids of the POST's calls while they are in flight
	// (front.go).
	claim *callClaim
	// opener is the tools/call the access layer opened on the tool path
	// for the POST; call and path are its storage.
	opener *pathCall
	call   ToolCall
	path   pathCall
}

// refuseCall answers at the HTTP layer a tools/call that the rate limits
// refused before the MCP SDK read it: 429 with Retry-After, or 503 when
// the limits cannot be checked (a shared store out of reach). The refusal
// is recorded as a ratelimit.hit of the request; one that cannot be
// recorded fails like a call that cannot be: the gateway answers nothing
// else.
func (g *Gateway) refuseCall(w http.ResponseWriter, pc *pathCall) {
	ce, project := pc.refused, pc.p.name
	aerr := g.record(pc, answerHTTP, nil, nil, ce)
	if ce.Code == callerr.Overloaded {
		r := &refusal{code: codeOverloaded, callCode: callerr.Overloaded, message: ce.Message, retryAfter: ce.RetryAfter}
		g.refused(project, r)
		r.writeHTTP(w)
		return
	}
	if aerr != nil {
		rpcError(w, http.StatusServiceUnavailable, jsonrpc.CodeInternalError, errNotRecorded(aerr).Message, nil)
		return
	}
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(ce.RetryAfter.Seconds())), 10))
	rpcError(w, http.StatusTooManyRequests, codeRateLimited, ce.Message, map[string]any{"retryAfterMs": retryMs(ce.RetryAfter)})
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
