package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	pprofhttp "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/demo"
	"github.com/toolgate/toolgate/internal/webhook"
	"github.com/toolgate/toolgate/policy/alert"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
	"github.com/toolgate/toolgate/policy/redislimit"
	"github.com/toolgate/toolgate/sandbox"
)

type serveFlags struct {
	listen  string
	stdio   bool
	project string
	watch   bool
	grace   time.Duration
	cpuProf string
	debug   string
}

func newServe(g *globals) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway (with no configuration file, a built-in demo)",
		Long: `Run the gateway. Clients connect over streamable HTTP to /mcp (the
default project) or /v1/mcp/{project}, or, with --stdio, over standard input
and output. SIGHUP reloads the configuration; --watch also reloads it when
the file changes. With no configuration file, serve runs a built-in demo.

SIGTERM or SIGINT shuts down gracefully: /readyz turns 503, new sessions and
tool calls are refused with a retryable error, the calls and Code Mode
executions in flight may finish within shutdownGracePeriod (default 10s) and
are cancelled after it; then the upstreams are stopped and serve exits 0. A
second signal exits at once, with status 130 (SIGINT) or 143 (SIGTERM).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "listen address, overriding the configuration's `listen` (port 0 picks a free port)")
	fl.BoolVar(&f.stdio, "stdio", false, "serve one MCP client over stdin/stdout instead of HTTP")
	fl.StringVar(&f.project, "project", config.DefaultProject, "project to serve with --stdio")
	fl.BoolVar(&f.watch, "watch", false, "reload the configuration when its file changes")
	fl.DurationVar(&f.grace, "shutdown-grace", 0, "how long a shutdown lets calls in flight finish, overriding the configuration's `shutdownGracePeriod`")
	fl.StringVar(&f.cpuProf, "cpuprofile", "", "write a CPU profile of the gateway to `file` until it stops (for go tool pprof)")
	fl.StringVar(&f.debug, "debug-listen", "", "serve Go's profiles (/debug/pprof/: heap, goroutine, profile, ...) on this loopback `address`")
	return cmd
}

func runServe(ctx context.Context, g *globals, f *serveFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if os.Getenv("GOGC") == "" {
		// A gateway allocates much per call and keeps little: a larger
		// GOGC spends far less CPU in the collector under load for a
		// modest idle heap, and memory still comes back after a burst
		// (benchmarks/README.md, "Garbage collection"; RATIONALE.md).
		debug.SetGCPercent(400)
	}
	if f.cpuProf != "" {
		stopProfile, err := startCPUProfile(f.cpuProf)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	path, err := config.Find(g.config)
	if err != nil {
		return err
	}
	var cfg *config.Config
	var dk demoKey
	demoMode := path == ""
	if demoMode {
		log.Info("no configuration file found: serving the built-in demo")
		if dk, err = loadDemoKey(); err == nil {
			cfg, _, err = startDemo(ctx, log, dk.key)
		}
		if err == nil {
			// The demo keeps its data (audit log, tool pins) in a folder
			// of its own that it removes on exit.
			var dir string
			if dir, err = os.MkdirTemp("", "toolgate-demo-"); err == nil {
				defer os.RemoveAll(dir)
				cfg.DataDir, cfg.Audit.Path = dir, filepath.Join(dir, "audit.jsonl")
			}
		}
	} else {
		cfg, err = config.Load(path)
	}
	if err != nil {
		return err
	}
	if len(cfg.FromEnv) > 0 {
		vars := make([]string, len(cfg.FromEnv))
		for i, o := range cfg.FromEnv {
			vars[i] = o.Var
		}
		log.Info("settings taken from the environment", "vars", strings.Join(vars, " "))
	}
	if f.listen != "" {
		cfg.Listen = f.listen
	}
	if f.stdio && demoMode {
		return usageError{errors.New("--stdio needs a configuration file (-c)")}
	}
	if f.grace < 0 {
		return usageError{fmt.Errorf("--shutdown-grace: negative duration %s", f.grace)}
	}
	if !f.stdio {
		if err := checkListener(cfg, log); err != nil {
			return err
		}
	}

	// Clients over stdio are the local user; keys guard the HTTP listener.
	if f.stdio {
		off := false
		cfg.Auth.Required = &off
	}
	// The first SIGINT or SIGTERM ends ctx and starts a graceful shutdown;
	// shutdown() arms the second, which exits at once.
	sig := newSignals(ctx)
	defer sig.stop()
	ctx = sig.ctx
	gw, closeGateway, err := openGateway(ctx, cfg, log, !demoMode)
	if err != nil {
		return err
	}
	defer closeGateway()
	shutdown := func() {
		sig.exitOnSecond(log, gw)
		grace := gw.Config().ShutdownGracePeriod.D()
		if f.grace > 0 {
			grace = f.grace
		}
		log.Info("shutting down: draining", "signal", sig.first(), "grace", grace, "inFlight", gw.InFlight())
		gctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := gw.Shutdown(gctx); err != nil {
			log.Warn("shutting down: "+err.Error(), "grace", grace)
		} else {
			log.Info("shutting down: the calls in flight finished")
		}
	}

	if path != "" {
		// The loop lives as long as serve, so that a SIGHUP during the
		// drain is ignored rather than left to its default action, which
		// would end the process at once.
		life, endLife := context.WithCancel(context.WithoutCancel(ctx))
		defer endLife()
		go reloadLoop(life, ctx, gw, path, f.watch, log)
	}

	if f.stdio {
		srv := gw.Server(f.project)
		if srv == nil {
			return usageError{fmt.Errorf("--project: no project %q in %s", f.project, path)}
		}
		log.Info("serving over stdio", "project", f.project)
		// The session outlives the signal by the drain, so that the calls
		// in flight can answer.
		rctx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
		defer stopRun()
		t := &answeringTransport{Transport: &mcp.StdioTransport{}}
		errc := make(chan error, 1)
		go func() { errc <- srv.Run(rctx, t) }()
		select {
		case err := <-errc:
			return err // the client closed stdin (nil) or the session failed
		case <-ctx.Done():
		}
		shutdown()
		// A call ends before its answer is written: let the answers out.
		t.waitAnswered(httpCloseWait)
		stopRun()
		<-errc
		return nil
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	lim := cfg.Limits
	srv := &http.Server{
		Handler:           gw.Handler(),
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ReadHeaderTimeout: lim.ReadHeaderTimeout.D(),
		ReadTimeout:       lim.ReadTimeout.D(),
		WriteTimeout:      lim.WriteTimeout.D(),
		IdleTimeout:       lim.IdleTimeout.D(),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var spare spareConns
	srv.ConnState = spare.track
	scheme := "http"
	if cfg.TLS.Enabled() {
		if srv.TLSConfig, err = gateway.TLSConfig(cfg.TLS); err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	// The side listeners are up before the gateway says it listens, so
	// that whoever waits for that line can reach all of them.
	if f.debug != "" {
		stopDebug, err := serveDebug(f.debug, lim.ReadHeaderTimeout.D(), log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopDebug()
	}
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics.listen: %w", err)
		}
		msrv := &http.Server{Handler: metricsMux(gw), ReadHeaderTimeout: lim.ReadHeaderTimeout.D()}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		log.Info("metrics listening", "url", "http://"+mln.Addr().String()+"/metrics")
	}
	base := scheme + "://" + ln.Addr().String()
	log.Info("toolgate listening", "url", base+"/mcp", "config", displayPath(path))
	fmt.Fprintf(g.stderr, "toolgate listening on %s/mcp\n", base)
	if demoMode {
		printDemoBanner(g, base, dk)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	// The listener stays open during the drain, so that load balancers
	// read 503 from /readyz and clients get a retryable refusal rather
	// than a refused connection; no connection is kept alive past its
	// current request.
	srv.SetKeepAlivesEnabled(false)
	shutdown()
	// Close the listener and let the last answers be written.
	sctx, cancel := context.WithTimeout(context.Background(), httpCloseWait)
	defer cancel()
	if err := shutdownHTTP(sctx, srv, &spare); err != nil {
		log.Warn("shutting down: closing the connections still open", "error", err)
		_ = srv.Close()
	}
	log.Info("shutting down: stopping upstreams and closing the audit log")
	return nil
}

// answeringTransport counts the requests read from its connection that
// have not been answered yet, so that serve --stdio closes its session only
// once the answers of the last calls are written.
type answeringTransport struct {
	mcp.Transport
	mu       sync.Mutex
	pending  int
	answered chan struct{} // closed (and replaced) when pending drops to 0
}

func (t *answeringTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &answeringConn{Connection: c, t: t}, nil
}

// waitAnswered waits until every request read has been answered, at most
// timeout.
func (t *answeringTransport) waitAnswered(timeout time.Duration) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		t.mu.Lock()
		if t.pending <= 0 {
			t.mu.Unlock()
			return
		}
		if t.answered == nil {
			t.answered = make(chan struct{})
		}
		ch := t.answered
		t.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return
		}
	}
}

type answeringConn struct {
	mcp.Connection
	t *answeringTransport
}

func (c *answeringConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if req, ok := msg.(*jsonrpc.Request); ok && err == nil && req.IsCall() {
		c.t.mu.Lock()
		c.t.pending++
		c.t.mu.Unlock()
	}
	return msg, err
}

func (c *answeringConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	err := c.Connection.Write(ctx, msg)
	if _, ok := msg.(*jsonrpc.Response); ok {
		c.t.mu.Lock()
		if c.t.pending--; c.t.pending <= 0 && c.t.answered != nil {
			close(c.t.answered)
			c.t.answered = nil
		}
		c.t.mu.Unlock()
	}
	return err
}

// httpCloseWait bounds how long serve waits, once the calls in flight are
// done, for the last answers to be written (HTTP requests still open,
// requests other than tool calls, the stdio session's answers) before it
// closes the connections.
const httpCloseWait = 3 * time.Second

// signals turns SIGINT and SIGTERM into a graceful shutdown (the first) and
// an immediate exit (the second).
type signals struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan os.Signal
	mu     sync.Mutex
	got    os.Signal
}

func newSignals(parent context.Context) *signals {
	s := &signals{ch: make(chan os.Signal, 2)}
	s.ctx, s.cancel = context.WithCancel(parent)
	signal.Notify(s.ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-s.ch:
			s.mu.Lock()
			s.got = sig
			s.mu.Unlock()
			s.cancel()
		case <-s.ctx.Done():
		}
	}()
	return s
}

// first is the signal that started the shutdown (nil when the parent
// context ended it).
func (s *signals) first() os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

// exitOnSecond makes the next SIGINT or SIGTERM kill the upstreams'
// process groups and exit at once with 128+signal.
func (s *signals) exitOnSecond(log *slog.Logger, gw *gateway.Gateway) {
	go func() {
		sig, ok := <-s.ch
		if !ok {
			return
		}
		code := 1
		if n, isSys := sig.(syscall.Signal); isSys {
			code = 128 + int(n)
		}
		log.Error("second signal: exiting now without waiting for the calls in flight", "signal", sig, "exitCode", code)
		gw.Abort()
		exit(code)
	}()
}

func (s *signals) stop() {
	signal.Stop(s.ch) // no signal is sent on ch after this
	s.cancel()
	close(s.ch)
}

// exit ends the process (os.Exit; a variable for tests).
var exit = os.Exit

// serveDebug serves net/http/pprof's handlers on addr, which must be a
// loopback address: profiles show the process's memory and code paths, so
// they are never offered to the network.
func serveDebug(addr string, readHeaderTimeout time.Duration, log *slog.Logger) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-listen %q: %w", addr, err)
	}
	if !config.IsLoopbackHost(host) {
		return nil, fmt.Errorf("--debug-listen %q: profiles are served on loopback only (127.0.0.1, ::1 or localhost)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprofhttp.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprofhttp.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprofhttp.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprofhttp.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprofhttp.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
	go func() { _ = srv.Serve(ln) }()
	log.Info("debug profiles listening", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { _ = srv.Close() }, nil
}

// startCPUProfile writes a CPU profile to path until the returned func is
// called.
func startCPUProfile(path string) (func(), error) {
	out, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = out.Close()
	}, nil
}

// reloadLoop reloads the configuration on SIGHUP and, with watch, when the
// file changes, until life ends. A configuration that fails to load or to
// apply is logged with every problem and the running one stays. Once
// serving ends (a shutdown began), reloads are ignored.
func reloadLoop(life, serving context.Context, gw *gateway.Gateway, path string, watch bool, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var changes <-chan fsnotify.Event
	if watch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			log.Error("cannot watch the configuration file", "error", err)
		} else {
			defer w.Close()
			// Watch the folder: editors replace files by renaming.
			if err := w.Add(filepath.Dir(path)); err != nil {
				log.Error("cannot watch the configuration file", "error", err)
			}
			changes = w.Events
		}
	}
	abs, _ := filepath.Abs(path)
	var debounce <-chan time.Time
	for {
		select {
		case <-life.Done():
			return
		case <-hup:
			if serving.Err() != nil {
				log.Info("SIGHUP ignored: shutting down")
				continue
			}
			reload(serving, gw, path, "SIGHUP", log)
		case ev := <-changes:
			if p, _ := filepath.Abs(ev.Name); p == abs && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				debounce = time.After(200 * time.Millisecond)
			}
		case <-debounce:
			debounce = nil
			if serving.Err() == nil {
				reload(serving, gw, path, "file change", log)
			}
		}
	}
}

func reload(ctx context.Context, gw *gateway.Gateway, path, why string, log *slog.Logger) {
	log.Info("reloading configuration", "path", path, "trigger", why)
	cfg, err := config.Load(path)
	if err != nil {
		gw.ReloadRefused(err)
	} else {
		cfg.Listen = gw.Config().Listen // a --listen override stays in force
		err = gw.Reload(ctx, cfg)
	}
	if err != nil {
		log.Error("configuration reload refused; the running configuration stays", "error", err.Error())
	}
}

func displayPath(p string) string {
	if p == "" {
		return "(built-in demo)"
	}
	return p
}

// startDemo serves the built-in demo upstream on a loopback port of its own
// and returns a configuration that fronts it, accepting key (a new key
// when key is "", which it returns).
func startDemo(ctx context.Context, log *slog.Logger, key string) (*config.Config, string, error) {
	if key == "" {
		var err error
		if key, _, _, err = apikey.Generate(); err != nil {
			return nil, "", err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("demo upstream: %w", err)
	}
	srv := demo.NewServer()
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	go func() { _ = http.Serve(ln, h) }()
	context.AfterFunc(ctx, func() { ln.Close() })
	log.Debug("demo upstream listening", "url", "http://"+ln.Addr().String()+"/mcp")
	cfg, err := config.LoadDemo("http://"+ln.Addr().String()+"/mcp", apikey.Hash(key))
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	return cfg, key, nil
}

func printDemoBanner(g *globals, base string, dk demoKey) {
	kept := fmt.Sprintf("Key file:      %s\n                 (the same key on every start; delete the file for a new one)", dk.path)
	if dk.path == "" {
		kept = "Key file:      none, the key is valid until this process exits:\n                 " + dk.why
	}
	fmt.Fprintf(g.stderr, `
toolgate is running the built-in demo (no configuration file found).

  MCP endpoint:  %[1]s/mcp   (streamable HTTP)
  API key:       %[2]s
                 (send it as "Authorization: Bearer <key>")
  %[3]s
  Health:        %[1]s/healthz   Readiness: %[1]s/readyz

Connect a client, for example:
  claude mcp add --transport http toolgate %[1]s/mcp --header "Authorization: Bearer %[2]s"
  npx @modelcontextprotocol/inspector   (then choose Streamable HTTP, %[1]s/mcp, and the header above)

The demo's tools are shown as demo__echo, demo__add, demo__list_records, ...
Code Mode is on: execute_code runs one JavaScript program that calls them
(search_tools shows their TypeScript declarations), for example
  const r = await tools.demo.list_records({limit: 20}); return r.total;
The same script runs from a file with: toolgate run script.js
To serve your own MCP servers instead, write a toolgate.json: toolgate init
writes a secured starter, or takes the servers of a desktop client's
configuration with --from FILE.

`, base, dk.key, kept)
}

// checkListener enforces the rules for a listener other machines can
// reach: it needs authentication, and TLS unless allowInsecureHTTP says
// otherwise (then a warning is logged).
func checkListener(cfg *config.Config, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if config.IsLoopbackHost(host) {
		return nil
	}
	if !cfg.AuthRequired() {
		return fmt.Errorf("auth.required: false is accepted only on a loopback listener, and listen is %s", cfg.Listen)
	}
	if !cfg.TLS.Enabled() {
		if !cfg.AllowInsecureHTTP {
			return fmt.Errorf("listen: %s is reachable from other machines but tls is not configured; set tls.certFile and tls.keyFile, or allowInsecureHTTP: true to serve keys and results in the clear", cfg.Listen)
		}
		log.Warn("serving plain HTTP on a listener other machines can reach (allowInsecureHTTP is set): keys and results travel in the clear", "listen", cfg.Listen)
	}
	return nil
}

func metricsMux(gw *gateway.Gateway) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", gw.Metrics())
	return mux
}

// auditOptions maps the configuration onto the audit log's options.
func auditOptions(cfg *config.Config) *audit.Options {
	o := &audit.Options{
		Fsync:         cfg.Audit.Fsync,
		FsyncInterval: cfg.Audit.FsyncInterval.D(),
		MaxSizeBytes:  int64(cfg.Audit.MaxSizeMB) << 20,
		MaxFiles:      cfg.Audit.MaxFiles,
		RetainAtLeast: cfg.Audit.RetainAtLeast.D(),
		LogArguments:  cfg.Audit.LogArguments,
	}
	if cfg.Audit.Stdout {
		o.Stdout = os.Stdout
	}
	return o
}

// openGateway builds and starts the gateway of cfg with everything it
// needs: the key store and authenticator (when keys are required), the
// audit log, the alert rules and the Code Mode engine. close releases all
// of it (flushing key usage and the audit log).
func openGateway(ctx context.Context, cfg *config.Config, log *slog.Logger, useKeyStore bool) (gw *gateway.Gateway, release func(), err error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()

	var authn *apikey.Authenticator
	// recordKey is the gateway's RecordKeyChange, set before the
	// authenticator first calls it.
	var recordKey func(apikey.Change) error
	startAuth := func() {}
	// gwRef is the gateway, for the callbacks of the shared stores, which
	// are made before it.
	var gwRef atomic.Pointer[gateway.Gateway]
	storeChanged := func(store string) func(error) {
		return func(err error) {
			if gw := gwRef.Load(); gw != nil {
				gw.StoreStateChanged(store, err)
			}
		}
	}
	shared := cfg.Cluster
	if cfg.AuthRequired() {
		var store apikey.Backend
		switch {
		case useKeyStore && shared.Postgres.URL != "":
			pg, err := apikey.OpenPGStore(ctx, shared.Postgres.URL, &apikey.PGOptions{Logger: log})
			if err != nil {
				return nil, nil, fmt.Errorf("opening the key store (cluster.postgres.url): %w", err)
			}
			store = pg
			cleanups = append(cleanups, func() { pg.Close() })
		case useKeyStore:
			file, err := apikey.OpenStore(ctx, keyStorePath(cfg))
			if err != nil {
				return nil, nil, fmt.Errorf("opening the key store: %w", err)
			}
			store = file
			cleanups = append(cleanups, func() { file.Close() })
		}
		authn, err = apikey.NewAuthenticator(ctx, store, nil, &apikey.AuthOptions{
			Logger:      log,
			OnKeyChange: func(c apikey.Change) error { return recordKey(c) },
		})
		if err != nil {
			return nil, nil, err
		}
		actx, stopAuth := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		started := false
		startAuth = func() {
			go func() { authn.Run(actx); close(done) }()
			started = true
		}
		cleanups = append(cleanups, func() { // flushes key usage
			stopAuth()
			if started {
				<-done
			}
		})
	}

	rules := make([]alert.Rule, 0, len(cfg.Alerts.Rules))
	for _, r := range cfg.Alerts.Rules {
		rules = append(rules, alert.Rule{Event: r.Event, Threshold: r.Threshold, Window: r.Window.D()})
	}
	alertRules := alert.RulesFor(rules)
	if (shared.Redis.URL != "" || shared.Postgres.URL != "") && !slices.ContainsFunc(alertRules, func(r alert.Rule) bool { return r.Event == audit.EventStoreUnavailable }) {
		// A shared store that stops answering is worth an alert at once.
		alertRules = append(alertRules, alert.Rule{Event: audit.EventStoreUnavailable, Threshold: 1, Window: time.Hour})
	}
	alerter := alert.New(cfg.Alerts.Webhook, alertRules, &alert.Options{Logger: log, Post: webhook.Poster(&http.Client{})})
	cleanups = append(cleanups, alerter.Close)
	var storeProblems []func() string
	if shared.Postgres.URL != "" {
		// Registered before the audit log, so that it stops after the log
		// closed, shipping the last lines.
		node := shared.Node
		if node == "" {
			if node, err = os.Hostname(); err != nil {
				return nil, nil, fmt.Errorf("cluster.node: no node name, and the host name is unknown: %w", err)
			}
		}
		shipper, err := audit.NewShipper(ctx, shared.Postgres.URL, node, cfg.Audit.Path, &audit.ShipperOptions{Logger: log, OnStateChange: storeChanged("postgres")})
		if err != nil {
			return nil, nil, fmt.Errorf("opening the shared audit trail (cluster.postgres.url): %w", err)
		}
		sctx, stopShip := context.WithCancel(context.WithoutCancel(ctx))
		shipped := make(chan struct{})
		go func() { shipper.Run(sctx); close(shipped) }()
		cleanups = append(cleanups, func() { stopShip(); <-shipped; shipper.Close() })
		storeProblems = append(storeProblems, func() string {
			if err := shipper.Healthy(); err != nil {
				return err.Error()
			}
			return ""
		})
	}
	auditOpts := auditOptions(cfg)
	auditOpts.OnRetention = func(st audit.RetentionStatus) { retentionAlert(log, alerter, st) }
	auditLog, err := audit.Open(cfg.Audit.Path, auditOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the audit log: %w", err)
	}
	cleanups = append(cleanups, func() { auditLog.Close() })

	var engine *sandbox.Engine
	if cfg.CodeMode.Enabled {
		cacheDir := ""
		if useKeyStore { // a configured gateway keeps its cache in dataDir
			cacheDir = filepath.Join(cfg.DataDir, "wasm-cache")
		}
		if engine, err = sandbox.NewEngine(ctx, &sandbox.EngineOptions{CacheDir: cacheDir, Logger: log}); err != nil {
			return nil, nil, fmt.Errorf("starting the code mode sandbox: %w", err)
		}
		cleanups = append(cleanups, func() { engine.Close() })
	}

	gopts := &gateway.Options{Logger: log, Auth: authn, Audit: auditLog, Alerter: alerter, Sandbox: engine, StoreProblems: storeProblems}
	if shared.Postgres.URL != "" {
		pins, err := gateway.OpenPostgresPins(ctx, shared.Postgres.URL)
		if err != nil {
			return nil, nil, fmt.Errorf("opening the tool pins (cluster.postgres.url): %w", err)
		}
		cleanups = append(cleanups, pins.Close)
		gopts.Pins = pins
	}
	if shared.Redis.URL != "" {
		lim, err := redislimit.New(shared.Redis.URL, &redislimit.Options{Timeout: shared.Redis.Timeout.D(), FailOpen: shared.Redis.FailOpen,
			Logger: log, OnStateChange: storeChanged("redis")})
		if err != nil {
			return nil, nil, fmt.Errorf("cluster.redis.url: %w", err)
		}
		cleanups = append(cleanups, func() { lim.Close() })
		gopts.Limiter = lim
	}
	gw = gateway.New(cfg, gopts)
	gwRef.Store(gw)
	recordKey = gw.RecordKeyChange
	cleanups = append(cleanups, gw.Close)
	if authn != nil {
		// The key changes made while no gateway ran go into the log
		// before the gateway serves; Run appends later ones as it reloads
		// the keys.
		if err := authn.Refresh(ctx); err != nil {
			log.Error("cannot record the key changes pending in the key store yet; they stay pending", "error", err)
		}
		startAuth()
	}
	if err := gw.Start(ctx); err != nil {
		return nil, nil, err
	}
	return gw, cleanup, nil
}

// retentionAlert reports an audit log rotation that kept files past
// audit.maxFiles: logged, and shown to the alert rules as an
// audit.retention event (the log itself holds the event).
func retentionAlert(log *slog.Logger, alerter *alert.Alerter, st audit.RetentionStatus) {
	if st.Over == 0 {
		return
	}
	log.Warn("audit log: rotated files kept past audit.maxFiles because they are younger than audit.retainAtLeast; the disk fills until they age or the limits change",
		"kept", st.Over, "maxFiles", st.MaxFiles, "retainAtLeast", st.RetainAtLeast, "oldest", st.Oldest)
	alerter.Observe(audit.EventAuditRetention, "", map[string]any{"files": st.Files, "over": st.Over, "maxFiles": st.MaxFiles})
}
