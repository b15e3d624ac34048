package bindings

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps bindings ignorant of how the tool path and the
// sandbox work: it imports none of the packages that implement them. (The
// MCP SDK, which brings net/http, is there for mcp.CallToolResult.)
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/toolgate/toolgate/gateway",
			"github.com/toolgate/toolgate/policy",
			"github.com/toolgate/toolgate/sandbox",
			"github.com/toolgate/toolgate/wasm",
			"github.com/tetratelabs/wazero",
		} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("bindings depends on %s", dep)
			}
		}
	}
}
