package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/oauthtest"
	"github.com/toolgate/toolgate/policy/apikey"
)

// FuzzCredentialHeaders sends the access layer arbitrary Authorization
// and X-API-Key headers, for a project that takes both API keys and the
// access tokens of a real provider. Whatever they hold, the answer is a
// pass or a refusal (401, or 403 for missing scopes) whose challenge
// parses as one Bearer challenge pointing at the project's metadata,
// whose error_description a header may carry, and whose body is a
// bounded JSON-RPC error.
func FuzzCredentialHeaders(f *testing.F) {
	p := oauthtest.Start(f, &oauthtest.Options{Clients: []oauthtest.Client{{ID: "fz", Secret: "s", Audience: []string{"https://fuzz.example/mcp"}}}})
	key, _, _, err := apikey.Generate()
	if err != nil {
		f.Fatal(err)
	}
	cfg := config.Demo("http://127.0.0.1:1/mcp", apikey.Hash(key))
	proj := cfg.Projects[config.DefaultProject]
	proj.MCPServers = nil
	proj.Auth.OAuth = &config.OAuth{Issuer: p.URL, Audience: "https://fuzz.example/mcp", RequiredScopes: []string{"mcp"},
		Scopes: map[string][]string{"read": {"*__read_*"}}, Algorithms: config.DefaultOAuthAlgorithms,
		Leeway: config.Duration(config.DefaultOAuthLeeway), KeysMaxAge: config.Duration(config.DefaultOAuthKeysMaxAge), KeysRefetchInterval: config.Duration(config.DefaultOAuthKeysRefetchInterval)}
	cfg.CodeMode.Enabled = false
	cfg.AllowedHosts = []string{"example.com"}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	g := New(cfg, &Options{Auth: auth, OAuthClient: p.HTTPClient(), Logger: slog.New(slog.DiscardHandler)})
	if err := g.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(g.Close)
	pr := g.project(config.DefaultProject)
	pr.http = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	h := g.guard(pr)

	tok := p.Token(f, "fz", "mcp", "read")
	for _, s := range []struct{ authz, apiKey string }{
		{"Bearer " + tok, ""}, {"Bearer " + key, ""}, {"", key}, {key, ""}, {tok, ""},
		{"Basic " + key, ""}, {"bearer  " + tok + " ", ""}, {"Bearer", ""}, {"Bearer ", ""},
		{"Bearer " + p.Token(f, "fz"), ""}, {"Bearer a.b.c", ""}, {"Bearer eyJhbGciOiJub25lIn0.e30.", ""},
		{"Bearer " + strings.Repeat("x", 5000), ""}, {"Token \"quoted\\\"\"", ""}, {"", ""}, {"Bearer tg_\x00\r\n", ""},
	} {
		f.Add(s.authz, s.apiKey)
	}
	wantMeta := "http://example.com" + metadataPath + "/mcp"
	f.Fuzz(func(t *testing.T, authz, apiKey string) {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		r.RemoteAddr = "127.0.0.1:5555"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if apiKey != "" {
			r.Header["X-Api-Key"] = []string{apiKey}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusAccepted:
			return
		case http.StatusUnauthorized, http.StatusForbidden:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		hdr := w.Header().Values("WWW-Authenticate")
		for _, v := range hdr {
			for i := 0; i < len(v); i++ {
				if v[i] < 0x20 && v[i] != '\t' || v[i] == 0x7f {
					t.Fatalf("WWW-Authenticate %q holds a control character", v)
				}
			}
		}
		cs, err := oauthex.ParseWWWAuthenticate(hdr)
		if err != nil || len(cs) != 1 || cs[0].Scheme != "bearer" {
			t.Fatalf("WWW-Authenticate %q: %v %v", hdr, cs, err)
		}
		if got := cs[0].Params["resource_metadata"]; got != wantMeta {
			t.Fatalf("resource_metadata = %q, want %q", got, wantMeta)
		}
		if d := cs[0].Params["error_description"]; len(d) > maxDescription || strings.ContainsAny(d, "\"\\") {
			t.Fatalf("error_description %q: longer than %d or holds a quote", d, maxDescription)
		}
		var rpc struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &rpc); err != nil || rpc.Error.Code == 0 || rpc.Error.Message == "" {
			t.Fatalf("body %q is not a JSON-RPC error", w.Body)
		}
		if w.Body.Len() > 2048 {
			t.Fatalf("body of %d bytes", w.Body.Len())
		}
		if w.Code == http.StatusForbidden && !bytes.Contains(w.Body.Bytes(), []byte("scope")) {
			t.Fatalf("403 without a word on scopes: %s", w.Body)
		}
	})
}

// BenchmarkGuardToken measures the access layer for one tools/call
// request carrying an access token (RS256, verified at each request),
// next to BenchmarkGuard's API key.
func BenchmarkGuardToken(b *testing.B) {
	p := oauthtest.Start(b, &oauthtest.Options{Clients: []oauthtest.Client{{ID: "bench", Secret: "s", Audience: []string{"https://bench.example/mcp"}}}})
	cfg := config.Demo("http://127.0.0.1:1/mcp", strings.Repeat("0", 64))
	proj := cfg.Projects[config.DefaultProject]
	proj.MCPServers = nil
	proj.RateLimit = config.RateLimit{RequestsPerMinute: 6e7, Burst: 1e6, PerKeyRequestsPerMinute: 6e7, PerKeyBurst: 1e6}
	proj.Auth.OAuth = &config.OAuth{Issuer: p.URL, Audience: "https://bench.example/mcp", Algorithms: config.DefaultOAuthAlgorithms,
		Leeway: config.Duration(config.DefaultOAuthLeeway), KeysMaxAge: config.Duration(config.DefaultOAuthKeysMaxAge), KeysRefetchInterval: config.Duration(config.DefaultOAuthKeysRefetchInterval)}
	cfg.CodeMode.Enabled = false
	cfg.AllowedHosts = []string{"example.com"}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	g := New(cfg, &Options{Auth: auth, OAuthClient: p.HTTPClient(), Logger: slog.New(slog.DiscardHandler)})
	if err := g.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(g.Close)
	pr := g.project(config.DefaultProject)
	pr.reg.mu.Lock()
	pr.reg.routes.tools["demo__echo"] = &route{}
	pr.reg.mu.Unlock()
	pr.http = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	h := g.guard(pr)
	benchGuardCall(b, h, p.Token(b, "bench"))
}
