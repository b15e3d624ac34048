package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// runToolgate runs the toolgate binary to completion and returns its exit
// code and output.
func runToolgate(t *testing.T, dir string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(e2etest.BuildBinary(t, "./cmd/toolgate"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("toolgate %v did not exit; output:\n%s", args, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// Point 1: configuration kinds, interpolation, and errors that name the
// variable and key path.
func TestConfigInterpolationReachesUpstreams(t *testing.T) {
	up := testUpstream(t)
	httpUp := e2etest.StartProcess(t, e2etest.ProcOptions{Path: up, Args: []string{"-transport", "http", "-listen", "127.0.0.1:0", "-name", "remote"}})
	url := strings.TrimPrefix(httpUp.WaitForLine(t, "LISTENING ", 30*time.Second), "LISTENING ")
	url = strings.TrimSpace(url)
	workdir := t.TempDir()

	t.Setenv("TG_REMOTE_URL", url)
	t.Setenv("TG_TOKEN", "s3cret-token")
	t.Setenv("TG_GREETING", "hello from env")
	t.Setenv("TG_WORKDIR", workdir)
	t.Setenv("TG_LEAK", "gateway-only")
	g := startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"local": {
				"command": %s,
				"args": ["-name", "${env:TG_GREETING}"],
				"env": {"GREETING": "${TG_GREETING}", "Mixed_Case": "kept"},
				"cwd": "${TG_WORKDIR}",
				"allowedToolsGlob": ["environ", "echo"]
			},
			"remote": {
				"url": "${TG_REMOTE_URL}",
				"headers": {"Authorization": "Bearer ${TG_TOKEN}", "X-Static": "yes"},
				"allowedTools": ["headers"]
			}
		}
	}`, jsonString(up)))
	// The client's own credentials must never reach an upstream.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The header carries the gateway's key; the upstream must never see it.
	cs := e2etest.ConnectHTTP(t, ctx, g.URL(), map[string]string{"Authorization": "Bearer " + g.keys["default"]}, nil)

	if diff := cmp.Diff([]string{"local__echo", "local__environ", "remote__headers"}, toolNames(t, cs)); diff != "" {
		t.Errorf("tools (-want +got):\n%s", diff)
	}
	var env struct {
		Cwd string         `json:"cwd"`
		Env map[string]any `json:"env"`
	}
	res := callTool(t, cs, "local__environ", map[string]any{"names": []string{"GREETING", "Mixed_Case", "TG_LEAK", "PATH"}})
	if err := json.Unmarshal([]byte(text(res)), &env); err != nil {
		t.Fatalf("environ: %v in %q", err, text(res))
	}
	if env.Env["GREETING"] != "hello from env" || env.Env["Mixed_Case"] != "kept" {
		t.Errorf("env not passed as configured: %v", env.Env)
	}
	if env.Env["TG_LEAK"] != nil {
		t.Errorf("the gateway's own environment leaked to a stdio upstream: TG_LEAK=%v", env.Env["TG_LEAK"])
	}
	if env.Env["PATH"] == nil {
		t.Errorf("PATH is not inherited")
	}
	if real, _ := filepath.EvalSymlinks(workdir); env.Cwd != workdir && env.Cwd != real {
		t.Errorf("cwd = %q, want %q", env.Cwd, workdir)
	}
	var sc struct {
		Server string `json:"server"`
	}
	echo := callTool(t, cs, "local__echo", map[string]any{"text": "x"})
	b, _ := json.Marshal(echo.StructuredContent)
	_ = json.Unmarshal(b, &sc)
	if sc.Server != "hello from env" {
		t.Errorf("args not interpolated: server name %q", sc.Server)
	}

	var headers map[string][]string
	if err := json.Unmarshal([]byte(text(callTool(t, cs, "remote__headers", map[string]any{}))), &headers); err != nil {
		t.Fatal(err)
	}
	if got := headers["Authorization"]; len(got) != 1 || got[0] != "Bearer s3cret-token" || strings.Contains(fmt.Sprint(headers), g.keys["default"]) {
		t.Errorf("upstream saw Authorization %q, want only the configured one", got)
	}
	if got := headers["X-Static"]; len(got) != 1 || got[0] != "yes" {
		t.Errorf("upstream saw X-Static %q", got)
	}
}

func TestConfigErrorsStopStartup(t *testing.T) {
	up := testUpstream(t)
	tests := []struct {
		name string
		file string
		body string
		want []string
	}{
		{
			name: "missing variable",
			file: "toolgate.json",
			body: `{"mcpServers": {"api": {"url": "https://example.invalid/mcp", "headers": {"Authorization": "Bearer ${TG_SURELY_UNSET_TOKEN}"}}}}`,
			want: []string{"TG_SURELY_UNSET_TOKEN", "mcpServers.api.headers.Authorization"},
		},
		{
			name: "unknown key and bad glob, all listed",
			file: "toolgate.yaml",
			body: "mcpServers:\n  fs:\n    comand: npx\n    denyToolsGlob: ['[unclosed']\n",
			want: []string{"mcpServers.fs.comand", "[unclosed"},
		},
		{
			name: "collision between two unprefixed servers",
			file: "toolgate.toml",
			body: fmt.Sprintf("[mcpServers.a]\ncommand = %s\nprefix = \"\"\n[mcpServers.b]\ncommand = %s\nprefix = \"\"\n", jsonString(up), jsonString(up)),
			want: []string{`tool name "echo" is offered by servers a and b`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := runToolgate(t, dir, nil, "serve", "-c", tc.file, "--listen", "127.0.0.1:0")
			if code != 1 {
				t.Errorf("exit code %d, want 1; output:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}

// Points 3 and 4: namespacing, prefixes and every filter rule; a hidden
// tool is refused exactly like one that does not exist.
func TestNamespacingAndFilters(t *testing.T) {
	up := testUpstream(t)
	g := startGatewayFile(t, writeConfigAs(t, "toolgate.yaml", fmt.Sprintf(`
mcpServers:
  plain:
    command: %[1]s
    allowedToolsGlob: ["e*", "fail", "slow"]
    denyToolsGlob: ["environ", "sl*"]
  custom:
    command: %[1]s
    prefix: "c."
    allowedTools: ["echo", "content"]
  bare:
    command: %[1]s
    prefix: ""
    allowedTools: ["stats"]
`, jsonString(up))))
	cs := connect(t, g.URL(), nil)
	got := toolNames(t, cs)
	want := []string{"c.content", "c.echo", "plain__echo", "plain__elicit", "plain__fail", "stats"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tools (-want +got):\n%s", diff)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, unknownErr := cs.CallTool(ctx, &mcp.CallToolParams{Name: "plain__nosuchtool", Arguments: map[string]any{}})
	if unknownErr == nil {
		t.Fatal("calling an unknown tool succeeded")
	}
	for _, hidden := range []string{"plain__environ", "plain__slow", "plain__crash", "c.fail", "fail", "bare__stats", "custom__echo"} {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: hidden, Arguments: map[string]any{}})
		if err == nil {
			t.Errorf("calling hidden tool %s succeeded", hidden)
			continue
		}
		if a, b := strings.ReplaceAll(err.Error(), hidden, "NAME"), strings.ReplaceAll(unknownErr.Error(), "plain__nosuchtool", "NAME"); a != b {
			t.Errorf("hidden tool error differs from unknown tool error:\n hidden:  %s\n unknown: %s", a, b)
		}
	}
	// Descriptions and schemas pass through unchanged.
	direct := connectStdio(t, up)
	var directEcho *mcp.Tool
	for tool, err := range direct.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == "echo" {
			directEcho = tool
		}
	}
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if tool.Name == "c.echo" {
			tool.Name = "echo"
			if diff := cmp.Diff(directEcho, tool); diff != "" {
				t.Errorf("tool definition changed through the gateway (-direct +gateway):\n%s", diff)
			}
		}
	}
}

func connectStdio(t *testing.T, path string, args ...string) *mcp.ClientSession {
	t.Helper()
	return connectStdioVersion(t, "", path, args...)
}

// connectStdioVersion is connectStdio with a client that asks for protocol
// version (its default, 2026-07-28, for "").
func connectStdioVersion(t *testing.T, version, path string, args ...string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: exec.Command(path, args...)}, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestProjectAllowedToolsAndRouting(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"projects": {
			"alpha": {"mcpServers": {"a": {"command": %[1]s}}, "allowedTools": ["a__echo", "a__stats", "b__echo"]},
			"beta":  {"mcpServers": {"b": {"command": %[1]s, "allowedToolsGlob": ["echo"]}}}
		}
	}`, jsonString(up)))
	alpha := connect(t, g.base+"/v1/mcp/alpha", nil)
	beta := connect(t, g.base+"/v1/mcp/beta", nil)
	if diff := cmp.Diff([]string{"a__echo", "a__stats"}, toolNames(t, alpha)); diff != "" {
		t.Errorf("alpha tools (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b__echo"}, toolNames(t, beta)); diff != "" {
		t.Errorf("beta tools (-want +got):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := alpha.CallTool(ctx, &mcp.CallToolParams{Name: "b__echo", Arguments: map[string]any{"text": "x"}}); err == nil {
		t.Error("project alpha reached project beta's tool")
	}
	for _, path := range []string{"/mcp", "/v1/mcp/gamma"} {
		code, body := httpGet(t, g.base+path)
		if code != 404 || !strings.Contains(string(body), "unknown project") {
			t.Errorf("GET %s = %d %s, want 404 naming the unknown project", path, code, body)
		}
	}
}

// Point 2: `serve --stdio` for clients that spawn their servers, on
// protocol 2026-07-28 (the go-sdk client's first choice: no initialize,
// the version and capabilities in every request) and on 2025-11-25.
func TestServeStdio(t *testing.T) {
	up := testUpstream(t)
	cfg := writeConfig(t, fmt.Sprintf(`{"mcpServers": {"s": {"command": %s}}}`, jsonString(up)))
	bin := e2etest.BuildBinary(t, "./cmd/toolgate")
	for _, version := range []string{"2026-07-28", "2025-11-25"} {
		t.Run(version, func(t *testing.T) {
			cs := connectStdioVersion(t, version, bin, "serve", "--stdio", "-c", cfg)
			if got := cs.InitializeResult().ProtocolVersion; got != version {
				t.Fatalf("negotiated %s, want %s", got, version)
			}
			if got := text(callTool(t, cs, "s__echo", map[string]any{"text": "over stdio"})); got != "over stdio" {
				t.Errorf("echo = %q", got)
			}
			if names := toolNames(t, cs); !slices.Contains(names, "s__echo") {
				t.Errorf("tools = %v", names)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://item/7"}); err != nil || len(res.Contents) != 1 || res.Contents[0].Text != "item 7" {
				t.Errorf("resources/read = %+v, %v", res, err)
			}
			if res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "s__greet", Arguments: map[string]string{"name": "Ada"}}); err != nil || len(res.Messages) != 1 {
				t.Errorf("prompts/get = %+v, %v", res, err)
			}
		})
	}
}

// Point 7: no configuration file runs the demo.
func TestDemoWithoutConfig(t *testing.T) {
	bin := e2etest.BuildBinary(t, "./cmd/toolgate")
	_, env := isolatedEnv(t) // the demo keeps its key in the home folder
	proc := e2etest.StartProcess(t, e2etest.ProcOptions{Path: bin, Args: []string{"serve", "--listen", "127.0.0.1:0"}, Dir: t.TempDir(), Env: env})
	line := proc.WaitForLine(t, "toolgate listening on", 60*time.Second)
	m := listeningLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	proc.WaitForLine(t, "built-in demo", 10*time.Second)
	keyLine := proc.WaitForLine(t, "API key:", 10*time.Second)
	key := strings.TrimSpace(strings.SplitN(keyLine, "API key:", 2)[1])
	proc.WaitForLine(t, "claude mcp add --transport http toolgate "+m[1]+"/mcp --header \"Authorization: Bearer "+key+"\"", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := mcp.NewClient(&mcp.Implementation{Name: "nokey", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: m[1] + "/mcp", MaxRetries: -1}, nil); err == nil {
		t.Error("the demo accepted a client without its key")
	}
	cs := e2etest.ConnectHTTP(t, ctx, m[1]+"/mcp", map[string]string{"Authorization": "Bearer " + key}, nil)
	names := toolNames(t, cs)
	if len(names) < 4 || !strings.HasPrefix(names[0], "demo__") {
		t.Fatalf("demo tools = %v", names)
	}
	res := callTool(t, cs, "demo__add", map[string]any{"a": 2, "b": 40})
	if b, _ := json.Marshal(res.StructuredContent); string(b) != `{"sum":42}` {
		t.Errorf("demo__add = %s", b)
	}
}

func TestNonLoopbackListenerRules(t *testing.T) {
	tests := []struct {
		name, cfg, want string
	}{
		{"plain HTTP", `{}`, "tls is not configured"},
		{"no authentication", `{"auth": {"required": false}}`, "auth.required: false is accepted only on a loopback listener"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.cfg)
			code, out := runToolgate(t, filepath.Dir(path), nil, "serve", "-c", path, "--listen", "0.0.0.0:0")
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want 1 and %q; output:\n%s", code, tc.want, out)
			}
		})
	}
}
