package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/mcpclient"
)

// The tests in this file prove that a call through `toolgate serve` and
// everything around it (progress, logs, cancellation, sampling, elicitation,
// roots, resources, prompts, completion, list_changed) reach the client as
// the upstream sent them, with the upstream spoken to over stdio, streamable
// HTTP and SSE. "Unchanged" is checked by comparing with a client connected
// straight to the upstream, on the wire form (JSON) of the results.

// directProtocol is the protocol version of the clients that talk to an
// upstream directly: the one the gateway speaks on both of its sides, so
// that both paths are compared on the same protocol.
const directProtocol = "2025-11-25"

// startHTTPUpstream runs the test upstream as a streamable HTTP ("http") or
// SSE ("sse") server and returns its URL.
func startHTTPUpstream(t *testing.T, transport, name string) string {
	t.Helper()
	p := e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: testUpstream(t),
		Args: []string{"-transport", transport, "-listen", "127.0.0.1:0", "-name", name},
	})
	line := p.WaitForLine(t, "LISTENING ", 30*time.Second)
	fields := strings.Fields(line)
	return fields[len(fields)-1]
}

// directStdio starts a test upstream of its own over stdio and connects to
// it straight, without the gateway.
func directStdio(t *testing.T, name string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.Command(testUpstream(t), "-name", name)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second},
		&mcp.ClientSessionOptions{ProtocolVersion: directProtocol})
	if err != nil {
		t.Fatalf("connecting to the test upstream over stdio: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// directHTTP connects straight to an upstream that serves streamable HTTP
// or, with sse, the SSE transport.
func directHTTP(t *testing.T, url string, sse bool) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var transport mcp.Transport = &mcp.StreamableClientTransport{Endpoint: url}
	if sse {
		transport = &mcp.SSEClientTransport{Endpoint: url}
		// The SDK's SSE stream lives as long as the context it was opened
		// with; Close ends it.
		ctx = context.Background()
	}
	cs, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: directProtocol})
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// connectClient connects a client with its own roots to the gateway, with
// the test gateway's key, on sessionVersion (for the tests of relayed
// requests; connect in helpers_test.go has no roots).
func connectClient(t *testing.T, url string, opts *mcp.ClientOptions, roots ...*mcp.Root) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-client", Version: "1"}, opts)
	client.AddRoots(roots...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	transport := &mcp.StreamableClientTransport{Endpoint: url}
	if key := keyFor(url); key != "" {
		transport.HTTPClient = &http.Client{Transport: &mcpclient.HeaderTransport{Headers: mcpclient.Bearer(key), Base: http.DefaultTransport}}
	}
	cs, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: sessionVersion})
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// wire is v as it travels: marshalled to JSON and decoded into plain maps,
// slices and numbers, so that two values compare by what a client reads.
func wire(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshalling %T: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	// An absent cacheScope means "public"; the gateway's MCP SDK writes the
	// default out, and a Go client decodes an absent one as "".
	if m, ok := out.(map[string]any); ok && m["cacheScope"] == "" {
		m["cacheScope"] = "public"
	}
	return out
}

// callCtx calls a tool with a deadline and returns the protocol error too.
func callCtx(cs *mcp.ClientSession, name string, args any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
}

// ctx60 is a context for one request of a test.
func ctx60(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// upstreamStats reads the counters of the upstream behind server through
// the gateway.
func upstreamStats(t *testing.T, cs *mcp.ClientSession, server string) map[string]int {
	t.Helper()
	var st map[string]int
	if err := json.Unmarshal([]byte(text(callTool(t, cs, server+"__stats", nil))), &st); err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// passthroughGateway starts a gateway with the test upstream over stdio as
// server "s" and over streamable HTTP as server "h". Only "s" shows its
// resources: the two upstreams offer the same URIs, which would collide.
func passthroughGateway(t *testing.T) (g *gateway, httpURL string) {
	t.Helper()
	up := testUpstream(t)
	httpURL = startHTTPUpstream(t, "http", "h-up")
	g = startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"s": {"command": %s, "args": ["-name", "s-up"]},
			"h": {"url": %s, "transport": "http", "denyResourcesGlob": ["*"]},
		},
	}`, jsonString(up), jsonString(httpURL)))
	return g, httpURL
}

// TestPassthroughResults compares tool definitions and results through the
// gateway with those of the same upstream reached directly, for every
// upstream transport: every content type of `content`, the
// structuredContent of `echo` and the isError result of `fail`.
func TestPassthroughResults(t *testing.T) {
	up := testUpstream(t)
	httpURL := startHTTPUpstream(t, "http", "h-up")
	sseURL := startHTTPUpstream(t, "sse", "e-up")
	sseURL2 := startHTTPUpstream(t, "sse", "u-up")
	if !strings.HasSuffix(sseURL2, "/sse") {
		t.Fatalf("SSE upstream URL %q does not end in /sse", sseURL2)
	}
	// The upstreams offer the same resource URIs; only "s" shows them.
	g := startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"s": {"command": %s, "args": ["-name", "s-up"]},
			"h": {"url": %s, "transport": "http", "denyResourcesGlob": ["*"]},
			"e": {"url": %s, "transport": "sse", "denyResourcesGlob": ["*"]},
			// no transport: a URL ending in /sse means SSE
			"u": {"url": %s, "denyResourcesGlob": ["*"]},
		},
	}`, jsonString(up), jsonString(httpURL), jsonString(sseURL), jsonString(sseURL2)))
	cs := connect(t, g.URL(), nil)

	_, ready := g.readyz(t)
	for server, want := range map[string]string{"s": "stdio", "h": "http", "e": "sse", "u": "sse"} {
		if got := dig(ready, "projects", "default", "upstreams", server, "transport"); got != want {
			t.Errorf("readyz: server %s transport = %v, want %s", server, got, want)
		}
		if got := dig(ready, "projects", "default", "upstreams", server, "state"); got != "ready" {
			t.Errorf("readyz: server %s state = %v, want ready", server, got)
		}
	}

	ctx := ctx60(t)
	var gwTools []*mcp.Tool
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		gwTools = append(gwTools, tool)
	}

	cases := []struct {
		server string
		direct func(t *testing.T) *mcp.ClientSession
	}{
		{"s", func(t *testing.T) *mcp.ClientSession { return directStdio(t, "s-up") }},
		{"h", func(t *testing.T) *mcp.ClientSession { return directHTTP(t, httpURL, false) }},
		{"e", func(t *testing.T) *mcp.ClientSession { return directHTTP(t, sseURL, true) }},
		{"u", func(t *testing.T) *mcp.ClientSession { return directHTTP(t, sseURL2, true) }},
	}
	for _, tc := range cases {
		t.Run(tc.server, func(t *testing.T) {
			direct := tc.direct(t)
			prefix := tc.server + "__"

			// Tool definitions: the same, but for the namespace.
			var want []*mcp.Tool
			for tool, err := range direct.Tools(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				tool.Name = prefix + tool.Name
				want = append(want, tool)
			}
			var got []*mcp.Tool
			for _, tool := range gwTools {
				if strings.HasPrefix(tool.Name, prefix) {
					got = append(got, tool)
				}
			}
			byName := func(a, b *mcp.Tool) int { return strings.Compare(a.Name, b.Name) }
			slices.SortFunc(want, byName)
			slices.SortFunc(got, byName)
			if diff := cmp.Diff(wire(t, want), wire(t, got)); diff != "" {
				t.Errorf("tool definitions (-direct +gateway):\n%s", diff)
			}

			calls := []struct {
				tool string
				args any
			}{
				{"content", nil},
				{"echo", map[string]any{"text": "héllo \u2603 \"quoted\"\n"}},
				{"fail", map[string]any{"message": "it broke on purpose"}},
			}
			for _, c := range calls {
				wantRes, err := callCtx(direct, c.tool, c.args)
				if err != nil {
					t.Fatalf("direct %s: %v", c.tool, err)
				}
				gotRes, err := callCtx(cs, prefix+c.tool, c.args)
				if err != nil {
					t.Fatalf("gateway %s: %v", prefix+c.tool, err)
				}
				if diff := cmp.Diff(wire(t, wantRes), wire(t, gotRes)); diff != "" {
					t.Errorf("%s result (-direct +gateway):\n%s", c.tool, diff)
				}
				switch c.tool {
				case "content":
					var kinds []string
					for _, c := range gotRes.Content {
						kinds = append(kinds, fmt.Sprintf("%T", c))
					}
					wantKinds := []string{"*mcp.TextContent", "*mcp.ImageContent", "*mcp.AudioContent", "*mcp.EmbeddedResource", "*mcp.ResourceLink"}
					if diff := cmp.Diff(wantKinds, kinds); diff != "" {
						t.Errorf("content kinds (-want +got):\n%s", diff)
					}
				case "echo":
					if gotRes.StructuredContent == nil {
						t.Errorf("echo: no structuredContent through the gateway")
					}
				case "fail":
					if !gotRes.IsError || text(gotRes) != "it broke on purpose" {
						t.Errorf("fail: got isError=%v %q, want an isError result with the message", gotRes.IsError, text(gotRes))
					}
				}
			}
		})
	}
}

// progressRecorder collects progress notifications.
type progressRecorder struct {
	mu    sync.Mutex
	notes []*mcp.ProgressNotificationParams
}

func (r *progressRecorder) handler(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, req.Params)
}

func (r *progressRecorder) withToken(tok any) []*mcp.ProgressNotificationParams {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*mcp.ProgressNotificationParams
	for _, n := range r.notes {
		if fmt.Sprint(n.ProgressToken) == fmt.Sprint(tok) {
			out = append(out, n)
		}
	}
	return out
}

// waitProgress waits for n notifications with token and reports every
// notification received when they do not come.
func waitProgress(t *testing.T, rec *progressRecorder, token any, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(rec.withToken(token)) < n {
		if time.Now().After(deadline) {
			var all []string
			for _, p := range rec.all() {
				all = append(all, fmt.Sprintf("%v(%T) %v/%v", p.ProgressToken, p.ProgressToken, p.Progress, p.Total))
			}
			t.Fatalf("timed out waiting for %d progress notifications with token %v (%T); received: %v", n, token, token, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *progressRecorder) all() []*mcp.ProgressNotificationParams {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notes)
}

// TestPassthroughProgress calls `progress {steps: 3}` with the client's own
// progress token (a string, then a number) and expects three notifications
// carrying that token, for a stdio and a streamable HTTP upstream.
func TestPassthroughProgress(t *testing.T) {
	g, _ := passthroughGateway(t)
	rec := &progressRecorder{}
	cs := connect(t, g.URL(), &mcp.ClientOptions{ProgressNotificationHandler: rec.handler})
	for i, server := range []string{"s", "h"} {
		// A string token and a numeric one, several rounds each: the
		// notifications an upstream sends just before its result are
		// easily lost by a relay that forgets the token when the call ends.
		for round := range 3 {
			for _, token := range []any{fmt.Sprintf("client-token-%s-%d", server, round), 4200 + 10*i + round} {
				ok := t.Run(fmt.Sprintf("%s/%T/%d", server, token, round), func(t *testing.T) {
					params := &mcp.CallToolParams{Name: server + "__progress", Arguments: map[string]any{"steps": 3}}
					params.SetProgressToken(token)
					res, err := cs.CallTool(ctx60(t), params)
					if err != nil {
						t.Fatal(err)
					}
					if text(res) != "done" {
						t.Fatalf("progress returned %q", text(res))
					}
					waitProgress(t, rec, token, 3)
					var got []string
					for _, n := range rec.withToken(token) {
						got = append(got, fmt.Sprintf("%v %T %v/%v %s", n.ProgressToken, n.ProgressToken, n.Progress, n.Total, n.Message))
					}
					tokType := "string"
					if _, ok := token.(int); ok {
						tokType = "float64" // a JSON number, as the client decodes it
					}
					var want []string
					for i := 1; i <= 3; i++ {
						want = append(want, fmt.Sprintf("%v %s %d/3 step %d of 3", token, tokType, i, i))
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("progress notifications (-want +got):\n%s", diff)
					}
				})
				if !ok {
					return // the next rounds would only wait as long again
				}
			}
		}
	}
	// No notification carried a token other than the client's own.
	for _, n := range rec.all() {
		if s, ok := n.ProgressToken.(string); ok && !strings.HasPrefix(s, "client-token-") {
			t.Errorf("progress notification with a token the client never sent: %v", n.ProgressToken)
		}
	}
}

// logRecorder collects log messages.
type logRecorder struct {
	mu   sync.Mutex
	msgs []*mcp.LoggingMessageParams
}

func (r *logRecorder) handler(_ context.Context, req *mcp.LoggingMessageRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, req.Params)
}

func (r *logRecorder) find(data string) *mcp.LoggingMessageParams {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if m.Data == data {
			return m
		}
	}
	return nil
}

// TestPassthroughLogging sets the client's logging level, calls `log` and
// expects the upstream's notifications/message with its level, data and
// logger name.
func TestPassthroughLogging(t *testing.T) {
	g, _ := passthroughGateway(t)
	rec := &logRecorder{}
	cs := connect(t, g.URL(), &mcp.ClientOptions{LoggingMessageHandler: rec.handler})
	if err := cs.SetLoggingLevel(ctx60(t), &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatalf("setting the logging level: %v", err)
	}
	for _, server := range []string{"s", "h"} {
		t.Run(server, func(t *testing.T) {
			msg := "disk almost full on " + server
			res := callTool(t, cs, server+"__log", map[string]any{"level": "warning", "message": msg})
			if text(res) != "logged" {
				t.Fatalf("log returned %q", text(res))
			}
			var got *mcp.LoggingMessageParams
			eventually(t, 20*time.Second, "the log message", func() bool {
				got = rec.find(msg)
				return got != nil
			})
			if got.Level != "warning" {
				t.Errorf("level = %q, want warning", got.Level)
			}
			// The upstream names itself as the logger; the gateway fills in the
			// server name only when the upstream gives none.
			if want := server + "-up"; got.Logger != want {
				t.Errorf("logger = %q, want %q", got.Logger, want)
			}
		})
	}
}

// TestPassthroughLogsStayWithCaller has one client call `log` again and
// again while another client, with the same logging level, makes no call:
// the messages sent during the first client's calls reach only that client.
func TestPassthroughLogsStayWithCaller(t *testing.T) {
	g, _ := passthroughGateway(t)
	alice, bob := &logRecorder{}, &logRecorder{}
	a := connect(t, g.URL(), &mcp.ClientOptions{LoggingMessageHandler: alice.handler})
	b := connect(t, g.URL(), &mcp.ClientOptions{LoggingMessageHandler: bob.handler})
	for _, cs := range []*mcp.ClientSession{a, b} {
		if err := cs.SetLoggingLevel(ctx60(t), &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	for _, server := range []string{"s", "h"} {
		for i := range n {
			callTool(t, a, server+"__log", map[string]any{"message": fmt.Sprintf("alice's secret %s %d", server, i)})
		}
	}
	eventually(t, 20*time.Second, "alice's log messages at alice", func() bool {
		return alice.find(fmt.Sprintf("alice's secret s %d", n-1)) != nil && alice.find(fmt.Sprintf("alice's secret h %d", n-1)) != nil
	})
	// Bob's own message comes after anything relayed to him during alice's
	// calls: the gateway relays one upstream's notifications in order, and
	// the client handles them in order.
	callTool(t, b, "s__log", map[string]any{"message": "bob's marker"})
	eventually(t, 20*time.Second, "bob's log message at bob", func() bool { return bob.find("bob's marker") != nil })
	bob.mu.Lock()
	defer bob.mu.Unlock()
	for _, m := range bob.msgs {
		if s, _ := m.Data.(string); strings.HasPrefix(s, "alice's") {
			t.Errorf("bob received a log message of alice's call: %q", s)
		}
	}
}

// TestPassthroughCancellation cancels a client's call to `slow` once it has
// reached the upstream and expects the upstream to see the cancellation.
func TestPassthroughCancellation(t *testing.T) {
	g, _ := passthroughGateway(t)
	cs := connect(t, g.URL(), nil)
	for _, server := range []string{"s", "h"} {
		t.Run(server, func(t *testing.T) {
			before := upstreamStats(t, cs, server)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: server + "__slow", Arguments: map[string]any{"ms": 30000}})
				done <- err
			}()
			eventually(t, 20*time.Second, "the slow call to reach the upstream", func() bool {
				return upstreamStats(t, cs, server)["calls"] > before["calls"]
			})
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("cancelled call returned %v, want context.Canceled", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the cancelled call did not return")
			}
			eventually(t, 20*time.Second, "the upstream to count the cancellation", func() bool {
				return upstreamStats(t, cs, server)["cancelled"] == before["cancelled"]+1
			})
			if after := upstreamStats(t, cs, server); after["slowCompleted"] != before["slowCompleted"] {
				t.Errorf("slow completed although cancelled: %v", after)
			}
		})
	}
}

// relayClient is a client whose sampling, elicitation and roots answers
// carry its own name.
func relayClient(t *testing.T, url, name string) *mcp.ClientSession {
	t.Helper()
	return connectClient(t, url, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			prompt := ""
			if len(req.Params.Messages) > 0 {
				if tc, ok := req.Params.Messages[0].Content.(*mcp.TextContent); ok {
					prompt = tc.Text
				}
			}
			return &mcp.CreateMessageResult{Role: "assistant", Model: "model-" + name, Content: &mcp.TextContent{Text: name + " answers " + prompt}}, nil
		},
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"answer": name + " agrees to " + req.Params.Message}}, nil
		},
	}, &mcp.Root{URI: "file:///work/" + name, Name: name})
}

// relayArgs are the arguments of the sample, elicit or roots tool.
func relayArgs(tool, arg string) map[string]any {
	switch tool {
	case "sample":
		return map[string]any{"prompt": arg}
	case "elicit":
		return map[string]any{"message": arg}
	}
	return map[string]any{}
}

// relayWant is what the sample, elicit and roots tools return when the
// request reached the client called name.
func relayWant(name, tool, arg string) string {
	switch tool {
	case "sample":
		return name + " answers " + arg
	case "elicit":
		return fmt.Sprintf(`{"action":"accept","content":{"answer":"%s agrees to %s"}}`, name, arg)
	default:
		return fmt.Sprintf(`["file:///work/%s"]`, name)
	}
}

// TestPassthroughRelayToCaller connects two clients at once, each answering
// sampling, elicitation and roots requests in its own way, and checks that
// the upstream's requests made during a call reach the client that made the
// call, for a stdio and a streamable HTTP upstream.
func TestPassthroughRelayToCaller(t *testing.T) {
	g, _ := passthroughGateway(t)
	clients := map[string]*mcp.ClientSession{
		"alice": relayClient(t, g.URL(), "alice"),
		"bob":   relayClient(t, g.URL(), "bob"),
	}
	for _, server := range []string{"s", "h"} {
		for _, tool := range []string{"sample", "elicit", "roots"} {
			t.Run(server+"/"+tool, func(t *testing.T) {
				// Alternate between the clients so that each call follows one
				// of the other client.
				for _, name := range []string{"alice", "bob", "alice", "bob"} {
					arg := "question from " + name
					res := callTool(t, clients[name], server+"__"+tool, relayArgs(tool, arg))
					if res.IsError {
						t.Fatalf("%s: %s returned an error: %s", name, tool, text(res))
					}
					if got, want := text(res), relayWant(name, tool, arg); got != want {
						t.Errorf("%s called %s: got %q, want %q", name, tool, got, want)
					}
				}
			})
		}
	}
}

// knownBugs reports whether the tests should also fail on the gateway's
// known bugs (TOOLGATE_E2E_KNOWN_BUGS=1); by default they are skipped or
// tolerated, and each place says which bug it is.
func knownBugs() bool { return os.Getenv("TOOLGATE_E2E_KNOWN_BUGS") != "" }

// TestPassthroughRelayConcurrentCallers is TestPassthroughRelayToCaller
// with both clients calling at the same time. Over protocol 2025-11-25
// nothing in an upstream's sampling, elicitation or roots request says
// which call it belongs to, so while calls of both clients are in flight
// the gateway refuses such a request (roots: answers none). A client must
// never receive the other client's request nor an answer made by the other
// client.
func TestPassthroughRelayConcurrentCallers(t *testing.T) {
	g, _ := passthroughGateway(t)
	clients := map[string]*mcp.ClientSession{
		"alice": relayClient(t, g.URL(), "alice"),
		"bob":   relayClient(t, g.URL(), "bob"),
	}
	var (
		mu       sync.Mutex
		answered int
	)
	var wg sync.WaitGroup
	for name, cs := range clients {
		wg.Go(func() {
			for range 20 {
				for _, tool := range []string{"sample", "elicit", "roots"} {
					arg := "question from " + name
					res, err := callCtx(cs, "s__"+tool, relayArgs(tool, arg))
					if err != nil {
						if !strings.Contains(err.Error(), "cannot be attributed") {
							t.Errorf("%s: %s: %v", name, tool, err)
						}
						continue
					}
					got := text(res)
					for other := range clients {
						if other != name && strings.Contains(got, other) {
							t.Errorf("%s called %s and got the other client's answer: %q", name, tool, got)
						}
					}
					if got == relayWant(name, tool, arg) {
						mu.Lock()
						answered++
						mu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d of 120 relayed requests answered by their own client; the rest refused as ambiguous", answered)
}

// TestPassthroughResourcesPromptsCompletion lists and reads resources (static
// and templated), subscribes to one and receives its update, lists and gets
// the namespaced prompt and completes its argument, comparing with the
// upstream reached directly.
func TestPassthroughResourcesPromptsCompletion(t *testing.T) {
	g, _ := passthroughGateway(t)
	var mu sync.Mutex
	var updated []string
	cs := connect(t, g.URL(), &mcp.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			mu.Lock()
			defer mu.Unlock()
			updated = append(updated, req.Params.URI)
		},
	})
	direct := directStdio(t, "s-up")
	ctx := ctx60(t)

	t.Run("list", func(t *testing.T) {
		want, err := direct.ListResources(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cs.ListResources(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		byURI := func(a, b *mcp.Resource) int { return strings.Compare(a.URI, b.URI) }
		slices.SortFunc(want.Resources, byURI)
		slices.SortFunc(got.Resources, byURI)
		if diff := cmp.Diff(wire(t, want.Resources), wire(t, got.Resources)); diff != "" {
			t.Errorf("resources (-direct +gateway):\n%s", diff)
		}
		if len(got.Resources) != 2 {
			t.Errorf("gateway lists %d resources, want 2 (test://static/1 and /2)", len(got.Resources))
		}
		wantT, err := direct.ListResourceTemplates(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		gotT, err := cs.ListResourceTemplates(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wire(t, wantT.ResourceTemplates), wire(t, gotT.ResourceTemplates)); diff != "" {
			t.Errorf("resource templates (-direct +gateway):\n%s", diff)
		}
		if len(gotT.ResourceTemplates) != 1 || gotT.ResourceTemplates[0].URITemplate != "test://item/{id}" {
			t.Errorf("templates = %v, want test://item/{id}", wire(t, gotT.ResourceTemplates))
		}
	})

	t.Run("read", func(t *testing.T) {
		for _, uri := range []string{"test://static/1", "test://static/2", "test://item/42"} {
			want, err := direct.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
			if err != nil {
				t.Fatalf("direct read %s: %v", uri, err)
			}
			got, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
			if err != nil {
				t.Fatalf("gateway read %s: %v", uri, err)
			}
			if diff := cmp.Diff(wire(t, want), wire(t, got)); diff != "" {
				t.Errorf("read %s (-direct +gateway):\n%s", uri, diff)
			}
		}
		got, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://item/42"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Contents) != 1 || got.Contents[0].Text != "item 42" {
			t.Errorf("test://item/42 = %v, want the text \"item 42\"", wire(t, got))
		}
	})

	t.Run("subscribe", func(t *testing.T) {
		const uri = "test://static/1"
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatalf("subscribing: %v", err)
		}
		if got := text(callTool(t, cs, "s__touch", map[string]any{"uri": uri})); got != "touched "+uri {
			t.Fatalf("touch returned %q", got)
		}
		eventually(t, 20*time.Second, "resources/updated for "+uri, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Contains(updated, uri)
		})
		if err := cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
			t.Fatalf("unsubscribing: %v", err)
		}
	})

	t.Run("prompts", func(t *testing.T) {
		res, err := cs.ListPrompts(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		var greet *mcp.Prompt
		for _, p := range res.Prompts {
			names = append(names, p.Name)
			if p.Name == "s__greet" {
				greet = p
			}
		}
		slices.Sort(names)
		if diff := cmp.Diff([]string{"h__greet", "s__greet"}, names); diff != "" {
			t.Errorf("prompts (-want +got):\n%s", diff)
		}
		wantList, err := direct.ListPrompts(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if greet != nil && len(wantList.Prompts) == 1 {
			want := *wantList.Prompts[0]
			want.Name = "s__greet"
			if diff := cmp.Diff(wire(t, &want), wire(t, greet)); diff != "" {
				t.Errorf("prompt definition (-direct +gateway):\n%s", diff)
			}
		}
		args := map[string]string{"name": "Ada"}
		wantGet, err := direct.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: args})
		if err != nil {
			t.Fatal(err)
		}
		gotGet, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "s__greet", Arguments: args})
		if err != nil {
			t.Fatalf("getting s__greet: %v", err)
		}
		if diff := cmp.Diff(wire(t, wantGet), wire(t, gotGet)); diff != "" {
			t.Errorf("get prompt (-direct +gateway):\n%s", diff)
		}
	})

	t.Run("completion", func(t *testing.T) {
		arg := mcp.CompleteParamsArgument{Name: "name", Value: "al"}
		want, err := direct.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"}, Argument: arg})
		if err != nil {
			t.Fatal(err)
		}
		got, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "s__greet"}, Argument: arg})
		if err != nil {
			t.Fatalf("completing s__greet: %v", err)
		}
		if diff := cmp.Diff(wire(t, want), wire(t, got)); diff != "" {
			t.Errorf("completion (-direct +gateway):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"alice-test", "albert-test"}, got.Completion.Values); diff != "" {
			t.Errorf("completion values (-want +got):\n%s", diff)
		}
	})
}

// TestPassthroughToolListChanged adds a tool at the upstream and removes it
// again; the client is told with tools/list_changed each time and sees the
// namespaced tool come and go.
func TestPassthroughToolListChanged(t *testing.T) {
	g, _ := passthroughGateway(t)
	var mu sync.Mutex
	changed := 0
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return changed
	}
	cs := connect(t, g.URL(), &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			mu.Lock()
			defer mu.Unlock()
			changed++
		},
	})
	if slices.Contains(toolNames(t, cs), "s__extra") {
		t.Fatal("s__extra is listed before it was added")
	}
	n := count()
	if got := text(callTool(t, cs, "s__add_tool", map[string]any{"name": "extra"})); got != "added extra" {
		t.Fatalf("add_tool returned %q", got)
	}
	eventually(t, 20*time.Second, "tools/list_changed after add_tool", func() bool { return count() > n })
	eventually(t, 20*time.Second, "s__extra in tools/list", func() bool { return slices.Contains(toolNames(t, cs), "s__extra") })
	if got := text(callTool(t, cs, "s__extra", nil)); got != "dynamic tool extra" {
		t.Errorf("s__extra returned %q", got)
	}

	n = count()
	if got := text(callTool(t, cs, "s__remove_tool", map[string]any{"name": "extra"})); got != "removed extra" {
		t.Fatalf("remove_tool returned %q", got)
	}
	eventually(t, 20*time.Second, "tools/list_changed after remove_tool", func() bool { return count() > n })
	eventually(t, 20*time.Second, "s__extra gone from tools/list", func() bool { return !slices.Contains(toolNames(t, cs), "s__extra") })
	if _, err := callCtx(cs, "s__extra", nil); err == nil {
		t.Error("calling the removed tool s__extra succeeded")
	}
}

// rpcError returns the JSON-RPC error inside err, failing the test if
// there is none.
func rpcError(t *testing.T, err error) *jsonrpc.Error {
	t.Helper()
	var re *jsonrpc.Error
	if !errors.As(err, &re) {
		t.Fatalf("got error %v (%T), want a JSON-RPC error", err, err)
	}
	return re
}

// sameErrorModulo checks that two errors are the same JSON-RPC error once
// the names they are about are replaced by one placeholder.
func sameErrorModulo(t *testing.T, what string, hidden error, hiddenName string, unknown error, unknownName string) {
	t.Helper()
	if hidden == nil || unknown == nil {
		t.Fatalf("%s: hidden error %v, unknown error %v; want both to fail", what, hidden, unknown)
	}
	h, u := rpcError(t, hidden), rpcError(t, unknown)
	hm := strings.ReplaceAll(h.Message, hiddenName, "NAME")
	um := strings.ReplaceAll(u.Message, unknownName, "NAME")
	if h.Code != u.Code || hm != um {
		t.Errorf("%s: hidden gives %d %q, unknown gives %d %q; want the same", what, h.Code, h.Message, u.Code, u.Message)
	}
}

// TestPassthroughResourceAndPromptFilters hides a resource and every prompt
// with the server's filters: the hidden ones are not listed and asking for
// them fails exactly like asking for ones that do not exist.
func TestPassthroughResourceAndPromptFilters(t *testing.T) {
	g := startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"f": {
				"command": %s, "args": ["-name", "f-up"],
				"denyResourcesGlob": ["test://static/2"],
				"allowedPromptsGlob": ["nothing*"],
			},
		},
	}`, jsonString(testUpstream(t))))
	cs := connect(t, g.URL(), nil)
	ctx := ctx60(t)

	res, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, r := range res.Resources {
		uris = append(uris, r.URI)
	}
	if diff := cmp.Diff([]string{"test://static/1"}, uris); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	tmpls, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tmpls.ResourceTemplates) != 1 {
		t.Errorf("templates = %v, want test://item/{id}", wire(t, tmpls.ResourceTemplates))
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/1"}); err != nil {
		t.Errorf("reading the allowed test://static/1: %v", err)
	}
	_, hidden := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/2"})
	_, unknown := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/9"})
	sameErrorModulo(t, "read resource", hidden, "test://static/2", unknown, "test://static/9")
	hidden = cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://static/2"})
	unknown = cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://static/9"})
	sameErrorModulo(t, "subscribe", hidden, "test://static/2", unknown, "test://static/9")

	prompts, err := cs.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(prompts.Prompts) != 0 {
		t.Errorf("prompts = %v, want none", wire(t, prompts.Prompts))
	}
	_, hidden = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "f__greet", Arguments: map[string]string{"name": "x"}})
	_, unknown = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "f__nothing_here", Arguments: map[string]string{"name": "x"}})
	sameErrorModulo(t, "get prompt", hidden, "f__greet", unknown, "f__nothing_here")
	arg := mcp.CompleteParamsArgument{Name: "name", Value: "al"}
	_, hidden = cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "f__greet"}, Argument: arg})
	_, unknown = cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "f__nothing_here"}, Argument: arg})
	sameErrorModulo(t, "complete", hidden, "f__greet", unknown, "f__nothing_here")
}
