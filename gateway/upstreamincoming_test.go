package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestStreamCallerRelaysServerRequests calls tools of an SDK server that
// make the requests a server may make during a call, sent on the call's
// own stream (or, in JSON mode, on the session's), and expects each
// answered by the gateway's relay: sampling and elicitation refused, as
// the fixture's calls come from no client, and ping answered.
func TestStreamCallerRelaysServerRequests(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts *mcp.StreamableHTTPOptions
	}{
		{"event stream", nil},
		{"json", &mcp.StreamableHTTPOptions{JSONResponse: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			f := newCallerFixture(t, mode.opts)
			for tool, want := range map[string]string{
				"ask":    `toolgate: sampling request from server "demo" outside any client call; nothing to relay it to`,
				"elicit": `toolgate: elicitation request from server "demo" outside any client call; nothing to relay it to`,
				"ping":   "ok",
			} {
				res, err := f.call(tool, `{}`)
				if err != nil || !strings.Contains(resultText(res), want) {
					t.Errorf("%s = %+v, %v; want a text with %q", tool, res, err, want)
				}
			}
			if f.restarts() != 0 {
				t.Errorf("the session was replaced %d times", f.restarts())
			}
		})
	}
}

// TestStreamCallerAnswersOnItsStream answers a call with an event stream
// that carries, before the call's response, requests and notifications
// as an upstream may send them, some malformed, and expects each request
// answered by a POST, as the SDK's client answers them, and the call's
// own response returned.
func TestStreamCallerAnswersOnItsStream(t *testing.T) {
	f := newCallerFixture(t, nil)
	events := []string{
		`{"jsonrpc":"2.0","id":"scripted-1","method":"nope/unknown"}`,
		`{"jsonrpc":"2.0","id":"scripted-2","method":"ping"}`,
		`{"jsonrpc":"2.0","id":"scripted-3","method":"roots/list","params":{}}`,
		`{"jsonrpc":"2.0","id":"scripted-4","method":"notifications/progress","params":{"progressToken":"x","progress":1}}`,
		`{"jsonrpc":"2.0","id":"scripted-5","method":"sampling/createMessage"}`,
		`{"jsonrpc":"2.0","id":"scripted-6","method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}`,
		`{"jsonrpc":"2.0","id":"scripted-7","method":"roots/list","params":[1]}`,
		`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hello"}}`,
		`{"jsonrpc":"2.0","method":"notifications/unknown"}`,
		`{"jsonrpc":"2.0","id":"elsewhere","result":{}}`,
	}
	fault := func(w http.ResponseWriter) {
		f.mu.Lock()
		id := f.ids[len(f.ids)-1]
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			fmt.Fprintf(w, "data: %s\n\n", e)
		}
		fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"id\":%q,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"scripted\"}]}}\n\n", id)
	}
	f.fault.Store(&fault)
	res, err := f.call("echo", `{"text":"x"}`)
	f.fault.Store(nil)
	if err != nil || resultText(res) != "scripted" {
		t.Fatalf("call = %+v, %v; want the scripted result", res, err)
	}

	want := map[string]string{
		"scripted-1": `{"jsonrpc":"2.0","id":"scripted-1","error":{"code":-32601,"message":"method not found: \"nope/unknown\""}}`,
		"scripted-2": `{"jsonrpc":"2.0","id":"scripted-2","result":{}}`,
		"scripted-3": `{"jsonrpc":"2.0","id":"scripted-3","result":{"roots":[]}}`,
		"scripted-4": `{"jsonrpc":"2.0","id":"scripted-4","error":{"code":-32600,"message":"invalid request: unexpected id for \"notifications/progress\""}}`,
		"scripted-5": `{"jsonrpc":"2.0","id":"scripted-5","error":{"code":-32600,"message":"invalid request: missing required \"params\""}}`,
		"scripted-6": `{"jsonrpc":"2.0","id":"scripted-6","error":{"code":0,"message":"toolgate: sampling request from server \"demo\" outside any client call; nothing to relay it to"}}`,
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.answers)
		f.mu.Unlock()
		if n >= len(want)+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// scripted-7's parameters do not decode: the SDK's error names them.
	if got := f.answers["scripted-7"]; !strings.Contains(got, `"code":-32602`) || !strings.Contains(got, "invalid params") {
		t.Errorf("answer to scripted-7: %s; want invalid params", got)
	}
	delete(f.answers, "scripted-7")
	if diff := cmp.Diff(want, f.answers); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
}

// TestStreamCallerCancelledRequest proves that the upstream's
// notifications/cancelled ends the handler of the request it names, as
// the SDK's client does, which then answers it; and that closing the
// caller ends those in flight.
func TestStreamCallerCancelledRequest(t *testing.T) {
	var mu sync.Mutex
	answers := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var msg struct{ ID any }
		_ = json.Unmarshal(body, &msg)
		mu.Lock()
		answers[fmt.Sprint(msg.ID)] = string(body)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	started := make(chan string, 8)
	ctx, stop := context.WithCancel(context.Background())
	c := &streamCaller{url: u, rt: http.DefaultTransport, header: http.Header{"Content-Type": {"application/json"}}, ctx: ctx, stop: stop,
		fail: func(err error) { t.Errorf("the session was ended: %v", err) },
		handle: func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			started <- method
			if strings.HasPrefix(method, "notifications/") {
				return nil, nil
			}
			<-ctx.Done() // a request waits for its client's answer
			return nil, ctx.Err()
		},
	}
	deliver := func(raw string) {
		msg, err := jsonrpc.DecodeMessage([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		c.incoming(context.Background(), msg)
	}
	handled := func() {
		t.Helper()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("a message did not reach the handlers")
		}
	}
	deliver(`{"jsonrpc":"2.0","id":1,"method":"roots/list"}`)
	deliver(`{"jsonrpc":"2.0","id":"two","method":"elicitation/create","params":{"message":"m"}}`)
	handled()
	handled()
	deliver(`{"jsonrpc":"2.0","id":"dup","method":"ping"}`) // the handler blocks: ping stays in flight
	handled()
	deliver(`{"jsonrpc":"2.0","id":"dup","method":"ping"}`)
	deliver(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"gave up"}}`)
	handled() // the notification reaches the handlers too, after the cancellation

	answered := func(ids ...string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if answers[id] == "" {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !answered("1", "dup") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if answered("two") {
		t.Errorf("request two was answered before it was cancelled")
	}
	c.close()
	inFlight := func() int {
		c.requests.mu.Lock()
		defer c.requests.mu.Unlock()
		return len(c.requests.cancel)
	}
	for inFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, want := range map[string]string{
		"1":   `{"jsonrpc":"2.0","id":1,"error":{"code":0,"message":"context canceled"}}`,
		"dup": `{"jsonrpc":"2.0","id":"dup","error":{"code":-32600,"message":"invalid request: request ID dup already in use"}}`,
	} {
		if answers[id] != want {
			t.Errorf("answer to %s: %s, want %s", id, answers[id], want)
		}
	}
	if got := answers["two"]; got != "" {
		t.Errorf("after close, request two was answered %s; the session is gone", got)
	}
}
