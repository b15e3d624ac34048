package cli

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// startSpareServer serves handler on loopback with the spare-connection
// tracking of serve, and opens one connection that sends nothing, as an
// HTTP client's extra dial does.
func startSpareServer(t *testing.T, handler http.Handler) (*http.Server, *spareConns, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var spare spareConns
	srv := &http.Server{Handler: handler, ConnState: spare.track}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// The server has accepted it once it tracks it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		spare.mu.Lock()
		n := len(spare.fresh)
		spare.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not accept the connection")
		}
	}
	return srv, &spare, "http://" + ln.Addr().String()
}

// A connection that never sent a request does not hold a shutdown to its
// deadline; plain http.Server.Shutdown waits on it (the case serve had).
func TestShutdownClosesSpareConnections(t *testing.T) {
	srv, spare, _ := startSpareServer(t, http.NotFoundHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := shutdownHTTP(ctx, srv, spare); err != nil {
		t.Fatalf("shutdownHTTP: %v, want nil: the spare connection held it to its deadline", err)
	}

	plain, _, _ := startSpareServer(t, http.NotFoundHandler())
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if err := plain.Shutdown(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("http.Server.Shutdown with a spare connection: %v, want the deadline (what shutdownHTTP exists for)", err)
	}
}

// A request in progress is not cut: its connection is active, and the
// shutdown waits for its answer.
func TestShutdownWaitsForRequests(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	srv, spare, base := startSpareServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "answered")
	}))
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(base)
		if err != nil {
			got <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- shutdownHTTP(ctx, srv, spare) }()
	// Past the quiet period of spare connections, the request still runs.
	time.Sleep(3 * spareQuiet)
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned with a request in progress: %v", err)
	default:
	}
	close(release)
	if b := <-got; b != "answered" {
		t.Errorf("answer = %q, want %q", b, "answered")
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdownHTTP: %v", err)
	}
}
