package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// protocolVersions are the two shapes of the protocol the server must serve:
// the latest (server/discover, input-required results) and the last one
// with the initialize handshake (server-to-client requests).
var protocolVersions = []string{"2026-07-28", "2025-11-25"}

// recorder collects the notifications a test client receives.
type recorder struct {
	mu       sync.Mutex
	progress []float64
	logs     []string
	changed  int
	updated  []string
}

func (r *recorder) snapshot() recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return recorder{
		progress: slices.Clone(r.progress),
		logs:     slices.Clone(r.logs),
		changed:  r.changed,
		updated:  slices.Clone(r.updated),
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// retryUntil performs action and polls cond for a while, again and again,
// until cond holds. It is for notifications that depend on a subscription
// the client opens asynchronously: on protocol 2026-07-28 the go-sdk client
// sends subscriptions/listen without waiting for its acknowledgement, so a
// change made at once may come before the server knows of the subscription.
func retryUntil(t *testing.T, what string, action func(), cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		action()
		next := time.Now().Add(200 * time.Millisecond)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			if time.Now().After(next) {
				break
			}
			<-tick.C
		}
		if cond() {
			return
		}
	}
}

// inMemory connects client to srv over in-memory transports with opts;
// both sessions close when the test ends.
func inMemory(t *testing.T, srv *mcp.Server, client *mcp.Client, opts *mcp.ClientSessionOptions) *mcp.ClientSession {
	t.Helper()
	serverT, clientT := mcp.NewInMemoryTransports()
	ss, err := srv.Connect(context.Background(), serverT, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := client.Connect(context.Background(), clientT, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// connect runs the test server in process over an in-memory transport and
// connects a client with sampling, elicitation and roots handlers.
func connect(t *testing.T, version string, cfg *config) (*mcp.ClientSession, *recorder) {
	t.Helper()
	if cfg == nil {
		cfg = &config{transport: "stdio", name: "smoke"}
	}
	st := &state{cfg: cfg}
	rec := &recorder{}
	client := mcp.NewClient(&mcp.Implementation{Name: "smoke-client", Version: "1"}, &mcp.ClientOptions{
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			prompt := req.Params.Messages[0].Content.(*mcp.TextContent).Text
			return &mcp.CreateMessageResult{Role: "assistant", Model: "test-model", Content: &mcp.TextContent{Text: "model says: " + prompt}}, nil
		},
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": "yes to " + req.Params.Message}}, nil
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			rec.mu.Lock()
			rec.progress = append(rec.progress, req.Params.Progress)
			rec.mu.Unlock()
		},
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			rec.mu.Lock()
			rec.logs = append(rec.logs, string(req.Params.Level)+":"+req.Params.Data.(string))
			rec.mu.Unlock()
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			rec.mu.Lock()
			rec.changed++
			rec.mu.Unlock()
		},
		ResourceUpdatedHandler: func(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			rec.mu.Lock()
			rec.updated = append(rec.updated, req.Params.URI)
			rec.mu.Unlock()
		},
	})
	client.AddRoots(&mcp.Root{URI: "file:///srv/project-a"}, &mcp.Root{URI: "file:///srv/project-b"})
	cs := inMemory(t, st.newServer(nil), client, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if got := cs.InitializeResult().ProtocolVersion; got != version {
		t.Fatalf("negotiated protocol %s, want %s", got, version)
	}
	return cs, rec
}

func callText(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (*mcp.CallToolResult, string) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("calling %s: %v", name, err)
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return res, b.String()
}

func TestToolsOverBothProtocols(t *testing.T) {
	for _, version := range protocolVersions {
		t.Run(version, func(t *testing.T) {
			cs, _ := connect(t, version, nil)
			tests := []struct {
				tool    string
				args    map[string]any
				want    string
				isError bool
			}{
				{tool: "echo", args: map[string]any{"text": "hello"}, want: "hello"},
				{tool: "headers", want: "{}"},
				{tool: "sample", args: map[string]any{"prompt": "pick a colour"}, want: "model says: pick a colour"},
				{tool: "elicit", args: map[string]any{"message": "proceed?"}, want: `{"action":"accept","content":{"answer":"yes to proceed?"}}`},
				{tool: "roots", want: `["file:///srv/project-a","file:///srv/project-b"]`},
				{tool: "fail", args: map[string]any{"message": "it broke"}, want: "it broke", isError: true},
				{tool: "slow", args: map[string]any{"ms": 1}, want: "slept 1 ms"},
			}
			for _, tt := range tests {
				t.Run(tt.tool, func(t *testing.T) {
					res, got := callText(t, cs, tt.tool, tt.args)
					if got != tt.want || res.IsError != tt.isError {
						t.Errorf("%s: got %q (isError %v), want %q (isError %v)", tt.tool, got, res.IsError, tt.want, tt.isError)
					}
				})
			}
		})
	}
}

func TestEchoStructuredContent(t *testing.T) {
	cs, _ := connect(t, protocolVersions[0], &config{name: "alpha"})
	res, _ := callText(t, cs, "echo", map[string]any{"text": "x"})
	b, _ := json.Marshal(res.StructuredContent)
	if got, want := string(b), `{"server":"alpha","text":"x"}`; got != want {
		t.Errorf("structuredContent = %s, want %s", got, want)
	}
}

func TestContentTypes(t *testing.T) {
	cs, _ := connect(t, protocolVersions[0], nil)
	res, _ := callText(t, cs, "content", nil)
	var kinds []string
	for _, c := range res.Content {
		switch c := c.(type) {
		case *mcp.TextContent:
			kinds = append(kinds, "text")
		case *mcp.ImageContent:
			if c.MIMEType == "image/png" && len(c.Data) > 0 {
				kinds = append(kinds, "image")
			}
		case *mcp.AudioContent:
			if c.MIMEType == "audio/wav" && len(c.Data) > 0 {
				kinds = append(kinds, "audio")
			}
		case *mcp.EmbeddedResource:
			if c.Resource != nil && c.Resource.Text != "" {
				kinds = append(kinds, "resource")
			}
		case *mcp.ResourceLink:
			kinds = append(kinds, "resource_link")
		}
	}
	if want := []string{"text", "image", "audio", "resource", "resource_link"}; !slices.Equal(kinds, want) {
		t.Errorf("content kinds = %v, want %v", kinds, want)
	}
}

func TestNotifications(t *testing.T) {
	for _, version := range protocolVersions {
		t.Run(version, func(t *testing.T) {
			ctx := context.Background()
			cs, rec := connect(t, version, nil)

			// progress
			params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"steps": 3}}
			params.SetProgressToken("tok-1")
			if _, err := cs.CallTool(ctx, params); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "3 progress notifications", func() bool { return len(rec.snapshot().progress) == 3 })

			// log: the legacy protocol sets a session level, the new one a
			// per-request level in _meta.
			logParams := &mcp.CallToolParams{Name: "log", Arguments: map[string]any{"level": "warning", "message": "disk almost full"}}
			if version < "2026-07-28" {
				if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
					t.Fatal(err)
				}
			} else {
				logParams.Meta = mcp.Meta{mcp.MetaKeyLogLevel: "debug"}
			}
			if _, err := cs.CallTool(ctx, logParams); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "a log message", func() bool { return slices.Contains(rec.snapshot().logs, "warning:disk almost full") })

			// add_tool and remove_tool change the list and notify.
			retryUntil(t, "tools/list_changed",
				func() { callText(t, cs, "add_tool", map[string]any{"name": "extra"}) },
				func() bool { return rec.snapshot().changed >= 1 })
			if _, got := callText(t, cs, "extra", nil); got != "dynamic tool extra" {
				t.Errorf("extra returned %q", got)
			}
			seen := rec.snapshot().changed
			retryUntil(t, "a tools/list_changed after remove_tool",
				func() { callText(t, cs, "remove_tool", map[string]any{"name": "extra"}) },
				func() bool { return rec.snapshot().changed > seen })
			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, tool := range tools.Tools {
				if tool.Name == "extra" {
					t.Error("extra is still listed after remove_tool")
				}
			}
			if res, _ := callText(t, cs, "add_tool", map[string]any{"name": "echo"}); !res.IsError {
				t.Error("add_tool replaced a built-in tool")
			}

			// touch notifies subscribers.
			if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://static/1"}); err != nil {
				t.Fatal(err)
			}
			retryUntil(t, "resources/updated",
				func() { callText(t, cs, "touch", map[string]any{"uri": "test://static/1"}) },
				func() bool { return slices.Contains(rec.snapshot().updated, "test://static/1") })
		})
	}
}

func TestSlowCancellationIsCounted(t *testing.T) {
	for _, version := range protocolVersions {
		t.Run(version, func(t *testing.T) { testSlowCancellation(t, version) })
	}
}

func testSlowCancellation(t *testing.T, version string) {
	cs, _ := connect(t, version, nil)
	stats := func() map[string]int {
		_, s := callText(t, cs, "stats", nil)
		var m map[string]int
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("stats: %v", err)
		}
		return m
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"ms": 60000}})
		done <- err
	}()
	waitFor(t, "the slow call to start", func() bool { return stats()["calls"] == 1 })
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled call returned no error")
	}
	waitFor(t, "the server to see the cancellation", func() bool { return stats()["cancelled"] == 1 })
	if got := stats(); got["slowCompleted"] != 0 || got["calls"] != 1 {
		t.Errorf("stats = %v", got)
	}
}

func TestResourcesPromptsCompletion(t *testing.T) {
	ctx := context.Background()
	cs, _ := connect(t, protocolVersions[0], nil)

	for uri, want := range map[string]string{
		"test://static/1": "static resource 1",
		"test://static/2": "static resource 2",
		"test://item/42":  "item 42",
	} {
		res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatalf("reading %s: %v", uri, err)
		}
		if got := res.Contents[0].Text; got != want {
			t.Errorf("%s = %q, want %q", uri, got, want)
		}
	}

	p, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "bob-test"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Messages[0].Content.(*mcp.TextContent).Text; got != "Hello, bob-test" {
		t.Errorf("greet = %q", got)
	}

	for prefix, want := range map[string][]string{
		"al": {"alice-test", "albert-test"},
		"b":  {"bob-test"},
		"z":  {},
	} {
		res, err := cs.Complete(ctx, &mcp.CompleteParams{
			Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"},
			Argument: mcp.CompleteParamsArgument{Name: "name", Value: prefix},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Completion.Values; !slices.Equal(got, want) {
			t.Errorf("complete %q = %v, want %v", prefix, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
	}{
		{name: "defaults", args: nil},
		{name: "http", args: []string{"-transport", "http", "-listen", "127.0.0.1:0"}},
		{name: "bad transport", args: []string{"-transport", "carrier-pigeon"}, wantErr: true},
		{name: "garbage needs stdio", args: []string{"-transport", "http", "-garbage"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args)
			if (err != nil) != tt.wantErr {
				t.Errorf("parseFlags(%q) error = %v, wantErr %v", tt.args, err, tt.wantErr)
			}
		})
	}
}
