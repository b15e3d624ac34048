// Package benchmarks holds toolgate's Go benchmarks: what a tool call costs
// through the gateway compared with the same call made directly and with
// other stdio-to-HTTP MCP proxies fronting the same server, and what the
// Code Mode sandbox costs.
//
// The proxy benchmarks run real processes over real loopback HTTP: an echo
// upstream built with a released go-sdk (benchmarks/echoupstream, a module
// of its own; TOOLGATE_BENCH_UPSTREAM=tree takes the Go test upstream,
// internal/testupstream, instead), a `toolgate serve` built from this
// module, and the pinned npm packages (server-everything, supergateway,
// mcp-proxy) from e2e/npm. Processes are started before the timed region
// and stopped when the benchmark ends. A peer that cannot be started fails
// the benchmark with its output; nothing is skipped.
//
// The package has no code of its own outside its tests and knows nothing
// about how the gateway works: it starts programs and calls tools. See
// README.md (in this folder) for how to run the benchmarks and for measured figures.
package benchmarks
