package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/oauthtest"
)

const (
	e2eTeamAudience  = "https://mcp.example.test/v1/mcp/team"
	e2eOtherAudience = "https://mcp.example.test/v1/mcp/other"
)

// oauthGateway is a built toolgate serving two projects that accept the
// access tokens of an OpenID provider run by the test over TLS: team
// (tokens and API keys; scope mcp required, tools:read grants t__echo,
// group admins everything) and other (tokens only, another audience).
type oauthGateway struct {
	*gateway
	p *oauthtest.Provider
}

func startOAuthGateway(t *testing.T) *oauthGateway {
	t.Helper()
	checkLeaks(t)
	p := oauthtest.Start(t, &oauthtest.Options{Clients: []oauthtest.Client{
		{ID: "alice", Secret: "a", Audience: []string{e2eTeamAudience}},
		{ID: "bob", Secret: "b", Audience: []string{e2eTeamAudience}, Groups: []string{"admins"}},
		{ID: "old", Secret: "o", Audience: []string{e2eTeamAudience}, Groups: []string{"admins"}, Lifetime: -time.Hour},
		{ID: "olivia", Secret: "v", Audience: []string{e2eOtherAudience}},
		{ID: "elsewhere", Secret: "e", Audience: []string{"https://another.example.test/api"}},
	}})
	up := jsonString(testUpstream(t))
	path := writeConfig(t, fmt.Sprintf(`{
		"projects": {
			"team": {
				"mcpServers": {"t": {"command": %[1]s, "args": ["-name", "t-up"]}},
				"auth": {"oauth": {
					"issuer": %[2]s, "audience": %[3]q,
					"requiredScopes": ["mcp"],
					"scopes": {"tools:read": ["t__echo"]},
					"groupsClaim": "groups", "groups": {"admins": ["*"]},
					"keysRefetchInterval": "1s",
				}},
			},
			"other": {
				"mcpServers": {"t": {"command": %[1]s, "args": ["-name", "t-up"]}},
				"auth": {"accept": ["oauth"], "oauth": {"issuer": %[2]s, "audience": %[4]q}},
			},
		},
	}`, up, jsonString(p.URL), e2eTeamAudience, e2eOtherAudience))
	keys := createKeys(t, path)
	// The gateway trusts the provider's certificate as it would a private
	// CA's: through SSL_CERT_FILE.
	proc := e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: e2etest.BuildBinary(t, "./cmd/toolgate"),
		Args: []string{"serve", "-c", path, "--listen", "127.0.0.1:0", "--log-level", "debug"},
		Dir:  filepath.Dir(path),
		Env:  []string{"SSL_CERT_FILE=" + p.CertFile(t)},
	})
	line := proc.WaitForLine(t, "toolgate listening on", 60*time.Second)
	m := listeningLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("cannot find the address in %q", line)
	}
	return &oauthGateway{gateway: &gateway{proc: proc, base: m[1], configPath: path, keys: keys}, p: p}
}

func (g *oauthGateway) endpoint(project string) string { return g.base + "/v1/mcp/" + project }

// connectToken opens an MCP session with "Authorization: Bearer token".
func connectToken(t *testing.T, url, token string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e2etest.ConnectHTTP(t, ctx, url, map[string]string{"Authorization": "Bearer " + token}, nil)
}

// TestOAuthAccessTokens runs the built gateway against a real OpenID
// provider: its tokens work, tokens made wrong or from them are refused
// with the challenge that says why, a missing scope is a 403 with the
// scope, a key the provider rotates in is picked up, and the audit log
// names the token's subject.
func TestOAuthAccessTokens(t *testing.T) {
	g := startOAuthGateway(t)
	p := g.p
	team := g.endpoint("team")

	good := p.Token(t, "bob", "mcp")
	cs := connectToken(t, team, good)
	if got, want := toolNames(t, cs), []string{"t__content", "t__echo"}; !containsAll(got, want) {
		t.Errorf("tools of an admin = %v, want all of them", got)
	}
	if got := text(callTool(t, cs, "t__echo", map[string]any{"text": "with a token"})); got != "with a token" {
		t.Errorf("echo = %q", got)
	}
	reader := connectToken(t, team, p.Token(t, "alice", "mcp", "tools:read"))
	if diff := cmp.Diff([]string{"t__echo"}, toolNames(t, reader)); diff != "" {
		t.Errorf("tools of a reader (-want +got):\n%s", diff)
	}

	parts := strings.Split(good, ".")
	key, kid := p.SigningKey()
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	sig := []byte(parts[2])
	sig[3] = map[bool]byte{true: 'B', false: 'A'}[sig[3] == 'A']
	impostor := oauthtest.Start(t, &oauthtest.Options{Clients: []oauthtest.Client{{ID: "bob", Secret: "b", Audience: []string{e2eTeamAudience}}}, Key: key})
	rogue := oauthtest.NewKey(t)
	meta := g.base + "/.well-known/oauth-protected-resource/v1/mcp/team"
	for _, tc := range []struct {
		name, url, token string
		status           int
		errCode, says    string
	}{
		{"expired", team, p.Token(t, "old", "mcp"), 401, "invalid_token", "token expired at"},
		{"another audience", team, p.Token(t, "elsewhere", "mcp"), 401, "invalid_token", "not for this resource"},
		{"another issuer", team, impostor.Token(t, "bob", "mcp"), 401, "invalid_token", "token issued by"},
		{"alg none", team, base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", 401, "invalid_token", `algorithm 'none'`},
		{"signature changed", team, parts[0] + "." + parts[1] + "." + string(sig), 401, "invalid_token", "signature does not verify"},
		{"unknown key id", team, oauthtest.Sign(t, jose.RS256, rogue, "rogue-"+kid, payload), 401, "invalid_token", "which the issuer does not publish"},
		{"a token of another project", team, p.Token(t, "olivia", "mcp"), 401, "invalid_token", "not for this resource"},
		{"team's token at the other project", g.endpoint("other"), good, 401, "invalid_token", "not for this resource"},
		{"scope missing", team, p.Token(t, "bob"), 403, "insufficient_scope", "lacks the scope mcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := initialize(t, nil, tc.url, bearer(tc.token))
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, body)
			}
			cs, err := oauthex.ParseWWWAuthenticate(h.Values("WWW-Authenticate"))
			if err != nil || len(cs) != 1 {
				t.Fatalf("WWW-Authenticate %q: %v", h.Values("WWW-Authenticate"), err)
			}
			c := cs[0].Params
			wantMeta := meta
			if tc.url != team {
				wantMeta = g.base + "/.well-known/oauth-protected-resource/v1/mcp/other"
			}
			if c["resource_metadata"] != wantMeta || c["error"] != tc.errCode || !strings.Contains(c["error_description"], tc.says) {
				t.Errorf("challenge %q: want resource_metadata %s, error %s, a description saying %q", h.Values("WWW-Authenticate"), wantMeta, tc.errCode, tc.says)
			}
			if tc.status == 403 && c["scope"] != "mcp" {
				t.Errorf("403 without the scope needed: %q", h.Values("WWW-Authenticate"))
			}
		})
	}

	// The metadata the challenges point to names the provider.
	code, body := httpGet(t, meta)
	var md oauthex.ProtectedResourceMetadata
	if err := json.Unmarshal(body, &md); code != 200 || err != nil || !slices.Equal(md.AuthorizationServers, []string{p.URL}) || md.Resource != team {
		t.Errorf("metadata: %d %s", code, body)
	}

	// The provider rotates its key: tokens of the new key work at once
	// (after keysRefetchInterval at most), those of the old one once the
	// gateway fetched the keys without it no more.
	p.Rotate(t, false)
	rotated := p.Token(t, "bob", "mcp")
	eventually(t, 10*time.Second, "a token of the rotated key to be accepted", func() bool {
		code, _, _ := initialize(t, nil, team, bearer(rotated))
		return code == 200
	})
	if code, _, body := initialize(t, nil, team, bearer(good)); code != 401 || !strings.Contains(body, "which the issuer does not publish") {
		t.Errorf("token of the withdrawn key: %d %s", code, body)
	}

	// The audit log names the subject of every call and refusal.
	var events []struct {
		Type, Subject, KeyID, Tool, Reason string
	}
	for _, l := range strings.Split(strings.TrimSpace(g.runCLI(t, "audit", "--subject", "bob", "--json")), "\n") {
		var e struct {
			Type, Subject, KeyID, Tool, Reason string
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		events = append(events, e)
	}
	var calls, refusals int
	for _, e := range events {
		switch e.Type {
		case "tool.call":
			calls++
		case "auth.failure":
			refusals++
		}
		if e.Subject != "bob" || e.KeyID != "" {
			t.Errorf("event %+v: want subject bob and no key", e)
		}
	}
	if calls != 1 || refusals < 1 {
		t.Errorf("audit --subject bob: %d tool.call and %d auth.failure events, want 1 and the refused scope", calls, refusals)
	}
	g.proc.Stop()
}

func containsAll(got, want []string) bool {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

// TestOAuthClients connects the TypeScript SDK client, through its OAuth
// support, and the MCP Inspector CLI to a project with a token of the
// provider; a refused token reaches them with its reason.
func TestOAuthClients(t *testing.T) {
	g := startOAuthGateway(t)
	p := g.p
	team := g.endpoint("team")
	token := p.Token(t, "alice", "mcp", "tools:read")

	ts := runTSOAuth(t, team, token)
	if ts.Error != "" || !slices.Equal(ts.Tools, []string{"t__echo"}) || !strings.Contains(string(ts.Echo), "with a token") {
		t.Errorf("TypeScript client with a token: %+v", ts)
	}
	// An expired token: the SDK reads the challenge, fetches the
	// metadata, finds the provider, and would start a flow there.
	ts = runTSOAuth(t, team, p.Token(t, "old", "mcp"))
	if ts.Error == "" || !strings.HasPrefix(ts.Redirected, p.URL) {
		t.Errorf("TypeScript client with an expired token: %+v, want a refusal and a flow at the provider", ts)
	}

	out, err := runInspector(t, team, "--method", "tools/list", "--header", "Authorization: Bearer "+token)
	if err != nil || !strings.Contains(out, `"t__echo"`) || strings.Contains(out, `"t__content"`) {
		t.Errorf("inspector tools/list with a token: %v\n%s", err, out)
	}
	out, err = runInspector(t, team, "--method", "tools/call", "--tool-name", "t__echo", "--tool-arg", "text=from the inspector", "--header", "Authorization: Bearer "+token)
	if err != nil || !strings.Contains(out, "from the inspector") {
		t.Errorf("inspector tools/call with a token: %v\n%s", err, out)
	}
	// Without a terminal, the Inspector does not start a flow of its
	// own (--stored-auth-only): it shows the gateway's reason.
	out, err = runInspector(t, team, "--method", "tools/list", "--stored-auth-only", "--header", "Authorization: Bearer "+p.Token(t, "old", "mcp"))
	if err == nil || !strings.Contains(out, "token expired at") {
		t.Errorf("inspector with an expired token: %v\n%s", err, out)
	}
	out, err = runInspector(t, team, "--method", "tools/list", "--stored-auth-only", "--header", "Authorization: "+g.keys["team"])
	if err == nil || !strings.Contains(out, "an API key without the Bearer scheme") {
		t.Errorf("inspector with a key sent without the scheme: %v\n%s", err, out)
	}
	out, err = runInspector(t, team, "--method", "tools/list", "--header", "Authorization: Bearer "+g.keys["team"])
	if err != nil || !strings.Contains(out, `"t__echo"`) {
		t.Errorf("inspector with an API key beside tokens: %v\n%s", err, out)
	}
	g.proc.Stop()
}

// tsOAuthOutput is what e2e/testdata/tsoauth.mjs prints.
type tsOAuthOutput struct {
	Tools      []string        `json:"tools"`
	Echo       json.RawMessage `json:"echo"`
	Error      string          `json:"error"`
	Redirected string          `json:"redirected"`
}

func runTSOAuth(t *testing.T, url, token string) *tsOAuthOutput {
	t.Helper()
	var out tsOAuthOutput
	runNodeScript(t, "tsoauth.mjs", 60*time.Second, []string{"TOOLGATE_TOKEN=" + token}, &out, url)
	return &out
}

// runInspector runs the MCP Inspector's CLI (on Node 22, which it needs)
// against url and returns its output, stdout and stderr together.
func runInspector(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	home := t.TempDir() // its catalog and stored tokens
	cmd := exec.CommandContext(ctx, e2etest.NPMFile(t, e2etest.Node22Binary), append([]string{e2etest.NPMFile(t, e2etest.InspectorCLIEntry), url, "--transport", "http"}, args...)...)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "HOME="+home, "MCP_INSPECTOR_SECRET_STORE=memory")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestKeyRefusalsReadByOAuthClients: a gateway of API keys only answers
// a refused key as an OAuth resource server does (the challenge points
// to metadata that names no authorization server, and says why), so that
// a client that speaks OAuth shows the reason; a key sent without the
// Bearer scheme is named as such.
func TestKeyRefusalsReadByOAuthClients(t *testing.T) {
	g := startGateway(t, fmt.Sprintf(`{"mcpServers": {"t": {"command": %s, "args": ["-name", "t-up"]}}}`, jsonString(testUpstream(t))))
	key := g.keys["default"]
	for _, tc := range []struct {
		name, authz, errCode, says string
	}{
		{"no key", "", "", "no API key presented"},
		{"key without the scheme", key, "invalid_token", "an API key without the Bearer scheme"},
		{"unknown key", "Bearer tg_x", "invalid_token", "malformed API key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.authz != "" {
				h["Authorization"] = tc.authz
			}
			code, hdr, body := initialize(t, nil, g.URL(), h)
			cs, err := oauthex.ParseWWWAuthenticate(hdr.Values("WWW-Authenticate"))
			if code != 401 || err != nil || len(cs) != 1 {
				t.Fatalf("%d %q: %s", code, hdr.Values("WWW-Authenticate"), body)
			}
			c := cs[0].Params
			if c["resource_metadata"] != g.base+"/.well-known/oauth-protected-resource/mcp" || c["error"] != tc.errCode ||
				tc.errCode != "" && !strings.Contains(c["error_description"], tc.says) || !strings.Contains(body, tc.says) {
				t.Errorf("challenge %q, body %s: want the metadata, error %q and %q", hdr.Values("WWW-Authenticate"), body, tc.errCode, tc.says)
			}
		})
	}
	for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		code, body := httpGet(t, g.base+path)
		var md map[string]any
		if err := json.Unmarshal(body, &md); code != 200 || err != nil || md["resource"] != g.URL() || md["authorization_servers"] != nil {
			t.Errorf("GET %s: %d %s, want the resource and no authorization server", path, code, body)
		}
	}
	out, err := runInspector(t, g.URL(), "--method", "tools/list", "--stored-auth-only", "--header", "Authorization: "+key)
	if err == nil || !strings.Contains(out, "an API key without the Bearer scheme") {
		t.Errorf("inspector with a key sent without the scheme: %v\n%s", err, out)
	}
}
