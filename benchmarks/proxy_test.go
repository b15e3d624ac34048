package benchmarks

import (
	"fmt"
	"os"
	"testing"
)

// echoText is the argument of every echo call: a small payload, so the
// benchmarks measure the path of a call rather than the copying of data.
const echoText = "hello from the toolgate benchmark"

// BenchmarkProxyEcho measures a tools/call of an upstream's echo tool made
// directly (direct) and through a `toolgate serve` fronting the same
// upstream process (gateway). Both hops are streamable HTTP on loopback. At
// c=N, N workers with one session each share b.N calls.
//
// The upstream is benchmarks/echoupstream, a one-tool server built with a
// released go-sdk as real upstreams are. TOOLGATE_BENCH_UPSTREAM=tree
// selects the Go test upstream (internal/testupstream) instead, built from
// this module; the figures in README.md measured before
// benchmarks/echoupstream existed used that one.
//
// Besides latency and throughput it reports the CPU time the upstream
// (upstream-cpu-us/op), the gateway (proxy-cpu-us/op) and the benchmark's
// own clients (client-cpu-us/op) spend per call, and with
// TOOLGATE_BENCH_LIMITER=redis the Redis server of the rate limits
// (redis-cpu-us/op).
//
// Targets (README.md): gateway p50 at most 2.0x direct p50, and at c=16
// gateway calls/s at least 0.5x direct calls/s.
func BenchmarkProxyEcho(b *testing.B) {
	up := startEchoUpstream(b)
	args := map[string]any{"text": echoText}
	peers := []struct {
		name  string
		start func(b *testing.B) *target
	}{
		{"direct", func(b *testing.B) *target {
			return &target{
				url: up.url, tool: "echo", args: args, want: echoText, owner: b,
				cpu: map[string]process{"upstream-cpu-us/op": up.proc},
			}
		}},
		{"gateway", func(b *testing.B) *target {
			gw := startToolgate(b, fmt.Sprintf(`"mcpServers": {"up": {"url": %s, "transport": "http"}}`, jsonString(up.url)))
			cpu := map[string]process{"upstream-cpu-us/op": up.proc, "proxy-cpu-us/op": gw.proc}
			if gw.redis != nil {
				cpu["redis-cpu-us/op"] = gw.redis
			}
			return &target{
				url: gw.url, header: gw.header, tool: "up__echo", args: args, want: echoText, owner: b, cpu: cpu,
			}
		}},
	}
	for _, peer := range peers {
		b.Run(peer.name, func(b *testing.B) {
			tg := peer.start(b)
			for _, c := range []int{1, 16} {
				b.Run("c="+itoa(c), func(b *testing.B) { benchCalls(b, tg, c) })
			}
		})
	}
}

// upstreamEnv chooses the upstream of BenchmarkProxyEcho: "tree" for the Go
// test upstream built from this module, unset (or "released") for
// benchmarks/echoupstream.
const upstreamEnv = "TOOLGATE_BENCH_UPSTREAM"

// startEchoUpstream starts the upstream that TOOLGATE_BENCH_UPSTREAM names.
func startEchoUpstream(b testing.TB) *peer {
	b.Helper()
	switch v := os.Getenv(upstreamEnv); v {
	case "", "released":
		return startReleasedUpstream(b)
	case "tree":
		return startTestUpstream(b)
	default:
		b.Fatalf("%s=%s: want tree or released (the default)", upstreamEnv, v)
		return nil
	}
}
