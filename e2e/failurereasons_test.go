package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// startGatewayAt runs the gateway at the given log level (the operator's
// view: INFO by default) with the helpers' leak check.
func startGatewayAt(t *testing.T, level, cfg string) *gateway {
	t.Helper()
	checkLeaks(t)
	return startGatewayBinary(t, e2etest.BuildBinary(t, "./cmd/toolgate"), writeConfig(t, cfg), "--log-level", level)
}

// logLines returns the lines of the gateway's log that contain every one
// of substrs.
func (g *gateway) logLines(substrs ...string) []string {
	var out []string
	for line := range strings.Lines(g.proc.Stderr()) {
		match := true
		for _, s := range substrs {
			match = match && strings.Contains(line, s)
		}
		if match {
			out = append(out, strings.TrimRight(line, "\n"))
		}
	}
	return out
}

// stderrOf returns the stderr tail /readyz shows for an upstream, one line
// a line.
func stderrOf(readyz map[string]any, server string) string {
	lines, _ := dig(readyz, "projects", "default", "upstreams", server, "stderr").([]any)
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintln(&b, l)
	}
	return b.String()
}

// A stdio upstream that fails shows the last lines of its stderr in the
// WARN line of its failure and in /readyz, at the default log level: an
// npx server with a mistyped package name shows npm's E404, not only the
// EOF of the handshake; one that crashes after it served shows what it
// wrote last.
func TestStdioFailureShowsStderr(t *testing.T) {
	up := jsonString(testUpstream(t))
	servers := fmt.Sprintf(`"broken": {"command": %[1]s, "args": ["-fail-start"]},
		"crashes": {"command": %[1]s, "args": ["-crash-after", "1"], "allowedTools": ["echo"]}`, up)
	npx, npxErr := exec.LookPath("npx")
	pkg := "@modelcontextprotocol/server-doesnotexist-" + rand.Text()[:10]
	if npxErr == nil {
		servers += fmt.Sprintf(`, "typo": {"command": %s, "args": ["-y", %s]}`, jsonString(npx), jsonString(strings.ToLower(pkg)))
	}
	g := startGatewayAt(t, "info", fmt.Sprintf(`{"startupTimeout": "60s", "mcpServers": {%s}}`, servers))

	const failLine = "testupstream: failing at start as asked (-fail-start)"
	_, body := g.readyz(t)
	if got := stderrOf(body, "broken"); !strings.Contains(got, failLine) {
		t.Errorf("readyz stderr of broken = %q, want it to hold %q\n%v", got, failLine, body)
	}
	if e := dig(body, "projects", "default", "upstreams", "broken", "error"); e == nil || e == "" {
		t.Errorf("readyz error of broken is empty")
	}
	warn := g.logLines("level=WARN", `msg="upstream unhealthy"`, "server=broken")
	if len(warn) == 0 || !strings.Contains(warn[0], failLine) {
		t.Errorf("WARN lines of broken = %q, want the first to hold %q", warn, failLine)
	}

	cs := connect(t, g.URL(), nil)
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "crashes__echo", Arguments: map[string]any{"text": "hi"}})
		cancel()
	}
	const crashLine = "testupstream: exiting after 1 tool calls (-crash-after)"
	eventually(t, 30*time.Second, "the crash's WARN line", func() bool {
		warn := g.logLines("level=WARN", `msg="upstream unhealthy"`, "server=crashes")
		return len(warn) > 0 && strings.Contains(warn[0], crashLine)
	})

	if npxErr != nil {
		t.Log("npx not found: the npm case is not run")
		return
	}
	got := stderrOf(body, "typo")
	for _, offline := range []string{"ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH"} {
		if strings.Contains(got, offline) {
			t.Skipf("the npm registry is not reachable: %s", got)
		}
	}
	if !strings.Contains(got, "npm error code E404") || !strings.Contains(got, strings.ToLower(pkg)) {
		t.Errorf("readyz stderr of typo = %q, want npm's E404 for %s", got, pkg)
	}
	warn = g.logLines("level=WARN", `msg="upstream unhealthy"`, "server=typo")
	if len(warn) == 0 || !strings.Contains(warn[0], "E404") {
		t.Errorf("WARN lines of typo = %q, want npm's E404 in the first", warn)
	}
}

// An HTTP upstream that refuses the handshake shows the status and the
// first bytes of the body in the WARN line and in /readyz, bounded, and
// without the server's configured secrets or its response headers.
func TestHTTPFailureShowsStatusAndBody(t *testing.T) {
	checkLeaks(t)
	const token = "sk-live-0a1b2c3d4e5f6a7b8c9d"
	big := strings.Repeat("all work and no play ", 5000)
	mux := http.NewServeMux()
	mux.HandleFunc("/unauthorized", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hdr-realm-secret", error="invalid_token"`)
		w.Header().Set("Set-Cookie", "session=hdr-cookie-secret")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		// A server that echoes the credential it refused.
		fmt.Fprintf(w, `{"error":"invalid_token","error_description":"the token %s has expired"}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	})
	mux.HandleFunc("/forbidden", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "this key lacks the mcp:tools scope", http.StatusForbidden)
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "<html>\n<body>\n<h1>Internal Server Error</h1>\n<p>database is down</p>\n</body>\n</html>\n")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too big: "+big, http.StatusBadRequest)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	g := startGatewayAt(t, "info", fmt.Sprintf(`{"mcpServers": {
		"unauthorized": {"url": %[1]q, "transport": "http", "headers": {"Authorization": "Bearer %[5]s"}},
		"forbidden":    {"url": %[2]q, "transport": "http"},
		"missing":      {"url": %[3]q, "transport": "http"},
		"broken":       {"url": %[4]q, "transport": "http"},
		"big":          {"url": %[6]q}
	}}`, srv.URL+"/unauthorized", srv.URL+"/forbidden", srv.URL+"/nothing-here", srv.URL+"/broken", token, srv.URL+"/big"))

	_, body := g.readyz(t)
	for _, tc := range []struct{ server, want string }{
		{"unauthorized", `401 Unauthorized: {"error":"invalid_token","error_description":"the token `},
		{"unauthorized", `has expired"}`},
		{"forbidden", "403 Forbidden: this key lacks the mcp:tools scope"},
		{"missing", "404 Not Found: 404 page not found"},
		{"broken", "500 Internal Server Error: <html> <body> <h1>Internal Server Error</h1> <p>database is down</p>"},
		{"big", "400 Bad Request: too big: all work and no play"},
	} {
		e, _ := dig(body, "projects", "default", "upstreams", tc.server, "error").(string)
		if !strings.Contains(e, tc.want) {
			t.Errorf("readyz error of %s = %q, want it to hold %q", tc.server, e, tc.want)
		}
		warn := g.logLines("level=WARN", `msg="upstream unhealthy"`, "server="+tc.server)
		if len(warn) == 0 || !strings.Contains(strings.ReplaceAll(warn[0], `\"`, `"`), tc.want) {
			t.Errorf("WARN lines of %s = %q, want the first to hold %q", tc.server, warn, tc.want)
		}
		if len(e) > 2048 {
			t.Errorf("readyz error of %s is %d bytes long: %q", tc.server, len(e), e)
		}
	}
	for _, secret := range []string{token, "hdr-realm-secret", "hdr-cookie-secret"} {
		if strings.Contains(g.proc.Stderr(), secret) {
			t.Errorf("the log shows %q", secret)
		}
		_, raw := httpGet(t, g.base+"/readyz")
		if strings.Contains(string(raw), secret) {
			t.Errorf("readyz shows %q", secret)
		}
	}
}
