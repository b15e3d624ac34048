// Package policy owns toolgate's access rules: which tool, resource and
// prompt names a project may see and call (allow and deny globs, [Filter]),
// API keys and their store ([KeyStore], [Authenticator]), rate limits
// ([Limiter], [MemoryLimiter]) and IP rules ([IPRules], [ProxyTrust]).
// Audit events and alert rules are not implemented yet.
//
// The package must not know about MCP transports or sessions: it decides on
// plain names and values handed to it by package gateway, which owns the one
// tool path.
package policy
