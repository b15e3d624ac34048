package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Point 8: SIGHUP and --watch reload the configuration without dropping
// connected clients; an invalid configuration keeps the running one.
func TestReload(t *testing.T) {
	up := testUpstream(t)
	pidfile := filepath.Join(t.TempDir(), "pids")
	config := func(allow string, extra string) string {
		return fmt.Sprintf(`{
			"mcpServers": {
				"keep": {"command": %s, "args": ["-pidfile", %s], "allowedToolsGlob": [%s]}%s
			}
		}`, jsonString(up), jsonString(pidfile), allow, extra)
	}
	for _, mode := range []string{"sighup", "watch"} {
		t.Run(mode, func(t *testing.T) {
			os.Remove(pidfile)
			var args []string
			if mode == "watch" {
				args = append(args, "--watch")
			}
			g := startGateway(t, config(`"echo"`, ""), args...)
			pid := readPids(t, pidfile, 1)[0]
			var changes atomic.Int32
			cs := connect(t, g.URL(), &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changes.Add(1) }})
			if names := toolNames(t, cs); !slices.Equal(names, []string{"keep__echo"}) {
				t.Fatalf("tools = %v", names)
			}
			apply := func(cfg string) {
				t.Helper()
				if err := os.WriteFile(g.configPath, []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
				if mode == "sighup" {
					if err := g.proc.Signal(syscall.SIGHUP); err != nil {
						t.Fatal(err)
					}
				}
			}

			// A valid change: new filter, a new server; the unchanged
			// server keeps its process and the client its session.
			apply(config(`"echo", "fail"`, fmt.Sprintf(`, "added": {"command": %s, "allowedTools": ["stats"]}`, jsonString(up))))
			eventually(t, 30*time.Second, "the reloaded tools", func() bool {
				return slices.Equal(toolNames(t, cs), []string{"added__stats", "keep__echo", "keep__fail"})
			})
			// The notification travels on the session's standalone stream,
			// independently of the tools/list answers above.
			eventually(t, 10*time.Second, "list_changed at the connected client", func() bool { return changes.Load() > 0 })
			if got := readPids(t, pidfile, 1)[0]; got != pid {
				t.Errorf("the unchanged upstream was restarted (pid %d -> %d)", pid, got)
			}
			if got := text(callTool(t, cs, "keep__fail", map[string]any{"message": "boom"})); got != "boom" {
				t.Errorf("fail = %q", got)
			}

			// An invalid file is refused with its problems; nothing changes.
			apply(`{"mcpServers": {"keep": {"comand": "x"}}, "bogus": 1}`)
			g.proc.WaitForLine(t, "configuration reload refused", 30*time.Second)
			g.proc.WaitForLine(t, "mcpServers.keep.comand", 5*time.Second)
			g.proc.WaitForLine(t, "bogus", 5*time.Second)
			if names := toolNames(t, cs); !slices.Equal(names, []string{"added__stats", "keep__echo", "keep__fail"}) {
				t.Errorf("tools after a refused reload = %v", names)
			}

			// A configuration whose names collide is refused too, after the
			// new upstream said what it offers; the running one stays.
			apply(config(`"echo"`, fmt.Sprintf(`, "clash": {"command": %s, "prefix": "keep__", "allowedTools": ["echo"]}`, jsonString(up))))
			g.proc.WaitForLine(t, `offered by servers clash and keep`, 30*time.Second)
			if got := text(callTool(t, cs, "keep__echo", map[string]any{"text": "same session"})); got != "same session" {
				t.Errorf("echo after refused reloads = %q", got)
			}
			if names := toolNames(t, cs); !slices.Equal(names, []string{"added__stats", "keep__echo", "keep__fail"}) {
				t.Errorf("tools after a refused reload = %v", names)
			}
		})
	}
}
