package benchmarks

import (
	"fmt"
	"testing"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// BenchmarkFrontEverything measures a tools/call of the echo tool of
// @modelcontextprotocol/server-everything, run over stdio, through three
// stdio-to-streamable-HTTP proxies on loopback: toolgate, supergateway
// (--stateful) and mcp-proxy. At c=N, N workers with one session each
// share b.N calls. proxy-cpu-us/op is the CPU time of the proxy process
// per call, without the server-everything processes it runs.
//
// The proxies differ in how many server processes they run: toolgate and
// mcp-proxy share one server-everything process between all sessions,
// supergateway --stateful starts one per session. Each proxy runs alone,
// with its own server, while it is measured.
//
// Target (README.md): toolgate faster than both at c=1 and c=8.
func BenchmarkFrontEverything(b *testing.B) {
	node := e2etest.Node(b)
	everything := e2etest.NPMFile(b, e2etest.ServerEverythingEntry)
	args := map[string]any{"message": echoText}
	peers := []struct {
		name  string
		tool  string
		start func(b *testing.B) *peer
	}{
		{"toolgate", "everything__echo", func(b *testing.B) *peer {
			return startToolgate(b, fmt.Sprintf(`"mcpServers": {"everything": {"command": %s, "args": [%s, "stdio"]}}`,
				jsonString(node), jsonString(everything)))
		}},
		{"supergateway", "echo", func(b *testing.B) *peer {
			return startSupergateway(b, node, everything)
		}},
		{"mcp-proxy", "echo", func(b *testing.B) *peer {
			return startMCPProxy(b, node, everything)
		}},
	}
	for _, pr := range peers {
		b.Run(pr.name, func(b *testing.B) {
			p := pr.start(b)
			tg := &target{
				url: p.url, header: p.header, tool: pr.tool, args: args, want: "Echo: " + echoText, owner: b,
				cpu: map[string]process{"proxy-cpu-us/op": p.proc},
			}
			for _, c := range []int{1, 8} {
				b.Run("c="+itoa(c), func(b *testing.B) { benchCalls(b, tg, c) })
			}
		})
	}
}

// startSupergateway runs supergateway in stateful stdio-to-streamable-HTTP
// mode in front of server-everything. It logs nothing (--logLevel none):
// at its default level it prints every message, which would measure its
// logging. supergateway has no option to listen on loopback only; it
// listens on every interface of a free port.
func startSupergateway(b *testing.B, node, everything string) *peer {
	b.Helper()
	port := e2etest.FreePort(b)
	p := e2etest.StartProcess(b, e2etest.ProcOptions{
		Path: node,
		Args: []string{
			e2etest.NPMFile(b, e2etest.SupergatewayEntry),
			"--stdio", shellQuote(node) + " " + shellQuote(everything) + " stdio",
			"--outputTransport", "streamableHttp",
			"--stateful",
			"--port", itoa(port),
			"--logLevel", "none",
		},
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	waitHTTP(b, p, url)
	return &peer{url: url, proc: p}
}

// startMCPProxy runs mcp-proxy with only its streamable HTTP endpoint, on
// loopback, in front of server-everything.
func startMCPProxy(b *testing.B, node, everything string) *peer {
	b.Helper()
	port := e2etest.FreePort(b)
	p := e2etest.StartProcess(b, e2etest.ProcOptions{
		Path: node,
		Args: []string{
			e2etest.NPMFile(b, e2etest.MCPProxyEntry),
			"--host", "127.0.0.1",
			"--port", itoa(port),
			"--server", "stream",
			"--", node, everything, "stdio",
		},
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	waitHTTP(b, p, url)
	return &peer{url: url, proc: p}
}
