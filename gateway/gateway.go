package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/alert"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/sandbox"
)

// Options configure a Gateway. A nil *Options means defaults.
type Options struct {
	// Logger receives the gateway's structured logs (default slog.Default()).
	Logger *slog.Logger
	// Auth checks API keys; it is required unless the configuration turns
	// authentication off. The gateway gives it the keys the configuration
	// lists by hash.
	Auth *apikey.Authenticator
	// Limiter holds the rate-limit buckets (default: in memory).
	Limiter policy.Limiter
	// Audit receives every event; when it cannot be written, tool calls are
	// refused. Nil means no audit log.
	Audit *audit.Log
	// Alerter watches events for the alert rules. Nil means no alerts.
	Alerter *alert.Alerter
	// Sandbox runs Code Mode scripts; it is required when the
	// configuration enables code mode.
	Sandbox *sandbox.Engine
	// Pins keeps tool pins and approvals. Nil means the pins file in
	// dataDir (none without a dataDir).
	Pins PinStore
	// StoreProblems report, for /readyz, what is wrong with the shared
	// stores the gateway does not own (the key store, the audit
	// shipper): each returns "" when all is well.
	StoreProblems []func() string
	// OAuthClient fetches the discovery documents and keys of the OAuth
	// issuers projects trust (default: an http.Client with a timeout).
	OAuthClient *http.Client
}

// Gateway serves the projects of one configuration.
type Gateway struct {
	log     *slog.Logger
	auth    *apikey.Authenticator
	limiter policy.Limiter
	// ownLimiter is the default limiter New made, which Close stops.
	ownLimiter    *policy.MemoryLimiter
	acc           atomic.Pointer[access]
	metrics       *metrics
	audit         *audit.Log
	engine        *sandbox.Engine
	alerter       *alert.Alerter
	pins          PinStore // nil without a dataDir or Options.Pins
	storeProblems []func() string
	oauthClient   *http.Client
	stop          chan struct{} // closed by Close: ends background loops
	life          lifecycle     // calls in flight, event streams, draining
	// seal seals and opens the IDs of sessions (sessionid.go); own is
	// the key of this process, used without a sessionKey.
	seal atomic.Pointer[sessionSealer]
	own  *sessionSealer

	reloadMu sync.Mutex // one Start/Reload/Close at a time

	keyMu     sync.Mutex      // one RecordKeyChange at a time
	keysInLog map[string]bool // key changes in the log: found by the first RecordKeyChange, or written since

	mu       sync.RWMutex
	cfg      *config.Config
	projects map[string]*project
}

// New returns a gateway for cfg; Start connects its upstreams.
func New(cfg *config.Config, opts *Options) *Gateway {
	if opts == nil {
		opts = &Options{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	g := &Gateway{log: log, cfg: cfg, projects: map[string]*project{}, auth: opts.Auth, limiter: opts.Limiter, audit: opts.Audit, alerter: opts.Alerter, engine: opts.Sandbox, pins: opts.Pins, storeProblems: opts.StoreProblems, oauthClient: opts.OAuthClient}
	if g.limiter == nil {
		g.ownLimiter = policy.NewMemoryLimiter(nil)
		g.limiter = g.ownLimiter
	}
	g.metrics = newMetrics(g)
	g.stop = make(chan struct{})
	g.own = randomSessionSealer()
	g.seal.Store(g.own)
	return g
}

// sealer returns what seals and opens session IDs.
func (g *Gateway) sealer() *sessionSealer { return g.seal.Load() }

// sealerFor returns the sealer of cfg's sessionKey: the running one when
// the key did not change, the process's own without a key.
func (g *Gateway) sealerFor(cfg *config.Config) (*sessionSealer, error) {
	keys := cfg.SessionKeys()
	if len(keys) == 0 {
		return g.own, nil
	}
	if cur := g.sealer(); cur != nil && cur.setting == cfg.SessionKey {
		return cur, nil
	}
	s, err := newSessionSealer(keys)
	if err != nil {
		return nil, fmt.Errorf("sessionKey: %w", err)
	}
	s.setting = cfg.SessionKey
	return s, nil
}

// accessPolicy returns the access rules in force.
func (g *Gateway) accessPolicy() *access { return g.acc.Load() }

// StartupError lists what keeps a configuration from being served: name
// collisions and names that break the MCP rules, found once the upstreams
// have said what they offer.
type StartupError struct {
	Problems []string
}

func (e *StartupError) Error() string {
	return "configuration cannot be served:\n  " + strings.Join(e.Problems, "\n  ")
}

// Start connects every upstream, waits for each first attempt (at most the
// configured startup timeout; an upstream that is down keeps reconnecting in
// the background) and makes the tools visible. Name collisions and invalid
// names are a *StartupError, and nothing keeps running.
func (g *Gateway) Start(ctx context.Context) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.pins == nil && g.cfg.DataDir != "" {
		pins, err := openPinStore(filepath.Join(g.cfg.DataDir, PinsFile))
		if err != nil {
			return err
		}
		g.pins = pins
	}
	if g.pins != nil {
		go g.watchPins(g.stop)
	}
	if err := g.apply(ctx, g.cfg, true); err != nil {
		return err
	}
	go g.sweepSessions(g.stop)
	return nil
}

// Close stops every upstream (killing stdio process groups) and closes
// client sessions.
func (g *Gateway) Close() {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.mu.Lock()
	ps := slices.Collect(maps.Values(g.projects))
	g.projects = map[string]*project{}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(p.stop)
	}
	wg.Wait()
	if g.ownLimiter != nil {
		g.ownLimiter.Close()
	}
}

// Config returns the running configuration.
func (g *Gateway) Config() *config.Config {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.cfg
}

func (g *Gateway) project(name string) *project {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.projects[name]
}

// Server returns the MCP server of a project, for serving it over another
// transport (stdio); nil if there is no such project.
func (g *Gateway) Server(projectName string) *mcp.Server {
	if p := g.project(projectName); p != nil {
		return p.server
	}
	return nil
}

// ProjectStatus is one project's part of /readyz.
type ProjectStatus struct {
	Ready     bool                      `json:"ready"`
	Tools     int                       `json:"tools"`
	Upstreams map[string]UpstreamStatus `json:"upstreams"`
	Problems  []string                  `json:"problems,omitempty"`
}

// UpstreamStatus is one upstream's part of /readyz.
type UpstreamStatus struct {
	State     string `json:"state"`
	Transport string `json:"transport"`
	Tools     int    `json:"tools"`
	Restarts  int    `json:"restarts"`
	Error     string `json:"error,omitempty"`
	// Stderr holds the last lines a failed stdio upstream wrote on
	// stderr, which often say why it failed.
	Stderr []string `json:"stderr,omitempty"`
}

// Status reports every project and upstream; ready is true when every
// enabled upstream is ready.
func (g *Gateway) Status() (ready bool, projects map[string]ProjectStatus) {
	g.mu.RLock()
	ps := maps.Clone(g.projects)
	g.mu.RUnlock()
	ready = g.auditHealthy() == nil
	retention := g.auditRetentionProblem()
	shared := g.sharedProblems()
	projects = map[string]ProjectStatus{}
	for name, p := range ps {
		st := p.status()
		ready = ready && st.Ready
		if retention != "" {
			// Said, not made a reason to be unready: the disk filling up
			// is the operator's to fix, and being unready would let a
			// burst of events take the gateway out of service.
			st.Problems = append(st.Problems, retention)
		}
		st.Problems = append(st.Problems, shared...)
		st.Problems = append(st.Problems, g.oauthProblems(name)...) // authn.go
		projects[name] = st
	}
	return ready, projects
}
