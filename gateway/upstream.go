package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
)

// Upstream states, as reported by /readyz.
const (
	StateStarting  = "starting"
	StateReady     = "ready"
	StateUnhealthy = "unhealthy"
	StateDisabled  = "disabled"
	StateStopped   = "stopped"
)

// Supervision timings. Variables so that tests of this package can shorten
// them; operators tune the call and startup deadlines in the config.
var (
	backoffMin   = 500 * time.Millisecond
	backoffMax   = 30 * time.Second
	backoffReset = time.Minute // a session that lasted this long resets the backoff
	// backoffJitter spreads reconnections by ±20%, so that upstreams that
	// failed together (a network blip) do not reconnect in step.
	backoffJitter  = 0.2
	pingInterval   = 15 * time.Second
	pingTimeout    = 10 * time.Second
	refreshTimeout = 30 * time.Second
)

// catalog is what an upstream offers, as last listed.
type catalog struct {
	tools     []*mcp.Tool
	resources []*mcp.Resource
	templates []*mcp.ResourceTemplate
	prompts   []*mcp.Prompt
	caps      *mcp.ServerCapabilities
}

// upstreamHooks is what an upstream tells its project about.
type upstreamHooks interface {
	// changed is called after the upstream's state or catalog changed.
	changed(u *upstream)
	// clientOptions returns the handlers relaying notifications and
	// server-to-client requests of u to the project's clients.
	clientOptions(u *upstream) *mcp.ClientOptions
	// upstreamEvent records upstream.error and upstream.restart.
	upstreamEvent(u *upstream, typ string, err error)
}

// upstream supervises the session with one upstream server: it connects,
// lists what the server offers, watches its health (session end, pings)
// and reconnects with exponential backoff. Calls use the current session.
type upstream struct {
	cfg            *config.Server
	log            *slog.Logger
	callTimeout    time.Duration
	startupTimeout time.Duration
	hooks          upstreamHooks

	cancel   context.CancelFunc
	done     chan struct{} // closed when run returns
	attempt  chan struct{} // closed when the first connection attempt ended
	refresh  chan struct{} // a list_changed notification arrived
	attemptO sync.Once

	mu       sync.Mutex
	state    string
	lastErr  string
	stderr   []string // the last lines of stderr that came with lastErr
	conn     *connection
	cat      catalog
	restarts int
	inflight []inflightCall // downstream calls in flight, oldest first
	recent   []recentCaller // sessions whose call ended less than relayGrace ago
	// sessionless counts the calls in flight of clients without a session
	// (protocol 2026-07-28, answered by the access layer).
	sessionless int
}

// relayGrace is how long a session whose call on an upstream has ended
// still counts as that upstream's caller for log messages. The MCP SDK reads
// an upstream's result as soon as it arrives but hands the notifications
// sent before it to their handler through a queue, so a log message sent
// during a call is often handled just after the call returned; it belongs to
// that caller, not to every client.
var relayGrace = 10 * time.Second

// inflightCall is a downstream call in flight on an upstream: its session
// and its context, whose values say (to the MCP SDK) which request it
// answers.
type inflightCall struct {
	ss  *mcp.ServerSession
	ctx context.Context
}

type recentCaller struct {
	ss    *mcp.ServerSession
	until time.Time
}

func newUpstream(cfg *config.Server, callTimeout, startupTimeout time.Duration, hooks upstreamHooks, log *slog.Logger) *upstream {
	if cfg.Timeout > 0 {
		callTimeout = cfg.Timeout.D()
	}
	u := &upstream{
		cfg:            cfg,
		log:            log.With("server", cfg.Name),
		callTimeout:    callTimeout,
		startupTimeout: startupTimeout,
		hooks:          hooks,
		done:           make(chan struct{}),
		attempt:        make(chan struct{}),
		refresh:        make(chan struct{}, 1),
		state:          StateStarting,
	}
	if cfg.Disabled {
		u.state = StateDisabled
	}
	return u
}

// start begins supervision in the background.
func (u *upstream) start() {
	if u.cfg.Disabled {
		close(u.done)
		u.attemptO.Do(func() { close(u.attempt) })
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	go u.run(ctx)
}

// stop ends supervision, closes the session and kills the process group.
func (u *upstream) stop() {
	if u.cancel != nil {
		u.cancel()
	}
	<-u.done
}

// waitFirstAttempt blocks until the first connection attempt ended or ctx
// is done.
func (u *upstream) waitFirstAttempt(ctx context.Context) {
	select {
	case <-u.attempt:
	case <-ctx.Done():
	}
}

func (u *upstream) run(ctx context.Context) {
	defer close(u.done)
	defer u.attemptO.Do(func() { close(u.attempt) })
	retry := &backoff.ExponentialBackOff{
		InitialInterval:     backoffMin,
		RandomizationFactor: backoffJitter,
		Multiplier:          2,
		MaxInterval:         backoffMax,
	}
	retry.Reset()
	for {
		began := time.Now()
		err := u.serve(ctx)
		if ctx.Err() != nil {
			u.setState(StateStopped, nil, nil, catalog{})
			return
		}
		if stderr := stderrOf(err); len(stderr) > 0 {
			u.log.Warn("upstream unhealthy", "error", err, "stderr", strings.Join(stderr, "\n"))
		} else {
			u.log.Warn("upstream unhealthy", "error", err)
		}
		u.hooks.upstreamEvent(u, audit.EventUpstreamError, err)
		u.setState(StateUnhealthy, err, nil, catalog{})
		u.attemptO.Do(func() { close(u.attempt) })
		u.hooks.changed(u)
		if time.Since(began) > backoffReset {
			retry.Reset()
		}
		select {
		case <-time.After(retry.NextBackOff()):
		case <-ctx.Done():
			u.setState(StateStopped, nil, nil, catalog{})
			return
		}
		u.mu.Lock()
		u.restarts++
		n := u.restarts
		u.mu.Unlock()
		u.log.Info("restarting upstream", "attempt", n)
		u.hooks.upstreamEvent(u, audit.EventUpstreamRestart, nil)
	}
}

// serve runs one session from connect to its end and says why it ended,
// with what the upstream said about it.
func (u *upstream) serve(ctx context.Context) (err error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "toolgate", Version: Version}, u.hooks.clientOptions(u))
	client.AddReceivingMiddleware(rootsMiddleware(u), elicitMiddleware(u))
	cctx, cancel := context.WithTimeout(ctx, u.startupTimeout)
	conn, err := connect(cctx, client, u.cfg, u.log)
	if err != nil {
		// Read the deadline before cancel, which would make every failure
		// look like a timeout.
		timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
		cancel()
		if timedOut && ctx.Err() == nil {
			timeout := fmt.Errorf("no answer to initialize within %v", u.startupTimeout)
			if stderr := stderrOf(err); len(stderr) > 0 {
				return &stderrError{err: timeout, stderr: stderr}
			}
			return timeout
		}
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		conn.close()
		err = conn.explain(err)
	}()
	cat, err := listCatalog(cctx, conn.session)
	cancel()
	if err != nil {
		return err
	}
	if cat.caps != nil && cat.caps.Logging != nil {
		// Ask for everything; each client's own level filters what it sees.
		lctx, lcancel := context.WithTimeout(ctx, pingTimeout)
		_ = conn.session.SetLoggingLevel(lctx, &mcp.SetLoggingLevelParams{Level: "debug"})
		lcancel()
	}
	u.setState(StateReady, nil, conn, cat)
	u.attemptO.Do(func() { close(u.attempt) })
	u.log.Info("upstream ready", "tools", len(cat.tools), "resources", len(cat.resources), "prompts", len(cat.prompts))
	u.hooks.changed(u)

	ended := make(chan error, 1)
	go func() { ended <- conn.session.Wait() }()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ended:
			if err == nil {
				err = errors.New("connection closed")
			}
			return fmt.Errorf("session ended: %w", err)
		case err := <-conn.broken:
			return fmt.Errorf("session ended: %w", err)
		case cause := <-conn.suspect:
			if err := pingSession(ctx, conn.session); err != nil && ctx.Err() == nil {
				return fmt.Errorf("session ended: %w, and no answer to a ping after it: %w", cause, err)
			}
		case <-ping.C:
			if err := pingSession(ctx, conn.session); err != nil && ctx.Err() == nil {
				return fmt.Errorf("no answer to ping: %w", err)
			}
		case <-u.refresh:
			rctx, rcancel := context.WithTimeout(ctx, refreshTimeout)
			cat, err := listCatalog(rctx, conn.session)
			rcancel()
			if err != nil {
				return fmt.Errorf("relisting after list_changed: %w", err)
			}
			u.setState(StateReady, nil, conn, cat)
			u.hooks.changed(u)
		}
	}
}

// pingSession pings the server of cs, within pingTimeout.
func pingSession(ctx context.Context, cs *mcp.ClientSession) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	return cs.Ping(ctx, nil)
}

// requestRefresh asks the session loop to list the catalog again.
func (u *upstream) requestRefresh() {
	select {
	case u.refresh <- struct{}{}:
	default:
	}
}

// setState records the upstream's state; failure is why it is not ready
// (nil when it is).
func (u *upstream) setState(state string, failure error, conn *connection, cat catalog) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.state, u.lastErr, u.stderr, u.conn, u.cat = state, "", nil, conn, cat
	if failure != nil {
		u.lastErr, u.stderr = failure.Error(), stderrOf(failure)
	}
}

// snapshot returns the state and catalog under the lock.
func (u *upstream) snapshot() (state string, cat catalog) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state, u.cat
}

// session returns the live session, or an error saying the server is down.
func (u *upstream) session() (*mcp.ClientSession, error) {
	c, err := u.live()
	if err != nil {
		return nil, err
	}
	return c.session, nil
}

// live returns the live connection, or an error saying the server is down.
func (u *upstream) live() (*connection, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != StateReady || u.conn == nil {
		return nil, fmt.Errorf("server %q is unavailable (%s)", u.cfg.Name, u.state)
	}
	return u.conn, nil
}

// track records that a call of ss, running under ctx, is in flight on u,
// for relaying the requests the upstream makes during it; the returned
// func forgets it.
func (u *upstream) track(ss *mcp.ServerSession, ctx context.Context) func() {
	if ss == nil {
		return func() {}
	}
	u.mu.Lock()
	u.inflight = append(u.inflight, inflightCall{ss: ss, ctx: ctx})
	u.mu.Unlock()
	return func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if i := slices.IndexFunc(u.inflight, func(f inflightCall) bool { return f.ss == ss && f.ctx == ctx }); i >= 0 {
			u.inflight = slices.Delete(u.inflight, i, i+1)
		}
		now := time.Now()
		u.recent = slices.DeleteFunc(u.recent, func(r recentCaller) bool { return r.ss == ss || now.After(r.until) })
		u.recent = append(u.recent, recentCaller{ss: ss, until: now.Add(relayGrace)})
	}
}

// logTargets returns the sessions with a call in flight on u and those whose
// call ended less than relayGrace ago.
func (u *upstream) logTargets() []*mcp.ServerSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	targets := make([]*mcp.ServerSession, 0, len(u.inflight)+len(u.recent))
	for _, c := range u.inflight {
		targets = append(targets, c.ss)
	}
	now := time.Now()
	for _, r := range u.recent {
		if now.Before(r.until) {
			targets = append(targets, r.ss)
		}
	}
	return targets
}

// trackSessionless records that a call of a client without a session is
// in flight on u; the returned func forgets it.
func (u *upstream) trackSessionless() func() {
	u.mu.Lock()
	u.sessionless++
	u.mu.Unlock()
	return func() {
		u.mu.Lock()
		u.sessionless--
		u.mu.Unlock()
	}
}

// sessionlessCalls reports whether calls of clients without a session are
// in flight on u.
func (u *upstream) sessionlessCalls() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sessionless > 0
}

// caller returns the one downstream session with calls in flight on u.
// When calls of several sessions are in flight, an upstream's request
// (sampling, elicitation, roots) cannot be attributed to one of them over
// the protocol versions toolgate speaks upstream, so ambiguous is true and
// ss is nil: the relay refuses rather than risk sending one client's
// request to another.
func (u *upstream) caller() (ss *mcp.ServerSession, ambiguous bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.inflight {
		if ss != nil && c.ss != ss {
			return nil, true
		}
		ss = c.ss
	}
	if ss != nil && u.sessionless > 0 {
		return nil, true // a client without a session is one more
	}
	return ss, false
}

// callContext returns the context of the oldest call of ss in flight on
// u, or nil when there is none.
func (u *upstream) callContext(ss *mcp.ServerSession) context.Context {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.inflight {
		if c.ss == ss {
			return c.ctx
		}
	}
	return nil
}

// listCatalog lists everything the server offers, following pagination.
func listCatalog(ctx context.Context, cs *mcp.ClientSession) (catalog, error) {
	var cat catalog
	init := cs.InitializeResult()
	if init != nil {
		cat.caps = init.Capabilities
	}
	if cat.caps == nil {
		cat.caps = &mcp.ServerCapabilities{}
	}
	if cat.caps.Tools != nil {
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				return cat, fmt.Errorf("listing tools: %w", err)
			}
			cat.tools = append(cat.tools, t)
		}
	}
	if cat.caps.Resources != nil {
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				return cat, fmt.Errorf("listing resources: %w", err)
			}
			cat.resources = append(cat.resources, r)
		}
		for r, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				return cat, fmt.Errorf("listing resource templates: %w", err)
			}
			cat.templates = append(cat.templates, r)
		}
	}
	if cat.caps.Prompts != nil {
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				return cat, fmt.Errorf("listing prompts: %w", err)
			}
			cat.prompts = append(cat.prompts, p)
		}
	}
	return cat, nil
}
