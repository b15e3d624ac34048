package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/policy/audit"
)

// downstreamProtocolVersions are the protocol versions toolgate speaks with
// its clients. Upstreams keep theirs (transport.go); the MCP SDK's server
// and client translate between the two.
var downstreamProtocolVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// project is one tenant: an MCP server shown to clients, backed by its
// upstreams. It composes parts that each own their state and lock:
//
//   - reg, the registry (registry.go): the setup a reload replaces, the
//     routes computed from it, what clients and scripts may call, and
//     their publication to the MCP server;
//   - relay (relay.go): what upstreams send to clients during calls;
//   - the handlers of the MCP server (handlers.go) with subs, the
//     resource subscriptions they keep upstream;
//   - the lifecycle of sessions and calls: sessions, the open HTTP
//     sessions (front.go); direct, the calls the access layer answers
//     itself (fastpath.go); execs, the running Code Mode executions
//     (codemode.go).
//
// Every tool call goes through the gateway's one tool path (toolpath.go).
type project struct {
	name string
	gw   *Gateway
	log  *slog.Logger

	server    *mcp.Server
	http      http.Handler // the MCP handler (serveMCP)
	stateless http.Handler // the SDK's handler of protocol 2026-07-28
	guarded   http.Handler // http behind the access checks
	// ref is the SDK's stateful handler, for tests (referenceHandler).
	refOnce sync.Once
	ref     http.Handler
	// serverInfo is the project's server as JSON, which the results of
	// protocol 2026-07-28 carry in their _meta.
	serverInfo json.RawMessage

	reg      registry
	relay    relay
	subs     subscriptions
	sessions sessions
	direct   directCalls
	execs    executions
}

var _ upstreamHooks = (*project)(nil)

func newProject(gw *Gateway, name string) *project {
	p := &project{name: name, gw: gw, log: gw.log.With("project", name)}
	impl := &mcp.Implementation{Name: "toolgate", Title: "toolgate (" + name + ")", Version: Version}
	p.serverInfo, _ = json.Marshal(impl)
	p.server = mcp.NewServer(impl, &mcp.ServerOptions{
		Logger:                    sdkLogger(p.log),
		InitializedHandler:        p.sessionOpened,
		HasTools:                  true,
		HasResources:              true,
		HasPrompts:                true,
		CompletionHandler:         p.complete,
		SubscribeHandler:          p.subscribe,
		UnsubscribeHandler:        p.unsubscribe,
		SupportedProtocolVersions: downstreamProtocolVersions,
	})
	p.reg = registry{project: name, gw: gw, log: p.log, server: p.server, serve: registryHandlers{
		tool:     p.handleTool,
		prompt:   p.handlePrompt,
		resource: p.handleResource,
	}}
	p.relay = relay{project: name, server: p.server, log: p.log}
	p.http = http.HandlerFunc(p.serveMCP)
	p.stateless = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return p.server }, &mcp.StreamableHTTPOptions{
		Logger:    sdkLogger(p.log),
		Stateless: true,
		// The access layer checks Host and Origin first, with the rules
		// of the listener and the configuration (hosts.go); the SDK's
		// check would refuse the names allowedHosts adds.
		DisableLocalhostProtection: true,
		// The access layer caps bodies first, at limits.maxRequestBodyBytes.
		MaxRequestBodyBytes: math.MaxInt64,
		// A request of 2026-07-28 lives as long as its POST: nothing else
		// can cancel it (a notifications/cancelled may reach another
		// replica), so a client that goes away cancels its call.
		PropagateRequestCancellation: true,
	})
	p.server.AddReceivingMiddleware(p.trackSessions, p.reg.wholeLists, p.reg.grantedLists, p.toolCalls)
	p.server.AddSendingMiddleware(sendElicitParams)
	p.guarded = gw.guard(p)
	return p
}

// sessionOpened logs a client's session when it is initialized: the one
// line at INFO a session gets (the MCP SDK's own are DEBUG, sdklog.go).
// The client names itself, so its name is cut short.
func (p *project) sessionOpened(_ context.Context, req *mcp.InitializedRequest) {
	ss := req.Session
	var args []any
	if id := ss.ID(); id != "" {
		args = append(args, "session", id)
	}
	if ip := ss.InitializeParams(); ip != nil {
		if ip.ClientInfo != nil {
			args = append(args, "client", clip.Text(strings.TrimSpace(ip.ClientInfo.Name+" "+ip.ClientInfo.Version), 128))
		}
		args = append(args, "protocol", clip.Text(ip.ProtocolVersion, 32))
	}
	p.log.Info("client session opened", args...)
}

// stop stops every upstream of the project and closes client sessions.
func (p *project) stop() {
	var wg sync.WaitGroup
	for _, u := range p.reg.upstreams() {
		wg.Go(u.stop)
	}
	wg.Wait()
	for ss := range p.server.Sessions() {
		_ = ss.Close()
	}
}

// changed implements upstreamHooks.
func (p *project) changed(u *upstream) { p.reg.changed(u) }

// clientOptions implements upstreamHooks: the handlers that carry an
// upstream's notifications and requests to this project's clients.
func (p *project) clientOptions(u *upstream) *mcp.ClientOptions { return p.relay.clientOptions(u) }

// upstreamEvent implements upstreamHooks: upstream.error when an upstream
// fails, upstream.restart when it is reconnected.
func (p *project) upstreamEvent(u *upstream, typ string, err error) {
	ev := &audit.Event{Type: typ, Project: p.name, Server: u.cfg.Name}
	if err != nil {
		ev.Error = err.Error()
	}
	_ = p.gw.emit(ev)
}

// status describes the project for /readyz.
func (p *project) status() ProjectStatus { return p.reg.status() }
