package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// sessionLine matches a log line about a session: by its message or by
// an attribute naming one.
var sessionLine = regexp.MustCompile(`(?i)msg="[^"]*session|\bsession(_id)?=`)

// At INFO, the log has at most one line per client session: serving five
// sessions and shutting down does not log each session's connection,
// initialization and disconnection.
func TestQuietSessionLogs(t *testing.T) {
	g := startGatewayAt(t, "info", fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`, jsonString(testUpstream(t))))
	for i := range 5 {
		cs := connect(t, g.URL(), nil)
		if got := text(callTool(t, cs, "s__echo", map[string]any{"text": fmt.Sprint(i)})); got != fmt.Sprint(i) {
			t.Errorf("session %d: echo = %q", i, got)
		}
	}
	if err := g.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := g.proc.Wait(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("gateway exit: %d %v", code, err)
	}
	log := g.proc.Stderr()
	var sessionLines []string
	for line := range strings.Lines(log) {
		if sessionLine.MatchString(line) {
			sessionLines = append(sessionLines, line)
		}
	}
	if len(sessionLines) > 5 {
		t.Errorf("%d log lines about sessions for 5 sessions, want at most 5:\n%s", len(sessionLines), strings.Join(sessionLines, ""))
	}
	if strings.Contains(log, "disconnected") {
		t.Errorf("the log reports disconnections:\n%s", log)
	}
	if strings.Contains(log, "level=WARN") || strings.Contains(log, "level=ERROR") {
		t.Errorf("a warning or an error at a clean shutdown:\n%s", log)
	}
}

// A reload that changes the tool list notifies every client; a client that
// has no event stream open cannot receive the notification, and that is
// no reason for a warning.
func TestReloadNotifiesWithoutWarnings(t *testing.T) {
	up := testUpstream(t)
	config := func(tools string) string {
		return fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedTools": [%s]}}}`, jsonString(up), tools)
	}
	g := startGatewayAt(t, "info", config(`"echo"`))
	for range 5 {
		rawSession(t, g.URL(), bearer(g.keys["default"])) // no event stream
	}
	changed := make(chan struct{}, 1)
	watcher := connect(t, g.URL(), &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	if got := toolNames(t, watcher); len(got) != 1 {
		t.Fatalf("tools before the reload = %v", got)
	}

	if err := os.WriteFile(g.configPath, []byte(config(`"echo", "fail"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	g.proc.WaitForLine(t, "configuration reloaded", 30*time.Second)
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no tools/list_changed after the reload")
	}
	if got := toolNames(t, watcher); len(got) != 2 {
		t.Errorf("tools after the reload = %v", got)
	}
	// The notifications of one change go out together: stop the gateway
	// to read a log that is complete.
	if err := g.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := g.proc.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if warn := g.logLines("level=WARN"); len(warn) > 0 {
		t.Errorf("warnings after a successful reload:\n%s", strings.Join(warn, "\n"))
	}
}
