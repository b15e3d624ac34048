package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// poolServer is an HTTP server that counts the connections it accepted.
type poolServer struct {
	*httptest.Server
	mu    sync.Mutex
	conns int
}

func newPoolServer(t *testing.T, h http.HandlerFunc, tweak ...func(*http.Server)) (*poolServer, *connPool) {
	t.Helper()
	s := &poolServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	for _, fn := range tweak {
		fn(s.Config)
	}
	s.Start()
	t.Cleanup(s.Close)
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := newConnPool(u)
	t.Cleanup(p.close)
	return s, p
}

func (s *poolServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// get sends a GET of path through p and returns the body read to its end.
func poolGet(t *testing.T, ctx context.Context, p *connPool, base, path string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestConnPool(t *testing.T) {
	hello := func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "hello "+r.URL.Path)
	}

	t.Run("only plain HTTP", func(t *testing.T) {
		for _, raw := range []string{"https://example.com/mcp", "unix:///run/mcp.sock"} {
			u, _ := url.Parse(raw)
			if newConnPool(u) != nil {
				t.Errorf("a pool for %s; HTTPS and other schemes keep http.Transport", raw)
			}
		}
	})

	// Sequential requests of path, with pause between them, and the
	// connections they should take.
	sequences := []struct {
		name      string
		path      string
		requests  int
		pause     time.Duration
		idle      time.Duration // the server's IdleTimeout, when not 0
		wantConns int
	}{
		{name: "reuse", path: "/a", requests: 10, wantConns: 1},
		{name: "early hints before the answer", path: "/hints", requests: 2, wantConns: 1},
		{name: "Connection: close", path: "/close", requests: 2, wantConns: 2},
		// The server closes each connection during the pause; the pool
		// must notice instead of sending the next request into it.
		{name: "server closed the idle connection", path: "/a", requests: 3, pause: 100 * time.Millisecond, idle: 20 * time.Millisecond, wantConns: 3},
	}
	for _, sq := range sequences {
		t.Run(sq.name, func(t *testing.T) {
			s, p := newPoolServer(t, hello, func(srv *http.Server) { srv.IdleTimeout = sq.idle })
			for i := range sq.requests {
				if got, err := poolGet(t, context.Background(), p, s.URL, sq.path); err != nil || got != "hello "+sq.path {
					t.Fatalf("request %d: got %q, %v", i, got, err)
				}
				time.Sleep(sq.pause)
			}
			if n := s.accepted(); n != sq.wantConns {
				t.Errorf("%d requests used %d connections, want %d", sq.requests, n, sq.wantConns)
			}
		})
	}

	t.Run("body not read to its end", func(t *testing.T) {
		s, p := newPoolServer(t, hello)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/stream", nil)
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, err := resp.Body.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "first") {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		closed := make(chan struct{})
		go func() {
			resp.Body.Close() // must not wait for the stream's end
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close waited for the rest of an endless stream")
		}
		if got, err := poolGet(t, context.Background(), p, s.URL, "/a"); err != nil || got != "hello /a" {
			t.Fatalf("the next request: %q, %v", got, err)
		}
		if n := s.accepted(); n != 2 {
			t.Errorf("used %d connections, want 2 (the cut one is not reused)", n)
		}
	})

	t.Run("cancelled while reading", func(t *testing.T) {
		s, p := newPoolServer(t, hello)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/stream", nil)
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		done := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(resp.Body)
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Error("reading a cancelled request's body ended without an error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("cancelling the request did not end the read")
		}
		if got, err := poolGet(t, context.Background(), p, s.URL, "/a"); err != nil || got != "hello /a" {
			t.Fatalf("the next request: %q, %v", got, err)
		}
	})

	t.Run("cancelled before the answer", func(t *testing.T) {
		block := make(chan struct{})
		s, p := newPoolServer(t, func(w http.ResponseWriter, r *http.Request) { <-block })
		defer close(block)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := poolGet(t, ctx, p, s.URL, "/a")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want the context's deadline", err)
		}
	})

	t.Run("closed pool", func(t *testing.T) {
		s, p := newPoolServer(t, hello)
		if _, err := poolGet(t, context.Background(), p, s.URL, "/a"); err != nil {
			t.Fatal(err)
		}
		p.close()
		if _, err := poolGet(t, context.Background(), p, s.URL, "/a"); err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.idle) != 0 {
			t.Errorf("a closed pool keeps %d idle connections", len(p.idle))
		}
	})
}
