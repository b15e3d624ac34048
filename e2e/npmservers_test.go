package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// The tests in this file put two real MCP servers from npm behind one
// gateway, both over stdio: @modelcontextprotocol/server-everything (the
// reference server exercising every protocol feature) and
// @modelcontextprotocol/server-filesystem on a temporary folder, with its
// writing tools hidden by a filter. Versions are pinned in e2e/npm.

// fsDenied are the filesystem server's tool filters in these tests.
var fsDenied = []string{"*write*", "*edit*", "*move*", "*create*"}

// upstreamCaps are the client capabilities the gateway announces to its
// upstreams (gateway.project.clientOptions). Servers such as
// server-everything register some tools only for clients with these
// capabilities, so a direct client must announce the same ones to be
// offered the same tools.
var upstreamCaps = &mcp.ClientCapabilities{
	RootsV2:     &mcp.RootCapabilities{},
	Sampling:    &mcp.SamplingCapabilities{},
	Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}},
}

// directCommand starts a stdio MCP server and connects to it straight,
// announcing the capabilities the gateway announces.
func directCommand(t *testing.T, path string, args ...string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, &mcp.ClientOptions{
		Capabilities: upstreamCaps,
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Role: "assistant", Model: "direct", Content: &mcp.TextContent{Text: "direct"}}, nil
		},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "decline"}, nil
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: exec.Command(path, args...), TerminateDuration: 2 * time.Second},
		&mcp.ClientSessionOptions{ProtocolVersion: directProtocol})
	if err != nil {
		t.Fatalf("connecting to %s %v: %v", path, args, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// listAll lists every tool, resource, resource template and prompt of a
// session, following pagination.
func listAll(t *testing.T, cs *mcp.ClientSession) (tools []*mcp.Tool, resources []*mcp.Resource, templates []*mcp.ResourceTemplate, prompts []*mcp.Prompt) {
	t.Helper()
	ctx := ctx60(t)
	for x, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("listing tools: %v", err)
		}
		tools = append(tools, x)
	}
	caps := cs.InitializeResult().Capabilities
	if caps.Resources != nil {
		for x, err := range cs.Resources(ctx, nil) {
			if err != nil {
				t.Fatalf("listing resources: %v", err)
			}
			resources = append(resources, x)
		}
		for x, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				t.Fatalf("listing resource templates: %v", err)
			}
			templates = append(templates, x)
		}
	}
	if caps.Prompts != nil {
		for x, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				t.Fatalf("listing prompts: %v", err)
			}
			prompts = append(prompts, x)
		}
	}
	return tools, resources, templates, prompts
}

// deniedBy reports whether name matches one of the simple "*word*" globs.
func deniedBy(globs []string, name string) bool {
	for _, g := range globs {
		if strings.Contains(name, strings.Trim(g, "*")) {
			return true
		}
	}
	return false
}

// TestNPMServersBehindGateway runs server-everything and server-filesystem
// behind one gateway and checks namespacing, calls, the filesystem's
// hidden tools, server-everything's resources (every one, across pages),
// prompts and completion, progress of its long-running tool and its
// sampling request reaching the client.
func TestNPMServersBehindGateway(t *testing.T) {
	node := e2etest.Node(t)
	everything := e2etest.NPMFile(t, e2etest.ServerEverythingEntry)
	filesystem := e2etest.NPMFile(t, e2etest.ServerFilesystemEntry)

	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"a.txt":        "alpha\nsecond line\n",
		"notes/b.md":   "# bravo\n",
		"notes/c.json": `{"charlie": 3}`,
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	denied := `["` + strings.Join(fsDenied, `", "`) + `"]`
	g := startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"everything": {"command": %s, "args": [%s, "stdio"]},
			"filesystem": {"command": %s, "args": [%s, %s], "denyToolsGlob": %s},
		},
	}`, jsonString(node), jsonString(everything), jsonString(node), jsonString(filesystem), jsonString(dir), denied))

	cs, rec := connectRelayClient(t, g.URL())

	directEverything := directCommand(t, node, everything, "stdio")
	directFS := directCommand(t, node, filesystem, dir)
	evTools, evResources, evTemplates, evPrompts := listAll(t, directEverything)
	fsTools, _, _, _ := listAll(t, directFS)

	var evNames, fsNames []string
	for _, tool := range evTools {
		evNames = append(evNames, tool.Name)
	}
	for _, tool := range fsTools {
		fsNames = append(fsNames, tool.Name)
	}
	slices.Sort(evNames)
	slices.Sort(fsNames)
	t.Logf("server-everything tools: %v", evNames)
	t.Logf("server-filesystem tools: %v", fsNames)
	for _, name := range []string{"echo", "trigger-long-running-operation", "trigger-sampling-request", "get-sum"} {
		if !slices.Contains(evNames, name) {
			t.Fatalf("server-everything has no tool %q (it has %v)", name, evNames)
		}
	}
	for _, name := range []string{"read_text_file", "list_directory", "write_file", "edit_file", "move_file", "create_directory"} {
		if !slices.Contains(fsNames, name) {
			t.Fatalf("server-filesystem has no tool %q (it has %v)", name, fsNames)
		}
	}

	t.Run("tools", func(t *testing.T) {
		var want []string
		for _, n := range evNames {
			want = append(want, "everything__"+n)
		}
		for _, n := range fsNames {
			if !deniedBy(fsDenied, n) {
				want = append(want, "filesystem__"+n)
			}
		}
		slices.Sort(want)
		var got []string
		// server-everything registers some tools once initialized and says
		// so with list_changed; wait for the gateway to have relisted.
		deadline := time.Now().Add(30 * time.Second)
		for {
			got = toolNames(t, cs)
			if slices.Equal(want, got) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tools through the gateway (-want +got):\n%s", diff)
		}
		for _, n := range got {
			if strings.HasPrefix(n, "filesystem__") && deniedBy(fsDenied, n) {
				t.Errorf("denied tool %s is listed", n)
			}
		}
	})

	t.Run("calls", func(t *testing.T) {
		cases := []struct {
			direct *mcp.ClientSession
			server string
			tool   string
			args   map[string]any
			want   string // a substring of the text
		}{
			{directEverything, "everything", "echo", map[string]any{"message": "through the gateway"}, "through the gateway"},
			{directEverything, "everything", "get-sum", map[string]any{"a": 19, "b": 23}, "42"},
			{directFS, "filesystem", "read_text_file", map[string]any{"path": filepath.Join(dir, "a.txt")}, "alpha\nsecond line"},
			{directFS, "filesystem", "list_directory", map[string]any{"path": dir}, "[DIR] notes"},
			{directFS, "filesystem", "search_files", map[string]any{"path": dir, "pattern": "**/*.json"}, "c.json"},
		}
		for _, c := range cases {
			wantRes, err := callCtx(c.direct, c.tool, c.args)
			if err != nil {
				t.Fatalf("direct %s: %v", c.tool, err)
			}
			res := callTool(t, cs, c.server+"__"+c.tool, c.args)
			if diff := cmp.Diff(wire(t, wantRes), wire(t, res)); diff != "" {
				t.Errorf("%s__%s (-direct +gateway):\n%s", c.server, c.tool, diff)
			}
			if res.IsError || !strings.Contains(text(res), c.want) {
				t.Errorf("%s__%s = %q (isError %v), want it to contain %q", c.server, c.tool, text(res), res.IsError, c.want)
			}
		}
	})

	t.Run("hidden tools", func(t *testing.T) {
		target := filepath.Join(dir, "written.txt")
		for _, tool := range []string{"write_file", "edit_file", "move_file", "create_directory"} {
			args := map[string]any{"path": target, "content": "x", "source": target, "destination": target + "2", "edits": []any{}}
			_, hidden := callCtx(cs, "filesystem__"+tool, args)
			_, unknown := callCtx(cs, "filesystem__no_such_tool", args)
			sameErrorModulo(t, tool, hidden, "filesystem__"+tool, unknown, "filesystem__no_such_tool")
		}
		if _, err := os.Stat(target); err == nil {
			t.Errorf("a hidden tool wrote %s", target)
		}
	})

	t.Run("resources", func(t *testing.T) {
		if len(evResources) == 0 {
			t.Fatal("server-everything lists no resources")
		}
		_, gotResources, gotTemplates, _ := listAll(t, cs)
		t.Logf("server-everything: %d resources and %d templates directly, %d and %d through the gateway",
			len(evResources), len(evTemplates), len(gotResources), len(gotTemplates))
		uris := func(rs []*mcp.Resource) []string {
			var out []string
			for _, r := range rs {
				out = append(out, r.URI)
			}
			slices.Sort(out)
			return out
		}
		if diff := cmp.Diff(uris(evResources), uris(gotResources)); diff != "" {
			t.Errorf("resources (-direct +gateway), %d direct, %d through the gateway:\n%s", len(evResources), len(gotResources), diff)
		}
		tmpls := func(ts []*mcp.ResourceTemplate) []string {
			var out []string
			for _, r := range ts {
				out = append(out, r.URITemplate)
			}
			slices.Sort(out)
			return out
		}
		if diff := cmp.Diff(tmpls(evTemplates), tmpls(gotTemplates)); diff != "" {
			t.Errorf("resource templates (-direct +gateway):\n%s", diff)
		}
		ctx := ctx60(t)
		first := evResources[0].URI
		want, err := directEverything.ReadResource(ctx, &mcp.ReadResourceParams{URI: first})
		if err != nil {
			t.Fatal(err)
		}
		got, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: first})
		if err != nil {
			t.Fatalf("reading %s through the gateway: %v", first, err)
		}
		if diff := cmp.Diff(wire(t, want), wire(t, got)); diff != "" {
			t.Errorf("read %s (-direct +gateway):\n%s", first, diff)
		}
		// A templated resource (its text carries a timestamp, so only the
		// shape is compared).
		if len(evTemplates) > 0 {
			uri := strings.Replace(evTemplates[0].URITemplate, "{resourceId}", "7", 1)
			got, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
			if err != nil {
				t.Fatalf("reading %s through the gateway: %v", uri, err)
			}
			if len(got.Contents) != 1 || got.Contents[0].URI != uri {
				t.Errorf("read %s = %v", uri, wire(t, got))
			}
		}
	})

	t.Run("prompts", func(t *testing.T) {
		_, _, _, gotPrompts := listAll(t, cs)
		var want, got []string
		for _, p := range evPrompts {
			want = append(want, "everything__"+p.Name)
		}
		for _, p := range gotPrompts {
			got = append(got, p.Name)
		}
		slices.Sort(want)
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("prompts (-want +got):\n%s", diff)
		}
		ctx := ctx60(t)
		for _, c := range []struct {
			name string
			args map[string]string
		}{
			{"simple-prompt", nil},
			{"args-prompt", map[string]string{"city": "Lyon", "state": "Rhône"}},
			{"completable-prompt", map[string]string{"department": "Engineering", "name": "Alice"}},
		} {
			wantRes, err := directEverything.GetPrompt(ctx, &mcp.GetPromptParams{Name: c.name, Arguments: c.args})
			if err != nil {
				t.Fatalf("direct %s: %v", c.name, err)
			}
			gotRes, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "everything__" + c.name, Arguments: c.args})
			if err != nil {
				t.Fatalf("getting everything__%s: %v", c.name, err)
			}
			if diff := cmp.Diff(wire(t, wantRes), wire(t, gotRes)); diff != "" {
				t.Errorf("prompt %s (-direct +gateway):\n%s", c.name, diff)
			}
		}
		res, err := cs.Complete(ctx, &mcp.CompleteParams{
			Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "everything__completable-prompt"},
			Argument: mcp.CompleteParamsArgument{Name: "name", Value: "C"},
			Context:  &mcp.CompleteContext{Arguments: map[string]string{"department": "Engineering"}},
		})
		if err != nil {
			t.Fatalf("completion: %v", err)
		}
		if diff := cmp.Diff([]string{"Charlie"}, res.Completion.Values); diff != "" {
			t.Errorf("completion values (-want +got):\n%s", diff)
		}
	})

	checkEverythingRelays(t, cs, rec)
}

// relayRecorder is what an MCP client saw of the progress notifications
// and sampling requests relayed to it.
type relayRecorder struct {
	mu              sync.Mutex
	progress        []*mcp.ProgressNotificationParams
	samplingPrompts []string
}

// connectRelayClient connects a client to url that records progress
// notifications and answers sampling requests as the model "e2e-model".
func connectRelayClient(t *testing.T, url string) (*mcp.ClientSession, *relayRecorder) {
	t.Helper()
	rec := &relayRecorder{}
	cs := connect(t, url, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			rec.progress = append(rec.progress, req.Params)
		},
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, m := range req.Params.Messages {
				if tc, ok := m.Content.(*mcp.TextContent); ok {
					rec.samplingPrompts = append(rec.samplingPrompts, tc.Text)
				}
			}
			return &mcp.CreateMessageResult{Role: "assistant", Model: "e2e-model", Content: &mcp.TextContent{Text: "sampled by the e2e client"}}, nil
		},
	})
	return cs, rec
}

// checkEverythingRelays calls server-everything's long-running tool with a
// progress token and its sampling tool through cs (a client of
// connectRelayClient, whose server is named "everything"), and expects the
// progress and the sampling request to reach the client.
func checkEverythingRelays(t *testing.T, cs *mcp.ClientSession, rec *relayRecorder) {
	t.Helper()
	t.Run("progress", func(t *testing.T) {
		params := &mcp.CallToolParams{Name: "everything__trigger-long-running-operation", Arguments: map[string]any{"duration": 0.3, "steps": 3}}
		params.SetProgressToken("e2e-long-op")
		res, err := cs.CallTool(ctx60(t), params)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text(res), "Long running operation completed") {
			t.Errorf("long-running operation returned %q", text(res))
		}
		mine := func() []string {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var out []string
			for _, p := range rec.progress {
				if p.ProgressToken == "e2e-long-op" {
					out = append(out, fmt.Sprintf("%v/%v", p.Progress, p.Total))
				}
			}
			return out
		}
		eventually(t, 20*time.Second, "3 progress notifications", func() bool { return len(mine()) >= 3 })
		if diff := cmp.Diff([]string{"1/3", "2/3", "3/3"}, mine()); diff != "" {
			t.Errorf("progress (-want +got):\n%s", diff)
		}
	})

	t.Run("sampling", func(t *testing.T) {
		res := callTool(t, cs, "everything__trigger-sampling-request", map[string]any{"prompt": "name a colour", "maxTokens": 20})
		if res.IsError {
			t.Fatalf("sampling tool failed: %s", text(res))
		}
		if !strings.Contains(text(res), "sampled by the e2e client") || !strings.Contains(text(res), "e2e-model") {
			t.Errorf("sampling result %q does not carry the client's answer", text(res))
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !slices.ContainsFunc(rec.samplingPrompts, func(s string) bool { return strings.Contains(s, "name a colour") }) {
			t.Errorf("the client's sampling handler saw %q, want the tool's prompt", rec.samplingPrompts)
		}
	})
}

// TestServerEverythingOverHTTP runs server-everything as a streamable HTTP
// server (the TypeScript SDK's, with an event store, so that every event
// carries an ID) behind the gateway, which sends the tool calls itself:
// results, and progress notifications and a sampling request that arrive
// on a call's event stream, must come through as over stdio.
func TestServerEverythingOverHTTP(t *testing.T) {
	node := e2etest.Node(t)
	everything := e2etest.NPMFile(t, e2etest.ServerEverythingEntry)
	port := e2etest.FreePort(t)
	e2etest.StartProcess(t, e2etest.ProcOptions{Path: node, Args: []string{everything, "streamableHttp"}, Env: []string{fmt.Sprintf("PORT=%d", port)}})
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	e2etest.WaitHTTP(t, url, 30*time.Second)
	g := startGateway(t, fmt.Sprintf(`{"mcpServers": {"everything": {"url": %s, "transport": "http"}}}`, jsonString(url)))
	cs, rec := connectRelayClient(t, g.URL())
	for i := range 20 {
		want := fmt.Sprintf("call %d over HTTP", i)
		if got := text(callTool(t, cs, "everything__echo", map[string]any{"message": want})); !strings.Contains(got, want) {
			t.Fatalf("echo = %q, want it to contain %q", got, want)
		}
	}
	if got := text(callTool(t, cs, "everything__get-sum", map[string]any{"a": 19, "b": 23})); !strings.Contains(got, "42") {
		t.Errorf("get-sum = %q, want 42", got)
	}
	checkEverythingRelays(t, cs, rec)
}
