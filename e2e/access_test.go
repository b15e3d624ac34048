package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/mcpclient"
)

// initialize sends a raw MCP initialize request with the given headers and
// returns the status, headers and body.
func initialize(t *testing.T, client *http.Client, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`
	return post(t, client, url, headers, body)
}

func post(t *testing.T, client *http.Client, url string, headers map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if client == nil {
		client = &http.Client{Timeout: 20 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(b)
}

func bearer(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }

// runCLI runs a toolgate subcommand against the gateway's configuration.
func (g *gateway) runCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out := runToolgate(t, filepath.Dir(g.configPath), nil, append(args, "-c", g.configPath)...)
	if code != 0 {
		t.Fatalf("toolgate %v: exit %d\n%s", args, code, out)
	}
	return out
}

type cliKey struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	Status string `json:"status"`
	Calls  int64  `json:"calls"`
}

func TestAPIKeys(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"projects": {
			"default": {"mcpServers": {"s": {"command": %[1]s, "allowedTools": ["echo"]}}},
			"other":   {"mcpServers": {"s": {"command": %[1]s, "allowedTools": ["echo"]}}}
		}
	}`, jsonString(up)))
	url := g.URL()
	good := g.keys["default"]
	id := strings.Split(good, "_")[1]
	forged := "tg_" + id + "_" + strings.Repeat("A", 43)

	cases := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"no key", nil, 401},
		{"malformed key", bearer("not-a-key"), 401},
		{"unknown key", bearer("tg_aaaaaaaaaaaa_" + strings.Repeat("B", 43)), 401},
		{"known id, wrong secret", bearer(forged), 401},
		{"key of another project", bearer(g.keys["other"]), 401},
		{"basic auth scheme", map[string]string{"Authorization": "Basic " + good}, 401},
		{"bearer key", bearer(good), 200},
		{"X-API-Key header", map[string]string{"X-API-Key": good}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := initialize(t, nil, url, tc.headers)
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %s", code, tc.want, body)
			}
			if code == 401 {
				if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
				}
				var rpc struct {
					Error struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(body), &rpc); err != nil || rpc.Error.Code == 0 {
					t.Errorf("401 body is not a JSON-RPC error: %s", body)
				}
				if strings.Contains(body, good) {
					t.Errorf("the error echoes a key")
				}
			}
		})
	}

	// Rotation with overlap: both keys work, then only the successor.
	var rotated cliKey
	out := g.runCLI(t, "keys", "rotate", id, "--overlap", "3s", "--json")
	if err := json.Unmarshal([]byte(out), &rotated); err != nil || rotated.Key == "" {
		t.Fatalf("keys rotate --json = %q (%v)", out, err)
	}
	eventually(t, 10*time.Second, "the successor to work", func() bool {
		code, _, _ := initialize(t, nil, url, bearer(rotated.Key))
		return code == 200
	})
	if code, _, _ := initialize(t, nil, url, bearer(good)); code != 200 {
		t.Errorf("the old key stopped working inside the overlap: %d", code)
	}
	eventually(t, 15*time.Second, "the old key to expire", func() bool {
		code, _, _ := initialize(t, nil, url, bearer(good))
		return code == 401
	})
	if code, _, _ := initialize(t, nil, url, bearer(rotated.Key)); code != 200 {
		t.Errorf("the successor stopped working: %d", code)
	}

	// Traffic on a key shows in `keys list`, and a revoked key stops
	// working even for a session it opened.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs := e2etest.ConnectHTTP(t, ctx, url, bearer(rotated.Key), nil)
	if got := text(callTool(t, cs, "s__echo", map[string]any{"text": "x"})); got != "x" {
		t.Fatalf("echo = %q", got)
	}
	eventually(t, 20*time.Second, "the successor's traffic in keys list", func() bool {
		var keys []cliKey
		_ = json.Unmarshal([]byte(g.runCLI(t, "keys", "list", "--json")), &keys)
		for _, k := range keys {
			if k.ID == rotated.ID {
				return k.Calls > 0
			}
		}
		return false
	})
	stream := openEventStream(t, url, bearer(rotated.Key))
	select {
	case <-stream:
		t.Fatal("the event stream ended before the key was revoked")
	case <-time.After(2 * time.Second): // more than one check of its credential
	}
	g.runCLI(t, "keys", "revoke", rotated.ID)
	select {
	case <-stream:
	case <-time.After(15 * time.Second):
		t.Error("the event stream of a session of the revoked key is still open 15 s after the revocation")
	}
	eventually(t, 15*time.Second, "the revoked key to be refused in its session", func() bool {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": "y"}})
		return err != nil
	})
	var keys []cliKey
	_ = json.Unmarshal([]byte(g.runCLI(t, "keys", "list", "--json")), &keys)
	for _, k := range keys {
		if k.ID == rotated.ID && k.Status != "revoked" {
			t.Errorf("revoked key listed as %q", k.Status)
		}
	}
}

// openEventStream opens a session with headers and its event stream (the
// GET a client keeps open for the server's messages); the channel is
// closed when the stream ends.
func openEventStream(t *testing.T, url string, headers map[string]string) <-chan struct{} {
	t.Helper()
	sid := rawSession(t, url, headers)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("GET event stream: %d", resp.StatusCode)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	return ended
}

// rawSession opens an MCP session over plain HTTP requests and returns its
// id.
func rawSession(t *testing.T, url string, headers map[string]string) string {
	t.Helper()
	code, h, body := initialize(t, nil, url, headers)
	if code != 200 {
		t.Fatalf("initialize: %d %s", code, body)
	}
	sid := h.Get("Mcp-Session-Id")
	hs := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
	for k, v := range headers {
		hs[k] = v
	}
	if code, _, body := post(t, nil, url, hs, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); code != 202 {
		t.Fatalf("initialized: %d %s", code, body)
	}
	return sid
}

func TestRateLimits(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"rateLimit": {"perKeyRequestsPerMinute": 60, "perKeyBurst": 3},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	key := g.keys["default"]
	sid := rawSession(t, g.URL(), bearer(key))
	hs := map[string]string{"Authorization": "Bearer " + key, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"}
	call := func(i int) (int, http.Header, string) {
		return post(t, nil, g.URL(), hs, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"hi"}}}`, i+10))
	}
	for i := range 3 {
		if code, _, body := call(i); code != 200 || !strings.Contains(body, `"hi"`) {
			t.Fatalf("call %d within the burst: %d %s", i, code, body)
		}
	}
	code, h, body := call(3)
	if code != 429 {
		t.Fatalf("call past the burst: %d %s", code, body)
	}
	retry, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 2 {
		t.Errorf("Retry-After = %q", h.Get("Retry-After"))
	}
	if !strings.Contains(body, "retryAfterMs") {
		t.Errorf("429 body carries no retryAfterMs: %s", body)
	}
	// Honouring Retry-After is enough to be served again.
	time.Sleep(time.Duration(retry) * time.Second)
	if code, _, body := call(4); code != 200 {
		t.Errorf("call after Retry-After: %d %s", code, body)
	}

	// Parallel clients on one key never exceed the budget by more than
	// the burst (plus what refills while they run).
	start := time.Now()
	results := make(chan int, 40)
	for w := range 8 {
		go func() {
			for i := range 5 {
				c, _, _ := call(100 + w*10 + i)
				results <- c
			}
		}()
	}
	ok := 0
	for range 40 {
		if <-results == 200 {
			ok++
		}
	}
	allowed := 3 + int(time.Since(start).Seconds()) + 1
	if ok > allowed {
		t.Errorf("%d calls got through, budget allows at most %d", ok, allowed)
	}
}

func TestIPRules(t *testing.T) {
	up := testUpstream(t)
	server := fmt.Sprintf(`"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}`, jsonString(up))
	tests := []struct {
		name string
		cfg  string
		xff  string
		want int
	}{
		{"allow list without the client", `"allowedIPs": ["10.0.0.0/8"]`, "", 403},
		{"forwarded address ignored from an untrusted peer", `"allowedIPs": ["10.0.0.0/8"]`, "10.1.2.3", 403},
		{"forwarded address believed from a trusted proxy", `"allowedIPs": ["10.0.0.0/8", "fd00::/8"], "trustedProxies": ["127.0.0.1/32"]`, "10.1.2.3", 200},
		{"trusted proxy forwarding a refused address", `"allowedIPs": ["10.0.0.0/8"], "trustedProxies": ["127.0.0.1/32"]`, "192.168.1.1", 403},
		{"deny beats allow", `"allowedIPs": ["127.0.0.0/8"], "deniedIPs": ["127.0.0.1"]`, "", 403},
		{"IPv6 deny through a proxy", `"deniedIPs": ["2001:db8::/32"], "trustedProxies": ["127.0.0.1/32"]`, "2001:db8::7", 403},
		{"allowed", `"allowedIPs": ["127.0.0.1/32", "::1"]`, "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, "{"+tc.cfg+", "+server+"}")
			h := bearer(g.keys["default"])
			if tc.xff != "" {
				h["X-Forwarded-For"] = tc.xff
			}
			code, _, body := initialize(t, nil, g.URL(), h)
			if code != tc.want {
				t.Errorf("status %d, want %d; %s", code, tc.want, body)
			}
			if code == 403 && !strings.Contains(body, "not allowed") {
				t.Errorf("403 body does not say why: %s", body)
			}
		})
	}
	t.Run("per project", func(t *testing.T) {
		g := startGateway(t, fmt.Sprintf(`{"projects": {
			"open":   {"mcpServers": {"s": {"command": %[1]s}}},
			"closed": {"mcpServers": {"s": {"command": %[1]s}}, "deniedIPs": ["127.0.0.0/8"]}
		}}`, jsonString(up)))
		if code, _, body := initialize(t, nil, g.base+"/v1/mcp/open", bearer(g.keys["open"])); code != 200 {
			t.Errorf("open project: %d %s", code, body)
		}
		if code, _, body := initialize(t, nil, g.base+"/v1/mcp/closed", bearer(g.keys["closed"])); code != 403 {
			t.Errorf("closed project: %d %s", code, body)
		}
	})
}

func TestRequestLimits(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"limits": {"maxRequestBodyBytes": 2048, "maxSessionsPerKey": 2},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	key := g.keys["default"]
	big := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"pad":%q}}`, strings.Repeat("x", 4096))
	if code, _, body := post(t, nil, g.URL(), bearer(key), big); code != 413 || !strings.Contains(body, "maxRequestBodyBytes") {
		t.Errorf("oversized body: %d %s", code, body)
	}
	rawSession(t, g.URL(), bearer(key))
	rawSession(t, g.URL(), bearer(key))
	if code, _, body := initialize(t, nil, g.URL(), bearer(key)); code != 429 || !strings.Contains(body, "maxSessionsPerKey") {
		t.Errorf("third session: %d %s", code, body)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and returns its
// pool.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.CertPool {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "toolgate test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	var cb, kpem bytes.Buffer
	_ = pem.Encode(&cb, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	_ = pem.Encode(&kpem, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	// Write the key first: the gateway reloads when either file changes.
	if err := os.WriteFile(keyFile+".tmp", kpem.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile+".tmp", cb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Rename(keyFile+".tmp", keyFile)
	_ = os.Rename(certFile+".tmp", certFile)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func TestTLS(t *testing.T) {
	up := testUpstream(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeCert(t, certFile, keyFile, 1)
	g := startGateway(t, fmt.Sprintf(`{
		"tls": {"certFile": %s, "keyFile": %s},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(certFile), jsonString(keyFile), jsonString(up)))
	if !strings.HasPrefix(g.base, "https://") {
		t.Fatalf("gateway listens on %s", g.base)
	}
	client := func(pool *x509.CertPool, maxVersion uint16) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: maxVersion}}}
	}
	code, _, body := initialize(t, client(pool, 0), g.URL(), bearer(g.keys["default"]))
	if code != 200 {
		t.Fatalf("initialize over HTTPS: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc := mcp.NewClient(&mcp.Implementation{Name: "tls", Version: "1"}, nil)
	cs, err := mc.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.URL(), HTTPClient: &http.Client{Transport: &mcpclient.HeaderTransport{Base: client(pool, 0).Transport, Headers: bearer(g.keys["default"])}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if got := text(callTool(t, cs, "s__echo", map[string]any{"text": "secure"})); got != "secure" {
		t.Errorf("echo over HTTPS = %q", got)
	}
	if _, err := client(pool, tls.VersionTLS11).Get(g.base + "/healthz"); err == nil {
		t.Error("a TLS 1.1 client was served")
	}
	// A renewed certificate is served without a restart.
	pool2 := writeCert(t, certFile, keyFile, 2)
	eventually(t, 15*time.Second, "the renewed certificate", func() bool {
		c := client(pool2, 0)
		c.Transport.(*http.Transport).DisableKeepAlives = true
		resp, err := c.Get(g.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.TLS != nil && resp.TLS.PeerCertificates[0].SerialNumber.Int64() == 2
	})
}
