// Package mcpclient holds the small pieces that toolgate's own MCP clients
// share: the bench commands, the end-to-end harness, the benchmarks and the
// soak test.
package mcpclient

import (
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// HeaderTransport adds fixed headers (an API key, a server's configured
// headers) to each request sent through Base.
type HeaderTransport struct {
	Headers map[string]string
	Base    http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (h *HeaderTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if len(h.Headers) > 0 {
		req = req.Clone(req.Context())
		for k, v := range h.Headers {
			req.Header.Set(k, v)
		}
	}
	return h.Base.RoundTrip(req)
}

// Bearer is the header that presents an API key, or none for an empty key.
func Bearer(key string) map[string]string {
	if key == "" {
		return nil
	}
	return map[string]string{"Authorization": "Bearer " + key}
}

// ResultText joins the text content of a tool result.
func ResultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}
