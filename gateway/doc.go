// Package gateway owns toolgate's MCP plumbing: the downstream MCP server
// (streamable HTTP and stdio) that clients connect to, the supervised
// sessions with upstream servers, the registry of namespaced and filtered
// tools, resources and prompts, the one tool path every call goes through,
// the relay of notifications and server-to-client requests, and the HTTP
// routes (/mcp, /v1/mcp/{project}, /healthz, /readyz).
//
// It does not know how filters, keys or limits are implemented (packages
// policy and policy/apikey) nor anything about running JavaScript.
package gateway
