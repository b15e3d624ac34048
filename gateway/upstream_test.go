package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

// quietHooks is an upstreamHooks that records nothing.
type quietHooks struct{}

func (quietHooks) changed(*upstream)                          {}
func (quietHooks) clientOptions(*upstream) *mcp.ClientOptions { return nil }
func (quietHooks) upstreamEvent(*upstream, string, error)     {}

// TestUpstreamStartupErrors checks that a failed connection says why: a
// refused connection is not reported as a startup timeout, and a server
// that never answers is.
func TestUpstreamStartupErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/mcp"
	ln.Close()
	release := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer silent.Close()
	defer close(release)

	tests := []struct {
		name, url, want, notWant string
	}{
		{name: "connection refused", url: closedURL, want: "connecting:", notWant: "no answer to initialize"},
		{name: "no answer", url: silent.URL + "/mcp", want: "no answer to initialize within 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Server{Name: "up", URL: tt.url, Transport: config.TransportHTTP}
			u := newUpstream(cfg, time.Second, 300*time.Millisecond, quietHooks{}, slog.New(slog.DiscardHandler))
			u.start()
			defer u.stop()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			u.waitFirstAttempt(ctx)
			u.mu.Lock()
			state, msg := u.state, u.lastErr
			u.mu.Unlock()
			if state != StateUnhealthy || !strings.Contains(msg, tt.want) || (tt.notWant != "" && strings.Contains(msg, tt.notWant)) {
				t.Errorf("state %q, error %q; want unhealthy with %q", state, msg, tt.want)
			}
		})
	}
}
