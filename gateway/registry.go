package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy"
)

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
	// paramHeaders is set for a tool whose input schema binds arguments
	// to Mcp-Param-* headers (x-mcp-header), which the SDK checks.
	paramHeaders bool
}

// routes are what a project shows its clients, computed from the ready
// upstreams and the filters.
type routes struct {
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

// registry is what a project shows its clients and what serves it: the
// setup a reload replaces (configuration, upstreams, filters), the routes
// computed from it at each rebuild, the tools a client may call directly
// and Code Mode's view of them. It publishes the result to the project's
// MCP server, whose handlers it is given, and it is where the tool path
// asks which tool a caller may see (visible).
type registry struct {
	project string
	gw      *Gateway
	log     *slog.Logger
	server  *mcp.Server
	serve   registryHandlers

	syncMu sync.Mutex // serialises rebuilds and reloads
	// listMu makes a rebuild's changes to the MCP server one step for the
	// lists clients read (see wholeLists).
	listMu sync.RWMutex

	mu       sync.Mutex
	setup    setup
	routes   routes
	problems []string          // names skipped at the last rebuild, and why
	listed   map[string]*route // the tools in tools/list
	code     *codeTools        // the tools as Code Mode shows them
	codeDesc string            // execute_code's description ("" while code mode is off)
}

// registryHandlers are the handlers the registry gives the MCP server for
// what it publishes.
type registryHandlers struct {
	tool     mcp.ToolHandler // every tool: the upstreams', execute_code and search_tools (toolCalls answers first)
	prompt   mcp.PromptHandler
	resource mcp.ResourceHandler // resources and resource templates
}

// prepare builds the setup for cfg, reusing the upstreams of the running
// setup whose configuration did not change, and starts the new ones, which
// report to hooks.
func (r *registry) prepare(cfg *config.Project, hooks upstreamHooks) (setup, []*upstream, error) {
	s := setup{cfg: cfg, upstreams: map[string]*upstream{}, rules: map[string]serverRules{}}
	if cfg.AllowedTools != nil {
		s.allow = map[string]bool{}
		for _, n := range cfg.AllowedTools {
			s.allow[n] = true
		}
	}
	for name, sc := range cfg.MCPServers {
		rules, err := compileRules(sc)
		if err != nil {
			return s, nil, err
		}
		s.rules[name] = rules
	}
	old := r.upstreams()
	var started []*upstream
	for name, sc := range cfg.MCPServers {
		if u := old[name]; u != nil && sameConnection(u.cfg, sc) {
			s.upstreams[name] = u
			continue
		}
		u := newUpstream(sc, r.gw.cfg.CallTimeout.D(), r.gw.cfg.StartupTimeout.D(), hooks, r.log)
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
func (r *registry) commit(s setup) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.mu.Lock()
	old := r.setup.upstreams
	r.setup = s
	r.mu.Unlock()
	for name, u := range old {
		if s.upstreams[name] != u {
			go u.stop()
		}
	}
	r.rebuildLocked()
}

// upstreams returns the upstreams of the running setup.
func (r *registry) upstreams() map[string]*upstream {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.setup.upstreams)
}

// changed rebuilds after u's state or catalog changed, when u belongs to
// the running setup (not to one being prepared or retired).
func (r *registry) changed(u *upstream) {
	r.mu.Lock()
	current := r.setup.upstreams[u.cfg.Name] == u
	r.mu.Unlock()
	if current {
		r.rebuild()
	}
}

// rebuild recomputes the routes and applies the difference to the MCP
// server.
func (r *registry) rebuild() {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.rebuildLocked()
}

// compute derives the routes of setup s from its upstreams' catalogs.
// Problems are tool and prompt names that cannot be shown: collisions and
// names that break the MCP rules; they stop a startup or a reload. Warnings
// are things left out that do not: a resource URI offered twice (the server
// first in name order keeps it), a tool whose input schema the MCP rules
// refuse.
func compute(s setup) (rs routes, problems, warnings []string) {
	rs = routes{tools: map[string]*route{}, prompts: map[string]*route{}, resources: map[string]*route{}, templates: map[string]*route{}}
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
			rs.tools[shown] = newRoute(u, rules, t.Name, &def)
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
			rs.prompts[shown] = newRoute(u, rules, pr.Name, &def)
		}
		for _, res := range cat.resources {
			if !rules.resources.Allows(res.URI) {
				continue
			}
			if prev, dup := owner["resource:"+res.URI]; dup {
				warnings = append(warnings, fmt.Sprintf("resource %q is offered by servers %s and %s", res.URI, prev, server))
				continue
			}
			owner["resource:"+res.URI] = server
			rs.resources[res.URI] = newRoute(u, rules, res.URI, res)
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
			rs.templates[t.URITemplate] = rt
		}
	}
	sort.Strings(problems)
	sort.Strings(warnings)
	return rs, problems, warnings
}

func newRoute(u *upstream, rules serverRules, upstreamName string, def any) *route {
	b, _ := json.Marshal(def)
	_, isTool := def.(*mcp.Tool)
	return &route{up: u, rules: rules, upstream: upstreamName, def: def, key: string(b),
		paramHeaders: isTool && bytes.Contains(b, []byte(`"x-mcp-header"`))}
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

// rebuildLocked recomputes the routes and applies the difference to the
// MCP server, which tells connected clients with list_changed. The caller
// holds syncMu.
func (r *registry) rebuildLocked() {
	r.mu.Lock()
	s := r.setup
	r.mu.Unlock()
	rs, problems, warnings := compute(s)
	problems = append(problems, warnings...)
	problems = append(problems, r.gw.checkPins(r.project, rs)...)
	cm := r.gw.Config().CodeMode
	code := newCodeTools(rs)
	// With code mode on, the upstream tools are for scripts: clients see
	// (and may call) them only with codeMode.directTools.
	listed := rs.tools
	if cm.Enabled && !cm.DirectTools {
		listed = map[string]*route{}
	}
	r.mu.Lock()
	old := r.routes
	oldListed := r.listed
	r.routes, r.listed, r.code = rs, listed, code
	if !slices.Equal(problems, r.problems) {
		for _, pr := range problems {
			r.log.Error("not shown to clients", "problem", pr)
		}
	}
	r.problems = problems
	r.mu.Unlock()

	r.listMu.Lock()
	defer r.listMu.Unlock()
	if gone := removed(oldListed, listed); len(gone) > 0 {
		r.server.RemoveTools(gone...)
	}
	for name, rt := range listed {
		if o := oldListed[name]; o == nil || o.key != rt.key {
			r.server.AddTool(rt.def.(*mcp.Tool), r.serve.tool)
		}
	}
	r.publishCodeMode(cm, code)
	if gone := removed(old.prompts, rs.prompts); len(gone) > 0 {
		r.server.RemovePrompts(gone...)
	}
	for name, rt := range rs.prompts {
		if o := old.prompts[name]; o == nil || o.key != rt.key {
			r.server.AddPrompt(rt.def.(*mcp.Prompt), r.serve.prompt)
		}
	}
	if gone := removed(old.resources, rs.resources); len(gone) > 0 {
		r.server.RemoveResources(gone...)
	}
	for uri, rt := range rs.resources {
		if o := old.resources[uri]; o == nil || o.key != rt.key {
			r.server.AddResource(rt.def.(*mcp.Resource), r.serve.resource)
		}
	}
	if gone := removed(old.templates, rs.templates); len(gone) > 0 {
		r.server.RemoveResourceTemplates(gone...)
	}
	for t, rt := range rs.templates {
		if o := old.templates[t]; o == nil || o.key != rt.key {
			r.server.AddResourceTemplate(rt.def.(*mcp.ResourceTemplate), r.serve.resource)
		}
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

// listMethods are the requests whose answer a rebuild changes in several
// steps (a tool removed, then another added).
var listMethods = map[string]bool{"tools/list": true, "prompts/list": true, "resources/list": true, "resources/templates/list": true}

// wholeLists is the MCP middleware that serves the lists of tools, prompts
// and resources between two rebuilds, never during one: a client reads the
// configuration before a reload or after it, never a mix of both.
func (r *registry) wholeLists(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if !listMethods[method] {
			return next(ctx, method, req)
		}
		r.listMu.RLock()
		defer r.listMu.RUnlock()
		return next(ctx, method, req)
	}
}

// visible is the visibility step of the tool path: what the tool name
// reaches, as its caller sees the project. A script (byScript) sees every
// tool the filters let through, and no Code Mode tool. A client sees the
// tools tools/list shows it, and execute_code and search_tools while code
// mode is on: with code mode on and codeMode.directTools off, upstream
// tools are for scripts only, over every transport. The grant of an OAuth
// access token (authn.go) narrows the upstream tools the caller and its
// scripts see to those its scopes and groups grant: a tool it does not
// grant is not found, as one that does not exist.
func (r *registry) visible(name string, byScript bool, grant *toolGrant) target {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case byScript:
		if !grant.allows(name) {
			return target{}
		}
		return target{route: r.routes.tools[name]}
	case r.codeDesc != "" && (name == ExecuteCodeTool || name == SearchToolsTool):
		return target{meta: name}
	case !grant.allows(name):
		return target{}
	}
	return target{route: r.listed[name]}
}

// grantedLists is the MCP middleware that shows a client whose access
// token narrows the project's tools (see visible) the tools its grant
// includes, and no other: tools/list leaves the others out, and
// execute_code's description declares only those.
func (r *registry) grantedLists(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if method != "tools/list" || err != nil {
			return res, err
		}
		grant := requestOf(req.GetExtra()).principal(r.project).grant
		lr, ok := res.(*mcp.ListToolsResult)
		if grant == nil || !ok {
			return res, err
		}
		r.mu.Lock()
		code := r.codeDesc != ""
		r.mu.Unlock()
		out := *lr
		out.Tools = make([]*mcp.Tool, 0, len(lr.Tools))
		for _, t := range lr.Tools {
			switch {
			case code && t.Name == ExecuteCodeTool:
				c := *t
				c.Description = r.codeDescriptionFor(grant)
				out.Tools = append(out.Tools, &c)
			case code && t.Name == SearchToolsTool, grant.allows(t.Name):
				out.Tools = append(out.Tools, t)
			}
		}
		return &out, nil
	}
}

// codeTools returns the tools as Code Mode shows them.
func (r *registry) codeTools() *codeTools {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.code
}

// prompt returns the route of a prompt.
func (r *registry) prompt(name string) *route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes.prompts[name]
}

// resourceRoute returns the route serving uri: a listed resource, else the
// first template (in order of template text) that matches it.
func (r *registry) resourceRoute(uri string) *route {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rt := r.routes.resources[uri]; rt != nil {
		return rt
	}
	for _, k := range slices.Sorted(maps.Keys(r.routes.templates)) {
		rt := r.routes.templates[k]
		if rt.tmpl.Match(uri) != nil && rt.rules.resources.Allows(uri) {
			return rt
		}
	}
	return nil
}

// completionRoute returns the route a completion reference names: a prompt
// ("ref/prompt"), or a resource template or resource ("ref/resource").
func (r *registry) completionRoute(ref *mcp.CompleteReference) *route {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ref.Type {
	case "ref/prompt":
		return r.routes.prompts[ref.Name]
	case "ref/resource":
		if rt := r.routes.templates[ref.URI]; rt != nil {
			return rt
		}
		return r.routes.resources[ref.URI]
	}
	return nil
}

// status describes the registry for /readyz.
func (r *registry) status() ProjectStatus {
	r.mu.Lock()
	ups := maps.Clone(r.setup.upstreams)
	st := ProjectStatus{Tools: len(r.routes.tools), Problems: slices.Clone(r.problems), Upstreams: map[string]UpstreamStatus{}}
	r.mu.Unlock()
	st.Ready = true
	for name, u := range ups {
		u.mu.Lock()
		us := UpstreamStatus{State: u.state, Error: u.lastErr, Stderr: u.stderr, Restarts: u.restarts, Transport: transportName(u.cfg)}
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
