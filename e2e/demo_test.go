package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// startDemo runs `toolgate serve` without a configuration in its own
// folder with env, and returns the process, its endpoint and the key the
// banner printed.
func startDemo(t *testing.T, env []string) (proc *e2etest.Proc, endpoint, key string) {
	t.Helper()
	proc = e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: e2etest.BuildBinary(t, "./cmd/toolgate"),
		Args: []string{"serve", "--listen", "127.0.0.1:0"},
		Dir:  t.TempDir(),
		Env:  env,
	})
	m := listeningLine.FindStringSubmatch(proc.WaitForLine(t, "toolgate listening on", 60*time.Second))
	if m == nil {
		t.Fatal("no address in the listening line")
	}
	keyLine := proc.WaitForLine(t, "API key:", 10*time.Second)
	key = strings.TrimSpace(strings.SplitN(keyLine, "API key:", 2)[1])
	proc.WaitForLine(t, "claude mcp add --transport http toolgate "+m[1]+"/mcp --header \"Authorization: Bearer "+key+"\"", 10*time.Second)
	return proc, m[1] + "/mcp", key
}

// The demo keeps its key in the user's configuration folder: the key the
// first demo printed authenticates to the second one, and the banner says
// where it lives.
func TestDemoKeepsItsKey(t *testing.T) {
	checkLeaks(t)
	home, env := isolatedEnv(t)
	keyFile := filepath.Join(home, ".config", "toolgate", "demo", "key")

	first, _, key := startDemo(t, env)
	first.WaitForLine(t, "Key file:      "+keyFile, 10*time.Second)
	first.Stop()
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %s: %v %v", keyFile, fi, err)
	}

	second, url, again := startDemo(t, env)
	if again != key {
		t.Errorf("the second demo printed key %q, the first %q", again, key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := e2etest.ConnectHTTP(t, ctx, url, bearer(key), nil)
	res := callTool(t, cs, "demo__add", map[string]any{"a": 1, "b": 2})
	if b, _ := json.Marshal(res.StructuredContent); string(b) != `{"sum":3}` {
		t.Errorf("demo__add = %s", b)
	}
	if _, err := mcp.NewClient(&mcp.Implementation{Name: "nokey", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, nil); err == nil {
		t.Error("the demo accepted a client without its key")
	}
	second.Stop()

	// XDG_CONFIG_HOME moves it, as it moves the configuration folder.
	xdg := t.TempDir()
	third, _, other := startDemo(t, append(env, "XDG_CONFIG_HOME="+xdg))
	third.WaitForLine(t, "Key file:      "+filepath.Join(xdg, "toolgate", "demo", "key"), 10*time.Second)
	if other == key {
		t.Error("a demo with another configuration folder printed the same key")
	}
}

// toolgate run without a configuration runs the script the demo's banner
// shows against the demo's tools.
func TestRunWithoutConfig(t *testing.T) {
	_, env := isolatedEnv(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "script.js")
	if err := os.WriteFile(script, []byte("const r = await tools.demo.list_records({limit: 20}); return r.total;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := toolgateJSON[struct {
		Result    json.RawMessage `json:"result"`
		ToolCalls []struct {
			Tool string `json:"tool"`
			OK   bool   `json:"ok"`
		} `json:"toolCalls"`
	}](t, dir, env, "run", "script.js", "--json")
	if string(out.Result) != "50" || len(out.ToolCalls) != 1 || out.ToolCalls[0].Tool != "demo__list_records" || !out.ToolCalls[0].OK {
		t.Errorf("run = %+v", out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("run left files behind: %v", entries)
	}
}
