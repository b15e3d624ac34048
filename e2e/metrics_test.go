package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

func TestMetrics(t *testing.T) {
	up := testUpstream(t)
	port := e2etest.FreePort(t)
	g := startGateway(t, fmt.Sprintf(`{
		"metrics": {"listen": "127.0.0.1:%d"},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo", "fail"]}, "down": {"command": %s, "args": ["-fail-start"]}}
	}`, port, jsonString(up), jsonString(up)))
	cs := connect(t, g.URL(), nil)
	callTool(t, cs, "s__echo", map[string]any{"text": "x"})
	callTool(t, cs, "s__fail", map[string]any{"message": "no"})
	// A name a client makes up must not become a label.
	_, _ = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "made_up_by_the_client", Arguments: map[string]any{}})
	code, _, _ := initialize(t, nil, g.URL(), nil)
	if code != 401 {
		t.Fatalf("initialize without a key: %d", code)
	}
	for _, url := range []string{g.base + "/metrics", fmt.Sprintf("http://127.0.0.1:%d/metrics", port)} {
		var body string
		eventually(t, 10*time.Second, "metrics at "+url, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == 200
		})
		for _, want := range []string{
			`toolgate_tool_calls_total{outcome="ok",project="default",server="s",tool="s__echo"} 1`,
			`toolgate_tool_calls_total{outcome="tool_error",project="default",server="s",tool="s__fail"} 1`,
			`toolgate_tool_call_duration_seconds_count{project="default",server="s",tool="s__echo"} 1`,
			`toolgate_auth_failures_total{project="default",reason="missing_key"} 1`,
			`toolgate_upstream_up{project="default",server="s",state="ready"} 1`,
			`toolgate_upstream_up{project="default",server="down",state="unhealthy"} 0`,
			`toolgate_tools_visible{project="default"} 2`,
			`toolgate_tool_calls_total{outcome="not_found",project="default",server="",tool=""} 1`,
			`go_goroutines`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %s", url, want)
			}
		}
		if strings.Contains(body, "made_up_by_the_client") {
			t.Errorf("a client-chosen tool name became a label")
		}
	}
}
