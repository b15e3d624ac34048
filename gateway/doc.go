// Package gateway owns toolgate's MCP plumbing: the downstream MCP server
// (streamable HTTP and stdio) that clients connect to, the supervised
// sessions with upstream servers, the registry of namespaced and filtered
// tools, resources and prompts, the one tool path every call goes through,
// the relay of notifications and server-to-client requests, and the HTTP
// routes (/mcp, /v1/mcp/{project}, /healthz, /readyz).
//
// It does not know how filters, keys or limits are implemented (packages
// policy and policy/apikey) nor anything about running JavaScript (package
// sandbox runs scripts, package bindings bridges their calls back to the
// tool path). A refused call is a callerr.Error, the vocabulary the three
// share.
//
// Where things are:
//
//   - gateway.go, reload.go, http.go: the Gateway, its start, reloads (and
//     the rules of what a reload may change), close, and its HTTP routes;
//   - project.go: one project, composed of its registry (registry.go, with
//     names.go), its relay (relay.go), its MCP handlers (handlers.go) and
//     what tracks its sessions and calls;
//   - toolpath.go: the one tool path and the order of its steps; each step
//     lives with what it reads: admission in lifecycle.go, visibility in
//     registry.go, rate limits in limits.go, the record in audit.go, Code
//     Mode's tools in codemode.go;
//   - access.go, front.go, hosts.go, fastpath.go, message.go: the HTTP
//     layer in front of the MCP SDK: Host and Origin, addresses, keys, the
//     transport's rules (of every protocol version, 2026-07-28's
//     header checks included), and the tool calls the access layer
//     answers itself; authn.go: credentials (API keys and OAuth access
//     tokens), the challenges of refusals, the protected resource
//     metadata, and the tools a token's scopes and groups grant;
//   - sessions.go, sessionid.go: the MCP sessions of clients on versions
//     before 2026-07-28, served with the SDK's transport and sealed into
//     their IDs so that any replica sharing the session key rebuilds
//     them; clients on 2026-07-28 go to the SDK's stateless handler;
//   - upstream.go, transport.go, upstreamcall.go, connpool.go: the
//     sessions with upstream servers and how calls reach them;
//     failreason.go: what a failed upstream said about it (its stderr, its
//     HTTP answer), bounded and redacted;
//   - lifecycle.go: calls and event streams in flight, and a shutdown's
//     drain;
//   - audit.go, metrics.go, shared.go, pins.go: what is recorded, counted
//     and kept about calls, tools and the shared stores; sdklog.go: the
//     levels at which the MCP SDK's own log records are written.
package gateway
