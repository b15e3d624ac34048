package gateway

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// listMethods are the requests whose answer a rebuild changes in several
// steps (a tool removed, then another added).
var listMethods = map[string]bool{"tools/list": true, "prompts/list": true, "resources/list": true, "resources/templates/list": true}

// wholeLists is the MCP middleware that serves the lists of tools, prompts
// and resources between two rebuilds, never during one: a client reads the
// configuration before a reload or after it, never a mix of both.
func (p *project) wholeLists(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if !listMethods[method] {
			return next(ctx, method, req)
		}
		p.listMu.RLock()
		defer p.listMu.RUnlock()
		return next(ctx, method, req)
	}
}
