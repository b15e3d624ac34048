package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/mcpclient"
	"github.com/toolgate/toolgate/policy/audit"
)

// connectKey opens an MCP session with the fixture's gateway as key.
func (f *httpFixture) connectKey(t *testing.T, key string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: &mcpclient.HeaderTransport{Headers: mcpclient.Bearer(key), Base: http.DefaultTransport}}
	c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: f.url, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// wantRPCError asserts err is the JSON-RPC error code, and returns it.
func wantRPCError(t *testing.T, what string, err error, code int64) *jsonrpc.Error {
	t.Helper()
	var re *jsonrpc.Error
	if !errors.As(err, &re) || re.Code != code {
		t.Fatalf("%s: got %v, want JSON-RPC error %d", what, err, code)
	}
	return re
}

// TestMeteredRequests proves prompts/get, resources/read and
// completion/complete spend the project's and the key's rate-limit tokens,
// shared with tool calls, and that a refusal is the same -32029 error with
// a retry hint as a refused tool call, audited with the method as reason.
func TestMeteredRequests(t *testing.T) {
	f := newHTTPFixture(t, func(c *config.Config) {
		c.Projects[config.DefaultProject].RateLimit = config.RateLimit{PerKeyRequestsPerMinute: 1, PerKeyBurst: 3}
	})
	cs := f.connectKey(t, f.keys[0])
	ctx := context.Background()
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mem://note"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "demo__greet"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__echo", Arguments: map[string]any{"text": "x"}}); err != nil {
		t.Fatal(err)
	}
	// The key's three tokens are spent.
	_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mem://note"})
	re := wantRPCError(t, "resources/read over the limit", err, codeRateLimited)
	var data struct {
		RetryAfterMs int64 `json:"retryAfterMs"`
	}
	if json.Unmarshal(re.Data, &data) != nil || data.RetryAfterMs <= 0 {
		t.Fatalf("no retry hint in %s", re.Data)
	}
	_, err = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "demo__greet"})
	wantRPCError(t, "prompts/get over the limit", err, codeRateLimited)
	// The other key has tokens of its own.
	if _, err := f.connectKey(t, f.keys[1]).ReadResource(ctx, &mcp.ReadResourceParams{URI: "mem://note"}); err != nil {
		t.Fatalf("the other key: %v", err)
	}

	reasons := map[string]int{}
	if _, err := audit.Read(f.audit, func(ev *audit.Event) error {
		if ev.Type == audit.EventRateLimitHit {
			reasons[ev.Reason]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if reasons["resources/read"] != 1 || reasons["prompts/get"] != 1 || len(reasons) != 2 {
		t.Fatalf("ratelimit.hit events by reason: %v", reasons)
	}
}

// TestMeteredRequestsAreAdmitted proves a resources/read counts against
// limits.maxInFlightCalls like a tool call: with one call in flight and a
// cap of one, it is refused as overloaded (-32030), and served once the
// call has ended.
func TestMeteredRequestsAreAdmitted(t *testing.T) {
	f := newHTTPFixture(t, func(c *config.Config) { c.Limits.MaxInFlightCalls = 1 })
	cs := f.connectKey(t, f.keys[0])
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "demo__slow"})
		done <- err
	}()
	select {
	case <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow call did not reach the upstream")
	}
	_, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "mem://note"})
	wantRPCError(t, "resources/read at the cap", err, codeOverloaded)
	cancel()
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "mem://note"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resources/read after the call ended: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRetryMsRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{997658 * time.Microsecond, 998},
		{time.Second, 1000},
		{time.Nanosecond, 1},
		{0, 1},
		{-time.Second, 1},
	} {
		if got := retryMs(tc.d); got != tc.want {
			t.Errorf("retryMs(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}
