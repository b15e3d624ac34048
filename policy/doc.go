// Package policy owns toolgate's access rules: which tool, resource and
// prompt names a project may see and call (allow and deny globs,
// [Filter]), rate limits ([Limiter], [MemoryLimiter]) and IP rules
// ([IPRules], [ProxyTrust]).
//
// What is kept about access lives in packages of its own under policy/:
// the hash-chained audit log (policy/audit), API keys with their store
// and authenticator (policy/apikey), and alert rules (policy/alert).
// Package policy imports none of them.
//
// The package must not know about MCP transports or sessions, and does no
// networking: it decides on plain names and values handed to it by
// package gateway, which owns the one tool path.
package policy
