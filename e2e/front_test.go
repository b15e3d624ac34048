package e2e

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
)

// roundRobin is the load balancer of the tests of several replicas
// (replicas_test.go, cluster_test.go): each request goes to the next
// replica, whatever it carries (no stickiness). It records where each
// request went and how it was answered.
type roundRobin struct {
	proxies []*httputil.ReverseProxy
	next    atomic.Int64
	mu      sync.Mutex
	log     []frontRequest
}

// frontRequest is one request the front passed on.
type frontRequest struct {
	seq     int    // its rank among the requests the front received
	replica int    // index of the replica it went to
	session string // its Mcp-Session-Id
	version string // its Mcp-Protocol-Version
	method  string // its HTTP method
	status  int    // the replica's answer (0: none)
}

func newRoundRobin(backends []*url.URL) *roundRobin {
	f := &roundRobin{}
	for _, b := range backends {
		p := httputil.NewSingleHostReverseProxy(b)
		p.FlushInterval = -1
		p.ErrorLog = log.New(io.Discard, "", 0) // a replica stopped on purpose is no news
		f.proxies = append(f.proxies, p)
	}
	return f
}

func (f *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	seq := int(f.next.Add(1) - 1)
	i := seq % len(f.proxies)
	// The front reads a request's body before passing it on, as load
	// balancers do by default. Passed on as it arrives, a body that the
	// replica answers before the front has seen its end breaks the
	// answer: the front's server closes the body when the answer's
	// headers go out (HTTP/1.1 is not full duplex in net/http), and the
	// proxy's transport then drops the connection to the replica.
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	sw := &statusWriter{ResponseWriter: w}
	f.proxies[i].ServeHTTP(sw, r)
	f.mu.Lock()
	f.log = append(f.log, frontRequest{seq: seq, replica: i, session: r.Header.Get("Mcp-Session-Id"), version: r.Header.Get("Mcp-Protocol-Version"), method: r.Method, status: sw.status})
	f.mu.Unlock()
}

// since returns the requests passed on after the first n.
func (f *roundRobin) since(n int) []frontRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]frontRequest(nil), f.log[n:]...)
}

func (f *roundRobin) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.log)
}

// statusWriter records the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
