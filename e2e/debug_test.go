package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// serve --debug-listen offers Go's profiles on its own loopback address, and
// only there: the MCP listener does not serve them, and an address off
// loopback is refused.
func TestDebugListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	up := testUpstream(t)
	g := startGateway(t, `{"mcpServers": {"s": {"command": `+jsonString(up)+`}}}`, "--debug-listen", addr)

	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("heap profile: %s\n%.200s", resp.Status, body)
	}
	resp, err = http.Get(g.base + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("the MCP listener serves /debug/pprof/: %s", resp.Status)
	}

	code, out := runToolgate(t, t.TempDir(), nil, "serve", "-c", g.configPath, "--listen", "127.0.0.1:0", "--debug-listen", "0.0.0.0:0")
	if code == 0 || !strings.Contains(out, "--debug-listen") || !strings.Contains(out, "loopback only") {
		t.Errorf("serve --debug-listen 0.0.0.0:0: exit %d, output %q; want a refusal naming the flag", code, out)
	}
}
