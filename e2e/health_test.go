package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// Point 6: misbehaving upstreams are marked unhealthy and withdrawn while
// the others keep serving.
func TestMisbehavingUpstreamsDoNotHurtOthers(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"startupTimeout": "3s",
		"mcpServers": {
			"good":     {"command": %[1]s, "allowedToolsGlob": ["echo", "slow"], "timeout": "1500ms"},
			"nostart":  {"command": %[1]s, "args": ["-fail-start"]},
			"missing":  {"command": "/nonexistent/toolgate-test-binary"},
			"hang":     {"command": %[1]s, "args": ["-hang"]},
			"hangstart":{"command": %[1]s, "args": ["-hang-start"]},
			"garbage":  {"command": %[1]s, "args": ["-garbage"]}
		}
	}`, jsonString(up)))
	code, body := g.readyz(t)
	if code != 503 || body["ready"] != false {
		t.Errorf("readyz = %d %v, want 503 and ready false", code, body["ready"])
	}
	for _, s := range []string{"nostart", "missing", "hang", "hangstart", "garbage"} {
		if st := g.upstreamState(t, "default", s); st != "unhealthy" {
			t.Errorf("upstream %s state %q, want unhealthy", s, st)
		}
		if e := dig(body, "projects", "default", "upstreams", s, "error"); e == nil || e == "" {
			t.Errorf("upstream %s has no error in readyz", s)
		}
	}
	if st := g.upstreamState(t, "default", "good"); st != "ready" {
		t.Errorf("good upstream state %q", st)
	}
	cs := connect(t, g.URL(), nil)
	if names := toolNames(t, cs); !slices.Equal(names, []string{"good__echo", "good__slow"}) {
		t.Errorf("tools = %v, want only the healthy server's", names)
	}
	if got := text(callTool(t, cs, "good__echo", map[string]any{"text": "still here"})); got != "still here" {
		t.Errorf("echo = %q", got)
	}
	// Every upstream call has a deadline.
	res := callTool(t, cs, "good__slow", map[string]any{"ms": 20000})
	if !res.IsError || !strings.Contains(text(res), "did not answer within 1.5s") {
		t.Errorf("slow call past the deadline = %v %q", res.IsError, text(res))
	}
	// Failing upstreams are retried with backoff.
	eventually(t, 20*time.Second, "restarts of the failing upstream", func() bool {
		_, v := g.readyz(t)
		n, _ := dig(v, "projects", "default", "upstreams", "nostart", "restarts").(float64)
		return n >= 2
	})
	code, _ = httpGet(t, g.base+"/healthz")
	if code != 200 {
		t.Errorf("healthz = %d", code)
	}
}

// A crashing stdio upstream is withdrawn (clients see list_changed),
// restarted, and its whole process group is killed each time.
func TestCrashRestartAndProcessGroups(t *testing.T) {
	up := testUpstream(t)
	pidfile := filepath.Join(t.TempDir(), "pids")
	g := startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"flaky": {"command": %s, "args": ["-crash-after", "1", "-pidfile", %s, "-spawn-child"], "allowedToolsGlob": ["echo"]}
		}
	}`, jsonString(up), jsonString(pidfile)))
	first := readPids(t, pidfile, 2)

	var changes atomic.Int32
	cs := connect(t, g.URL(), &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changes.Add(1) }})
	callTool(t, cs, "flaky__echo", map[string]any{"text": "one"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "flaky__echo", Arguments: map[string]any{"text": "two"}})
	if err == nil && !res.IsError {
		t.Fatalf("the call that crashed the upstream succeeded: %v", text(res))
	}
	eventually(t, 20*time.Second, "list_changed after the crash", func() bool { return changes.Load() >= 1 })
	eventually(t, 20*time.Second, "the crashed server's child to be killed", func() bool {
		return !e2etest.ProcessAlive(first[0]) && !e2etest.ProcessAlive(first[1])
	})
	eventually(t, 30*time.Second, "restart", func() bool {
		return g.upstreamState(t, "default", "flaky") == "ready"
	})
	eventually(t, 10*time.Second, "list_changed after the restart", func() bool { return changes.Load() >= 2 })
	if names := toolNames(t, cs); !slices.Equal(names, []string{"flaky__echo"}) {
		t.Errorf("tools after restart = %v", names)
	}
	second := readPids(t, pidfile, 2)
	if second[0] == first[0] {
		t.Fatalf("pidfile not rewritten by the restarted server")
	}

	// Shutdown kills the whole process group of every stdio upstream.
	if err := g.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := g.proc.Wait(30 * time.Second); err != nil || code != 0 {
		t.Errorf("toolgate exit = %d, %v; want 0", code, err)
	}
	for _, pid := range e2etest.ProcessesLeft(second, processGrace) {
		t.Errorf("process %d of the upstream's group outlived the gateway", pid)
	}
}

// readPids waits for the test upstream's pidfile to hold n pids (its own,
// then its child's with -spawn-child).
func readPids(t *testing.T, path string, n int) []int {
	t.Helper()
	var pids []int
	eventually(t, 20*time.Second, "pidfile "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		lines := strings.Fields(string(b))
		if len(lines) < n {
			return false
		}
		pids = pids[:0]
		for _, l := range lines {
			n, err := strconv.Atoi(l)
			if err != nil {
				return false
			}
			pids = append(pids, n)
		}
		return true
	})
	return pids
}
