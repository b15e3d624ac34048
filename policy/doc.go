// Package policy owns toolgate's access rules and their records: which
// tool, resource and prompt names a project may see and call (allow and
// deny globs, [Filter]), rate limits ([Limiter], [MemoryLimiter]), IP
// rules ([IPRules], [ProxyTrust]) and alert rules ([Alerter]). The
// hash-chained audit log is package policy/audit; API keys and their
// store are package policy/apikey.
//
// The package must not know about MCP transports or sessions, and does no
// networking: it decides on plain names and values handed to it by package
// gateway, which owns the one tool path, and delivers alerts through an
// [AlertPoster] it is given.
package policy
