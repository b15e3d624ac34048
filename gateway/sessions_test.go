package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"

	"github.com/toolgate/toolgate/internal/config"
)

const (
	testSessionKey  = "a session key shared by the replicas of the test"
	otherSessionKey = "another session key of a replica of another fleet"
)

// TestSessionIDSealing checks what a sealed session ID carries and that
// it opens only with a configured key, at its project's endpoint, unaltered.
func TestSessionIDSealing(t *testing.T) {
	st := sessionState{Key: "k1", Requested: "2025-11-25", Negotiated: "2025-11-25",
		Caps:   &sealedCaps{Roots: &mcp.RootCapabilities{ListChanged: true}, Sampling: &mcp.SamplingCapabilities{}},
		Client: &sealedClient{Name: "c", Version: "1"}}
	a, err := newSessionSealer([]string{testSessionKey})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.seal("default", &st)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			t.Fatalf("session id %q has a character outside visible ASCII", id)
		}
	}
	if got, ok := a.open("default", id); !ok || !cmp.Equal(st, got) {
		t.Fatalf("open = %+v, %v; want %+v", got, ok, st)
	}
	if again, _ := a.seal("default", &st); again == id {
		t.Error("two seals of the same state gave the same id")
	}

	rotated, err := newSessionSealer([]string{otherSessionKey, testSessionKey})
	if err != nil {
		t.Fatal(err)
	}
	other, err := newSessionSealer([]string{otherSessionKey})
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(id)
	tampered[len(tampered)/2] ^= 1
	for _, tc := range []struct {
		name    string
		s       *sessionSealer
		project string
		id      string
		ok      bool
	}{
		{"the old key, during a rotation", rotated, "default", id, true},
		{"another key", other, "default", id, false},
		{"another project", a, "team", id, false},
		{"altered", a, "default", string(tampered), false},
		{"cut short", a, "default", id[:len(id)-4], false},
		{"not base64", a, "default", "a session id!", false},
		{"empty", a, "default", "", false},
		{"too long", a, "default", strings.Repeat("A", maxSessionIDLen+4), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := tc.s.open(tc.project, tc.id); ok != tc.ok {
				t.Errorf("open = %v, want %v", ok, tc.ok)
			}
		})
	}
	// After a rotation, the new key seals.
	newID, _ := rotated.seal("default", &st)
	if _, ok := other.open("default", newID); !ok {
		t.Error("the new key does not open what the rotated sealer seals")
	}
	if _, err := newSessionSealer([]string{"short"}); err == nil {
		t.Error("a short key was accepted")
	}
	if _, err := newSessionSealer([]string{testSessionKey, testSessionKey}); err == nil {
		t.Error("a key given twice was accepted")
	}
}

// TestInitializeStateAsTheSDK checks that the version a sealed session
// records is the one the SDK answers to initialize, for every version a
// client may ask for.
func TestInitializeStateAsTheSDK(t *testing.T) {
	f := newHTTPFixture(t)
	for _, v := range append(servedVersions, "2027-01-01", "1999-01-01", "") {
		body := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"` + v + `","capabilities":{"roots":{"listChanged":true},"experimental":{"x":{}}},"clientInfo":{"name":"t","version":"1"}}}`
		code, sid, msg := f.post(t, f.keys[0], "", body)
		if code != http.StatusOK || sid == "" {
			t.Fatalf("initialize %q: %d %s", v, code, msg)
		}
		var resp struct {
			Result struct {
				ProtocolVersion string `json:"protocolVersion"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(msg), &resp); err != nil {
			t.Fatal(err)
		}
		st, ok := f.g.sealer().open(config.DefaultProject, sid)
		if !ok {
			t.Fatalf("initialize %q: the session id does not open", v)
		}
		if st.Negotiated != resp.Result.ProtocolVersion || st.Requested != v {
			t.Errorf("initialize %q: sealed %q (asked %q), the SDK answered %q", v, st.Negotiated, st.Requested, resp.Result.ProtocolVersion)
		}
		if st.Caps == nil || st.Caps.Roots == nil || !st.Caps.Roots.ListChanged || st.Client == nil || st.Client.Name != "t" {
			t.Errorf("initialize %q: sealed %+v", v, st)
		}
	}
}

// TestSessionsOnEveryReplica opens a session on one gateway and uses it on
// others that share its session key: each rebuilds it once from its id,
// whatever the number of requests that find it missing at the same time;
// the key that opened it is still required; a gateway with another key,
// an altered id and a deleted session are refused as unknown sessions.
func TestSessionsOnEveryReplica(t *testing.T) {
	a := newHTTPFixture(t, func(c *config.Config) { c.SessionKey = testSessionKey })
	b := a.replica(t, testSessionKey)
	c := a.replica(t, otherSessionKey)
	sid := a.session(t, a.keys[0])
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"elsewhere"}}}`

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			call := strings.Replace(call, `"id":1`, fmt.Sprintf(`"id":%d`, 100+i), 1)
			if code, _, msg := b.post(t, b.keys[0], sid, call); code != http.StatusOK || !strings.Contains(msg, `"text":"elsewhere"`) {
				t.Errorf("a call of the session on another replica: %d %s", code, msg)
			}
		})
	}
	wg.Wait()
	if n := rebuilt(t, b.g); n != 1 {
		t.Errorf("the other replica rebuilt the session %v times, want 1", n)
	}
	if code, _, msg := b.post(t, b.keys[0], sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); code != http.StatusOK || !strings.Contains(msg, "demo__echo") {
		t.Errorf("tools/list on the other replica: %d %s", code, msg)
	}
	if n := rebuilt(t, a.g); n != 0 {
		t.Errorf("the replica that opened the session rebuilt it %v times", n)
	}

	tampered := []byte(sid)
	tampered[len(tampered)/2] ^= 2
	for _, tc := range []struct {
		name string
		f    *httpFixture
		key  string
		sid  string
		want int
	}{
		{"another key", b, b.keys[1], sid, http.StatusForbidden},
		{"a replica with another session key", c, c.keys[0], sid, http.StatusNotFound},
		{"an altered id", b, b.keys[0], string(tampered), http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, msg := tc.f.post(t, tc.key, tc.sid, call)
			if code != tc.want {
				t.Errorf("status %d (%s), want %d", code, msg, tc.want)
			}
		})
	}

	// A DELETE ends the session on the replica that answers it.
	req, _ := http.NewRequest(http.MethodDelete, b.url, nil)
	req.Header.Set("Authorization", "Bearer "+b.keys[0])
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if code, _, msg := b.post(t, b.keys[0], sid, call); code != http.StatusNotFound {
		t.Errorf("a call of the deleted session on the replica that deleted it: %d %s", code, msg)
	}
}

// rebuilt reads how many sessions g rebuilt from their id.
func rebuilt(t *testing.T, g *Gateway) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.metrics.sessionsRebuilt.WithLabelValues(config.DefaultProject).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestIdleSessionsClosedAndRebuilt checks that a session left idle is
// closed, and that its next request rebuilds it.
func TestIdleSessionsClosedAndRebuilt(t *testing.T) {
	f := newHTTPFixture(t)
	code, sid, msg := f.post(t, f.keys[0], "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if code != http.StatusOK {
		t.Fatalf("initialize: %d %s", code, msg)
	}
	p := f.g.project(config.DefaultProject)
	f.g.closeIdleSessions(time.Now().Add(-time.Hour))
	if s, _ := p.sessions.hold(sid); s == nil {
		t.Fatal("a session used a moment ago was closed")
	} else {
		s.release()
	}
	eventually(t, func() bool {
		f.g.closeIdleSessions(time.Now().Add(time.Second))
		s, _ := p.sessions.hold(sid)
		if s != nil {
			s.release()
		}
		return s == nil
	})
	if code, _, msg := f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"back"}}}`); code != http.StatusOK || !strings.Contains(msg, `"text":"back"`) {
		t.Errorf("a call of the session closed while idle: %d %s", code, msg)
	}
	if n := rebuilt(t, f.g); n != 1 {
		t.Errorf("rebuilt %v sessions, want 1", n)
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRebuiltSessionRelaysRequests proves that a session rebuilt from its
// id keeps the client's capabilities: the sampling request an upstream
// makes during a call on the replica that rebuilt it reaches the client.
func TestRebuiltSessionRelaysRequests(t *testing.T) {
	started, proceed := make(chan struct{}, 2), make(chan struct{}, 2)
	proceed <- struct{}{}
	upURL := samplingUpstreamURL(t, started, proceed)
	var fs [2]*httpFixture
	for i := range fs {
		cfg := config.Demo(upURL, "")
		cfg.CodeMode.Enabled = false
		cfg.DataDir = ""
		off := false
		cfg.Auth.Required = &off
		cfg.SessionKey = testSessionKey
		g := startGateway(t, cfg, nil)
		srv := httptest.NewServer(g.Handler())
		t.Cleanup(srv.Close)
		fs[i] = &httpFixture{g: g, url: srv.URL + "/mcp"}
	}
	sid := fs[0].samplingSession(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs := fs[1].stream(t, ctx, http.MethodPost, sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__sample"}}`)
	fs[1].answerSampling(t, sid, next(t, msgs, "sampling request"))
	if m := next(t, msgs, "answer"); !strings.Contains(m, `"text":"sampled"`) || strings.Contains(m, `"isError":true`) {
		t.Fatalf("the call answered %s", m)
	}
}

// statelessHeaders are the headers of a request of protocol 2026-07-28.
func statelessHeaders(method, name string) []string {
	h := []string{"Mcp-Protocol-Version", versionStateless, "Mcp-Method", method}
	if name != "" {
		h = append(h, "Mcp-Name", name)
	}
	return h
}

// statelessMetaJSON is the _meta of a request of protocol 2026-07-28.
const statelessMetaJSON = `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{},"elicitation":{},"roots":{}}`

// TestServerRequestsOfStatelessClients proves that an upstream's request
// during the call of a client on protocol 2026-07-28 is refused with a
// reason the upstream can read, whichever way the call is answered: by
// the access layer, or (with a progress token) by the SDK.
func TestServerRequestsOfStatelessClients(t *testing.T) {
	started, proceed := make(chan struct{}, 2), make(chan struct{}, 2)
	proceed <- struct{}{}
	proceed <- struct{}{}
	g := samplingUpstream(t, started, proceed)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	f := &httpFixture{g: g, url: srv.URL + "/mcp"}
	for _, tc := range []struct {
		name, meta string
		direct     float64
	}{
		{"answered by the access layer", statelessMetaJSON, 1},
		{"answered by the SDK", `"progressToken":"t",` + statelessMetaJSON, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.accessCalls(t)
			code, _, msg := f.post(t, "", "", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__sample","_meta":{`+tc.meta+`}}}`,
				statelessHeaders("tools/call", "demo__sample")...)
			if code != http.StatusOK || !strings.Contains(msg, `"isError":true`) || !strings.Contains(msg, "client on MCP 2026-07-28, which takes no requests from servers during a call") {
				t.Errorf("the call answered %d %s", code, msg)
			}
			if d := f.accessCalls(t) - before; d != tc.direct {
				t.Errorf("the access layer answered %v calls, want %v", d, tc.direct)
			}
		})
	}
}

// samplingUpstreamURL is the upstream of samplingUpstream, without a
// gateway: its tool "sample" reports progress (when the call has a token),
// asks its client for a sampling, once proceed lets it, and returns the
// text sampled.
func samplingUpstreamURL(t *testing.T, started, proceed chan struct{}) string {
	t.Helper()
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	up.AddTool(&mcp.Tool{Name: "sample", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		started <- struct{}{}
		if tok := req.Params.GetProgressToken(); tok != nil {
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 2})
		}
		<-proceed
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 5, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "hi"}}}})
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}, nil
		}
		return &mcp.CallToolResult{Content: []mcp.Content{res.Content}}, nil
	})
	upSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil))
	t.Cleanup(upSrv.Close)
	return upSrv.URL
}

// TestUpstreamsGetNoRequestMeta proves that the per-request _meta of
// protocol 2026-07-28 stays with the gateway: an upstream on an older
// version gets the client's other _meta keys only, in tools/call,
// prompts/get and resources/read, whichever way the call is answered.
func TestUpstreamsGetNoRequestMeta(t *testing.T) {
	var mu sync.Mutex
	var seen []mcp.Meta
	record := func(m mcp.Meta) {
		mu.Lock()
		seen = append(seen, m)
		mu.Unlock()
	}
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	up.AddTool(&mcp.Tool{Name: "meta", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		record(req.Params.Meta)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	up.AddPrompt(&mcp.Prompt{Name: "p"}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		record(req.Params.Meta)
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "p"}}}}, nil
	})
	up.AddResource(&mcp.Resource{URI: "mem://r", Name: "r"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		record(req.Params.Meta)
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "mem://r", Text: "r"}}}, nil
	})
	upSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil))
	t.Cleanup(upSrv.Close)
	cfg := config.Demo(upSrv.URL, "")
	cfg.CodeMode.Enabled = false
	cfg.DataDir = ""
	off := false
	cfg.Auth.Required = &off
	g := startGateway(t, cfg, nil)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	f := &httpFixture{g: g, url: srv.URL + "/mcp"}

	meta := `"_meta":{"x":"kept",` + statelessMetaJSON + `}`
	for _, req := range []struct{ method, name, params string }{
		{"tools/call", "demo__meta", `{"name":"demo__meta",` + meta + `}`},
		{"tools/call", "demo__meta", `{"name":"demo__meta","_meta":{"progressToken":"t","x":"kept",` + statelessMetaJSON + `,"io.modelcontextprotocol/logLevel":"debug"}}`},
		{"prompts/get", "demo__p", `{"name":"demo__p",` + meta + `}`},
		{"resources/read", "mem://r", `{"uri":"mem://r",` + meta + `}`},
	} {
		code, _, msg := f.post(t, "", "", `{"jsonrpc":"2.0","id":1,"method":"`+req.method+`","params":`+req.params+`}`, statelessHeaders(req.method, req.name)...)
		if code != http.StatusOK || strings.Contains(msg, `"error"`) {
			t.Fatalf("%s: %d %s", req.method, code, msg)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("the upstream saw %d requests, want 4", len(seen))
	}
	for i, m := range seen {
		if m["x"] != "kept" {
			t.Errorf("request %d: the upstream lost the client's own _meta: %v", i, m)
		}
		for k := range m {
			if strings.HasPrefix(k, "io.modelcontextprotocol/") {
				t.Errorf("request %d: the upstream got %q in _meta", i, k)
			}
		}
	}
}

// TestListenStreamsPerKey: a key holds at most limits.maxSessionsPerKey
// subscriptions/listen streams of protocol 2026-07-28 at once, as it holds
// at most that many sessions (each with one event stream); a stream that
// ends frees its place, and another key has places of its own.
func TestListenStreamsPerKey(t *testing.T) {
	f := newHTTPFixture(t, func(cfg *config.Config) { cfg.Limits.MaxSessionsPerKey = 2 })
	listen := func(ctx context.Context, key string) (int, string) {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url, strings.NewReader(body))
		for k, v := range map[string]string{"Authorization": "Bearer " + key, "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
			"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"} {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		// Open: its first event is the acknowledgement; the body stays
		// open until ctx ends.
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				go func() { _, _ = io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
				return resp.StatusCode, sc.Text()
			}
		}
		resp.Body.Close()
		return resp.StatusCode, "the stream ended before its first event"
	}
	ctx1, end1 := context.WithCancel(context.Background())
	defer end1()
	ctx2, end2 := context.WithCancel(context.Background())
	defer end2()
	for _, ctx := range []context.Context{ctx1, ctx2} {
		if code, msg := listen(ctx, f.keys[0]); code != http.StatusOK || !strings.Contains(msg, "acknowledged") {
			t.Fatalf("a stream within the limit: %d %s", code, msg)
		}
	}
	ctx3, end3 := context.WithCancel(context.Background())
	defer end3()
	if code, msg := listen(ctx3, f.keys[0]); code != http.StatusTooManyRequests || !strings.Contains(msg, "maxSessionsPerKey") {
		t.Fatalf("a third stream of the key: %d %s; want 429 naming limits.maxSessionsPerKey", code, msg)
	}
	if code, msg := listen(ctx3, f.keys[1]); code != http.StatusOK {
		t.Fatalf("a stream of another key: %d %s", code, msg)
	}
	end1()
	ctx4, end4 := context.WithCancel(context.Background())
	defer end4()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, msg := listen(ctx4, f.keys[0])
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a stream ended: %d %s", code, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
