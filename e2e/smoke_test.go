package e2e

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSmokeStdioAndHTTPUpstreams(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		// comments and trailing commas are fine
		"mcpServers": {
			"a": {"command": %s, "args": ["-name", "a"], "allowedToolsGlob": ["echo", "fail"],},
		},
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	if diff := cmp.Diff([]string{"a__echo", "a__fail"}, toolNames(t, cs)); diff != "" {
		t.Errorf("tools (-want +got):\n%s", diff)
	}
	if got := text(callTool(t, cs, "a__echo", map[string]any{"text": "hi"})); got != "hi" {
		t.Errorf("echo = %q, want hi", got)
	}
}
