// Package policy owns toolgate's access rules: which tool, resource and
// prompt names a project may see and call (allow and deny globs), and, as
// the design lays out, API keys, rate limits, IP rules, audit events and
// alert rules.
//
// So far only the name filters exist ([Filter], built from a [FilterSpec]);
// keys, limits, IP rules, audit and alerts are not implemented yet.
//
// The package must not know about MCP transports or sessions: it decides on
// plain names and values handed to it by package gateway, which owns the one
// tool path.
package policy
