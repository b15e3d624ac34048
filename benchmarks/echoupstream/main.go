// Command echoupstream is the upstream MCP server of BenchmarkProxyEcho: one
// tool, echo, over streamable HTTP.
//
// It is the plain server users put behind toolgate: one tool, built with a
// released go-sdk and nothing else, in a Go module of its own so that the
// go-sdk it measures against is the release its go.mod names, whatever
// toolgate requires. (internal/testupstream, with its many tools and
// failure modes, is the other upstream the benchmark can call.)
//
//	go build -o DIR/echoupstream .         # in this folder
//	DIR/echoupstream -listen 127.0.0.1:0   # prints "LISTENING http://127.0.0.1:PORT/mcp"
//
// Exactly one line is printed to stdout, once the listener is open;
// everything else the program says goes to stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to echo"`
}

type echoOut struct {
	Text   string `json:"text"`
	Server string `json:"server"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("echoupstream: ")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	if err := run(*listen, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run serves MCP over streamable HTTP at /mcp until the process is killed.
func run(listen string, stdout io.Writer) error {
	srv := mcp.NewServer(&mcp.Implementation{Name: "echoupstream", Version: "1.0.0"}, nil)
	// The same answer as internal/testupstream's echo (server "bench"),
	// so both upstreams send the same bytes.
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "Returns text unchanged, with structuredContent {text, server}."},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, echoOut{Text: in.Text, Server: "bench"}, nil
		})

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(
		func(*http.Request) *mcp.Server { return srv }, // one server, one session per client
		&mcp.StreamableHTTPOptions{PropagateRequestCancellation: true},
	))
	if _, err := fmt.Fprintf(stdout, "LISTENING http://%s/mcp\n", ln.Addr()); err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return hs.Serve(ln)
}
