package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseServer answers every request with an event stream: one event, then
// the end of the stream once it can receive from release (which the test
// closes to end every stream).
func sseServer(t *testing.T, release chan struct{}) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test") != "yes" {
			http.Error(w, "configured header missing", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"ok\":true}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// get makes a GET through tr under ctx and reports whether it reused a
// pooled connection.
func get(t *testing.T, ctx context.Context, tr http.RoundTripper, url string) (*http.Response, *bool) {
	t.Helper()
	reused := new(bool)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { *reused = i.Reused }})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, reused
}

// TestHeaderTransportReusesConnections reads a response the way the MCP
// SDK does: the first event, then the caller's context ends, then the rest
// of the stream. The connection must go back to the pool.
func TestHeaderTransportReusesConnections(t *testing.T) {
	release := make(chan struct{})
	srv := sseServer(t, release)
	tr := &headerTransport{base: upstreamTransport(), headers: map[string]string{"X-Test": "yes"}}
	t.Cleanup(tr.base.(*http.Transport).CloseIdleConnections)
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		resp, reused := get(t, ctx, tr, srv.URL)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s", resp.Status)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.Contains(line, `"ok"`) {
			t.Fatalf("first event: %q, %v", line, err)
		}
		cancel()              // the call has its result and returns,
		release <- struct{}{} // then the upstream ends the stream
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("reading the end of the stream after the call ended: %v", err)
		}
		resp.Body.Close()
		if i > 0 && !*reused {
			t.Errorf("request %d opened a new connection", i)
		}
	}
}

// TestHeaderTransportCancels checks that a caller's cancellation still
// ends a request: at once while it waits for the headers, and drainGrace
// later while it reads a stream that does not end.
func TestHeaderTransportCancels(t *testing.T) {
	const grace = 50 * time.Millisecond
	tr := &headerTransport{base: upstreamTransport(), headers: map[string]string{"X-Test": "yes"}, grace: grace}
	t.Cleanup(tr.base.(*http.Transport).CloseIdleConnections)

	t.Run("before the headers", func(t *testing.T) {
		hang := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(srv.Close)
		t.Cleanup(func() { close(hang) })
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("RoundTrip error = %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("RoundTrip did not return after the cancellation")
		}
	})

	t.Run("a stream that does not end", func(t *testing.T) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		srv := sseServer(t, release)
		ctx, cancel := context.WithCancel(context.Background())
		resp, _ := get(t, ctx, tr, srv.URL)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		cancel()
		start := time.Now()
		_, err := io.Copy(io.Discard, br)
		if err == nil {
			t.Fatal("the stream was read to its end although it never ends")
		}
		if waited := time.Since(start); waited < grace/2 || waited > 10*time.Second {
			t.Errorf("the stream was cut %v after the cancellation, want about %v", waited, grace)
		}
	})
}

// TestStderrAlwaysDrained writes a stderr line far longer than the log
// keeps, then more lines, as an upstream would: every write is read (the
// upstream never blocks on its stderr), the long line is logged cut with
// its length, and the next lines are logged whole; the tail kept for a
// failure has them all, cut shorter.
func TestStderrAlwaysDrained(t *testing.T) {
	pr, pw := io.Pipe()
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tail := newStderrTail(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		logLines(pr, log, tail)
	}()
	wrote := make(chan error, 1)
	go func() {
		long := strings.Repeat("x", 200<<10)
		_, err := io.WriteString(pw, long+"\nthe next line\n"+long+long+"\nand the last\n")
		wrote <- err
		pw.Close()
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		pr.Close()
		t.Fatal("the upstream is blocked on its stderr")
	}
	<-done
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d records:\n%.300s", len(lines), out)
	}
	for i, want := range []string{"…[204800 bytes]", "line=\"the next line\"", "…[409600 bytes]", "line=\"and the last\""} {
		if !strings.Contains(lines[i], want) || len(lines[i]) > stderrLineBytes+200 {
			t.Errorf("record %d (%d bytes) lacks %q: %.120s…", i, len(lines[i]), want, lines[i])
		}
	}
	if !tail.wait(0) {
		t.Error("the tail does not know that stderr ended")
	}
	kept := tail.last()
	if len(kept) != 4 {
		t.Fatalf("the tail kept %d lines, want 4", len(kept))
	}
	for i, want := range []string{"…[204800 bytes]", "the next line", "…[409600 bytes]", "and the last"} {
		if !strings.HasSuffix(kept[i], want) || len(kept[i]) > stderrTailLineBytes {
			t.Errorf("tail line %d (%d bytes) = %.60q…, want it to end with %q", i, len(kept[i]), kept[i], want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
