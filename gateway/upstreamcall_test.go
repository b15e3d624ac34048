package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// callerFixture is a gateway in process in front of an SDK server over
// streamable HTTP, whose HTTP handler lets a test answer the tools/call
// POSTs itself (fault) and records where they came from.
type callerFixture struct {
	g     *Gateway
	fault atomic.Pointer[func(w http.ResponseWriter)]
	// faultPings has the fault answer pings too (a server that lost the
	// session), else it answers tools/call POSTs only.
	faultPings atomic.Bool
	pings      atomic.Int32 // the gateway's pings

	mu      sync.Mutex
	ids     []string          // the JSON-RPC IDs of the tools/call POSTs
	peers   map[string]bool   // their client addresses
	answers map[string]string // the gateway's answers to scripted requests, by ID
}

func newCallerFixture(t *testing.T, opts *mcp.StreamableHTTPOptions) *callerFixture {
	t.Helper()
	f := &callerFixture{peers: map[string]bool{}, answers: map[string]string{}}
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	addAnswerTools(up)
	// roots asks the gateway for its roots during the call: a request
	// that arrives on the call's own stream (or, in JSON mode, on the
	// standalone one) and must be answered for the call to finish.
	mcp.AddTool(up, &mcp.Tool{Name: "roots"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.ListRoots(ctx, nil)
		if err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("%d roots", len(res.Roots))}}}, nil, nil
	})
	// ask, elicit and ping send the gateway the other requests a server
	// may make during a call; the gateway relays sampling and elicitation
	// to the client whose call is in flight, and the fixture's calls
	// have none, so the answer is the relay's refusal.
	answer := func(err error) (*mcp.CallToolResult, any, error) {
		text := "ok"
		if err != nil {
			text = err.Error()
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
	}
	mcp.AddTool(up, &mcp.Tool{Name: "ask"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		_, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}})
		return answer(err)
	})
	mcp.AddTool(up, &mcp.Tool{Name: "elicit"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		_, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "name?", RequestedSchema: map[string]any{"type": "object"}})
		return answer(err)
	})
	mcp.AddTool(up, &mcp.Tool{Name: "ping"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		return answer(req.Session.Ping(ctx, nil))
	})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, opts)
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var msg struct {
				ID     any    `json:"id"`
				Method string `json:"method"`
			}
			if json.Unmarshal(body, &msg) == nil && msg.Method == "" && strings.HasPrefix(fmt.Sprint(msg.ID), "scripted-") {
				f.mu.Lock()
				f.answers[fmt.Sprint(msg.ID)] = string(body)
				f.mu.Unlock()
				w.WriteHeader(http.StatusAccepted)
				return
			}
			if json.Unmarshal(body, &msg) == nil && msg.Method == "tools/call" {
				f.mu.Lock()
				f.ids = append(f.ids, fmt.Sprint(msg.ID))
				f.peers[r.RemoteAddr] = true
				f.mu.Unlock()
				if fault := f.fault.Load(); fault != nil {
					(*fault)(w)
					return
				}
			}
			if msg.Method == "ping" {
				f.pings.Add(1)
			}
			if msg.Method == "ping" && f.faultPings.Load() {
				if fault := f.fault.Load(); fault != nil {
					(*fault)(w)
					return
				}
			}
		}
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(upSrv.Close)

	cfg := config.Demo(upSrv.URL, apikey.Hash("tg_unused"))
	cfg.DataDir = t.TempDir()
	cfg.CodeMode.Enabled = false
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.g = startGateway(t, cfg, &Options{Auth: auth, Logger: slog.New(slog.DiscardHandler)})
	return f
}

// call calls the demo upstream's tool with args through the tool path.
func (f *callerFixture) call(tool, args string) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f.g.CallTool(ctx, &ToolCall{
		Principal: Principal{Project: config.DefaultProject, KeyID: "k1", ClientIP: "127.0.0.1"},
		Name:      "demo__" + tool,
		Arguments: json.RawMessage(args),
	})
}

// restarts is how often the demo upstream's session has been replaced.
func (f *callerFixture) restarts() int {
	_, ps := f.g.Status()
	return ps[config.DefaultProject].Upstreams["demo"].Restarts
}

// TestStreamCallerAnswers proves calls to a streamable HTTP upstream take
// the gateway's own POST (its string IDs), whether the upstream answers
// with an event stream or with JSON, and come back as the upstream sent
// them: results, tool errors, protocol errors, and a call that needs its
// server-to-client request answered first.
func TestStreamCallerAnswers(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts *mcp.StreamableHTTPOptions
	}{
		{"event stream", nil},
		{"json", &mcp.StreamableHTTPOptions{JSONResponse: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			f := newCallerFixture(t, mode.opts)
			res, err := f.call("echo", `{"text":"hello"}`)
			if err != nil {
				t.Fatal(err)
			}
			if got := resultText(res); got != "hello" || res.IsError {
				t.Errorf("echo = %q (isError %v), want hello", got, res.IsError)
			}
			if got, _ := json.Marshal(res.StructuredContent); string(got) != `{"text":"hello"}` {
				t.Errorf("structuredContent = %s", got)
			}

			res, err = f.call("fail", `{}`)
			if err != nil || !res.IsError || resultText(res) != "it failed" {
				t.Errorf("fail = %+v, %v; want the tool error", res, err)
			}

			_, err = f.call("protocol_error", `{}`)
			var rpcErr *jsonrpc.Error
			if !errors.As(err, &rpcErr) || rpcErr.Code != -32042 || rpcErr.Message != "refused upstream" {
				t.Errorf("protocol_error: err = %v, want the upstream's -32042", err)
			}

			res, err = f.call("roots", `{}`)
			if err != nil || resultText(res) != "0 roots" {
				t.Errorf("roots = %+v, %v; want 0 roots", res, err)
			}

			f.mu.Lock()
			defer f.mu.Unlock()
			for _, id := range f.ids {
				if !strings.HasPrefix(id, callIDPrefix) {
					t.Errorf("a tools/call POST had ID %s, not one of the gateway's own", id)
				}
			}
			if len(f.ids) != 4 {
				t.Errorf("the upstream saw %d tools/call POSTs, want 4", len(f.ids))
			}
		})
	}
}

// TestStreamCallerReusesConnections proves sequential calls share one
// HTTP connection (each call's stream is read to its end), and that
// concurrent calls each get their own answer.
func TestStreamCallerReusesConnections(t *testing.T) {
	f := newCallerFixture(t, nil)
	for i := range 20 {
		if _, err := f.call("echo", fmt.Sprintf(`{"text":"%d"}`, i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the previous stream's end is read in the background
	}
	f.mu.Lock()
	if len(f.peers) > 2 {
		t.Errorf("20 calls used %d connections, want 1 (2 at most, should a stream's end be late)", len(f.peers))
	}
	f.mu.Unlock()

	// Concurrent calls share the session's headers and pool (go test
	// -race runs this package in CI).
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			want := fmt.Sprintf("concurrent %d", i)
			res, err := f.call("echo", fmt.Sprintf(`{"text":%q}`, want))
			if err != nil || resultText(res) != want {
				t.Errorf("call %d: %+v, %v", i, res, err)
			}
		})
	}
	wg.Wait()
}

// TestStreamCallerFailures answers the gateway's tools/call POST as broken
// or unusual servers do, and expects the error the SDK's client gives and
// its judgement of the session: replaced after the failures that end an
// SDK session, kept after the others.
func TestStreamCallerFailures(t *testing.T) {
	sse := func(body string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, body)
		}
	}
	status := func(code int, body string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			if strings.HasPrefix(body, "{") {
				w.Header().Set("Content-Type", "application/json")
			}
			w.WriteHeader(code)
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name    string
		fault   func(http.ResponseWriter)
		want    string // in the error
		rpcCode int64  // the JSON-RPC error expected instead, when not 0
		pings   bool   // the fault answers the gateway's pings too
		doubts  bool   // the gateway pings the server after the refusal
		ends    bool   // whether the session is replaced
	}{
		{name: "session unknown", fault: status(http.StatusNotFound, "session not found"), want: "no longer knows session", ends: true},
		{name: "server error on one call", fault: status(http.StatusInternalServerError, "boom"), want: "500 Internal Server Error", doubts: true},
		{name: "server error on every request", fault: status(http.StatusInternalServerError, "boom"), want: "500 Internal Server Error", pings: true, doubts: true, ends: true},
		{name: "session lost, answered 400", fault: status(http.StatusBadRequest, "Bad Request: No valid session ID provided"), want: "400 Bad Request", pings: true, doubts: true, ends: true},
		{name: "one message refused, 400", fault: status(http.StatusBadRequest, "malformed payload"), want: "400 Bad Request", doubts: true},
		{name: "overloaded", fault: status(http.StatusServiceUnavailable, "later"), want: "503 Service Unavailable"},
		{name: "message too large", fault: status(http.StatusRequestEntityTooLarge, "request body exceeds 4194304 bytes"), want: "413 Request Entity Too Large", doubts: true},
		{name: "refused with a JSON-RPC error", fault: status(http.StatusBadRequest, `{"jsonrpc":"2.0","id":"x","error":{"code":-32001,"message":"busy"}}`), rpcCode: -32001},
		{name: "stream without the response", fault: sse(""), want: "request terminated without response"},
		{name: "stream cut after an event ID", fault: sse("id: 7\ndata: \n\n"), want: `ended before the response (last event "7")`, ends: true},
		{name: "garbage event", fault: sse("data: {not json\n\n"), want: "decoding an event", ends: true},
		{name: "not an MCP answer", fault: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "hello")
		}, want: `unsupported content type "text/plain"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newCallerFixture(t, nil)
			f.fault.Store(&tc.fault)
			f.faultPings.Store(tc.pings)
			res, err := f.call("echo", `{"text":"x"}`)
			if !tc.pings {
				f.fault.Store(nil)
			}
			if tc.rpcCode != 0 {
				var rpcErr *jsonrpc.Error
				if !errors.As(err, &rpcErr) || rpcErr.Code != tc.rpcCode {
					t.Fatalf("err = %v, want JSON-RPC error %d", err, tc.rpcCode)
				}
			} else {
				var ce *callerr.Error
				if !errors.As(err, &ce) || ce.Code != callerr.Unavailable || !strings.Contains(ce.Message, tc.want) {
					t.Fatalf("result %+v, err %v; want an unavailable error with %q", res, err, tc.want)
				}
			}

			// Well before the periodic ping (pingInterval): the refusal
			// itself has the session pinged or ended.
			deadline := time.Now().Add(pingInterval / 3)
			for tc.ends && f.restarts() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the session was not replaced")
				}
				time.Sleep(20 * time.Millisecond)
			}
			f.fault.Store(nil)
			for tc.doubts && f.pings.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no ping after the refusal")
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The next call succeeds, on the same session or a new one.
			for {
				res, err = f.call("echo", `{"text":"again"}`)
				if err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil || resultText(res) != "again" {
				t.Fatalf("the call after the failure: %+v, %v", res, err)
			}
			if !tc.ends && f.restarts() != 0 {
				t.Errorf("the session was replaced %d times; the failure should not end it", f.restarts())
			}
		})
	}
}
