package gateway

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/mcpclient"
	"github.com/toolgate/toolgate/internal/oauthtest"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

const (
	teamAudience  = "https://gateway.example/v1/mcp/team"
	otherAudience = "https://gateway.example/v1/mcp/other"
)

// oauthClients are the provider's clients in these tests: their
// subjects are their ids.
var oauthClients = []oauthtest.Client{
	{ID: "alice", Secret: "a", Audience: []string{teamAudience}},
	{ID: "bob", Secret: "b", Audience: []string{teamAudience}, Groups: []string{"admins"}},
	{ID: "carol", Secret: "c", Audience: []string{teamAudience}, Groups: []string{"ops"}},
	{ID: "old", Secret: "o", Audience: []string{teamAudience}, Lifetime: -time.Hour},
	{ID: "other-user", Secret: "u", Audience: []string{otherAudience}},
	{ID: "elsewhere", Secret: "e", Audience: []string{"https://another.example/api"}},
}

// oauthFixture is a gateway in process with two projects: "team" takes
// access tokens of the provider and API keys, "other" takes tokens only
// (with another audience), and "keys" API keys only. Each fronts an
// upstream (server "up") with echo, fail and protocol_error, which
// records every request it receives, headers and body; team's sends it
// the upstream's own credential (upstreamCredential).
type oauthFixture struct {
	g     *Gateway
	base  string // http://127.0.0.1:PORT
	p     *oauthtest.Provider
	key   string // an API key of team
	audit string
	doc   string // the configuration

	upMu       sync.Mutex
	upRequests []string // as httputil.DumpRequest writes them
}

// upstreamCredential is what team's configuration sends its upstream in
// Authorization.
const upstreamCredential = "Bearer upstream-own-credential"

// fixtureOptions change the fixture's configuration.
type fixtureOptions struct {
	codeMode bool   // code mode on, with the direct tools
	perKey   string // the team's rateLimit (default generous)
}

func newOAuthFixture(t *testing.T, o fixtureOptions) *oauthFixture {
	t.Helper()
	f := &oauthFixture{p: oauthtest.Start(t, &oauthtest.Options{Clients: oauthClients})}
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	addAnswerTools(up)
	upHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil)
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dump, err := httputil.DumpRequest(r, true)
		if err != nil {
			t.Error(err)
		}
		f.upMu.Lock()
		f.upRequests = append(f.upRequests, string(dump))
		f.upMu.Unlock()
		upHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(upSrv.Close)

	key, _, _, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f.key = key
	dir := t.TempDir()
	codeMode := ""
	if o.perKey == "" {
		o.perKey = `{"perKeyRequestsPerMinute": 6000, "perKeyBurst": 100}`
	}
	if o.codeMode {
		codeMode = `"codeMode": {"enabled": true, "directTools": true},`
	}
	upURL := quoteJSON(upSrv.URL)
	doc := `{"dataDir": ` + quoteJSON(dir) + `, ` + codeMode + `
		"projects": {
			"team": {
				"mcpServers": {"up": {"url": ` + upURL + `, "headers": {"Authorization": "` + upstreamCredential + `"}, "denyToolsGlob": ["protocol_error"]}},
				"apiKeys": [{"name": "k", "sha256": "` + apikey.Hash(key) + `"}],
				"rateLimit": ` + o.perKey + `,
				"auth": {"oauth": {"issuer": ` + quoteJSON(f.p.URL) + `, "audience": "` + teamAudience + `",
					"requiredScopes": ["mcp"],
					"scopes": {"tools:read": ["up__echo"]},
					"groupsClaim": "groups", "groups": {"admins": ["*"]}}}
			},
			"other": {
				"mcpServers": {"up": {"url": ` + upURL + `}},
				"auth": {"accept": ["oauth"], "oauth": {"issuer": ` + quoteJSON(f.p.URL) + `, "audience": "` + otherAudience + `"}}
			},
			"keys": {"mcpServers": {"up": {"url": ` + upURL + `}}}
		}}`
	f.doc = doc
	cfg, err := config.Parse([]byte(doc), config.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.audit = filepath.Join(dir, "audit.jsonl")
	auditLog, err := audit.Open(f.audit, &audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() })
	opts := &Options{Auth: auth, Audit: auditLog, OAuthClient: f.p.HTTPClient()}
	if o.codeMode {
		engine, err := sandbox.NewEngine(context.Background(), &sandbox.EngineOptions{CacheDir: filepath.Join(os.TempDir(), "toolgate-gateway-test-cache"), PoolSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { engine.Close() })
		opts.Sandbox = engine
	}
	f.g = startGateway(t, cfg, opts)
	srv := httptest.NewServer(f.g.Handler())
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f
}

// call posts one message to a project's endpoint with the Authorization
// header authz (none when empty) and returns the response.
func (f *oauthFixture) call(t *testing.T, project, authz string) *http.Response {
	t.Helper()
	return f.callPath(t, "/v1/mcp/"+project, authz)
}

// callPath is call of the endpoint at path.
func (f *oauthFixture) callPath(t *testing.T, path, authz string) *http.Response {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, err := http.NewRequest(http.MethodPost, f.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// connect opens an MCP session with a project's endpoint, sending
// "Authorization: Bearer cred".
func (f *oauthFixture) connect(t *testing.T, project, cred string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return e2etest.ConnectHTTP(t, ctx, f.base+"/v1/mcp/"+project, map[string]string{"Authorization": "Bearer " + cred}, nil)
}

// jwsParts splits a compact JWS.
func jwsParts(t *testing.T, tok string) (header, payload, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	return parts[0], parts[1], parts[2]
}

// TestOAuthRefusals sends the credentials a client may present, good and
// bad, and checks each answer: its status, its challenge (RFC 6750, RFC
// 9728) and the reason the client reads.
func TestOAuthRefusals(t *testing.T) {
	f := newOAuthFixture(t, fixtureOptions{})
	p := f.p
	good := p.Token(t, "alice", "mcp")
	h, payload, sig := jwsParts(t, good)
	key, kid := p.SigningKey()
	rawPayload, _ := base64.RawURLEncoding.DecodeString(payload)

	// The same signing key under another issuer.
	impostor := oauthtest.Start(t, &oauthtest.Options{Clients: oauthClients, Key: key})
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + payload + "."
	flipped := []byte(sig)
	flipped[5] = map[bool]byte{true: 'B', false: 'A'}[flipped[5] == 'A']
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	hsKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	unknownKey, _, _, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	teamMeta := f.base + metadataPath + "/v1/mcp/team"
	for _, tc := range []struct {
		name, project, authz string
		status               int
		errCode              string // of the challenge; "" for none
		says                 string // in the error description and the body
	}{
		{"no credential", "team", "", 401, "", "no credential presented"},
		{"key without the scheme", "team", f.key, 401, "invalid_token", "an API key without the Bearer scheme"},
		{"token without the scheme", "team", good, 401, "invalid_token", "an access token without the Bearer scheme"},
		{"basic scheme", "team", "Basic " + f.key, 401, "invalid_token", `Authorization scheme "Basic" is not supported`},
		{"unknown key", "team", "Bearer " + unknownKey, 401, "invalid_token", "unknown API key"},
		{"key", "team", "Bearer " + f.key, 200, "", ""},
		{"token", "team", "Bearer " + good, 200, "", ""},
		{"expired", "team", "Bearer " + p.Token(t, "old", "mcp"), 401, "invalid_token", "token expired at"},
		{"another audience", "team", "Bearer " + p.Token(t, "elsewhere", "mcp"), 401, "invalid_token", "token issued for"},
		{"a token of another project", "team", "Bearer " + p.Token(t, "other-user", "mcp"), 401, "invalid_token", "not for this resource"},
		{"another issuer", "team", "Bearer " + impostor.Token(t, "alice", "mcp"), 401, "invalid_token", "token issued by"},
		{"alg none", "team", "Bearer " + none, 401, "invalid_token", `algorithm "none"`},
		{"HS256 keyed with the public key", "team", "Bearer " + oauthtest.Sign(t, jose.HS256, hsKey, kid, rawPayload), 401, "invalid_token", `algorithm "HS256"`},
		{"signature changed", "team", "Bearer " + h + "." + payload + "." + string(flipped), 401, "invalid_token", "signature does not verify"},
		{"unknown key id", "team", "Bearer " + oauthtest.Sign(t, jose.RS256, oauthtest.NewKey(t), "rogue", rawPayload), 401, "invalid_token", `key "rogue", which the issuer does not publish`},
		{"scope missing", "team", "Bearer " + p.Token(t, "alice"), 403, "insufficient_scope", "lacks the scope mcp"},
		{"API key where only tokens go", "other", "Bearer " + f.key, 401, "invalid_token", "does not accept API keys"},
		{"token where only keys go", "keys", "Bearer " + good, 401, "invalid_token", "accepts API keys only"},
		{"no key for keys only", "keys", "", 401, "", "no API key presented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.call(t, tc.project, tc.authz)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == 200 {
				return
			}
			hdr := resp.Header.Values("WWW-Authenticate")
			cs, err := oauthex.ParseWWWAuthenticate(hdr)
			if err != nil || len(cs) != 1 || cs[0].Scheme != "bearer" {
				t.Fatalf("WWW-Authenticate %q: %v %v", hdr, cs, err)
			}
			ch := cs[0].Params
			wantMeta := teamMeta
			if tc.project != "team" {
				wantMeta = f.base + metadataPath + "/v1/mcp/" + tc.project
			}
			if ch["resource_metadata"] != wantMeta {
				t.Errorf("resource_metadata = %q, want %q", ch["resource_metadata"], wantMeta)
			}
			if ch["error"] != tc.errCode {
				t.Errorf("error = %q, want %q (%q)", ch["error"], tc.errCode, hdr)
			}
			if tc.errCode != "" && !strings.Contains(ch["error_description"], strings.ReplaceAll(tc.says, `"`, "'")) {
				t.Errorf("error_description = %q, want it to say %q", ch["error_description"], tc.says)
			}
			if tc.project == "team" && ch["scope"] != "mcp" {
				t.Errorf("scope = %q, want the required scope mcp", ch["scope"])
			}
			var rpc struct {
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &rpc); err != nil || !strings.Contains(rpc.Error.Message, tc.says) {
				t.Errorf("body %s: want a JSON-RPC error that says %q", body, tc.says)
			}
			for _, secret := range []string{f.key, good} {
				if strings.Contains(string(body), secret) || strings.Contains(strings.Join(hdr, " "), secret) {
					t.Errorf("the answer echoes the credential")
				}
			}
		})
	}

	// The refusals are in the audit log with their reasons; those of a
	// token the issuer signed name its subject.
	evs := readAuditEvents(t, f.audit)
	var reasons []string
	subjects := map[string]string{}
	for _, ev := range evs {
		if ev.Type == audit.EventAuthFailure {
			reasons = append(reasons, ev.Reason)
			if ev.Subject != "" {
				subjects[ev.Reason] = ev.Subject
			}
		}
	}
	for _, r := range []string{"missing_key", "no_scheme", "unsupported_scheme", "unknown_key", "expired_token", "wrong_audience", "wrong_issuer", "algorithm_refused", "bad_signature", "insufficient_scope", "api_key_not_accepted", "token_not_accepted"} {
		if !slices.Contains(reasons, r) {
			t.Errorf("no auth.failure with reason %s in %v", r, reasons)
		}
	}
	if diff := cmp.Diff(map[string]string{"expired_token": "old", "wrong_audience": "other-user", "insufficient_scope": "alice"}, subjects); diff != "" {
		// wrong_audience appears twice (elsewhere, other-user): the last wins.
		if subjects["expired_token"] != "old" || subjects["insufficient_scope"] != "alice" || subjects["wrong_audience"] == "" {
			t.Errorf("subjects of refused tokens (-want +got):\n%s", diff)
		}
	}
}

func readAuditEvents(t *testing.T, path string) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestProtectedResourceMetadata reads each project's metadata where the
// challenges point.
func TestProtectedResourceMetadata(t *testing.T) {
	f := newOAuthFixture(t, fixtureOptions{})
	get := func(path string) (int, *oauthex.ProtectedResourceMetadata, http.Header) {
		resp, err := http.Get(f.base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var md oauthex.ProtectedResourceMetadata
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, &md, resp.Header
	}
	for _, tc := range []struct {
		path string
		want *oauthex.ProtectedResourceMetadata
	}{
		{metadataPath + "/v1/mcp/team", &oauthex.ProtectedResourceMetadata{
			Resource: f.base + "/v1/mcp/team", AuthorizationServers: []string{f.p.URL},
			ScopesSupported: []string{"mcp", "tools:read"}, BearerMethodsSupported: []string{"header"}, ResourceName: "toolgate (team)",
		}},
		{metadataPath + "/v1/mcp/other", &oauthex.ProtectedResourceMetadata{
			Resource: f.base + "/v1/mcp/other", AuthorizationServers: []string{f.p.URL},
			BearerMethodsSupported: []string{"header"}, ResourceName: "toolgate (other)",
		}},
		// API keys only: no authorization server, so that a client
		// has no flow to start.
		{metadataPath + "/v1/mcp/keys", &oauthex.ProtectedResourceMetadata{
			Resource: f.base + "/v1/mcp/keys", BearerMethodsSupported: []string{"header"}, ResourceName: "toolgate (keys)",
		}},
	} {
		code, md, h := get(tc.path)
		if code != 200 {
			t.Errorf("GET %s: %d", tc.path, code)
			continue
		}
		if diff := cmp.Diff(tc.want, md); diff != "" {
			t.Errorf("GET %s (-want +got):\n%s", tc.path, diff)
		}
		if h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s: no CORS header for browser clients", tc.path)
		}
	}
	// A client that looks for an authorization server on the gateway
	// learns that there is none, and why.
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/oauth-authorization-server/mcp", "/.well-known/openid-configuration", "/register", "/authorize", "/token"} {
		resp, err := http.Post(f.base+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(body["error_description"], "not an OAuth authorization server") {
			t.Errorf("POST %s: %d %v, want 404 saying the gateway issues no tokens", path, resp.StatusCode, body)
		}
	}
	if code, _, _ := get(metadataPath + "/v1/mcp/nope"); code != 404 {
		t.Errorf("metadata of an unknown project: %d, want 404", code)
	}
	// Without a default project, the metadata at the root is not found.
	if code, _, _ := get(metadataPath); code != 404 {
		t.Errorf("metadata of the default project, which does not exist: %d, want 404", code)
	}
}

// TestTokenGrants: a token's scopes and groups decide which tools it
// sees; a tool it may not see is refused as one that does not exist; deny
// globs still win; scripts see what their caller sees.
func TestTokenGrants(t *testing.T) {
	f := newOAuthFixture(t, fixtureOptions{codeMode: true})
	ctx := context.Background()
	names := func(cs *mcp.ClientSession) []string {
		t.Helper()
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tl := range res.Tools {
			out = append(out, tl.Name)
		}
		slices.Sort(out)
		return out
	}
	reader := f.connect(t, "team", f.p.Token(t, "alice", "mcp", "tools:read"))
	admin := f.connect(t, "team", f.p.Token(t, "bob", "mcp"))
	nobody := f.connect(t, "team", f.p.Token(t, "carol", "mcp"))
	keyed := f.connect(t, "team", f.key)

	all := []string{ExecuteCodeTool, SearchToolsTool, "up__echo", "up__fail"} // protocol_error is denied
	for _, c := range []struct {
		who  string
		cs   *mcp.ClientSession
		want []string
	}{
		{"scope tools:read", reader, []string{ExecuteCodeTool, SearchToolsTool, "up__echo"}},
		{"group admins", admin, all},
		{"no grant", nobody, []string{ExecuteCodeTool, SearchToolsTool}},
		{"API key", keyed, all},
	} {
		if diff := cmp.Diff(c.want, names(c.cs)); diff != "" {
			t.Errorf("%s: tools (-want +got):\n%s", c.who, diff)
		}
	}

	// A tool the grant leaves out reads as one that does not exist, to
	// the client and to its scripts, whether a scope or a group decides.
	script := `const seen = Object.keys(tools.up ?? {}).sort();
		const seenAs = async (name, call) => {
			let how = typeof tools.up?.[name] + " ";
			try { await call(); } catch (e) { how += e.code + ": " + e.message.replace("up__" + name, "X"); }
			return how;
		};
		const hidden = [await seenAs("fail", () => callTool("up__fail", {})), await seenAs("fail", () => tools.up.fail({}))];
		const missing = [await seenAs("nope", () => callTool("up__nope", {})), await seenAs("nope", () => tools.up.nope({}))];
		const echo = seen.includes("echo") ? await tools.up.echo({text: "from a script"}) : null;
		return {seen, hidden, missing, echo};`
	var me *jsonrpc.Error
	for _, c := range []struct {
		who  string
		cs   *mcp.ClientSession
		seen []string // by its scripts in tools.up
	}{
		{"scope tools:read", reader, []string{"echo"}},
		{"group without a grant", nobody, []string{}},
	} {
		_, hidden := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__fail", Arguments: map[string]any{}})
		_, missing := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__nope", Arguments: map[string]any{}})
		var he *jsonrpc.Error
		if !errors.As(hidden, &he) || !errors.As(missing, &me) || he.Code != me.Code ||
			strings.ReplaceAll(he.Message, "up__fail", "X") != strings.ReplaceAll(me.Message, "up__nope", "X") {
			t.Errorf("%s: hidden tool: %v; missing tool: %v: want the same error", c.who, hidden, missing)
		}
		out, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: ExecuteCodeTool, Arguments: map[string]any{"code": script}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(out.StructuredContent)
		var exec struct {
			Result struct {
				Seen, Hidden, Missing []string
			}
		}
		if err := json.Unmarshal(b, &exec); err != nil {
			t.Fatal(err)
		}
		r := exec.Result
		if !slices.Equal(r.Seen, c.seen) || !slices.Equal(r.Hidden, r.Missing) || len(r.Hidden) != 2 || !strings.Contains(r.Hidden[0], "not_found") || !strings.Contains(r.Hidden[1], "not_found") {
			t.Errorf("%s: script: %s", c.who, b)
		}
	}
	if res, err := reader.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "hi"}}); err != nil || res.IsError {
		t.Errorf("granted tool: %v %v", res, err)
	}
	// Deny wins over a grant of everything.
	var de *jsonrpc.Error
	_, denied := admin.CallTool(ctx, &mcp.CallToolParams{Name: "up__protocol_error", Arguments: map[string]any{}})
	if !errors.As(denied, &de) || de.Code != me.Code {
		t.Errorf("denied tool for an admin: %v, want not found", denied)
	}

	// Declarations and search show a reader only what it may call.
	res, err := reader.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range res.Tools {
		if tl.Name == ExecuteCodeTool && (strings.Contains(tl.Description, "fail(") || !strings.Contains(tl.Description, "echo(")) {
			t.Errorf("execute_code's description for a reader declares other tools than echo:\n%s", tl.Description)
		}
	}
	search, err := reader.CallTool(ctx, &mcp.CallToolParams{Name: SearchToolsTool, Arguments: map[string]any{"query": "fail"}})
	if err != nil || strings.Contains(text(search), "fail(") {
		t.Errorf("search_tools shows a reader a tool it may not call: %v %v", text(search), err)
	}
	// Each execution and the calls its script made are its caller's
	// subject's.
	execs, scriptCalls := map[string]int{}, map[string]int{}
	for _, ev := range readAuditEvents(t, f.audit) {
		switch {
		case ev.Type == audit.EventCodeExecution:
			execs[ev.Subject]++
		case ev.ExecutionID != "" && ev.Tool != ExecuteCodeTool:
			scriptCalls[ev.Subject]++
		}
	}
	// Each script called a tool it may not see and a missing one, both as
	// callTool and as tools.up, and echo where it may.
	if diff := cmp.Diff(map[string]int{"alice": 1, "carol": 1}, execs); diff != "" {
		t.Errorf("code.execution events by subject (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"alice": 5, "carol": 4}, scriptCalls); diff != "" {
		t.Errorf("events of the scripts' calls by subject (-want +got):\n%s", diff)
	}
}

func text(res *mcp.CallToolResult) string {
	if res == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// TestTokenPrincipal: a token's subject is the principal: it is in the
// audit log, it owns sessions and the per-key budget, and the token goes
// no further than the gateway.
func TestTokenPrincipal(t *testing.T) {
	f := newOAuthFixture(t, fixtureOptions{perKey: `{"perKeyRequestsPerMinute": 60, "perKeyBurst": 3}`})
	ctx := context.Background()
	tokA1 := f.p.Token(t, "bob", "mcp")
	a := f.connect(t, "team", tokA1)
	if _, err := a.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}}); err != nil {
		t.Fatal(err)
	}
	// Another token of the same subject shares its budget (burst 3: one
	// call above, two here, then refused).
	b := f.connect(t, "team", f.p.Token(t, "bob", "mcp"))
	refused := 0
	for range 3 {
		if _, err := b.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}}); err != nil {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("%d of 3 calls refused with 1 of the subject's 3 tokens taken, want 1", refused)
	}
	// Another subject has a budget of its own.
	c := f.connect(t, "team", f.p.Token(t, "alice", "mcp", "tools:read"))
	if _, err := c.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "x"}}); err != nil {
		t.Errorf("another subject: %v", err)
	}

	// A session (of a version before 2026-07-28, which has none) belongs
	// to its subject: another subject's token cannot use it.
	bobs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: f.base + "/v1/mcp/team",
		HTTPClient: &http.Client{Transport: &mcpclient.HeaderTransport{
			Headers: map[string]string{"Authorization": "Bearer " + f.p.Token(t, "bob", "mcp")}, Base: http.DefaultTransport}},
	}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer bobs.Close()
	if bobs.ID() == "" {
		t.Fatal("no session")
	}
	body := `{"jsonrpc":"2.0","id":9,"method":"tools/list"}`
	req, _ := http.NewRequest(http.MethodPost, f.base+"/v1/mcp/team", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", bobs.ID())
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+f.p.Token(t, "alice", "mcp"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("another subject's token on bob's session: %d, want 403", resp.StatusCode)
	}

	var calls, limited int
	for _, ev := range readAuditEvents(t, f.audit) {
		switch ev.Type {
		case audit.EventToolCall:
			calls++
			if ev.Subject == "" || ev.KeyID != "" {
				t.Errorf("tool.call of a token: subject %q, key %q", ev.Subject, ev.KeyID)
			}
		case audit.EventRateLimitHit:
			limited++
			if ev.Subject != "bob" {
				t.Errorf("ratelimit.hit: subject %q, want bob", ev.Subject)
			}
		}
	}
	if calls != 4 || limited != 1 {
		t.Errorf("audit: %d tool.call and %d ratelimit.hit, want 4 and 1", calls, limited)
	}

	// Metrics count the credentials by kind, and the fetches of the
	// issuer's keys, never by subject.
	rec := httptest.NewRecorder()
	f.g.Metrics().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		`toolgate_authenticated_requests_total{credential="oauth",project="team"}`,
		`toolgate_oauth_key_fetches_total{outcome="ok",project="team"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(rec.Body.String(), "bob") {
		t.Errorf("metrics name a subject")
	}
}

// TestTokensStayAtTheGateway: whatever a token's holder does (list, call,
// run a script that calls tools), the upstream receives its own
// credential and never the token, in no header and no body.
func TestTokensStayAtTheGateway(t *testing.T) {
	f := newOAuthFixture(t, fixtureOptions{codeMode: true})
	ctx := context.Background()
	tokens := []string{f.p.Token(t, "bob", "mcp"), f.p.Token(t, "alice", "mcp", "tools:read")}
	for _, tok := range tokens {
		cs := f.connect(t, "team", tok)
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": "direct"}}); err != nil || res.IsError {
			t.Fatalf("direct call: %v %v", res, err)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: ExecuteCodeTool, Arguments: map[string]any{"code": `return await tools.up.echo({text: "from a script"});`}})
		if err != nil || res.IsError {
			t.Fatalf("script: %v %v", text(res), err)
		}
	}

	f.upMu.Lock()
	defer f.upMu.Unlock()
	var calls int
	for _, dump := range f.upRequests {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(dump)))
		if err != nil {
			t.Fatal(err)
		}
		if a := req.Header.Values("Authorization"); len(a) > 0 && !slices.Equal(a, []string{upstreamCredential}) {
			t.Errorf("the upstream received Authorization %.60q, want only its own credential", a)
		}
		for i, tok := range tokens {
			_, payload, sig := jwsParts(t, tok)
			for _, part := range []string{tok, payload, sig} {
				if strings.Contains(dump, part) {
					t.Errorf("the upstream received token %d (or a part of it):\n%.300s", i, dump)
				}
			}
		}
		if strings.Contains(dump, `"tools/call"`) {
			calls++
		}
	}
	// Two direct calls and two from scripts, all of team's upstream, and
	// each sent with its credential: the recording saw what a leak would be.
	if calls != 4 {
		t.Errorf("the upstream received %d tools/call, want 4", calls)
	}
	if !slices.ContainsFunc(f.upRequests, func(d string) bool { return strings.Contains(d, upstreamCredential) }) {
		t.Errorf("the upstream never received its own credential")
	}
}

// TestOAuthReload: a reload that keeps a project's OAuth settings keeps
// its verifier and the keys it fetched; one that changes them applies at
// once.
func TestOAuthReload(t *testing.T) {
	f := newOAuthFixture(t, fixtureOptions{})
	tok := f.p.Token(t, "alice", "mcp")
	if code := f.call(t, "team", "Bearer "+tok).StatusCode; code != 200 {
		t.Fatalf("token before the reload: %d", code)
	}
	fetches := f.p.KeyFetches()
	reload := func(doc string) {
		t.Helper()
		cfg, err := config.Parse([]byte(doc), config.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.g.Reload(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	reload(strings.Replace(f.doc, `"keys": {"mcpServers"`, `"keys": {"allowedTools": [], "mcpServers"`, 1))
	if code := f.call(t, "team", "Bearer "+tok).StatusCode; code != 200 {
		t.Errorf("token after a reload that kept the settings: %d", code)
	}
	if n := f.p.KeyFetches(); n != fetches {
		t.Errorf("a reload that kept the OAuth settings fetched the keys again (%d, then %d)", fetches, n)
	}
	reload(strings.Replace(f.doc, `"audience": "`+teamAudience+`"`, `"audience": "https://gateway.example/moved"`, 1))
	if code := f.call(t, "team", "Bearer "+tok).StatusCode; code != 401 {
		t.Errorf("token for the old audience after the reload: %d, want 401", code)
	}
}

// TestIssuerUnreachable: while the issuer's keys cannot be fetched and
// none were before, a token cannot be checked: 503, not a refusal of the
// token, and /readyz says why.
func TestIssuerUnreachable(t *testing.T) {
	down := httptest.NewTLSServer(http.NotFoundHandler())
	issuer := down.URL
	down.Close()
	key, _, _, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`{"auth": {"oauth": {"issuer": `+quoteJSON(issuer)+`, "audience": "a"}},
		"apiKeys": [{"name": "k", "sha256": "`+apikey.Hash(key)+`"}]}`), config.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, cfg, &Options{Auth: auth})
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)

	payload, _ := json.Marshal(map[string]any{"iss": issuer, "aud": "a", "sub": "s", "exp": time.Now().Add(time.Hour).Unix()})
	tok := oauthtest.Sign(t, jose.RS256, oauthtest.NewKey(t), "k1", payload)
	f := &oauthFixture{base: srv.URL}
	resp := f.callPath(t, "/mcp", "Bearer "+tok)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "cannot be checked now") {
		t.Errorf("token while the issuer is down: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp := f.callPath(t, "/mcp", "Bearer "+key); resp.StatusCode != 200 {
		t.Errorf("API key while the issuer is down: %d", resp.StatusCode)
	}
	_, projects := g.Status()
	if ps := projects[config.DefaultProject].Problems; len(ps) != 1 || !strings.Contains(ps[0], "auth.oauth: the keys of "+issuer+" cannot be fetched") {
		t.Errorf("readyz problems = %q", ps)
	}
}
