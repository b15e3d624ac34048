// Package soak holds toolgate's soak-and-chaos test (`make soak`, and a
// short version in `go test ./...`): a real `toolgate serve` with real
// upstreams, driven by many concurrent MCP clients while a fault injector
// kills, stalls and garbles upstreams and sends malformed, oversized and
// slow requests to the gateway. It checks that every request gets a right
// answer or one explained by a fault in force, that the audit log holds
// every answered call, that memory and goroutines come back after the load
// and that shutdown leaves no upstream process behind.
//
// The package has no code outside its tests; see soak_test.go. The tests
// run on Unix: they signal process groups and read /proc.
package soak
