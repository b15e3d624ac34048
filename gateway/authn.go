package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/oauth"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
)

// Authentication: who a request to a project's endpoint speaks for.
//
// A project accepts toolgate's API keys, OAuth 2.1 access tokens from
// the operator's authorization server, or both (auth.accept). Either is
// sent as `Authorization: Bearer <credential>` (a key also as
// X-API-Key). A value shaped like a toolgate key (tg_...) is a key, a
// JWT is a token, and anything else is whichever the project takes.
//
// The gateway is an OAuth resource server (RFC 9728): each project
// publishes its protected resource metadata at
// /.well-known/oauth-protected-resource followed by its endpoint's path,
// and every 401 carries `WWW-Authenticate: Bearer resource_metadata=...`,
// also for a project of API keys only, so that a client that speaks
// OAuth finds out what the endpoint takes instead of guessing; a
// credential that was presented and refused adds error="invalid_token"
// and an error_description that says why. A token without the scopes
// the project requires is answered 403 insufficient_scope, with the
// scopes.
//
// A token's subject is the principal's, as a key's id is: sessions, the
// per-key rate limits and limits.maxSessionsPerKey count by it, and the
// audit log names it. The scopes and groups of a token may narrow the
// tools it sees (registry.visible). Tokens never go further than this
// file: upstreams get the gateway's own credentials.

// metadataPath is where protected resource metadata is published
// (RFC 9728), before the path of the resource it describes.
const metadataPath = "/.well-known/oauth-protected-resource"

// projectAuth is how one project authenticates its clients.
type projectAuth struct {
	keys  bool          // it accepts API keys
	oauth *projectOAuth // it accepts access tokens; nil when not
}

// projectOAuth is a project's compiled OAuth settings.
type projectOAuth struct {
	cfg      config.OAuth // as configured, to reuse the verifier across reloads
	verifier *oauth.Verifier
	// required are the scopes every token needs; supported are the
	// scopes published in the metadata.
	required, supported []string
	// scopes and groups grant tools; grants is whether either is set.
	scopes, groups map[string]*policy.Filter
	grants         bool
}

// compileAuth compiles each project's credentials, keeping the verifiers
// of the running configuration whose settings did not change (and their
// cached keys). A new verifier fetches its issuer's keys at once, so
// that an issuer out of reach shows in the log at start.
func (g *Gateway) compileAuth(ctx context.Context, cfg *config.Config, running *access) (map[string]*projectAuth, error) {
	out := map[string]*projectAuth{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Projects)) {
		pa := cfg.Projects[name].Auth
		a := &projectAuth{keys: pa.Accepts(config.CredentialAPIKey)}
		out[name] = a
		if pa.OAuth == nil || !pa.Accepts(config.CredentialOAuth) {
			continue
		}
		o := *pa.OAuth
		po := &projectOAuth{cfg: o, required: slices.Clone(o.RequiredScopes), scopes: map[string]*policy.Filter{}, groups: map[string]*policy.Filter{}}
		po.grants = len(o.Scopes) > 0 || len(o.Groups) > 0
		for _, grant := range []struct {
			key  string
			from map[string][]string
			to   map[string]*policy.Filter
		}{{"scopes", o.Scopes, po.scopes}, {"groups", o.Groups, po.groups}} {
			for n, globs := range grant.from {
				f, err := policy.NewFilter(policy.FilterSpec{AllowGlob: globs})
				if err != nil {
					return nil, fmt.Errorf("projects.%s auth.oauth.%s[%q]: %w", name, grant.key, n, err)
				}
				grant.to[n] = f
			}
		}
		po.supported = slices.Sorted(maps.Keys(o.Scopes))
		for _, s := range o.RequiredScopes {
			if !slices.Contains(po.supported, s) {
				po.supported = append(po.supported, s)
			}
		}
		slices.Sort(po.supported)
		if running != nil {
			if old := running.auth[name]; old != nil && old.oauth != nil && reflect.DeepEqual(old.oauth.cfg, o) {
				po.verifier = old.oauth.verifier
			}
		}
		if po.verifier == nil {
			project := name
			v, err := oauth.NewVerifier(o.Issuer, o.Audience, &oauth.Options{
				Algorithms:          o.Algorithms,
				Leeway:              o.Leeway.D(),
				KeysMaxAge:          o.KeysMaxAge.D(),
				KeysRefetchInterval: o.KeysRefetchInterval.D(),
				GroupsClaim:         o.GroupsClaim,
				Client:              g.oauthClient,
				Logger:              g.log.With("project", name),
				OnFetch: func(err error) {
					outcome := "ok"
					if err != nil {
						outcome = "error"
					}
					g.metrics.oauthKeyFetches.WithLabelValues(project, outcome).Inc()
				},
			})
			if err != nil {
				return nil, fmt.Errorf("projects.%s auth.oauth: %w", name, err)
			}
			wctx, cancel := context.WithTimeout(ctx, warmUpTimeout)
			if err := v.Refresh(wctx); err != nil {
				g.log.Warn("oauth: the issuer's keys cannot be fetched yet; tokens are answered 503 until they can", "project", name, "issuer", o.Issuer, "error", err)
			}
			cancel()
			po.verifier = v
		}
		a.oauth = po
	}
	return out, nil
}

// warmUpTimeout bounds the first fetch of an issuer's keys at a start or
// a reload.
const warmUpTimeout = 5 * time.Second

// oauthProblems say, for /readyz, what is wrong with the keys of the
// project's OAuth issuer; none when all is well.
func (g *Gateway) oauthProblems(project string) []string {
	a := g.accessPolicy()
	if a == nil {
		return nil
	}
	if pa := a.auth[project]; pa != nil && pa.oauth != nil {
		if p := pa.oauth.verifier.Problem(); p != "" {
			return []string{"auth.oauth: " + p}
		}
	}
	return nil
}

// credential is what a request presents in its headers.
type credential struct {
	kind   credentialKind
	value  string
	scheme string // of Authorization, when it is not Bearer
}

type credentialKind int

const (
	credNone        credentialKind = iota // nothing presented
	credBearer                            // Authorization: Bearer <value>
	credAPIKey                            // X-API-Key: <value>
	credNoScheme                          // Authorization: <value>, without a scheme
	credOtherScheme                       // Authorization: Basic ..., or another scheme
	credSeveral                           // more than one Authorization header
)

// readCredential reads the credential of a request's headers.
func readCredential(h http.Header) credential {
	switch vs := h.Values("Authorization"); len(vs) {
	case 0:
	case 1:
		return parseAuthorization(vs[0])
	default:
		return credential{kind: credSeveral}
	}
	if v := strings.TrimSpace(h.Get("X-API-Key")); v != "" {
		return credential{kind: credAPIKey, value: v}
	}
	return credential{kind: credNone}
}

// parseAuthorization reads one Authorization header value (RFC 9110
// 11.6.2: a scheme, then the credentials after white space).
func parseAuthorization(v string) credential {
	v = strings.TrimSpace(v)
	if v == "" {
		return credential{kind: credNone}
	}
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok {
		scheme, rest, ok = strings.Cut(v, "\t")
	}
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return credential{kind: credBearer, value: rest}
	case !ok:
		// One word: a credential sent bare, most often a key pasted
		// without "Bearer ".
		return credential{kind: credNoScheme, value: v}
	}
	return credential{kind: credOtherScheme, scheme: scheme}
}

// looksLikeKey reports whether s has the shape of a key toolgate
// issues.
func looksLikeKey(s string) bool { return strings.HasPrefix(s, apikey.Prefix) }

// looksLikeJWT reports whether s has the shape of a JWS in compact form:
// three base64url parts, the first a JSON object.
func looksLikeJWT(s string) bool {
	h, rest, ok := strings.Cut(s, ".")
	if !ok || strings.Count(rest, ".") != 1 || len(h) > 4096 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	return err == nil && len(b) > 1 && b[0] == '{'
}

// authRefusal is a request refused for its credential.
type authRefusal struct {
	status int    // 401, or 403 for missing scopes
	reason string // for metrics and the audit log
	msg    string // for the client
	// errCode is the RFC 6750 error ("invalid_token",
	// "insufficient_scope"); none when no credential was presented.
	errCode string
	keyID   string // of a key the client proved it holds
	subject string // of a token whose signature verified
}

// authenticate checks the credential of r for project p and fills in
// whose it is. A refusal has been answered when it returns false.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, a *access, p *project, pr *Principal) bool {
	pa := a.auth[p.name]
	if pa == nil {
		pa = &projectAuth{keys: true}
	}
	ref := g.checkCredential(r, pa, pr)
	if ref == nil {
		if pr.KeyID != "" {
			g.auth.RecordUse(pr.KeyID)
		}
		kind := "api_key"
		if pr.Subject != "" {
			kind = "oauth"
		}
		g.metrics.authenticated.WithLabelValues(p.name, kind).Inc()
		return true
	}
	if ref.status == http.StatusServiceUnavailable {
		g.metrics.authFailures.WithLabelValues(p.name, ref.reason).Inc()
		w.Header().Set("Retry-After", "5")
		rpcError(w, http.StatusServiceUnavailable, codeOverloaded, ref.msg, nil)
		return false
	}
	g.log.Info("authentication failed", "project", p.name, "ip", pr.ClientIP, "reason", ref.reason, "error", ref.msg)
	g.metrics.authFailures.WithLabelValues(p.name, ref.reason).Inc()
	_ = g.emit(&audit.Event{Type: audit.EventAuthFailure, Project: p.name, ClientIP: pr.ClientIP, KeyID: ref.keyID, Subject: ref.subject, Reason: ref.reason, Error: ref.msg})
	w.Header().Set("WWW-Authenticate", challenge(g.metadataURL(r, a, pa), ref, pa))
	prefix, code := "unauthorized: ", codeUnauthorized
	if ref.status == http.StatusForbidden {
		prefix, code = "forbidden: ", codeForbidden
	}
	rpcError(w, ref.status, code, prefix+ref.msg, nil)
	return false
}

// checkCredential decides on the credential of r, filling in pr when it
// is good.
func (g *Gateway) checkCredential(r *http.Request, pa *projectAuth, pr *Principal) *authRefusal {
	cred := readCredential(r.Header)
	bad := func(reason, format string, args ...any) *authRefusal {
		return &authRefusal{status: http.StatusUnauthorized, reason: reason, errCode: "invalid_token", msg: fmt.Sprintf(format, args...)}
	}
	switch cred.kind {
	case credNone:
		return &authRefusal{status: http.StatusUnauthorized, reason: "missing_key", msg: pa.missing()}
	case credSeveral:
		return bad("malformed_header", "several Authorization headers: send one, \"Authorization: Bearer <%s>\"", pa.noun())
	case credNoScheme:
		what := "a credential"
		switch {
		case looksLikeKey(cred.value):
			what = "an API key"
		case looksLikeJWT(cred.value):
			what = "an access token"
		}
		return bad("no_scheme", "the Authorization header holds %s without the Bearer scheme: send \"Authorization: Bearer <%s>\"", what, pa.noun())
	case credOtherScheme:
		scheme := "this scheme"
		if len(cred.scheme) <= 16 && isToken(cred.scheme) {
			scheme = fmt.Sprintf("%q", cred.scheme)
		}
		return bad("unsupported_scheme", "Authorization scheme %s is not supported: send \"Authorization: Bearer <%s>\"", scheme, pa.noun())
	case credBearer:
		if cred.value == "" {
			return bad("missing_key", "empty Bearer credential: send \"Authorization: Bearer <%s>\"", pa.noun())
		}
	}
	token := cred.kind == credBearer && pa.oauth != nil && !looksLikeKey(cred.value) && (looksLikeJWT(cred.value) || !pa.keys)
	switch {
	case token:
		return g.checkToken(r.Context(), cred.value, pa.oauth, pr)
	case !pa.keys:
		return bad("api_key_not_accepted", "this endpoint does not accept API keys: present an access token from %s", pa.oauth.cfg.Issuer)
	case pa.oauth == nil && looksLikeJWT(cred.value):
		return bad("token_not_accepted", "this endpoint accepts API keys only, not OAuth access tokens")
	}
	key, err := g.auth.Authenticate(cred.value, pr.Project)
	if err != nil {
		ref := bad(authReason(err), "%s", err.Error())
		var ae *apikey.AuthError
		if errors.As(err, &ae) {
			ref.keyID = ae.KeyID
		}
		if errors.Is(err, apikey.ErrMalformed) && pa.oauth != nil && !looksLikeKey(cred.value) {
			ref.msg = "neither an API key of this gateway nor a JWT access token"
		}
		return ref
	}
	pr.KeyID = key.ID
	return nil
}

// checkToken verifies an access token presented to a project.
func (g *Gateway) checkToken(ctx context.Context, raw string, po *projectOAuth, pr *Principal) *authRefusal {
	tok, err := po.verifier.Verify(ctx, raw)
	if err != nil {
		var te *oauth.Error
		if errors.As(err, &te) {
			return &authRefusal{status: http.StatusUnauthorized, reason: te.Reason, errCode: "invalid_token", msg: te.Error(), subject: te.Subject}
		}
		g.log.Warn("access token not checked", "project", pr.Project, "error", err)
		return &authRefusal{status: http.StatusServiceUnavailable, reason: "issuer_unavailable", msg: "access tokens cannot be checked now: the authorization server's keys cannot be fetched; retry later"}
	}
	var missing []string
	for _, s := range po.required {
		if !slices.Contains(tok.Scopes, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return &authRefusal{status: http.StatusForbidden, reason: "insufficient_scope", errCode: "insufficient_scope", subject: tok.Subject,
			msg: fmt.Sprintf("the access token lacks the %s %s; this endpoint requires %s", plural(len(missing), "scope", "scopes"), strings.Join(missing, ", "), strings.Join(po.required, " "))}
	}
	pr.Subject = tok.Subject
	pr.grant = po.grantFor(tok)
	return nil
}

// missing is the message for a request without a credential.
func (pa *projectAuth) missing() string {
	switch {
	case pa.oauth == nil:
		return apikey.ErrMissing.Error()
	case pa.keys:
		return fmt.Sprintf("no credential presented: send \"Authorization: Bearer <token>\" with an access token from %s, or an API key", pa.oauth.cfg.Issuer)
	}
	return fmt.Sprintf("no access token presented: send \"Authorization: Bearer <token>\" with an access token from %s", pa.oauth.cfg.Issuer)
}

// noun names what the project takes, for messages.
func (pa *projectAuth) noun() string {
	switch {
	case pa.oauth == nil:
		return "key"
	case pa.keys:
		return "key or token"
	}
	return "token"
}

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// challenge is the WWW-Authenticate value of a refusal (RFC 6750 3,
// RFC 9728 5.1).
func challenge(metadataURL string, ref *authRefusal, pa *projectAuth) string {
	var b strings.Builder
	b.WriteString("Bearer resource_metadata=")
	b.WriteString(quoteParam(metadataURL))
	if ref.errCode != "" {
		b.WriteString(", error=")
		b.WriteString(quoteParam(ref.errCode))
		b.WriteString(", error_description=")
		b.WriteString(quoteParam(describe(ref.msg)))
	}
	if pa.oauth != nil && len(pa.oauth.required) > 0 {
		b.WriteString(", scope=")
		b.WriteString(quoteParam(strings.Join(pa.oauth.required, " ")))
	}
	return b.String()
}

// maxDescription bounds an error_description.
const maxDescription = 300

// describe makes msg an error_description: RFC 6750 allows printable
// ASCII but for '"' and '\'.
func describe(msg string) string {
	b := []byte(clip.Text(msg, maxDescription))
	for i, c := range b {
		switch {
		case c == '"':
			b[i] = '\''
		case c == '\\' || c < 0x20 || c > 0x7e:
			b[i] = '?'
		}
	}
	return string(b)
}

// quoteParam writes s as a quoted-string (RFC 9110 5.6.4).
func quoteParam(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 && c != '\t' || c == 0x7f:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// --- protected resource metadata -------------------------------------------

// handleMetadata registers the protected resource metadata of the
// projects: at metadataPath for the default project (whose resource is
// /mcp), and at metadataPath + the path of each endpoint.
func (g *Gateway) handleMetadata(mux *http.ServeMux) {
	mux.HandleFunc(metadataPath, func(w http.ResponseWriter, r *http.Request) {
		g.serveMetadata(w, r, config.DefaultProject, "/mcp")
	})
	mux.HandleFunc(metadataPath+"/mcp", func(w http.ResponseWriter, r *http.Request) {
		g.serveMetadata(w, r, config.DefaultProject, "/mcp")
	})
	mux.HandleFunc(metadataPath+"/v1/mcp/{project}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("project")
		g.serveMetadata(w, r, name, "/v1/mcp/"+name)
	})
	g.notAuthorizationServer(mux)
}

// notAuthorizationServer answers, at the addresses where an OAuth client
// looks for an authorization server on the gateway's own origin (RFC
// 8414 metadata, OpenID discovery, and the default /authorize, /token and
// /register a client falls back to when the resource metadata names no
// authorization server), that toolgate issues no tokens. A client that
// starts a flow for a project of API keys then stops with that sentence,
// and not with a bare 404.
func (g *Gateway) notAuthorizationServer(mux *http.ServeMux) {
	h := func(w http.ResponseWriter, r *http.Request) {
		if !g.checkHostOrigin(w, r, g.accessPolicy().hosts, "") {
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]string{
			"error": "invalid_request",
			"error_description": "toolgate is not an OAuth authorization server and issues no tokens: " +
				"its MCP endpoints take an API key (sent as Authorization: Bearer tg_..., made with toolgate keys create), " +
				"or the access tokens of the authorization server their protected resource metadata names",
		})
	}
	for _, p := range []string{"/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/", "/.well-known/openid-configuration", "/authorize", "/token", "/register"} {
		mux.HandleFunc(p, h)
	}
}

// serveMetadata answers a request for the metadata of project name,
// reached at path, behind the checks of the project's endpoint that come
// before authentication: Host and Origin, then the client's address.
func (g *Gateway) serveMetadata(w http.ResponseWriter, r *http.Request, name, path string) {
	a := g.accessPolicy()
	p := g.project(name)
	if p == nil {
		g.serveProject(w, r, name) // the endpoint's own answer: 404
		return
	}
	if !g.checkHostOrigin(w, r, a.projectHosts[name], name) {
		return
	}
	ip, err := a.proxies.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
	if err != nil || !a.ips.Allows(ip) || !a.projectIPs[name].Allows(ip) {
		rpcError(w, http.StatusForbidden, codeForbidden, "forbidden", nil)
		return
	}
	pa := a.auth[name]
	if pa == nil {
		pa = &projectAuth{keys: true}
	}
	md := &oauthex.ProtectedResourceMetadata{
		Resource:               g.resource(r, a, pa, path),
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "toolgate (" + name + ")",
	}
	if pa.oauth != nil {
		md.AuthorizationServers = []string{pa.oauth.cfg.Issuer}
		md.ScopesSupported = pa.oauth.supported
	}
	auth.ProtectedResourceMetadataHandler(md).ServeHTTP(w, r)
}

// resource is the resource identifier of a project reached at path: the
// configured one, else the URL of the endpoint as r reached it.
func (g *Gateway) resource(r *http.Request, a *access, pa *projectAuth, path string) string {
	if pa.oauth != nil && pa.oauth.cfg.Resource != "" {
		return pa.oauth.cfg.Resource
	}
	scheme := "http"
	if r.TLS != nil || a.proxies.Trusts(r.RemoteAddr) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host + path
}

// metadataURL is where the metadata of the project r is for is
// published: metadataPath inserted before the resource's path (RFC 9728
// 3.1).
func (g *Gateway) metadataURL(r *http.Request, a *access, pa *projectAuth) string {
	res := g.resource(r, a, pa, r.URL.Path)
	u, err := url.Parse(res)
	if err != nil {
		return res
	}
	u.Path, u.RawPath = metadataPath+strings.TrimSuffix(u.Path, "/"), ""
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// --- tools granted by scopes and groups ----------------------------------

// toolGrant is what an access token may see of its project's tools: the
// union of what its scopes and groups grant (auth.oauth.scopes and
// groups). A nil *toolGrant grants everything: an API key's, a token's
// when the project maps no scope or group. It narrows the project's
// filters, never widens them.
type toolGrant struct {
	// key names the scopes and groups that grant, sorted: grants with
	// the same key see the same tools.
	key     string
	filters []*policy.Filter
}

// allows reports whether the grant includes the tool shown as name.
func (t *toolGrant) allows(name string) bool {
	if t == nil {
		return true
	}
	for _, f := range t.filters {
		if f.Allows(name) {
			return true
		}
	}
	return false
}

// grantFor is the grant of a verified token.
func (po *projectOAuth) grantFor(tok *oauth.Token) *toolGrant {
	if !po.grants {
		return nil
	}
	g := &toolGrant{}
	var names []string
	for _, s := range tok.Scopes {
		if f := po.scopes[s]; f != nil && !slices.Contains(names, "scope "+s) {
			names = append(names, "scope "+s)
			g.filters = append(g.filters, f)
		}
	}
	for _, gr := range tok.Groups {
		if f := po.groups[gr]; f != nil && !slices.Contains(names, "group "+gr) {
			names = append(names, "group "+gr)
			g.filters = append(g.filters, f)
		}
	}
	slices.Sort(names)
	g.key = strings.Join(names, "\x00")
	return g
}

// credentialRecheck is how often the credential of an open event stream
// is checked again.
var credentialRecheck = time.Second

// watchCredential returns a context of ctx that is cancelled once the
// credential r was authenticated with (as pr) is no longer accepted for
// project p: a key revoked (on any replica: the key store tells each
// within 2 s), expired or past its rotation's overlap, a token expired,
// or the project's auth settings changed by a reload so that they
// refuse it. An event stream served under it then ends; a request
// already answered is not affected, and a new one is refused as usual.
// While the credential cannot be checked (an issuer out of reach), the
// stream stays open.
func (g *Gateway) watchCredential(ctx context.Context, r *http.Request, p *project, pr Principal) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	held := r.Clone(ctx) // its own headers: the handler rewrites r's
	go func() {
		defer cancel()
		t := time.NewTicker(credentialRecheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			a := g.accessPolicy()
			if !a.authRequired {
				continue
			}
			pa := a.auth[p.name]
			if pa == nil {
				pa = &projectAuth{keys: true}
			}
			now := Principal{Project: pr.Project, ClientIP: pr.ClientIP}
			ref := g.checkCredential(held, pa, &now)
			switch {
			case ref == nil && now.owner() == pr.owner():
				continue
			case ref != nil && ref.status == http.StatusServiceUnavailable:
				continue // cannot tell now
			}
			reason := "another principal"
			if ref != nil {
				reason = ref.reason
			}
			g.log.Info("event stream closed: its credential is no longer accepted", "project", p.name, "owner", pr.owner(), "reason", reason)
			return
		}
	}()
	return ctx
}
