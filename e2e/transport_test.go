package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy/audit"
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
		if ev.Type == audit.EventOriginDenied {
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

// TestDeclaredOversizeBody sends headers declaring a body far over
// limits.maxRequestBodyBytes and then nothing: the answer is 413 at once,
// not a connection held until readTimeout, and the connection is closed.
func TestDeclaredOversizeBody(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`, jsonString(up)))
	addr := strings.TrimPrefix(g.base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: %d\r\n\r\n{", addr, g.keys["default"], int64(100)<<30)
	// readTimeout is 60 s: an answer within 10 s is not the timeout's.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "maxRequestBodyBytes") {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if !resp.Close {
		t.Error("the connection is kept open for a body the gateway will not read")
	}
}

// eventStream opens the event stream (GET) of session sid, as clients
// keep it open, until the test ends; it returns once the gateway serves
// it.
func eventStream(t *testing.T, url, key, sid string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("event stream: %d %q %v", resp.StatusCode, line, err)
	}
}

// accessLayerCalls reads toolgate_access_layer_calls_total of the default
// project.
func accessLayerCalls(t *testing.T, g *gateway) float64 {
	t.Helper()
	_, body := httpGet(t, g.base+"/metrics")
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `toolgate_access_layer_calls_total{project="default"} `); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestOneAnswerPerRequest sends tools/calls that the MCP SDK's transport
// refuses, and that toolgate's access layer used to answer: an Accept
// header that only looks like the right one, a POST with Last-Event-ID,
// and a second call under an id in flight. Each is refused as the SDK
// refuses it, and the calls the access layer may answer are answered by it
// (its counter moves).
func TestOneAnswerPerRequest(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedTools": ["echo", "slow"]}}}`, jsonString(up)))
	key := g.keys["default"]
	sid := rawSession(t, g.URL(), bearer(key))
	eventStream(t, g.URL(), key, sid)
	hs := func(extra ...string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + key, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	call := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"hi"}}}`, id)
	}
	before := accessLayerCalls(t, g)
	if code, _, body := post(t, nil, g.URL(), hs(), call(1)); code != 200 || !strings.Contains(body, `"hi"`) {
		t.Fatalf("a plain call: %d %s", code, body)
	}
	if after := accessLayerCalls(t, g); after != before+1 {
		t.Errorf("the access layer answered %v calls of 1", after-before)
	}
	for _, tc := range []struct {
		name   string
		header []string
		says   string
	}{
		{"Accept that only looks right", []string{"Accept", "application/json-seq, text/event-streams"}, "Accept must contain both"},
		{"Last-Event-ID on a POST", []string{"Last-Event-ID", "x_1"}, "can't send Last-Event-ID for POST request"},
	} {
		if code, _, body := post(t, nil, g.URL(), hs(tc.header...), call(2)); code != 400 || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %s", tc.name, code, body)
		}
	}

	// A slow call in flight under id 3, then another call under id 3.
	done := make(chan struct{})
	go func() {
		defer close(done)
		post(t, nil, g.URL(), hs(), `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"s__slow","arguments":{"ms":60000}}}`)
	}()
	eventually(t, 10*time.Second, "the slow call in flight", func() bool {
		_, body := httpGet(t, g.base+"/metrics")
		return strings.Contains(string(body), "toolgate_tool_calls_in_flight 1")
	})
	code, _, body := post(t, nil, g.URL(), hs(), call(3))
	if code != 400 || !strings.Contains(body, `"id":3`) || !strings.Contains(body, "duplicate in-flight request ID 3") {
		t.Errorf("a second call under an id in flight: %d %s", code, body)
	}
	if code, _, body := post(t, nil, g.URL(), hs(), `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}`); code != 202 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the cancelled call did not end")
	}
}
