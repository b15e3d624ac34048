package gateway

import (
	"context"
	"crypto/rand"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The MCP endpoint of a project answers two kinds of clients. A client on
// protocol 2026-07-28 has no session: each request carries its version and
// capabilities, and the MCP SDK's stateless handler answers it on any
// replica. A client on an older version opens a session with initialize,
// and its later requests name it; the gateway serves those sessions itself
// with the SDK's transport (one StreamableServerTransport per session),
// so that a session can be rebuilt from its ID (sessionid.go) on a
// replica that has not seen it. The transport's checks run before either
// (front.go).
//
// A replica keeps the sessions it served in memory while they are used;
// one idle for sessionIdle, with no request open (an event stream is one)
// and no call in flight, is closed here (its ID stays valid, and the next request
// rebuilds it). A DELETE ends a session on the replica that answers it:
// that replica refuses the ID from then on.

// sessionIdle is how long a session with nothing open stays in memory.
var sessionIdle = 10 * time.Minute

// maxEnded bounds the IDs of deleted sessions a replica remembers.
const maxEnded = 10000

// session is an open MCP session of a project on this replica: the SDK's
// session and transport, the key that opened it, and the ids of the calls
// in flight in it, however they are answered.
type session struct {
	id  string
	ss  *mcp.ServerSession
	t   *mcp.StreamableServerTransport
	key string // "" when keys are not required

	mu    sync.Mutex
	calls map[string]bool // request ids (as JSON) of calls in flight

	// streams counts the session's event streams (GET) the SDK has
	// opened: messages relayed on the session's behalf go there.
	streams atomic.Int32
	// active counts the requests of the session being served; used is
	// when the last one began or ended (UnixNano).
	active atomic.Int32
	used   atomic.Int64
}

// sessions are the open HTTP sessions of a project on this replica by id,
// their number by the key that opened them (limits.maxSessionsPerKey),
// the sessions being rebuilt, and the ids of sessions a DELETE ended.
type sessions struct {
	mu      sync.Mutex
	byID    map[string]*session
	perKey  map[string]int
	listens map[string]int // open subscriptions/listen streams, by key
	opening map[string]chan struct{}
	ended   map[string]bool
	endedQ  []string // ended, oldest first
}

// hold returns the open session sid, held for a request (release gives
// it back), and whether a DELETE ended it.
func (ss *sessions) hold(sid string) (s *session, ended bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s = ss.byID[sid]
	if s != nil {
		s.active.Add(1)
	}
	return s, ss.ended[sid]
}

// release gives back a session held for a request.
func (s *session) release() {
	s.used.Store(time.Now().UnixNano())
	s.active.Add(-1)
}

// add records s until it closes.
func (ss *sessions) add(s *session) {
	s.used.Store(time.Now().UnixNano())
	ss.mu.Lock()
	if ss.byID == nil {
		ss.byID = map[string]*session{}
		ss.perKey = map[string]int{}
	}
	ss.byID[s.id] = s
	ss.perKey[s.key]++
	ss.mu.Unlock()
	go func() {
		_ = s.ss.Wait()
		ss.forget(s)
	}()
}

// forget drops s once it is closed.
func (ss *sessions) forget(s *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.byID[s.id] != s {
		return
	}
	delete(ss.byID, s.id)
	if ss.perKey[s.key]--; ss.perKey[s.key] <= 0 {
		delete(ss.perKey, s.key)
	}
}

// end drops s, which a DELETE closed, and refuses its id from now on (at
// once: the next request of that id is refused here as by the SDK).
func (ss *sessions) end(s *session) {
	ss.forget(s)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended == nil {
		ss.ended = map[string]bool{}
	}
	if ss.ended[s.id] {
		return
	}
	ss.ended[s.id] = true
	ss.endedQ = append(ss.endedQ, s.id)
	if len(ss.endedQ) > maxEnded {
		delete(ss.ended, ss.endedQ[0])
		ss.endedQ = ss.endedQ[1:]
	}
}

// of counts the open sessions of key.
func (ss *sessions) of(key string) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.perKey[key]
}

// openListen counts a subscriptions/listen stream of key (protocol
// 2026-07-28, which has no sessions: the stream is what a session's event
// stream was), unless key holds max of them already; end uncounts it.
func (ss *sessions) openListen(key string, max int) (end func(), ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.listens[key] >= max {
		return nil, false
	}
	if ss.listens == nil {
		ss.listens = map[string]int{}
	}
	ss.listens[key]++
	return func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.listens[key]--; ss.listens[key] <= 0 {
			delete(ss.listens, key)
		}
	}, true
}

// takeIdle removes and returns the sessions unused since before, with no
// request being served and no call in flight, for closing.
func (ss *sessions) takeIdle(before time.Time) []*session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var out []*session
	for id, s := range ss.byID {
		if s.active.Load() > 0 || s.used.Load() > before.UnixNano() {
			continue
		}
		s.mu.Lock()
		busy := len(s.calls) > 0
		s.mu.Unlock()
		if busy {
			continue
		}
		delete(ss.byID, id)
		if ss.perKey[s.key]--; ss.perKey[s.key] <= 0 {
			delete(ss.perKey, s.key)
		}
		out = append(out, s)
	}
	return out
}

// session returns the session sid that pr's request names, held for the
// request: the one this replica holds, or the one sealed in sid, rebuilt.
// It refuses as the SDK refuses a session it does not hold (404), and one
// that another key opened (403).
func (p *project) session(sid string, pr Principal) (*session, *transportRefusal) {
	s, ended := p.sessions.hold(sid)
	if s == nil {
		if ended {
			return nil, &transportRefusal{status: http.StatusNotFound, text: "session not found"}
		}
		st, ok := p.gw.sealer().open(p.name, sid)
		if !ok {
			return nil, &transportRefusal{status: http.StatusNotFound, text: "session not found"}
		}
		if st.Key != "" && st.Key != pr.owner() {
			return nil, &transportRefusal{status: http.StatusForbidden, text: "session user mismatch"}
		}
		var err error
		if s, err = p.rebuild(sid, &st); err != nil {
			p.log.Error("rebuilding a session", "error", err)
			return nil, &transportRefusal{status: http.StatusInternalServerError, text: "failed connection"}
		}
		if s == nil {
			return nil, &transportRefusal{status: http.StatusNotFound, text: "session not found"}
		}
	}
	if s.key != "" && s.key != pr.owner() {
		s.release()
		return nil, &transportRefusal{status: http.StatusForbidden, text: "session user mismatch"}
	}
	return s, nil
}

// rebuild opens on this replica the session sid, whose state st was
// sealed in its id, once however many requests ask for it at the same
// time, and holds it. It returns nil when a DELETE ended the session
// meanwhile.
func (p *project) rebuild(sid string, st *sessionState) (*session, error) {
	for {
		ss := &p.sessions
		ss.mu.Lock()
		if s := ss.byID[sid]; s != nil || ss.ended[sid] {
			if s != nil {
				s.active.Add(1)
			}
			ss.mu.Unlock()
			return s, nil
		}
		if wait := ss.opening[sid]; wait != nil {
			ss.mu.Unlock()
			<-wait
			continue
		}
		if ss.opening == nil {
			ss.opening = map[string]chan struct{}{}
		}
		done := make(chan struct{})
		ss.opening[sid] = done
		ss.mu.Unlock()

		s, err := p.connectSession(sid, st.Key, st.sdkState())
		if err == nil {
			s.active.Add(1)
			ss.add(s)
			p.gw.metrics.sessionsRebuilt.WithLabelValues(p.name).Inc()
		}
		ss.mu.Lock()
		delete(ss.opening, sid)
		ss.mu.Unlock()
		close(done)
		return s, err
	}
}

// connectSession connects the project's MCP server to a new transport for
// session id, opened with key, in state (nil for a session that starts
// with initialize).
func (p *project) connectSession(id, key string, state *mcp.ServerSessionState) (*session, error) {
	t := &mcp.StreamableServerTransport{SessionID: id}
	var opts *mcp.ServerSessionOptions
	if state != nil {
		opts = &mcp.ServerSessionOptions{State: state}
	}
	// The session outlives the request that opens it.
	ss, err := p.server.Connect(context.Background(), t, opts)
	if err != nil {
		return nil, err
	}
	return &session{id: id, ss: ss, t: t, key: key, calls: map[string]bool{}}, nil
}

// serveMCP is a project's MCP handler, behind the access checks: a
// request of protocol 2026-07-28 goes to the SDK's stateless handler; one
// of an older version to the session it names, or, without one, to a new
// session (kept when it is an initialize that succeeds).
func (p *project) serveMCP(w http.ResponseWriter, r *http.Request) {
	gr := httpRequestOf(r)
	switch {
	case gr != nil && gr.stateless:
		p.stateless.ServeHTTP(w, r)
		return
	case !transportChecksOn.Load():
		p.referenceHandler().ServeHTTP(w, r)
		return
	case gr == nil:
		http.Error(w, "no access checks", http.StatusInternalServerError) // not reached
		return
	}
	if s := gr.sess; s != nil { // held by the access layer
		if r.Method == http.MethodDelete {
			_ = s.ss.Close()
			p.sessions.end(s)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		s.t.ServeHTTP(w, r)
		return
	}
	// A POST without a session (the checks refused the rest): as the
	// SDK, a new session, whose id the answer gives when it is an
	// initialize.
	id := ""
	if gr.initialize != nil {
		if st, ok := initializeState(gr.initialize, gr.pr.owner(), servedVersions); ok {
			var err error
			if id, err = p.gw.sealer().seal(p.name, &st); err != nil {
				p.log.Error("sealing a session id", "error", err)
				http.Error(w, "failed connection", http.StatusInternalServerError)
				return
			}
		}
	}
	sealed := id != ""
	if !sealed {
		id = rand.Text()
	}
	s, err := p.connectSession(id, gr.pr.owner(), nil)
	if err != nil {
		p.log.Error("failed to connect", "error", err)
		http.Error(w, "failed connection", http.StatusInternalServerError)
		return
	}
	if sealed {
		s.active.Add(1)
		defer s.release()
		p.sessions.add(s)
	}
	s.t.ServeHTTP(w, r)
	if s.ss.InitializeParams() == nil {
		_ = s.ss.Close() // not initialized: nothing can name it
	}
}

// referenceHandler is the MCP SDK's own stateful handler, which serves the
// older protocol versions while the transport checks are switched off
// (tests compare the access layer's answers with its answers).
func (p *project) referenceHandler() http.Handler {
	p.refOnce.Do(func() {
		p.ref = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return p.server }, &mcp.StreamableHTTPOptions{
			Logger:                     sdkLogger(p.log),
			DisableLocalhostProtection: true,
			MaxRequestBodyBytes:        math.MaxInt64,
		})
	})
	return p.ref
}

// sweepSessions closes, every minute until stop is closed, the sessions
// of every project that stayed idle for sessionIdle.
func (g *Gateway) sweepSessions(stop <-chan struct{}) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		g.closeIdleSessions(time.Now().Add(-sessionIdle))
	}
}

// closeIdleSessions closes the sessions unused since before.
func (g *Gateway) closeIdleSessions(before time.Time) {
	g.mu.RLock()
	ps := make([]*project, 0, len(g.projects))
	for _, p := range g.projects {
		ps = append(ps, p)
	}
	g.mu.RUnlock()
	for _, p := range ps {
		for _, s := range p.sessions.takeIdle(before) {
			_ = s.ss.Close()
		}
	}
}
