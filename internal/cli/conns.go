package cli

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// spareConns tracks the connections of an http.Server that have not sent
// a request yet. An HTTP client often dials a connection it then leaves
// unused (Go's transport dials for a request, and keeps the connection
// when another one became free first); http.Server.Shutdown waits 5 s
// before it counts such a connection as idle, so a shutdown would wait
// on it and close it as if a request were cut. Serve closes them itself
// once they have been silent for a while (closeSilent).
type spareConns struct {
	mu    sync.Mutex
	fresh map[net.Conn]time.Time // connections with no request yet, since when
}

// track is the server's ConnState hook.
func (s *spareConns) track(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if state == http.StateNew {
		if s.fresh == nil {
			s.fresh = map[net.Conn]time.Time{}
		}
		s.fresh[c] = time.Now()
		return
	}
	delete(s.fresh, c)
}

// closeSilent closes the connections that have sent no request for at
// least quiet, and returns how many it closed.
func (s *spareConns) closeSilent(quiet time.Duration) int {
	s.mu.Lock()
	var old []net.Conn
	for c, since := range s.fresh {
		if time.Since(since) >= quiet {
			old = append(old, c)
			delete(s.fresh, c)
		}
	}
	s.mu.Unlock()
	for _, c := range old {
		_ = c.Close()
	}
	return len(old)
}

// shutdownHTTP is srv.Shutdown that does not wait on connections that
// never sent a request: every spareCheck it closes those silent for
// spareQuiet, which a drain no longer expects a request on.
func shutdownHTTP(ctx context.Context, srv *http.Server, spare *spareConns) error {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(spareCheck)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				spare.closeSilent(spareQuiet)
			}
		}
	}()
	err := srv.Shutdown(ctx)
	close(stop)
	<-done
	return err
}

// spareQuiet is how long a connection may have sent nothing before a
// shutdown closes it; spareCheck is how often a shutdown looks.
const (
	spareQuiet = 500 * time.Millisecond
	spareCheck = 100 * time.Millisecond
)
