package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

// titledMultiSelect is a SEP-1330 schema: a multi-select whose options have
// titles (items.anyOf of const and title), which the MCP SDK's checks do
// not know.
const titledMultiSelect = `{"type":"object","properties":{"colors":{"type":"array","title":"Colors","items":{"anyOf":[{"const":"r","title":"Red"},{"const":"g","title":"Green"}]},"minItems":1}},"required":["colors"]}`

// TestElicitationPassesThrough proves an upstream's elicitation/create
// reaches the client as the upstream sent it, schemas the SDK does not
// know included, and the client's answer reaches the upstream unchanged.
func TestElicitationPassesThrough(t *testing.T) {
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	up.AddTool(&mcp.Tool{Name: "ask", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var schema map[string]any
		if err := json.Unmarshal(req.Params.Arguments, &schema); err != nil {
			return nil, err
		}
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "pick", RequestedSchema: schema["schema"]})
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}, nil
		}
		b, _ := json.Marshal(res)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil
	})
	upSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil))
	t.Cleanup(upSrv.Close)
	cfg := config.Demo(upSrv.URL, "")
	cfg.CodeMode.Enabled = false
	cfg.DataDir = ""
	off := false
	cfg.Auth.Required = &off
	g := startGateway(t, cfg, nil)

	for _, tc := range []struct {
		name, schema string
		answer       *mcp.ElicitResult
		want         string
	}{
		{"a titled multi-select, declined", titledMultiSelect, &mcp.ElicitResult{Action: "decline"}, `{"action":"decline"}`},
		{"a plain schema, accepted", `{"type":"object","properties":{"name":{"type":"string","default":"x"}}}`,
			&mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "ada"}}, `{"action":"accept","content":{"name":"ada"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got json.RawMessage
			client := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, &mcp.ClientOptions{
				Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}}},
			})
			// Record the request as it arrives, before the SDK's client
			// judges its schema.
			client.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
				return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
					if method != "elicitation/create" {
						return next(ctx, method, req)
					}
					got, _ = json.Marshal(req.GetParams())
					return tc.answer, nil
				}
			})
			ct, st := mcp.NewInMemoryTransports()
			ss, err := g.Server(config.DefaultProject).Connect(context.Background(), st, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ss.Close() })
			// A client on 2026-07-28 takes no requests during a call
			// (TestServerRequestsOfStatelessClients).
			cs, err := client.Connect(context.Background(), ct, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cs.Close() })
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "demo__ask", Arguments: map[string]any{"schema": json.RawMessage(tc.schema)}})
			if err != nil {
				t.Fatal(err)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; res.IsError || text != tc.want {
				t.Errorf("the upstream got %s", text)
			}
			var params, want map[string]any
			_ = json.Unmarshal(got, &params)
			_ = json.Unmarshal([]byte(`{"message":"pick","mode":"form","requestedSchema":`+tc.schema+`}`), &want)
			if diff := cmp.Diff(want, params); diff != "" {
				t.Errorf("the client got (-want +got):\n%s", diff)
			}
		})
	}
}

// samplingUpstream serves a tool "sample" that reports progress (when the
// call has a token), asks its client for a sampling, once proceed lets it,
// and returns the text sampled.
func samplingUpstream(t *testing.T, started, proceed chan struct{}) *Gateway {
	t.Helper()
	cfg := config.Demo(samplingUpstreamURL(t, started, proceed), "")
	cfg.CodeMode.Enabled = false
	cfg.DataDir = ""
	off := false
	cfg.Auth.Required = &off
	return startGateway(t, cfg, nil)
}

// stream sends a request of session sid and returns the JSON-RPC messages
// of its answer's event stream, as they come, on a channel closed at its
// end ("" when the SDK opens an event stream).
func (f *httpFixture) stream(t *testing.T, ctx context.Context, method, sid, body string) <-chan string {
	t.Helper()
	return f.streamWithKey(t, ctx, method, "", sid, body)
}

// streamWithKey is stream with an API key.
func (f *httpFixture) streamWithKey(t *testing.T, ctx context.Context, method, key, sid, body string) <-chan string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, f.url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
	} else {
		req.Header.Set("Accept", "text/event-stream")
	}
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	out := make(chan string, 16)
	go func() {
		defer close(out)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the stream ends
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				out <- data
			} else if sc.Text() == ": ok" {
				out <- "" // the SDK opened the stream
			}
		}
	}()
	return out
}

// next returns the next message of ch, failing after 10 s.
func next(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("the stream ended before %s", what)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
	}
	return ""
}

// answerSampling answers the sampling request msg of session sid.
func (f *httpFixture) answerSampling(t *testing.T, sid, msg string) {
	t.Helper()
	var request struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if err := json.Unmarshal([]byte(msg), &request); err != nil || request.Method != "sampling/createMessage" {
		t.Fatalf("want a sampling request, got %s", msg)
	}
	if code, _, msg := f.post(t, "", sid, `{"jsonrpc":"2.0","id":`+string(request.ID)+`,"result":{"role":"assistant","model":"m","content":{"type":"text","text":"sampled"}}}`); code != http.StatusAccepted {
		t.Fatalf("the client's answer: %d %s", code, msg)
	}
}

// samplingSession opens a session of a client that can sample.
func (f *httpFixture) samplingSession(t *testing.T) string {
	t.Helper()
	code, sid, msg := f.post(t, "", "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}`)
	if code != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %s", code, msg)
	}
	if code, _, msg := f.post(t, "", sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); code != http.StatusAccepted {
		t.Fatalf("initialized: %d %s", code, msg)
	}
	return sid
}

// TestRelayedMessagesOnTheCallsStream proves that what an upstream sends
// during a call (progress, a sampling request) reaches a client that never
// opens its session's event stream: on the call's own stream, before the
// answer, as the MCP SDK sends its own handlers' messages.
func TestRelayedMessagesOnTheCallsStream(t *testing.T) {
	started, proceed := make(chan struct{}, 1), make(chan struct{}, 1)
	proceed <- struct{}{}
	g := samplingUpstream(t, started, proceed)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	f := &httpFixture{g: g, url: srv.URL + "/mcp"}
	sid := f.samplingSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs := f.stream(t, ctx, http.MethodPost, sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__sample","_meta":{"progressToken":"mine"}}}`)
	if m := next(t, msgs, "progress"); !strings.Contains(m, `"method":"notifications/progress"`) || !strings.Contains(m, `"progressToken":"mine"`) {
		t.Fatalf("want progress with the client's token, got %s", m)
	}
	f.answerSampling(t, sid, next(t, msgs, "sampling request"))
	if m := next(t, msgs, "answer"); !strings.Contains(m, `"text":"sampled"`) || strings.Contains(m, `"isError":true`) {
		t.Fatalf("the call answered %s", m)
	}
}

// TestRelayedRequestWaitsForTheEventStream proves that a request an
// upstream makes during a call the access layer answers reaches its
// client when the session's event stream, closed meanwhile, is back: the
// relay sends it again until it is delivered.
func TestRelayedRequestWaitsForTheEventStream(t *testing.T) {
	started, proceed := make(chan struct{}, 1), make(chan struct{}, 1)
	g := samplingUpstream(t, started, proceed)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	f := &httpFixture{g: g, url: srv.URL + "/mcp"}
	sid := f.samplingSession(t)
	undelivered := make(chan struct{}, 1)
	relayUndelivered = func() {
		select {
		case undelivered <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { relayUndelivered = func() {} })

	getCtx, closeGet := context.WithTimeout(context.Background(), 20*time.Second)
	defer closeGet()
	events := f.stream(t, getCtx, http.MethodGet, sid, "")
	next(t, events, "event stream")
	before := f.accessCalls(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs := f.stream(t, ctx, http.MethodPost, sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__sample"}}`)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not reach the upstream")
	}
	closeGet()
	p := g.project(config.DefaultProject)
	p.sessions.mu.Lock()
	s := p.sessions.byID[sid]
	p.sessions.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); s.streams.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the event stream did not close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	proceed <- struct{}{}
	select {
	case <-undelivered:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not try to send the upstream's request")
	}
	events = f.stream(t, ctx, http.MethodGet, sid, "")
	next(t, events, "event stream")
	f.answerSampling(t, sid, next(t, events, "sampling request"))
	if m := next(t, msgs, "answer"); !strings.Contains(m, `"text":"sampled"`) || strings.Contains(m, `"isError":true`) {
		t.Fatalf("the call answered %s", m)
	}
	if f.accessCalls(t) != before+1 {
		t.Error("the access layer did not answer the call")
	}
}
