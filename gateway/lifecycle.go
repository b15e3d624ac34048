package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/toolgate/toolgate/callerr"
)

// JSON-RPC error codes of work refused because the gateway is saturated or
// stopping. Both are retryable: the error's data carries retryAfterMs, and
// at the HTTP layer the answer is 503 with Retry-After.
const (
	codeOverloaded   = -32030
	codeShuttingDown = -32031
)

// Retry hints of the refusals: a slot frees when any call ends, and a
// gateway that is stopping should be retried through the load balancer,
// which by then sends the client to another instance.
var (
	overloadRetryAfter = time.Second
	drainRetryAfter    = time.Second
)

// errShutdown is the cause of the cancellation of a call still running when
// the grace period of a shutdown ended.
var errShutdown = errors.New("the gateway shut down before the call finished")

// lifecycle tracks the work in flight: the tools/call requests being
// handled (capped by limits.maxInFlightCalls, cancelled when a shutdown's
// grace period ends) and the sessions' open event streams (closed when a
// drain begins, or, for a session with calls in flight, when its last call
// ends: the progress, log messages and relayed requests of those calls
// travel on the session's stream). The zero value is ready to use.
type lifecycle struct {
	mu           sync.Mutex
	draining     bool
	seq          uint64
	calls        map[uint64]callEntry
	sessionCalls map[string]int // calls in flight by session id
	streams      map[uint64]streamEntry
	idle         chan struct{} // closed when draining and no call is in flight
	// reconnectAfter is what a closed event stream asks its client to wait
	// before reconnecting: past the end of the drain.
	reconnectAfter time.Duration
}

type callEntry struct {
	session string
	cancel  context.CancelCauseFunc // once bound (slot.bind)
	cut     bool                    // cancelAll came before bind
}

type streamEntry struct {
	cancel  context.CancelFunc
	session string
}

// refusal is work refused by the lifecycle, with its retry hint.
type refusal struct {
	code       int // JSON-RPC
	callCode   string
	message    string
	retryAfter time.Duration
}

func overloaded(limit int) *refusal {
	return &refusal{code: codeOverloaded, callCode: callerr.Overloaded, retryAfter: overloadRetryAfter,
		message: fmt.Sprintf("the gateway is handling %d tool calls, its limit (limits.maxInFlightCalls); retry after %d ms", limit, retryMs(overloadRetryAfter))}
}

func shuttingDown() *refusal {
	return &refusal{code: codeShuttingDown, callCode: callerr.ShuttingDown, retryAfter: drainRetryAfter,
		message: fmt.Sprintf("the gateway is shutting down and takes no new work; retry after %d ms", retryMs(drainRetryAfter))}
}

// rpcError is the refusal as a JSON-RPC error for an MCP session.
func (r *refusal) rpcError() *jsonrpc.Error {
	return retryableError(r.code, &callerr.Error{Code: r.callCode, Message: r.message, RetryAfter: r.retryAfter})
}

// retryableError is a refused call's error as a JSON-RPC error with its
// retry hint.
func retryableError(code int, ce *callerr.Error) *jsonrpc.Error {
	data, _ := json.Marshal(map[string]any{"retryAfterMs": retryMs(ce.RetryAfter)})
	return &jsonrpc.Error{Code: int64(code), Message: ce.Message, Data: data}
}

// writeHTTP answers the refusal at the HTTP layer: 503, Retry-After and the
// JSON-RPC error.
func (r *refusal) writeHTTP(w http.ResponseWriter) {
	secs := max(1, int64((r.retryAfter+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	rpcError(w, http.StatusServiceUnavailable, r.code, r.message, map[string]any{"retryAfterMs": retryMs(r.retryAfter)})
}

func (l *lifecycle) refuseLocked(limit int) *refusal {
	if l.draining {
		return shuttingDown()
	}
	if limit > 0 && len(l.calls) >= limit {
		return overloaded(limit)
	}
	return nil
}

// slot is one call's admission: its place among the calls in flight. The
// zero slot is none (a call that runs in another's: a script's).
type slot struct {
	l  *lifecycle
	id uint64
}

// take admits one call of session (its id; "" for none) if the gateway
// takes new work and has fewer than limit calls in flight (0: no limit).
func (l *lifecycle) take(limit int, session string) (slot, *refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.refuseLocked(limit); r != nil {
		return slot{}, r
	}
	if l.calls == nil {
		l.calls = map[uint64]callEntry{}
		l.sessionCalls = map[string]int{}
	}
	l.seq++
	l.calls[l.seq] = callEntry{session: session}
	l.sessionCalls[session]++
	return slot{l, l.seq}, nil
}

// held reports whether s is a slot.
func (s slot) held() bool { return s.l != nil }

// bind returns the context the call runs under: ctx, cancelled with cause
// errShutdown when a shutdown's grace period is over.
func (s slot) bind(ctx context.Context) context.Context {
	if s.l == nil {
		return ctx
	}
	ctx, cancel := context.WithCancelCause(ctx)
	s.l.mu.Lock()
	e, ok := s.l.calls[s.id]
	e.cancel = cancel
	if ok {
		s.l.calls[s.id] = e
	}
	s.l.mu.Unlock()
	switch {
	case !ok: // given back already: nothing to run
		cancel(nil)
	case e.cut:
		cancel(errShutdown)
	}
	return ctx
}

// done gives the slot back; a second call does nothing.
func (s slot) done() {
	if s.l == nil {
		return
	}
	l := s.l
	l.mu.Lock()
	e, ok := l.calls[s.id]
	if ok {
		delete(l.calls, s.id)
		if l.sessionCalls[e.session]--; l.sessionCalls[e.session] <= 0 {
			delete(l.sessionCalls, e.session)
			if l.draining {
				l.closeStreamsLocked(e.session)
			}
		}
		if len(l.calls) == 0 && l.idle != nil {
			close(l.idle)
			l.idle = nil
		}
	}
	l.mu.Unlock()
	if ok && e.cancel != nil {
		e.cancel(nil)
	}
}

// stream registers an event stream (a session's GET) so that a drain can
// close it; it is refused while draining.
func (l *lifecycle) stream(ctx context.Context, session string) (context.Context, func(), *refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return nil, nil, shuttingDown()
	}
	ctx, cancel := context.WithCancel(ctx)
	if l.streams == nil {
		l.streams = map[uint64]streamEntry{}
	}
	l.seq++
	id := l.seq
	l.streams[id] = streamEntry{cancel, session}
	return ctx, func() {
		cancel()
		l.mu.Lock()
		delete(l.streams, id)
		l.mu.Unlock()
	}, nil
}

// closeStreamsLocked closes the event streams of session.
func (l *lifecycle) closeStreamsLocked(session string) {
	for _, st := range l.streams {
		if st.session == session {
			st.cancel()
		}
	}
}

// drain stops admitting work and closes the event streams of the sessions
// without calls in flight (the others close when their last call ends). It
// returns a channel closed once no call is in flight.
func (l *lifecycle) drain(reconnectAfter time.Duration) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.draining {
		l.draining = true
		l.reconnectAfter = reconnectAfter
		for _, st := range l.streams {
			if l.sessionCalls[st.session] == 0 {
				st.cancel()
			}
		}
	}
	if len(l.calls) == 0 {
		done := make(chan struct{})
		close(done)
		return done
	}
	if l.idle == nil {
		l.idle = make(chan struct{})
	}
	return l.idle
}

// cancelAll cancels every call in flight with cause errShutdown and returns
// how many there were.
func (l *lifecycle) cancelAll() int {
	l.mu.Lock()
	n := len(l.calls)
	var cancels []context.CancelCauseFunc
	for id, c := range l.calls {
		if c.cancel == nil {
			c.cut = true // cancelled as it binds
			l.calls[id] = c
			continue
		}
		cancels = append(cancels, c.cancel)
	}
	l.mu.Unlock()
	for _, cancel := range cancels {
		cancel(errShutdown)
	}
	return n
}

func (l *lifecycle) isDraining() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.draining
}

func (l *lifecycle) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// admit is the admission step of the tool path, and of the other requests
// that reach an upstream (handlers.go): past limits.maxInFlightCalls, or
// once a shutdown began, the work is refused with a retryable error (and
// counted); admitted work holds a slot until it ends, and runs under a
// context that a shutdown cancels when its grace period ends (slot.bind,
// shutdownCut).
func (g *Gateway) admit(project, session string) (slot, *refusal) {
	s, r := g.life.take(g.accessPolicy().maxInFlight, session)
	if r != nil {
		g.refused(project, r)
	}
	return s, r
}

// shutdownCut is the answer to admitted work whose context (bound to its
// slot) a shutdown cancelled because the grace period ended, rather than
// "context canceled"; nil for other work.
func shutdownCut(ctx context.Context) error {
	if context.Cause(ctx) == errShutdown {
		return &jsonrpc.Error{Code: codeShuttingDown, Message: "cancelled: " + errShutdown.Error()}
	}
	return nil
}

// refused counts and logs a refusal.
func (g *Gateway) refused(project string, r *refusal) {
	g.metrics.refused.WithLabelValues(project, r.callCode).Inc()
	g.log.Debug("work refused", "project", project, "reason", r.callCode)
}

// Draining reports whether a shutdown has begun.
func (g *Gateway) Draining() bool { return g.life.isDraining() }

// InFlight is the number of tools/call requests being handled.
func (g *Gateway) InFlight() int { return g.life.inFlight() }

// Shutdown drains the gateway. At once, /readyz turns 503, new sessions,
// new tool calls and new event streams are refused with a retryable error,
// and the open event streams are closed, those of a session with calls in
// flight once its last call ends (each asks its client to reconnect only
// after ctx's deadline). The tool calls and Code Mode executions in
// flight continue until they end or ctx is done; then the rest are
// cancelled (the upstream is told, the audit log records each with outcome
// "canceled", the client gets -32031) and Shutdown waits up to cancelWait
// for them to unwind.
//
// Shutdown returns nil when everything finished in time, or an error saying
// how many calls were cancelled. It does not close the gateway: Close
// stops the upstreams afterwards.
func (g *Gateway) Shutdown(ctx context.Context) error {
	reconnect := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		reconnect = time.Until(dl) + 5*time.Second
	}
	idle := g.life.drain(reconnect)
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	n := g.life.cancelAll()
	if n == 0 {
		return nil
	}
	g.log.Warn("grace period over: cancelling the calls still in flight", "calls", n)
	t := time.NewTimer(cancelWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		g.log.Error("calls still unwinding after cancellation", "calls", g.life.inFlight(), "waited", cancelWait)
	}
	return fmt.Errorf("%d calls were cancelled at the end of the grace period", n)
}

// cancelWait bounds how long Shutdown waits for cancelled calls to be
// recorded and answered.
var cancelWait = 5 * time.Second

// Abort kills the process group of every stdio upstream at once, without
// waiting for anything: for a process that is about to exit on a second
// signal, so that no upstream outlives it.
func (g *Gateway) Abort() {
	g.mu.RLock()
	ps := slices.Collect(maps.Values(g.projects))
	g.mu.RUnlock()
	for _, p := range ps {
		for _, u := range p.reg.upstreams() {
			u.mu.Lock()
			c := u.conn
			u.mu.Unlock()
			if c != nil {
				c.group.kill()
			}
		}
	}
}

// closeStream ends an event stream that a drain closed (ctx is its context)
// with an SSE event asking the client to wait before it reconnects (the
// MCP SDK's own "close" event): a client that reconnected at once would be
// refused during the drain and give up its session.
func (g *Gateway) closeStream(ctx context.Context, w http.ResponseWriter) {
	if ctx.Err() == nil || !g.life.isDraining() || w.Header().Get("Content-Type") != "text/event-stream" {
		return
	}
	g.life.mu.Lock()
	after := g.life.reconnectAfter
	g.life.mu.Unlock()
	if _, err := fmt.Fprintf(w, "event: close\nretry: %d\n\n", after.Milliseconds()); err == nil {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
}
