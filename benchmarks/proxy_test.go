package benchmarks

import (
	"fmt"
	"testing"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// echoText is the argument of every echo call: a small payload, so the
// benchmarks measure the path of a call rather than the copying of data.
const echoText = "hello from the toolgate benchmark"

// BenchmarkProxyEcho measures a tools/call of the Go test upstream's echo
// tool made directly (direct) and through a `toolgate serve` fronting the
// same upstream process (gateway). Both hops are streamable HTTP on
// loopback. At c=N, N workers with one session each share b.N calls.
//
// Besides latency and throughput it reports the CPU time the upstream
// (upstream-cpu-us/op), the gateway (proxy-cpu-us/op) and the benchmark's
// own clients (client-cpu-us/op) spend per call.
//
// Targets (README.md): gateway p50 at most 2.0x direct p50, and at c=16
// gateway calls/s at least 0.5x direct calls/s.
func BenchmarkProxyEcho(b *testing.B) {
	up := startTestUpstream(b)
	args := map[string]any{"text": echoText}
	peers := []struct {
		name  string
		start func(b *testing.B) *target
	}{
		{"direct", func(b *testing.B) *target {
			return &target{
				url: up.url, tool: "echo", args: args, want: echoText, owner: b,
				cpu: map[string]*e2etest.Proc{"upstream-cpu-us/op": up.proc},
			}
		}},
		{"gateway", func(b *testing.B) *target {
			gw := startToolgate(b, fmt.Sprintf(`"mcpServers": {"up": {"url": %s, "transport": "http"}}`, jsonString(up.url)))
			return &target{
				url: gw.url, header: gw.header, tool: "up__echo", args: args, want: echoText, owner: b,
				cpu: map[string]*e2etest.Proc{"upstream-cpu-us/op": up.proc, "proxy-cpu-us/op": gw.proc},
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
