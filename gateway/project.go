package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy"
)

// downstreamProtocolVersions are the protocol versions toolgate speaks with
// its clients. 2026-07-28 moves server-to-client requests into multi
// round-trip results, which the relay does not carry yet; every client that
// speaks it also speaks 2025-11-25.
var downstreamProtocolVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// serverRules are one server's compiled filters.
type serverRules struct {
	tools, resources, prompts *policy.Filter
}

func compileRules(s *config.Server) (serverRules, error) {
	var r serverRules
	var err error
	if r.tools, err = policy.NewFilter(policy.FilterSpec{Allow: s.AllowedTools, AllowGlob: s.AllowedToolsGlob, DenyGlob: s.DenyToolsGlob}); err != nil {
		return r, fmt.Errorf("mcpServers.%s tool filter: %w", s.Name, err)
	}
	if r.resources, err = policy.NewFilter(policy.FilterSpec{AllowGlob: s.AllowedResourcesGlob, DenyGlob: s.DenyResourcesGlob}); err != nil {
		return r, fmt.Errorf("mcpServers.%s resource filter: %w", s.Name, err)
	}
	if r.prompts, err = policy.NewFilter(policy.FilterSpec{AllowGlob: s.AllowedPromptsGlob, DenyGlob: s.DenyPromptsGlob}); err != nil {
		return r, fmt.Errorf("mcpServers.%s prompt filter: %w", s.Name, err)
	}
	return r, nil
}

// route ties a name shown to clients to the upstream that serves it.
type route struct {
	up       *upstream
	rules    serverRules
	upstream string // the name (or URI) at the upstream
	def      any    // *mcp.Tool, *mcp.Prompt, *mcp.Resource or *mcp.ResourceTemplate as shown
	key      string // JSON of def, to notice changed definitions
	tmpl     *uritemplate.Template
}

// registry is what a project shows its clients, computed from the ready
// upstreams and the filters.
type registry struct {
	tools     map[string]*route
	prompts   map[string]*route
	resources map[string]*route // by URI
	templates map[string]*route // by URI template
}

// setup is the part of a project that a reload replaces as a whole.
type setup struct {
	cfg       *config.Project
	upstreams map[string]*upstream
	rules     map[string]serverRules
	allow     map[string]bool // project-level allowedTools; nil means no list
}

// project is one tenant: an MCP server shown to clients, backed by its
// upstreams.
type project struct {
	name string
	gw   *Gateway
	log  *slog.Logger

	server  *mcp.Server
	http    http.Handler // the MCP handler
	guarded http.Handler // http behind the access checks

	syncMu sync.Mutex // serialises rebuilds and reloads
	// listMu makes a rebuild's changes to the MCP server one step for the
	// lists clients read (see wholeLists).
	listMu sync.RWMutex

	mu        sync.Mutex
	setup     setup
	reg       registry
	problems  []string          // names skipped at the last rebuild, and why
	subs      map[string]int    // resource subscriptions forwarded upstream, by URI
	listed    map[string]*route // the tools in tools/list
	code      *codeTools        // the tools as Code Mode shows them
	codeDesc  string            // execute_code's description ("" while code mode is off)
	execMu    sync.Mutex
	execSlots *execSlots // codeMode.maxConcurrentExecutions
	// sessions are the open HTTP sessions of the project's MCP server by
	// id (front.go), and keySessions their number by key that opened them
	// (limits.maxSessionsPerKey).
	sessMu      sync.Mutex
	sessions    map[string]*session
	keySessions map[string]int
	// directCalls cancels the tools/calls the access layer is answering
	// itself (fastpath.go), for notifications/cancelled.
	directCalls map[directCallKey][]*context.CancelFunc

	progMu   sync.Mutex
	progSeq  uint64
	progress map[string]progressTarget
}

type progressTarget struct {
	ss    *mcp.ServerSession
	token any
	call  context.Context // of the call the token belongs to
}

func newProject(gw *Gateway, name string) *project {
	p := &project{
		name:     name,
		gw:       gw,
		log:      gw.log.With("project", name),
		subs:     map[string]int{},
		progress: map[string]progressTarget{},
	}
	p.server = mcp.NewServer(&mcp.Implementation{Name: "toolgate", Title: "toolgate (" + name + ")", Version: Version}, &mcp.ServerOptions{
		Logger:                    p.log,
		HasTools:                  true,
		HasResources:              true,
		HasPrompts:                true,
		CompletionHandler:         p.complete,
		SubscribeHandler:          p.subscribe,
		UnsubscribeHandler:        p.unsubscribe,
		SupportedProtocolVersions: downstreamProtocolVersions,
	})
	p.http = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return p.server }, &mcp.StreamableHTTPOptions{
		Logger: p.log,
		// The access layer checks Host and Origin first, with the rules
		// of the listener and the configuration (hosts.go); the SDK's
		// check would refuse the names allowedHosts adds.
		DisableLocalhostProtection: true,
		// The access layer caps bodies first, at limits.maxRequestBodyBytes.
		MaxRequestBodyBytes: math.MaxInt64,
	})
	p.server.AddReceivingMiddleware(p.trackSessions, gw.admitCalls, p.wholeLists, p.unknownTools)
	p.server.AddSendingMiddleware(sendElicitParams)
	p.guarded = gw.guard(p)
	return p
}

// prepare builds the setup for cfg, reusing the upstreams of the running
// setup whose configuration did not change, and starts the new ones.
func (p *project) prepare(cfg *config.Project) (setup, []*upstream, error) {
	s := setup{cfg: cfg, upstreams: map[string]*upstream{}, rules: map[string]serverRules{}}
	if cfg.AllowedTools != nil {
		s.allow = map[string]bool{}
		for _, n := range cfg.AllowedTools {
			s.allow[n] = true
		}
	}
	for name, sc := range cfg.MCPServers {
		r, err := compileRules(sc)
		if err != nil {
			return s, nil, err
		}
		s.rules[name] = r
	}
	p.mu.Lock()
	old := p.setup.upstreams
	p.mu.Unlock()
	var started []*upstream
	for name, sc := range cfg.MCPServers {
		if u := old[name]; u != nil && sameConnection(u.cfg, sc) {
			s.upstreams[name] = u
			continue
		}
		u := newUpstream(sc, p.gw.cfg.CallTimeout.D(), p.gw.cfg.StartupTimeout.D(), p, p.log)
		s.upstreams[name] = u
		started = append(started, u)
	}
	for _, u := range started {
		u.start()
	}
	return s, started, nil
}

// sameConnection reports whether two configurations of a server describe
// the same upstream session: only the filters or the prefix differ, which
// a reload applies without reconnecting.
func sameConnection(a, b *config.Server) bool {
	a2, b2 := *a, *b
	for _, s := range []*config.Server{&a2, &b2} {
		s.Prefix = nil
		s.AllowedTools, s.AllowedToolsGlob, s.DenyToolsGlob = nil, nil, nil
		s.AllowedResourcesGlob, s.DenyResourcesGlob = nil, nil
		s.AllowedPromptsGlob, s.DenyPromptsGlob = nil, nil
	}
	return config.Equal(&a2, &b2)
}

// waitFirst waits, at most until ctx is done, for the first connection
// attempt of each upstream.
func waitFirst(ctx context.Context, ups []*upstream) {
	for _, u := range ups {
		u.waitFirstAttempt(ctx)
	}
}

// commit makes s the running setup, stops the upstreams that s no longer
// uses and shows the result to clients.
func (p *project) commit(s setup) {
	p.syncMu.Lock()
	p.mu.Lock()
	old := p.setup.upstreams
	p.setup = s
	p.mu.Unlock()
	for name, u := range old {
		if s.upstreams[name] != u {
			go u.stop()
		}
	}
	p.rebuildLocked()
	p.syncMu.Unlock()
}

// stop stops every upstream of the project and closes client sessions.
func (p *project) stop() {
	p.mu.Lock()
	ups := slices.Collect(maps.Values(p.setup.upstreams))
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, u := range ups {
		wg.Go(u.stop)
	}
	wg.Wait()
	for ss := range p.server.Sessions() {
		_ = ss.Close()
	}
}

// changed implements upstreamHooks.
func (p *project) changed(u *upstream) {
	p.mu.Lock()
	current := p.setup.upstreams[u.cfg.Name] == u
	p.mu.Unlock()
	if !current {
		return // an upstream of a setup being prepared or retired
	}
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.rebuildLocked()
}

// compute derives the registry of setup s from its upstreams' catalogs.
// Problems are tool and prompt names that cannot be shown: collisions and
// names that break the MCP rules; they stop a startup or a reload. Warnings
// are things left out that do not: a resource URI offered twice (the server
// first in name order keeps it), a tool whose input schema the MCP rules
// refuse.
func compute(s setup) (reg registry, problems, warnings []string) {
	reg = registry{tools: map[string]*route{}, prompts: map[string]*route{}, resources: map[string]*route{}, templates: map[string]*route{}}
	owner := map[string]string{} // shown name -> server, for collision messages
	names := slices.Sorted(maps.Keys(s.upstreams))
	for _, server := range names {
		u := s.upstreams[server]
		state, cat := u.snapshot()
		if state != StateReady {
			continue
		}
		rules := s.rules[server]
		prefix := prefixFor(s.cfg.MCPServers[server])
		for _, t := range cat.tools {
			if !rules.tools.Allows(t.Name) {
				continue
			}
			shown := prefix + t.Name
			if s.allow != nil && !s.allow[shown] {
				continue
			}
			if err := checkName(shown); err != nil {
				problems = append(problems, fmt.Sprintf("server %s: tool %s", server, err))
				continue
			}
			if prev, dup := owner["tool:"+shown]; dup {
				problems = append(problems, fmt.Sprintf("tool name %q is offered by servers %s and %s (set a different prefix on one of them)", shown, prev, server))
				continue
			}
			if err := checkInputSchema(t); err != nil {
				warnings = append(warnings, fmt.Sprintf("server %s: tool %q: %v", server, t.Name, err))
				continue
			}
			owner["tool:"+shown] = server
			def := *t
			def.Name = shown
			reg.tools[shown] = newRoute(u, rules, t.Name, &def)
		}
		for _, pr := range cat.prompts {
			if !rules.prompts.Allows(pr.Name) {
				continue
			}
			shown := prefix + pr.Name
			if err := checkName(shown); err != nil {
				problems = append(problems, fmt.Sprintf("server %s: prompt %s", server, err))
				continue
			}
			if prev, dup := owner["prompt:"+shown]; dup {
				problems = append(problems, fmt.Sprintf("prompt name %q is offered by servers %s and %s", shown, prev, server))
				continue
			}
			owner["prompt:"+shown] = server
			def := *pr
			def.Name = shown
			reg.prompts[shown] = newRoute(u, rules, pr.Name, &def)
		}
		for _, r := range cat.resources {
			if !rules.resources.Allows(r.URI) {
				continue
			}
			if prev, dup := owner["resource:"+r.URI]; dup {
				warnings = append(warnings, fmt.Sprintf("resource %q is offered by servers %s and %s", r.URI, prev, server))
				continue
			}
			owner["resource:"+r.URI] = server
			reg.resources[r.URI] = newRoute(u, rules, r.URI, r)
		}
		for _, t := range cat.templates {
			if !rules.resources.Allows(t.URITemplate) {
				continue
			}
			tmpl, err := uritemplate.New(t.URITemplate)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("server %s: resource template %q: %v", server, t.URITemplate, err))
				continue
			}
			if prev, dup := owner["template:"+t.URITemplate]; dup {
				warnings = append(warnings, fmt.Sprintf("resource template %q is offered by servers %s and %s", t.URITemplate, prev, server))
				continue
			}
			owner["template:"+t.URITemplate] = server
			rt := newRoute(u, rules, t.URITemplate, t)
			rt.tmpl = tmpl
			reg.templates[t.URITemplate] = rt
		}
	}
	sort.Strings(problems)
	sort.Strings(warnings)
	return reg, problems, warnings
}

func newRoute(u *upstream, rules serverRules, upstreamName string, def any) *route {
	b, _ := json.Marshal(def)
	return &route{up: u, rules: rules, upstream: upstreamName, def: def, key: string(b)}
}

// checkInputSchema applies the rule the MCP SDK enforces when a tool is
// registered: the input schema is a JSON object of type "object".
func checkInputSchema(t *mcp.Tool) error {
	var m map[string]any
	b, err := json.Marshal(t.InputSchema)
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil || m == nil {
		return fmt.Errorf("input schema is not a JSON object")
	}
	if m["type"] != "object" {
		return fmt.Errorf(`input schema must have type "object"`)
	}
	return nil
}

// rebuildLocked recomputes the registry and applies the difference to the
// MCP server, which tells connected clients with list_changed. The caller
// holds syncMu.
func (p *project) rebuildLocked() {
	p.mu.Lock()
	s := p.setup
	p.mu.Unlock()
	reg, problems, warnings := compute(s)
	problems = append(problems, warnings...)
	problems = append(problems, p.gw.checkPins(p.name, reg)...)
	cm := p.gw.Config().CodeMode
	code := newCodeTools(reg)
	// With code mode on, the upstream tools are for scripts: clients see
	// (and may call) them only with codeMode.directTools.
	listed := reg.tools
	if cm.Enabled && !cm.DirectTools {
		listed = map[string]*route{}
	}
	p.mu.Lock()
	old := p.reg
	oldListed := p.listed
	p.reg, p.listed, p.code = reg, listed, code
	if !slices.Equal(problems, p.problems) {
		for _, pr := range problems {
			p.log.Error("not shown to clients", "problem", pr)
		}
	}
	p.problems = problems
	p.mu.Unlock()

	p.listMu.Lock()
	defer p.listMu.Unlock()
	if gone := removed(oldListed, listed); len(gone) > 0 {
		p.server.RemoveTools(gone...)
	}
	for name, r := range listed {
		if o := oldListed[name]; o == nil || o.key != r.key {
			p.server.AddTool(r.def.(*mcp.Tool), p.handleTool)
		}
	}
	p.syncCodeMode(cm, code)
	if gone := removed(old.prompts, reg.prompts); len(gone) > 0 {
		p.server.RemovePrompts(gone...)
	}
	for name, r := range reg.prompts {
		if o := old.prompts[name]; o == nil || o.key != r.key {
			p.server.AddPrompt(r.def.(*mcp.Prompt), p.handlePrompt)
		}
	}
	if gone := removed(old.resources, reg.resources); len(gone) > 0 {
		p.server.RemoveResources(gone...)
	}
	for uri, r := range reg.resources {
		if o := old.resources[uri]; o == nil || o.key != r.key {
			p.server.AddResource(r.def.(*mcp.Resource), p.handleResource)
		}
	}
	if gone := removed(old.templates, reg.templates); len(gone) > 0 {
		p.server.RemoveResourceTemplates(gone...)
	}
	for t, r := range reg.templates {
		if o := old.templates[t]; o == nil || o.key != r.key {
			p.server.AddResourceTemplate(r.def.(*mcp.ResourceTemplate), p.handleResource)
		}
	}
}

// listMethods are the requests whose answer a rebuild changes in several
// steps (a tool removed, then another added).
var listMethods = map[string]bool{"tools/list": true, "prompts/list": true, "resources/list": true, "resources/templates/list": true}

// wholeLists is the MCP middleware that serves the lists of tools, prompts
// and resources between two rebuilds, never during one: a client reads the
// configuration before a reload or after it, never a mix of both.
func (p *project) wholeLists(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if !listMethods[method] {
			return next(ctx, method, req)
		}
		p.listMu.RLock()
		defer p.listMu.RUnlock()
		return next(ctx, method, req)
	}
}

func removed(old, cur map[string]*route) []string {
	var gone []string
	for k := range old {
		if cur[k] == nil {
			gone = append(gone, k)
		}
	}
	return gone
}

// lookupTool returns the route of a visible tool: one a Code Mode script
// may call.
func (p *project) lookupTool(name string) *route {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reg.tools[name]
}

// lookupCallable returns the route of a tool a client may call directly:
// one that tools/list shows. With Code Mode on and codeMode.directTools
// off, upstream tools are for scripts only, over every transport.
func (p *project) lookupCallable(name string) *route {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.listed[name]
}

// resourceRoute returns the route serving uri: a listed resource, else the
// first template (in order of template text) that matches it.
func (p *project) resourceRoute(uri string) *route {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.reg.resources[uri]; r != nil {
		return r
	}
	for _, k := range slices.Sorted(maps.Keys(p.reg.templates)) {
		r := p.reg.templates[k]
		if r.tmpl.Match(uri) != nil && r.rules.resources.Allows(uri) {
			return r
		}
	}
	return nil
}

func (p *project) handleTool(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	pr, prepaid := principalFrom(req.Extra, p.name)
	res, err := p.gw.callTool(ctx, p, &ToolCall{
		Principal: pr,
		Name:      req.Params.Name,
		Arguments: req.Params.Arguments,
		Meta:      req.Params.Meta,
		Session:   req.Session,
		prepaid:   prepaid,
	})
	return toMCPResult(res, err)
}

func (p *project) handlePrompt(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	p.mu.Lock()
	r := p.reg.prompts[req.Params.Name]
	p.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("unknown prompt %q", req.Params.Name)
	}
	var res *mcp.GetPromptResult
	err := p.meteredCall(ctx, "prompts/get", req.Extra, req.Session, r.up, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.GetPrompt(ctx, &mcp.GetPromptParams{Meta: req.Params.Meta, Name: r.upstream, Arguments: req.Params.Arguments})
		return err
	})
	return res, err
}

func (p *project) handleResource(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	r := p.resourceRoute(req.Params.URI)
	if r == nil || !r.rules.resources.Allows(req.Params.URI) {
		return nil, mcp.ResourceNotFoundError(req.Params.URI)
	}
	var res *mcp.ReadResourceResult
	err := p.meteredCall(ctx, "resources/read", req.Extra, req.Session, r.up, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{Meta: req.Params.Meta, URI: req.Params.URI})
		return err
	})
	return res, err
}

func (p *project) complete(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	ref := req.Params.Ref
	if ref == nil {
		return nil, fmt.Errorf("completion: missing ref")
	}
	var r *route
	upRef := *ref
	switch ref.Type {
	case "ref/prompt":
		p.mu.Lock()
		r = p.reg.prompts[ref.Name]
		p.mu.Unlock()
		if r != nil {
			upRef.Name = r.upstream
		}
	case "ref/resource":
		p.mu.Lock()
		r = p.reg.templates[ref.URI]
		if r == nil {
			r = p.reg.resources[ref.URI]
		}
		p.mu.Unlock()
	}
	if r == nil {
		return nil, fmt.Errorf("completion: unknown reference %s %q", ref.Type, ref.Name+ref.URI)
	}
	if _, cat := r.up.snapshot(); cat.caps == nil || cat.caps.Completions == nil {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	params := *req.Params
	params.Ref = &upRef
	var res *mcp.CompleteResult
	err := p.meteredCall(ctx, "completion/complete", req.Extra, req.Session, r.up, func(ctx context.Context, cs *mcp.ClientSession) (err error) {
		res, err = cs.Complete(ctx, &params)
		return err
	})
	return res, err
}

func (p *project) subscribe(ctx context.Context, req *mcp.SubscribeRequest) error {
	return p.changeSubscription(ctx, req.Params.URI, +1, req.Session)
}

func (p *project) unsubscribe(ctx context.Context, req *mcp.UnsubscribeRequest) error {
	return p.changeSubscription(ctx, req.Params.URI, -1, req.Session)
}

// changeSubscription keeps one upstream subscription per URI however many
// clients subscribe; the MCP server tracks which clients get updates.
func (p *project) changeSubscription(ctx context.Context, uri string, delta int, ss *mcp.ServerSession) error {
	r := p.resourceRoute(uri)
	if r == nil {
		return mcp.ResourceNotFoundError(uri)
	}
	p.mu.Lock()
	before := p.subs[uri]
	after := max(before+delta, 0)
	p.subs[uri] = after
	p.mu.Unlock()
	if (before == 0) == (after == 0) {
		return nil
	}
	return p.upstreamCall(ctx, r.up, ss, func(ctx context.Context, cs *mcp.ClientSession) error {
		if after > 0 {
			return cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
		}
		return cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri})
	})
}

// meteredCall is upstreamCall for a client's request other than tools/call
// that reaches an upstream (prompts/get, resources/read,
// completion/complete): the project's and the key's rate limits and the
// gateway's admission (limits.maxInFlightCalls, and a shutdown's drain)
// apply to it as to a tool call. toolLimits do not: they name tools.
func (p *project) meteredCall(ctx context.Context, method string, extra *mcp.RequestExtra, ss *mcp.ServerSession, u *upstream, fn func(context.Context, *mcp.ClientSession) error) error {
	pr, _ := principalFrom(extra, p.name)
	if err := p.charge(ctx, pr, "", method); err != nil {
		return err
	}
	session := ""
	if ss != nil {
		session = ss.ID()
	}
	_, err := p.gw.admitted(ctx, p.name, session, func(ctx context.Context) (mcp.Result, error) {
		return nil, p.upstreamCall(ctx, u, ss, fn)
	})
	return err
}

// upstreamCall runs fn with u's session and u's call deadline, tracking the
// downstream session for relayed requests.
func (p *project) upstreamCall(ctx context.Context, u *upstream, ss *mcp.ServerSession, fn func(context.Context, *mcp.ClientSession) error) error {
	cs, err := u.session()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, u.callTimeout)
	defer cancel()
	defer u.track(ss, ctx)()
	if err := fn(ctx, cs); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("server %q did not answer within %v", u.cfg.Name, u.callTimeout)
		}
		return err
	}
	return nil
}

// progressGrace is how long a progress token mapping outlives its call. The
// MCP SDK reads an upstream's result as soon as it arrives but hands the
// notifications that came before it to their handler through a queue, so
// the progress an upstream sends just before its result is often handled
// after the call has returned; without the grace it would be dropped.
var progressGrace = 10 * time.Second

// newProgressToken maps a client's progress token to a fresh token for the
// upstream call (of session ss, under ctx); the returned func forgets the
// mapping after progressGrace.
func (p *project) newProgressToken(ss *mcp.ServerSession, token any, ctx context.Context) (string, func()) {
	p.progMu.Lock()
	defer p.progMu.Unlock()
	p.progSeq++
	t := fmt.Sprintf("tg-%s-%d", p.name, p.progSeq)
	p.progress[t] = progressTarget{ss: ss, token: token, call: ctx}
	return t, func() {
		time.AfterFunc(progressGrace, func() {
			p.progMu.Lock()
			delete(p.progress, t)
			p.progMu.Unlock()
		})
	}
}

// clientOptions implements upstreamHooks: the handlers that carry an
// upstream's notifications and requests to this project's clients.
func (p *project) clientOptions(u *upstream) *mcp.ClientOptions {
	return &mcp.ClientOptions{
		Logger: p.log,
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:  &mcp.RootCapabilities{},
			Sampling: &mcp.SamplingCapabilities{},
			// Relayed by elicitMiddleware.
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}},
		},
		CreateMessageWithToolsHandler: func(ctx context.Context, req *mcp.CreateMessageWithToolsRequest) (*mcp.CreateMessageWithToolsResult, error) {
			ss, err := relayTarget(u, "sampling")
			if err != nil {
				return nil, err
			}
			return relayRequest(ctx, u, ss, func(ctx context.Context) (*mcp.CreateMessageWithToolsResult, error) {
				return ss.CreateMessageWithTools(ctx, req.Params)
			})
		},
		ToolListChangedHandler:     func(context.Context, *mcp.ToolListChangedRequest) { u.requestRefresh() },
		PromptListChangedHandler:   func(context.Context, *mcp.PromptListChangedRequest) { u.requestRefresh() },
		ResourceListChangedHandler: func(context.Context, *mcp.ResourceListChangedRequest) { u.requestRefresh() },
		ResourceUpdatedHandler: func(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			_ = p.server.ResourceUpdated(ctx, req.Params)
		},
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			p.relayLog(ctx, u, req.Params)
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			token, _ := req.Params.ProgressToken.(string)
			p.progMu.Lock()
			target, ok := p.progress[token]
			p.progMu.Unlock()
			if !ok {
				return
			}
			params := *req.Params
			params.ProgressToken = target.token
			_ = relayNotice(ctx, target.call, func(ctx context.Context) error { return target.ss.NotifyProgress(ctx, &params) })
		},
	}
}

// rootsMiddleware answers an upstream's roots/list with the roots of the
// client whose call is in flight, or with no roots when there is none.
func rootsMiddleware(u *upstream) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "roots/list" {
				return next(ctx, method, req)
			}
			ss, _ := u.caller() // no roots when no single caller is known
			if ss == nil || ss.InitializeParams() == nil || ss.InitializeParams().Capabilities == nil ||
				ss.InitializeParams().Capabilities.RootsV2 == nil {
				return &mcp.ListRootsResult{Roots: []*mcp.Root{}}, nil
			}
			return relayRequest(ctx, u, ss, func(ctx context.Context) (*mcp.ListRootsResult, error) {
				return ss.ListRoots(ctx, nil)
			})
		}
	}
}

// relayTarget is the client that gets a server-to-client request of u: the
// one client with calls in flight on u.
func relayTarget(u *upstream, what string) (*mcp.ServerSession, error) {
	ss, ambiguous := u.caller()
	if ambiguous {
		return nil, fmt.Errorf("toolgate: %s request from server %q while calls of several clients are in flight; it cannot be attributed to one of them, so it is refused", what, u.cfg.Name)
	}
	if ss == nil {
		return nil, fmt.Errorf("toolgate: %s request from server %q outside any client call; nothing to relay it to", what, u.cfg.Name)
	}
	return ss, nil
}

// relayLog sends an upstream's log message to the clients with a call in
// flight on it (or one that ended within relayGrace), or else to every
// client of the project. Each client's own logging level filters what it
// receives.
func (p *project) relayLog(ctx context.Context, u *upstream, params *mcp.LoggingMessageParams) {
	msg := *params
	if msg.Logger == "" {
		msg.Logger = u.cfg.Name
	}
	targets := u.logTargets()
	if len(targets) == 0 {
		targets = slices.Collect(p.server.Sessions())
	}
	seen := map[*mcp.ServerSession]bool{}
	for _, ss := range targets {
		if seen[ss] {
			continue
		}
		seen[ss] = true
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = relayNotice(lctx, u.callContext(ss), func(ctx context.Context) error { return ss.Log(ctx, &msg) })
		cancel()
	}
}

// status describes the project for /readyz.
func (p *project) status() ProjectStatus {
	p.mu.Lock()
	ups := maps.Clone(p.setup.upstreams)
	st := ProjectStatus{Tools: len(p.reg.tools), Problems: slices.Clone(p.problems), Upstreams: map[string]UpstreamStatus{}}
	p.mu.Unlock()
	st.Ready = true
	for name, u := range ups {
		u.mu.Lock()
		us := UpstreamStatus{State: u.state, Error: u.lastErr, Restarts: u.restarts, Transport: transportName(u.cfg)}
		if u.state == StateReady {
			us.Tools = len(u.cat.tools)
		}
		u.mu.Unlock()
		if us.State != StateReady && us.State != StateDisabled {
			st.Ready = false
		}
		st.Upstreams[name] = us
	}
	return st
}

func transportName(s *config.Server) string {
	if s.Transport == "" {
		return "http (sse fallback)"
	}
	return s.Transport
}

// unknownTools answers a tools/call of a name the project does not show
// (unknown, filtered, or an upstream tool that Code Mode keeps for
// scripts) on the tool path, so that the refusal is counted and recorded
// like any other; the error is the one the MCP SDK gives for a tool it
// does not have.
func (p *project) unknownTools(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method != "tools/call" {
			return next(ctx, method, req)
		}
		ctr, ok := req.(*mcp.CallToolRequest)
		if !ok || ctr.Params == nil || p.lookupCallable(ctr.Params.Name) != nil || p.isCodeModeTool(ctr.Params.Name) {
			return next(ctx, method, req)
		}
		pr, _ := principalFrom(ctr.Extra, p.name)
		return toMCPResult(p.gw.callTool(ctx, p, &ToolCall{Principal: pr, Name: ctr.Params.Name, Arguments: ctr.Params.Arguments, Session: ctr.Session}))
	}
}

// isCodeModeTool reports whether name is execute_code or search_tools while
// code mode is on.
func (p *project) isCodeModeTool(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.codeDesc != "" && (name == ExecuteCodeTool || name == SearchToolsTool)
}
