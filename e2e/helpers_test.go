package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/leakcheck"
	"github.com/toolgate/toolgate/internal/mcpclient"
	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/apikey"
)

// TestMain fails the package when its tests leave goroutines running;
// checkLeaks does the same after each test that uses the helpers below.
func TestMain(m *testing.M) {
	os.Exit(leakcheck.Verify(servertest.Main(m)))
}

// leakChecked holds the tests whose leak check is registered.
var leakChecked sync.Map

// checkLeaks registers, once per test, a check that runs after the test's
// later cleanups (its gateway process stopped, its client sessions
// closed) and fails the test if a goroutine it started is still running.
// Goroutines that were running when the check was registered are not the
// helpers' and are left to the test's own cleanups. Idle keep-alive
// connections of http.DefaultTransport (the test's clients use it) are
// closed first: they are the process's connection pool, not a leak, and
// may point at an upstream that the test stops after the check; a
// connection still in use is not idle and is reported.
func checkLeaks(t *testing.T) {
	if _, loaded := leakChecked.LoadOrStore(t, true); loaded {
		return
	}
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		leakChecked.Delete(t)
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		leakcheck.Check(t, ignore)
	})
}

// gateway is a running `toolgate serve` started by a test.
type gateway struct {
	proc       *e2etest.Proc
	base       string // http://127.0.0.1:PORT
	configPath string
	keys       map[string]string // project -> an API key of it
}

// gatewayKeys maps the base URL of each running test gateway to its keys,
// so that connect can authenticate to whichever endpoint it is given.
var gatewayKeys sync.Map

// createKeys creates one API key per project of the configuration at path,
// in the key store the gateway will open. A configuration that does not
// load gets none.
func createKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		return nil
	}
	ctx := context.Background()
	store, err := apikey.OpenStore(ctx, filepath.Join(cfg.DataDir, "toolgate.db"))
	if err != nil {
		t.Fatalf("opening the key store: %v", err)
	}
	defer store.Close()
	keys := map[string]string{}
	for name := range cfg.Projects {
		plain, _, err := store.Create(ctx, name, "e2e", 0)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = plain
	}
	return keys
}

// keyFor returns the key a test uses for an MCP endpoint of a test gateway.
func keyFor(url string) string {
	u, err := neturl.Parse(url)
	if err != nil {
		return ""
	}
	v, ok := gatewayKeys.Load(u.Scheme + "://" + u.Host)
	if !ok {
		return ""
	}
	project := config.DefaultProject
	if rest, ok := strings.CutPrefix(u.Path, "/v1/mcp/"); ok {
		project = rest
	}
	return v.(map[string]string)[project]
}

// URL returns the MCP endpoint of the default project.
func (g *gateway) URL() string { return g.base + "/mcp" }

var listeningLine = regexp.MustCompile(`toolgate listening on (https?://[0-9.:\[\]]+)/mcp`)

// writeConfig writes a JSON configuration into a temporary folder.
func writeConfig(t *testing.T, cfg string) string {
	t.Helper()
	return writeConfigAs(t, "toolgate.json", cfg)
}

// writeConfigAs writes a configuration file of the given name (its
// extension says the format) into a temporary folder.
func writeConfigAs(t *testing.T, name, cfg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startGateway runs `toolgate serve -c CONFIG --listen 127.0.0.1:0` with
// extra arguments and waits until it listens.
func startGateway(t *testing.T, cfg string, args ...string) *gateway {
	t.Helper()
	path := writeConfig(t, cfg)
	return startGatewayFile(t, path, args...)
}

func startGatewayFile(t *testing.T, path string, args ...string) *gateway {
	t.Helper()
	checkLeaks(t)
	return startGatewayBinary(t, e2etest.BuildBinary(t, "./cmd/toolgate"), path, append([]string{"--log-level", "debug"}, args...)...)
}

// startGatewayBinary runs bin (a toolgate build) as `serve -c path` on a
// free loopback port, with API keys created for its projects.
func startGatewayBinary(t *testing.T, bin, path string, args ...string) *gateway {
	t.Helper()
	keys := createKeys(t, path)
	proc := e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: bin,
		Args: append([]string{"serve", "-c", path, "--listen", "127.0.0.1:0"}, args...),
		Dir:  filepath.Dir(path),
	})
	line := proc.WaitForLine(t, "toolgate listening on", 60*time.Second)
	m := listeningLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("cannot find the address in %q", line)
	}
	g := &gateway{proc: proc, base: m[1], configPath: path, keys: keys}
	gatewayKeys.Store(g.base, keys)
	t.Cleanup(func() { gatewayKeys.Delete(g.base) })
	return g
}

// sessionVersion is the protocol version the clients of connect and
// connectClient ask for: the tests that use them compare the gateway's
// answers with an upstream's own and relay upstream requests (sampling,
// elicitation, roots) to the client, which a session of 2025-11-25 has.
// A client on 2026-07-28 gets the same answers with the revision's
// fields added, and no upstream requests (docs/deploy.md); the tests of
// replicas, of serve --stdio and the gateway's transcripts cover it.
const sessionVersion = "2025-11-25"

// connect opens an MCP client session to url, with the test gateway's key
// for that endpoint, on sessionVersion.
func connect(t *testing.T, url string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var headers map[string]string
	if k := keyFor(url); k != "" {
		headers = map[string]string{"Authorization": "Bearer " + k}
	}
	return e2etest.ConnectHTTPVersion(t, ctx, url, headers, opts, sessionVersion)
}

// toolNames lists the tools a session sees, sorted.
func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("listing tools: %v", err)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

// callTool calls a tool and fails the test on a protocol error.
func callTool(t *testing.T, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("calling %s: %v", name, err)
	}
	return res
}

// text joins the text content of a result.
var text = mcpclient.ResultText

// testUpstream returns the path of the built Go test upstream.
func testUpstream(t *testing.T) string {
	return e2etest.BuildBinary(t, "./internal/testupstream")
}

// jsonString quotes s for a JSON configuration.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// eventually polls cond until it is true or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyz fetches /readyz and decodes it.
func (g *gateway) readyz(t *testing.T) (int, map[string]any) {
	t.Helper()
	code, body := httpGet(t, g.base+"/readyz")
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("readyz answered %q: %v", body, err)
	}
	return code, v
}

// upstreamState reads one upstream's state from /readyz.
func (g *gateway) upstreamState(t *testing.T, project, server string) string {
	_, v := g.readyz(t)
	return fmt.Sprint(dig(v, "projects", project, "upstreams", server, "state"))
}

// dig walks nested JSON objects.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
