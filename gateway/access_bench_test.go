package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// guardFixture is a gateway with one project, one key and generous rate
// limits, whose MCP handler is replaced by one that does nothing, so that
// only the access layer is measured.
func guardFixture(tb testing.TB) (http.Handler, string) {
	tb.Helper()
	h, key, _ := guardFixtureProject(tb)
	return h, key
}

// guardFixtureProject is guardFixture with its project.
func guardFixtureProject(tb testing.TB) (http.Handler, string, *project) {
	tb.Helper()
	key, _, _, err := apikey.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := config.Demo("http://127.0.0.1:1/mcp", apikey.Hash(key))
	cfg.Projects[config.DefaultProject].MCPServers = nil
	cfg.CodeMode.Enabled = false
	cfg.AllowedHosts = []string{"example.com"} // httptest.NewRequest's Host
	cfg.Projects[config.DefaultProject].RateLimit = config.RateLimit{RequestsPerMinute: 6e7, Burst: 1e6, PerKeyRequestsPerMinute: 6e7, PerKeyBurst: 1e6}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	g := New(cfg, &Options{Auth: auth})
	if err := g.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Close)
	p := g.project(config.DefaultProject)
	p.reg.mu.Lock()
	p.reg.routes.tools["demo__echo"] = &route{def: &mcp.Tool{Name: "demo__echo"}}
	p.reg.mu.Unlock()
	p.http = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	return g.guard(p), key, p
}

// BenchmarkGuard measures the access layer alone for one tools/call
// request: Host and Origin, client address, IP rules, key check, the
// transport's header checks, body read, rate limits and the SDK's bearer
// middleware.
func BenchmarkGuard(b *testing.B) {
	h, key := guardFixture(b)
	benchGuardCall(b, h, key)
}

// guardCallBody is the tools/call the access-layer benchmarks send.
const guardCallBody = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hello"}}}`

// benchGuardCall sends one tools/call request with credential to h per
// iteration, and expects the 202 of the handler behind the access layer.
func benchGuardCall(b *testing.B, h http.Handler, credential string) {
	benchGuardRequest(b, h, credential, guardCallBody, nil)
}

// benchGuardRequest sends body, with credential and the headers of
// header, to h per iteration, and expects the 202 of the handler behind
// the access layer.
func benchGuardRequest(b *testing.B, h http.Handler, credential, body string, header map[string]string) {
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		r.RemoteAddr = "127.0.0.1:5555"
		r.Header.Set("Authorization", "Bearer "+credential)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkGuardStateless is BenchmarkGuard's request as a client of
// protocol 2026-07-28 sends it: its version and capabilities in _meta,
// Mcp-Method and Mcp-Name headers that the access layer checks against
// the body. The access layer's own answering is off, so that the request
// reaches the handler behind it as in BenchmarkGuard.
func BenchmarkGuardStateless(b *testing.B) {
	h, key := guardFixture(b)
	directCallsOn.Store(false)
	b.Cleanup(func() { directCallsOn.Store(true) })
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`
	benchGuardRequest(b, h, key, body, map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "demo__echo"})
}

func TestGuardRefusals(t *testing.T) {
	h, key := guardFixture(t)
	tests := []struct {
		name   string
		header string
		body   string
		want   int
	}{
		{"no key", "", `{}`, 401},
		{"good key", "Bearer " + key, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo"}}`, 202},
		{"wrong scheme", "Token " + key, `{}`, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(tc.body))
			r.RemoteAddr = "127.0.0.1:5555"
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json, text/event-stream")
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
		})
	}
}

// BenchmarkGuardSessions measures the access layer for one tools/call of
// an open session while 1, 100 and 10,000 sessions are open: finding the
// session is a map lookup, so the cost per call does not grow with them.
func BenchmarkGuardSessions(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			h, key, p := guardFixtureProject(b)
			p.sessions.mu.Lock()
			p.sessions.byID = map[string]*session{}
			for i := range n {
				id := fmt.Sprintf("S%d", i)
				p.sessions.byID[id] = &session{id: id, calls: map[string]bool{}}
			}
			p.sessions.mu.Unlock()
			benchGuardRequest(b, h, key, guardCallBody, map[string]string{"Mcp-Session-Id": "S0"})
		})
	}
}
