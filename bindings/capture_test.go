package bindings

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

var capture = flag.Bool("capture", false, "run the npm MCP servers and rewrite testdata/*.tools.json from their tools/list")

// capturedTool is one tool of testdata/*.tools.json: what tools/list of a
// real server returns, as the gateway sees it through the Go SDK client.
type capturedTool struct {
	Server       string          `json:"server,omitempty"` // only in hand-written files
	Name         string          `json:"name"`
	Description  string          `json:"description,omitempty"`
	InputSchema  json.RawMessage `json:"inputSchema"`
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
}

// npmServers are the real servers whose schemas the golden tests cover.
var npmServers = []struct {
	name  string // server name, also the testdata file stem
	entry string
	args  func(t *testing.T) []string
}{
	{"everything", e2etest.ServerEverythingEntry, func(*testing.T) []string { return []string{"stdio"} }},
	{"filesystem", e2etest.ServerFilesystemEntry, func(t *testing.T) []string { return []string{t.TempDir()} }},
	{"memory", e2etest.ServerMemoryEntry, func(*testing.T) []string { return nil }},
}

// TestCaptureSchemas rewrites testdata/<server>.tools.json from the pinned
// npm servers. It runs only with -capture, so the golden tests need neither
// node nor npm.
func TestCaptureSchemas(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to refresh testdata/*.tools.json from the npm servers")
	}
	for _, s := range npmServers {
		t.Run(s.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.Command(e2etest.Node(t), append([]string{e2etest.NPMFile(t, s.entry)}, s.args(t)...)...)
			cmd.Env = append(os.Environ(), "MEMORY_FILE_PATH="+filepath.Join(t.TempDir(), "memory.jsonl"))
			client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-bindings-capture", Version: "0"}, nil)
			cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer cs.Close()
			var tools []capturedTool
			for tool, err := range cs.Tools(ctx, nil) {
				if err != nil {
					t.Fatalf("tools/list: %v", err)
				}
				in, err := json.Marshal(tool.InputSchema)
				if err != nil {
					t.Fatal(err)
				}
				ct := capturedTool{Name: tool.Name, Description: tool.Description, InputSchema: in}
				if tool.OutputSchema != nil {
					if ct.OutputSchema, err = json.Marshal(tool.OutputSchema); err != nil {
						t.Fatal(err)
					}
				}
				tools = append(tools, ct)
			}
			b, err := json.MarshalIndent(tools, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata", s.name+".tools.json"), append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("captured %d tools", len(tools))
		})
	}
}
