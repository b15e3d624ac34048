package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
)

// httpFixture is a gateway in process, with two keys, in front of an
// upstream with an echo, a failing and a slow tool, served over loopback.
// slow reports its start on started and its cancellation on cancelled.
type httpFixture struct {
	g         *Gateway
	cfg       *config.Config
	url       string // the gateway's MCP endpoint
	audit     string // the audit log's path
	keys      [2]string
	started   chan struct{}
	cancelled chan struct{}
}

// newHTTPFixture starts the fixture; tweak, when given, changes the
// configuration first. The upstream also offers a resource (mem://note)
// and a prompt (greet).
func newHTTPFixture(t *testing.T, tweak ...func(*config.Config)) *httpFixture {
	t.Helper()
	f := &httpFixture{started: make(chan struct{}, 4), cancelled: make(chan struct{}, 4)}
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	up.AddResource(&mcp.Resource{URI: "mem://note", Name: "note"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "mem://note", Text: "a note"}}}, nil
	})
	up.AddPrompt(&mcp.Prompt{Name: "greet"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello"}}}}, nil
	})
	addAnswerTools(up)
	mcp.AddTool(up, &mcp.Tool{Name: "slow"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		f.started <- struct{}{}
		select {
		case <-ctx.Done():
			f.cancelled <- struct{}{}
			return nil, nil, ctx.Err()
		case <-time.After(30 * time.Second):
			return &mcp.CallToolResult{Content: []mcp.Content{}}, nil, nil
		}
	})
	upSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil))
	t.Cleanup(upSrv.Close)

	var hashes [2]string
	for i := range f.keys {
		key, _, _, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		f.keys[i], hashes[i] = key, apikey.Hash(key)
	}
	cfg := config.Demo(upSrv.URL, hashes[0])
	cfg.DataDir = t.TempDir()
	cfg.CodeMode.Enabled = false
	p := cfg.Projects[config.DefaultProject]
	p.APIKeys = append(p.APIKeys, config.APIKey{Name: "second", SHA256: hashes[1]})
	for _, fn := range tweak {
		fn(cfg)
	}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.audit = filepath.Join(cfg.DataDir, "audit.jsonl")
	auditLog, err := audit.Open(f.audit, &audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() })
	g := startGateway(t, cfg, &Options{Auth: auth, Audit: auditLog})
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	f.g, f.cfg, f.url = g, cfg, srv.URL+"/mcp"
	return f
}

// replica starts another gateway in front of f's upstream, with f's keys
// and configuration but sessionKey; it shares no state with f.
func (f *httpFixture) replica(t *testing.T, sessionKey string) *httpFixture {
	t.Helper()
	cfg := *f.cfg
	cfg.SessionKey = sessionKey
	cfg.DataDir = t.TempDir()
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, &cfg, &Options{Auth: auth})
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	return &httpFixture{g: g, cfg: &cfg, url: srv.URL + "/mcp", keys: f.keys, started: f.started, cancelled: f.cancelled}
}

// addAnswerTools gives up three tools, one for each kind of answer: echo
// (text and structured content), fail (a tool error, "it failed") and
// protocol_error (JSON-RPC error -32042, "refused upstream").
func addAnswerTools(up *mcp.Server) {
	type textIn struct {
		Text string `json:"text"`
	}
	mcp.AddTool(up, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, textIn, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, in, nil
	})
	mcp.AddTool(up, &mcp.Tool{Name: "fail"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "it failed"}}}, nil, nil
	})
	up.AddTool(&mcp.Tool{Name: "protocol_error", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return nil, &jsonrpc.Error{Code: -32042, Message: "refused upstream"}
	})
}

// post sends one JSON-RPC message as a client of session sid with key.
// It returns the status, the session header of the answer and the one
// JSON-RPC message of the body (read from an event stream when the answer
// is one), or the body itself when it holds none. A request that fails is
// reported with t.Error (post may run on a goroutine of its own) and
// returns status 0.
func (f *httpFixture) post(t *testing.T, key, sid, body string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	defer resp.Body.Close()
	msg := ""
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && strings.Contains(data, `"id"`) {
				msg = data
				break
			}
		}
	} else {
		b, _ := io.ReadAll(resp.Body)
		msg = string(b)
	}
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), msg
}

// session opens an initialized session with key, with its event stream
// open (as clients keep it) until the test ends.
func (f *httpFixture) session(t *testing.T, key string) string {
	t.Helper()
	code, sid, msg := f.post(t, key, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if code != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %d %q %s", code, sid, msg)
	}
	if code, _, msg := f.post(t, key, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); code != http.StatusAccepted {
		t.Fatalf("initialized: %d %s", code, msg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	next(t, f.streamWithKey(t, ctx, http.MethodGet, key, sid, ""), "event stream")
	return sid
}

// TestDirectCallsDeclineWhatTheSDKRefuses proves the access layer answers
// no call that the SDK's handler would refuse: the SDK's refusals still
// come back.
func TestDirectCallsDeclineWhatTheSDKRefuses(t *testing.T) {
	f := newHTTPFixture(t)
	sid := f.session(t, f.keys[0])
	before := f.accessCalls(t)
	defer func() {
		if n := f.accessCalls(t) - before; n != 0 {
			t.Errorf("the access layer answered %v refused calls", n)
		}
	}()
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"}}}`
	tests := []struct {
		name   string
		key    string
		sid    string
		header []string
		want   int
	}{
		{"a session of another key", f.keys[1], sid, nil, http.StatusForbidden},
		{"an unknown session", f.keys[0], "no-such-session", nil, http.StatusNotFound},
		{"an unsupported protocol version", f.keys[0], sid, []string{"Mcp-Protocol-Version", "1999-01-01"}, http.StatusBadRequest},
		{"text/event-stream not accepted", f.keys[0], sid, []string{"Accept", "application/json"}, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, msg := f.post(t, tc.key, tc.sid, call, tc.header...)
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, msg)
			}
			if strings.Contains(msg, `"result"`) {
				t.Fatalf("answered: %s", msg)
			}
		})
	}
	t.Run("a closed session", func(t *testing.T) {
		sid := f.session(t, f.keys[0])
		req, _ := http.NewRequest(http.MethodDelete, f.url, nil)
		req.Header.Set("Authorization", "Bearer "+f.keys[0])
		req.Header.Set("Mcp-Session-Id", sid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if code, _, msg := f.post(t, f.keys[0], sid, call); code != http.StatusNotFound {
			t.Fatalf("status %d, want 404: %s", code, msg)
		}
	})
}

// TestDirectCallCancelled proves a client's notifications/cancelled ends a
// call the access layer answers, and reaches the upstream.
func TestDirectCallCancelled(t *testing.T) {
	f := newHTTPFixture(t)
	sid := f.session(t, f.keys[0])
	before := f.accessCalls(t)
	for _, id := range []string{`42`, `"slow-1"`} {
		done := make(chan string, 1)
		go func() {
			_, _, msg := f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"demo__slow"}}`)
			done <- msg
		}()
		select {
		case <-f.started:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow call did not reach the upstream")
		}
		code, _, msg := f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`+id+`}}`)
		if code != http.StatusAccepted {
			t.Fatalf("cancel: status %d: %s", code, msg)
		}
		select {
		case <-f.cancelled:
		case <-time.After(10 * time.Second):
			t.Fatalf("id %s: the upstream did not see the cancellation", id)
		}
		select {
		case msg := <-done:
			if strings.Contains(msg, `"result"`) {
				t.Fatalf("id %s: a cancelled call answered %s", id, msg)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("id %s: the cancelled call did not end", id)
		}
	}
	if n := f.accessCalls(t) - before; n != 2 {
		t.Errorf("the access layer answered %v of the 2 calls", n)
	}
}

// TestDeniedCallAudited proves a call of an unknown tool is audited as
// tool.denied with its arguments, as an allowed call is.
func TestDeniedCallAudited(t *testing.T) {
	f := newHTTPFixture(t)
	sid := f.session(t, f.keys[0])
	args := `{"path":"/etc/shadow"}`
	code, _, msg := f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo__nosuch","arguments":`+args+`}}`)
	if code != http.StatusOK || !strings.Contains(msg, `"error"`) {
		t.Fatalf("status %d: %s", code, msg)
	}
	var denied []*audit.Event
	if _, err := audit.Read(f.audit, func(ev *audit.Event) error {
		if ev.Type == audit.EventToolDenied {
			denied = append(denied, ev)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := &audit.Event{}
	want.SetArguments(json.RawMessage(args))
	if len(denied) != 1 || denied[0].Tool != "demo__nosuch" || denied[0].ArgsSHA256 != want.ArgsSHA256 || denied[0].ArgsBytes != want.ArgsBytes {
		t.Fatalf("tool.denied events: %+v", denied)
	}
}

// TestDirectCallOutlivesItsConnection proves that, as with the SDK's
// transport, a client dropping the connection of a POST does not cancel its
// call: the call runs on until a notifications/cancelled names it.
func TestDirectCallOutlivesItsConnection(t *testing.T) {
	f := newHTTPFixture(t)
	sid := f.session(t, f.keys[0])
	ctx, drop := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url,
		strings.NewReader(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"demo__slow"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+f.keys[0])
	req.Header.Set("Mcp-Session-Id", sid)
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow call did not reach the upstream")
	}
	drop()
	select {
	case <-f.cancelled:
		t.Fatal("dropping the connection cancelled the call")
	case <-time.After(300 * time.Millisecond):
	}
	if code, _, msg := f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}`); code != http.StatusAccepted {
		t.Fatalf("cancel: status %d: %s", code, msg)
	}
	select {
	case <-f.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the call was no longer in flight to cancel")
	}
}
