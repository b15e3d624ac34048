package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy"
)

// rawInitialize sends an initialize request with a forged Host and
// Origin, as a web page rebound to the gateway's address would.
func rawInitialize(t *testing.T, url, host, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"page","version":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDNSRebinding sends what a web page rebound to a loopback gateway
// without keys would send: its own name as Host and Origin. Every such
// request is refused before anything answers it (403, a JSON-RPC error
// naming the header), audited and counted; the gateway's own names, and
// the ones the configuration adds, are served.
func TestDNSRebinding(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"auth": {"required": false},
		"allowedHosts": ["mcp.example.com"],
		"projects": {
			"default": {"mcpServers": {"s": {"command": %[1]s, "allowedTools": ["echo"]}}},
			"web": {"mcpServers": {"s": {"command": %[1]s, "allowedTools": ["echo"]}}, "allowedOrigins": ["https://app.example.com"]}
		}
	}`, jsonString(up)))
	addr := strings.TrimPrefix(g.base, "http://")
	port := addr[strings.LastIndex(addr, ":"):]
	tests := []struct {
		name, path, host, origin string
		want                     int
		header                   string // named in the refusal
	}{
		{"rebound name", "/mcp", "evil.example.com" + port, "http://evil.example.com" + port, 403, "Host"},
		{"rebound name, no Origin", "/mcp", "evil.example.com" + port, "", 403, "Host"},
		{"rebound name, other project", "/v1/mcp/web", "evil.example.com", "", 403, "Host"},
		{"a page of another site", "/mcp", addr, "https://evil.example.com", 403, "Origin"},
		{"a sandboxed page", "/mcp", addr, "null", 403, "Origin"},
		{"the address dialled", "/mcp", addr, "http://" + addr, 200, ""},
		{"localhost", "/mcp", "localhost" + port, "http://localhost" + port, 200, ""},
		{"a local web app", "/mcp", "localhost" + port, "http://localhost:5173", 200, ""},
		{"a proxy's name", "/mcp", "mcp.example.com", "", 200, ""},
		{"a proxy's name and page", "/mcp", "mcp.example.com", "https://mcp.example.com", 200, ""},
		{"a browser client of the web project", "/v1/mcp/web", addr, "https://app.example.com", 200, ""},
		{"that client elsewhere", "/mcp", addr, "https://app.example.com", 403, "Origin"},
	}
	refused := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawInitialize(t, g.base+tc.path, tc.host, tc.origin)
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, body)
			}
			if tc.header != "" && (!strings.Contains(body, `"code":-32003`) || !strings.Contains(body, "the "+tc.header+" header")) {
				t.Errorf("the refusal does not name the %s header: %s", tc.header, body)
			}
			if code == 200 && !strings.Contains(body, `"protocolVersion"`) {
				t.Errorf("not an initialize result: %s", body)
			}
		})
		if tc.want == 403 {
			refused++
		}
	}
	evs := g.auditEvents(t)
	n := 0
	for _, ev := range evs {
		if ev.Type == policy.EventOriginDenied {
			n++
		}
	}
	if n != refused {
		t.Errorf("%d origin.denied events, want %d", n, refused)
	}
	_, metrics := httpGet(t, g.base+"/metrics")
	for _, want := range []string{
		`toolgate_origin_denied_total{header="host",project="default"} 2`,
		`toolgate_origin_denied_total{header="host",project="web"} 1`,
		`toolgate_origin_denied_total{header="origin",project="default"} 3`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, g.base+"/readyz", nil)
	req.Host = "evil.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("/readyz with a rebound name: %d", resp.StatusCode)
	}
}
