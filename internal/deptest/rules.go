package deptest

import "slices"

// Rules are toolgate's import rules. The test of this package checks
// them against the whole module; add a rule here rather than a test of
// imports in the package it constrains.
var Rules = []Rule{
	{
		From: own("sandbox/...", "bindings/..."),
		Deny: own("gateway/..."),
		Why:  "a script reaches tools through the ToolCaller it is given, so that the tool path stays in one place",
	},
	{
		From: own("bindings/..."),
		Deny: slices.Concat(own("policy/...", "sandbox/...", "wasm/..."), []string{"github.com/tetratelabs/wazero/..."}),
		Why:  "bindings turns tool lists into declarations and stubs; how a call is checked or a script run is not its business",
	},
	{
		From: own("callerr"),
		Deny: slices.Concat(own("..."), transports),
		Why:  "the error vocabulary of a call is shared by the tool path, the bindings and the sandbox, so it imports none of them (nor anything else of toolgate, nor a transport)",
	},
	{
		From: own("wasm/..."),
		Deny: own("sandbox/..."),
		Why:  "the wazero layer knows nothing of JavaScript or of the scripts run on it",
	},
	{
		From: storage,
		Deny: transports,
		Why:  "a storage package keeps state on disk; requests reach it through the gateway, never by a transport of its own",
	},
	{
		From: own("policy/..."),
		Deny: slices.Concat(transports, own("sandbox/...", "bindings/...", "wasm/...")),
		Why:  "policy decides on plain names and values handed to it; it knows neither MCP transports nor Code Mode",
	},
	{
		From: own("policy/audit"),
		Deny: own("policy", "policy/apikey", "policy/alert"),
		Why:  "the audit log is the lowest of the policy packages: the others import it for its event types",
	},
	{
		From: own("policy"),
		Deny: own("policy/apikey", "policy/alert", "policy/audit"),
		Why:  "filters, IP rules and limits decide; what is kept about access (keys, audit, alerts) builds on them, not the other way",
	},
	{
		From: own("internal/oauth"),
		Deny: slices.Concat(own("gateway/...", "policy/...", "sandbox/...", "bindings/...", "wasm/...", "internal/config"), []string{"github.com/modelcontextprotocol/go-sdk/..."}),
		Why:  "the token verifier checks tokens against an issuer's keys; MCP, the gateway and how the configuration is written are not its business",
	},
	{
		From: own("cmd/...", "gateway/...", "internal/cli/..."),
		Deny: slices.Concat(own("internal/oauthtest"), []string{"github.com/zitadel/..."}),
		Why:  "the OpenID provider library runs the tests' provider only: toolgate verifies tokens, it never issues them",
	},
}

// storage are the packages that only keep state: the audit log and the
// API key store, and the rate limits kept in Redis.
var storage = own("policy/audit", "policy/apikey", "policy/redislimit")

// transports are the packages that speak to clients or upstream
// servers: HTTP, MCP (the go-sdk), server-sent events, and the gateway
// that serves them.
var transports = slices.Concat([]string{
	"net/http/...",
	"github.com/modelcontextprotocol/go-sdk/...",
	"github.com/tmaxmax/go-sse/...",
}, own("gateway/..."))

// own returns patterns of packages of [Module]: own("gateway/...") is
// "github.com/toolgate/toolgate/gateway/...".
func own(patterns ...string) []string {
	out := make([]string, len(patterns))
	for i, p := range patterns {
		out[i] = Module + "/" + p
	}
	return out
}
