package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
)

// TestHostRules decides, for requests with forged and genuine Host and
// Origin headers, which header (if any) an endpoint refuses.
func TestHostRules(t *testing.T) {
	const loop, lan = "127.0.0.1:8080", "192.168.1.5:8080"
	tests := []struct {
		name    string
		listen  string
		hosts   []string
		origins []string
		local   string // the address the connection arrived on
		sni     string // TLS server name; "" without TLS
		host    string
		origin  string
		want    string // the header refused, "" for none
	}{
		{name: "loopback by address", listen: loop, local: loop, host: "127.0.0.1:8080"},
		{name: "loopback by name", listen: loop, local: loop, host: "localhost:8080", origin: "http://localhost:8080"},
		{name: "IPv6 loopback", listen: "[::1]:8080", local: "[::1]:8080", host: "[::1]:8080", origin: "http://[::1]:8080"},
		{name: "another loopback address", listen: loop, local: loop, host: "127.0.0.2"},
		{name: "a local web app", listen: loop, local: loop, host: "localhost:8080", origin: "http://localhost:5173"},
		{name: "rebound name", listen: loop, local: loop, host: "evil.example:8080", origin: "http://evil.example:8080", want: "Host"},
		{name: "rebound name without Origin", listen: loop, local: loop, host: "evil.example", want: "Host"},
		{name: "a page of another site", listen: loop, local: loop, host: "localhost:8080", origin: "https://evil.example", want: "Origin"},
		{name: "the null origin", listen: loop, local: loop, host: "localhost:8080", origin: "null", want: "Origin"},
		{name: "a file origin", listen: loop, local: loop, host: "localhost:8080", origin: "file://", want: "Origin"},
		{name: "a name that resolves to loopback is still a name", listen: loop, local: loop, host: "localtest.me:8080", want: "Host"},
		{name: "no Host", listen: loop, local: loop, host: "", want: "Host"},
		{name: "a proxy's name, allowed", listen: loop, local: loop, hosts: []string{"mcp.example.com"}, host: "mcp.example.com", origin: "https://mcp.example.com"},
		{name: "a proxy's name on another port", listen: loop, local: loop, hosts: []string{"mcp.example.com:443"}, host: "mcp.example.com:8443", want: "Host"},
		{name: "an allowed origin", listen: loop, local: loop, origins: []string{"https://app.example.com"}, host: "localhost", origin: "https://APP.example.com:443"},
		{name: "any origin", listen: loop, local: loop, origins: []string{"*"}, host: "localhost", origin: "https://evil.example"},
		{name: "any host", listen: loop, local: loop, hosts: []string{"*"}, host: "evil.example"},
		{name: "any host is not any origin", listen: loop, local: loop, hosts: []string{"*"}, host: "evil.example", origin: "http://evil.example", want: "Origin"},
		{name: "the address a LAN client dialled", listen: ":8080", local: lan, host: "192.168.1.5:8080", origin: "http://192.168.1.5:8080"},
		{name: "loopback names off loopback", listen: ":8080", local: lan, host: "localhost:8080", want: "Host"},
		{name: "another address", listen: ":8080", local: lan, host: "10.9.9.9:8080", want: "Host"},
		{name: "a name on all interfaces", listen: ":8080", local: lan, host: "box.lan:8080", want: "Host"},
		{name: "the listen name", listen: "box.lan:8080", local: lan, host: "BOX.lan.:8080"},
		{name: "the TLS server name", listen: ":8443", local: lan, sni: "mcp.example.com", host: "mcp.example.com", origin: "https://mcp.example.com"},
		{name: "another name over TLS", listen: ":8443", local: lan, sni: "mcp.example.com", host: "evil.example", want: "Host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := compileHostRules(tc.listen, tc.hosts, tc.origins)
			r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			r.Host = tc.host
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.sni != "" {
				r.TLS = &tls.ConnectionState{ServerName: tc.sni}
			}
			la, err := net.ResolveTCPAddr("tcp", tc.local)
			if err != nil {
				t.Fatal(err)
			}
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, la))
			if got, value := h.refuse(r); got != tc.want {
				t.Errorf("refused %q (%q), want %q", got, value, tc.want)
			}
		})
	}
}

// TestHostRefusalAnswer proves a refusal is a 403 with a JSON-RPC error
// naming the header, counted and audited as origin.denied, for the
// project's endpoint and the gateway's routes alike (not /healthz).
func TestHostRefusalAnswer(t *testing.T) {
	f := newHTTPFixture(t, func(cfg *config.Config) {
		cfg.Projects[config.DefaultProject].AllowedHosts = []string{"mcp.example.com"}
	})
	send := func(path, host, origin string) (int, string) {
		t.Helper()
		method := http.MethodPost
		if path == "/readyz" {
			method = http.MethodGet
		}
		req, _ := http.NewRequest(method, strings.TrimSuffix(f.url, "/mcp")+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		path, host, origin string
		want               int
		says               string
	}{
		{"/mcp", "evil.example", "", 403, `the Host header \"evil.example\"`},
		{"/mcp", "localhost", "http://evil.example", 403, `the Origin header \"http://evil.example\"`},
		{"/mcp", "mcp.example.com", "", 401, "unauthorized"}, // the project's own list
		{"/v1/mcp/nosuch", "mcp.example.com", "", 403, "allowedHosts"},
		{"/readyz", "evil.example", "", 403, "allowedHosts"},
	} {
		code, body := send(tc.path, tc.host, tc.origin)
		if code != tc.want || !strings.Contains(body, tc.says) {
			t.Errorf("%s Host %s Origin %q: %d %s", tc.path, tc.host, tc.origin, code, body)
		}
		if code == 403 && !strings.Contains(body, `"code":-32003`) {
			t.Errorf("%s: not a JSON-RPC error: %s", tc.path, body)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(f.url, "/mcp")+"/healthz", nil)
	req.Host = "evil.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with a foreign Host: %d", resp.StatusCode)
	}
	var events []*audit.Event
	if _, err := audit.Read(f.audit, func(ev *audit.Event) error {
		if ev.Type == audit.EventOriginDenied {
			events = append(events, ev)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(events) != 4 || events[0].Project != config.DefaultProject || events[0].Reason != `Host "evil.example"` || events[1].Reason != `Origin "http://evil.example"` || events[0].ClientIP != "127.0.0.1" {
		for _, ev := range events {
			t.Logf("%+v", ev)
		}
		t.Errorf("%d origin.denied events", len(events))
	}
}
