package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

type echoArgs struct {
	Text string `json:"text"`
}

// messageFixture is an in-process gateway (default project, one API key,
// code mode off) in front of an in-process Go upstream with an echo tool,
// and one MCP session opened on it.
type messageFixture struct {
	h       http.Handler
	key     string
	session string
}

func newMessageFixture(tb testing.TB) *messageFixture {
	tb.Helper()
	return newMessageFixtureWith(tb, nil)
}

// newMessageFixtureWith is newMessageFixture with a change to the
// configuration.
func newMessageFixtureWith(tb testing.TB, change func(*config.Config)) *messageFixture {
	tb.Helper()
	up := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	mcp.AddTool(up, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, echoArgs, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, in, nil
	})
	upSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil))
	tb.Cleanup(upSrv.Close)

	key, _, _, err := apikey.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := config.Demo(upSrv.URL, apikey.Hash(key))
	cfg.CodeMode.Enabled = false
	cfg.DataDir = ""                           // no pin store in the working directory
	cfg.AllowedHosts = []string{"example.com"} // httptest.NewRequest's Host
	if change != nil {
		change(cfg)
	}
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	g := New(cfg, &Options{Auth: auth, Logger: slog.New(slog.DiscardHandler)})
	if err := g.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(g.Close)
	fx := &messageFixture{h: g.Handler(), key: key}

	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}`
	w := fx.post(tb, init, "Bearer "+key, "")
	if w.Code != http.StatusOK {
		tb.Fatalf("initialize: status %d: %s", w.Code, w.Body)
	}
	fx.session = w.Header().Get("Mcp-Session-Id")
	if fx.session == "" {
		tb.Fatalf("initialize answered no session id: %s", w.Body)
	}
	if w := fx.post(tb, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, "Bearer "+key, fx.session); w.Code != http.StatusAccepted {
		tb.Fatalf("notifications/initialized: status %d: %s", w.Code, w.Body)
	}
	return fx
}

// post sends one MCP POST as a client would and records the answer.
func (fx *messageFixture) post(tb testing.TB, body, authorization, session string) *httptest.ResponseRecorder {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/mcp", strings.NewReader(body))
	r.RemoteAddr = "127.0.0.1:5555"
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	if session != "" {
		r.Header.Set("Mcp-Session-Id", session)
		r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	w := &headerCounter{ResponseRecorder: httptest.NewRecorder()}
	fx.h.ServeHTTP(w, r)
	if w.calls > 1 {
		// net/http ignores the extra calls but logs "superfluous
		// response.WriteHeader call" for each.
		tb.Errorf("the handler wrote the status line %d times for %q", w.calls, body)
	}
	return w.ResponseRecorder
}

// headerCounter counts WriteHeader calls, including the implicit one of a
// first Write.
type headerCounter struct {
	*httptest.ResponseRecorder
	calls int
	wrote bool
}

func (h *headerCounter) WriteHeader(code int) {
	h.calls++
	h.wrote = true
	h.ResponseRecorder.WriteHeader(code)
}

func (h *headerCounter) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseRecorder.Write(b)
}

func (h *headerCounter) Unwrap() http.ResponseWriter { return h.ResponseRecorder }

// responseMessages checks that w is a well-formed answer (a status code,
// and a JSON or event-stream body whose messages are JSON) and returns the
// JSON messages it holds.
func responseMessages(t *testing.T, w *httptest.ResponseRecorder) []json.RawMessage {
	t.Helper()
	if w.Code < 200 || w.Code > 599 {
		t.Fatalf("status %d", w.Code)
	}
	body := w.Body.Bytes()
	ct := w.Header().Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		if !json.Valid(body) {
			t.Fatalf("status %d, application/json body is not JSON: %q", w.Code, body)
		}
		return []json.RawMessage{body}
	case strings.HasPrefix(ct, "text/event-stream"):
		var msgs []json.RawMessage
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				data = strings.TrimSpace(data)
				if data == "" {
					continue
				}
				if !json.Valid([]byte(data)) {
					t.Fatalf("event-stream data is not JSON: %q", data)
				}
				msgs = append(msgs, json.RawMessage(data))
			}
		}
		return msgs
	case len(body) == 0:
		return nil
	default:
		if w.Code < 400 {
			t.Fatalf("status %d with Content-Type %q: %q", w.Code, ct, body)
		}
		return nil // a plain-text refusal of the HTTP request itself
	}
}

// isRPCError reports whether msg is a JSON-RPC error response.
func isRPCError(msg json.RawMessage) bool {
	var m struct {
		JSONRPC string `json:"jsonrpc"`
		Error   *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	return json.Unmarshal(msg, &m) == nil && m.JSONRPC == "2.0" && m.Error != nil && m.Error.Code != 0 && m.Error.Message != ""
}

// FuzzMessage sends arbitrary request bodies from a client through the
// whole HTTP path of a running gateway (access layer, message peek, rate
// limits, the SDK's streamable handler, the tool path to a Go upstream):
// it never panics, always answers a well-formed HTTP response, and answers
// a body that is not JSON with a JSON-RPC error.
//
// mode selects the credentials and session: bit 0 sends the API key (else
// the fuzzed authorization), bit 1 the open session's id (else none), bit
// 2 a made-up session id.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":1}}}`,
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"nope"}}`,
		`{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":["demo__echo"]}}`,
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":"x"}`,
		`{"jsonrpc":"2.0","id":8,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}`,
		`{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`,
		`{"jsonrpc":"2.0","id":10,"method":"prompts/get","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":11,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"x"},"argument":{"name":"a","value":"b"}}}`,
		`{"jsonrpc":"2.0","id":12,"method":"logging/setLevel","params":{"level":"debug"}}`,
		`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`,
		`{"jsonrpc":"2.0","id":null,"method":"ping"}`,
		`{"jsonrpc":"1.0","id":1,"method":"ping"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]`,
		`[]`, `{}`, `null`, ``, `{`, `"\ud800"`, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"}},"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"` + strings.Repeat("\\u0000", 64) + `"}}}`,
	} {
		for _, mode := range []uint8{3, 1} {
			f.Add([]byte(s), mode, "")
		}
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`), uint8(2), "Bearer \x00")
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`), uint8(4), "bearer  tg_")
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`), uint8(5), "Token x")

	fx := newMessageFixture(f)
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, authorization string) {
		if mode&1 != 0 {
			authorization = "Bearer " + fx.key
		}
		session := ""
		switch {
		case mode&2 != 0:
			session = fx.session
		case mode&4 != 0:
			session = "made-up-session"
		}
		w := fx.post(t, string(body), authorization, session)
		msgs := responseMessages(t, w)
		if w.Code >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") && !isRPCError(msgs[0]) {
			t.Fatalf("status %d answered %s, not a JSON-RPC error", w.Code, msgs[0])
		}
		if mode&3 == 3 && !json.Valid(body) {
			if w.Code < 400 {
				t.Fatalf("a body that is not JSON got status %d: %s", w.Code, w.Body)
			}
			if len(msgs) != 1 || !isRPCError(msgs[0]) {
				t.Fatalf("a body that is not JSON got status %d with %q, not a JSON-RPC error", w.Code, w.Body)
			}
		}
	})
}

// TestStatusWrittenOnce: initialize, whose answer passes through the
// session recorder, writes its status line once (the recorder used to
// forward the SDK's WriteHeader and then its own on the first Write).
func TestStatusWrittenOnce(t *testing.T) {
	fx := newMessageFixture(t) // initializes through post, which counts
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"again","version":"1"}}}`
	if w := fx.post(t, init, "Bearer "+fx.key, ""); w.Code != http.StatusOK {
		t.Fatalf("initialize: status %d: %s", w.Code, w.Body)
	}
}

// TestMessageFixtureCall makes sure the fixture's session reaches the
// upstream, so that FuzzMessage exercises the tool path and not only
// refusals.
func TestMessageFixtureCall(t *testing.T) {
	fx := newMessageFixture(t)
	w := fx.post(t, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi there"}}}`, "Bearer "+fx.key, fx.session)
	msgs := responseMessages(t, w)
	if w.Code != http.StatusOK || len(msgs) != 1 || !bytes.Contains(msgs[0], []byte(`"hi there"`)) {
		body, _ := io.ReadAll(w.Result().Body)
		t.Fatalf("status %d: %s", w.Code, body)
	}
}

// TestMalformedMessageRefusals: the SDK's handler refuses malformed
// messages with plain text; the gateway answers them as JSON-RPC errors
// (found by FuzzMessage).
func TestMalformedMessageRefusals(t *testing.T) {
	fx := newMessageFixture(t)
	tests := []struct {
		name     string
		body     string
		session  string
		wantHTTP int
		wantCode int
	}{
		{name: "empty body", body: ``, session: fx.session, wantHTTP: 400, wantCode: codeParseError},
		{name: "truncated JSON", body: `{"jsonrpc":"2.0","id":1,`, session: fx.session, wantHTTP: 400, wantCode: codeParseError},
		{name: "invalid UTF-8 around JSON", body: "\xff{}", session: fx.session, wantHTTP: 400, wantCode: codeParseError},
		{name: "empty object", body: `{}`, session: fx.session, wantHTTP: 400, wantCode: codeInvalidRequest},
		{name: "wrong version", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, session: fx.session, wantHTTP: 400, wantCode: codeInvalidRequest},
		{name: "object id", body: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, session: fx.session, wantHTTP: 400, wantCode: codeInvalidRequest},
		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, session: fx.session, wantHTTP: 400, wantCode: codeInvalidRequest},
		{name: "unknown session", body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, session: "made-up", wantHTTP: 404, wantCode: codeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := fx.post(t, tc.body, "Bearer "+fx.key, tc.session)
			if w.Code != tc.wantHTTP {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantHTTP, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q: %s", ct, w.Body)
			}
			var m struct {
				JSONRPC string          `json:"jsonrpc"`
				ID      json.RawMessage `json:"id"`
				Error   struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if m.JSONRPC != "2.0" || string(m.ID) != "null" || m.Error.Code != tc.wantCode || m.Error.Message == "" {
				t.Fatalf("got %s, want a JSON-RPC error with code %d", w.Body, tc.wantCode)
			}
		})
	}

	// A well-formed call still streams its answer through.
	w := fx.post(t, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, "Bearer "+fx.key, fx.session)
	if msgs := responseMessages(t, w); w.Code != http.StatusOK || len(msgs) != 1 || isRPCError(msgs[0]) {
		t.Fatalf("ping: status %d: %s", w.Code, w.Body)
	}
}

// TestSessionCapHoldsForOddBodies: an initialize request the MCP handler
// would accept (data after the object, whitespace around it, a repeated
// key, a batch) cannot open more sessions than limits.maxSessionsPerKey
// (found by FuzzMessage: the handler acted on a body the access layer had
// not read as a request).
func TestSessionCapHoldsForOddBodies(t *testing.T) {
	fx := newMessageFixtureWith(t, func(cfg *config.Config) { cfg.Limits.MaxSessionsPerKey = 1 }) // its own session is the one
	const init = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}`
	tests := []struct {
		name     string
		body     string
		wantHTTP int
		wantCode int
	}{
		{name: "plain", body: init + `}`, wantHTTP: 429, wantCode: codeRateLimited},
		{name: "whitespace around", body: " \n" + init + "}\n\t", wantHTTP: 429, wantCode: codeRateLimited},
		{name: "data after", body: init + `}0`, wantHTTP: 400, wantCode: codeParseError},
		{name: "second object after", body: init + `}{"jsonrpc":"2.0","id":2,"method":"ping"}`, wantHTTP: 400, wantCode: codeParseError},
		{name: "repeated method", body: init + `,"method":"ping"}`, wantHTTP: 0},
		{name: "method in other case after", body: init + `,"Method":"ping"}`, wantHTTP: 0},
		{name: "method in other case before", body: `{"METHOD":"ping",` + init[1:] + `}`, wantHTTP: 0},
		{name: "batch", body: `[` + init + `}]`, wantHTTP: 400, wantCode: codeInvalidRequest},
		{name: "batch, params of the wrong type", body: `[{"jsonrpc":"2.0","id":1,"method":"initialize","params":"x"}]`, wantHTTP: 400, wantCode: codeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := fx.post(t, tc.body, "Bearer "+fx.key, "")
			if id := w.Header().Get("Mcp-Session-Id"); id != "" {
				t.Fatalf("a second session %s opened past the cap: status %d: %s", id, w.Code, w.Body)
			}
			if tc.wantHTTP == 0 {
				return // refused one way or another, without a session
			}
			if w.Code != tc.wantHTTP {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantHTTP, w.Body)
			}
			var m struct {
				Error struct {
					Code int `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || m.Error.Code != tc.wantCode {
				t.Fatalf("body %s, want a JSON-RPC error with code %d", w.Body, tc.wantCode)
			}
		})
	}
}
