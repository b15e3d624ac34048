package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/policy/audit"
)

// auditPath is the audit log of a test gateway with the default dataDir.
func (g *gateway) auditPath() string {
	return filepath.Join(filepath.Dir(g.configPath), "toolgate-data", "audit.jsonl")
}

// auditEvents reads every event of the gateway's audit log.
func (g *gateway) auditEvents(t *testing.T) []*audit.Event {
	t.Helper()
	var evs []*audit.Event
	if _, err := audit.Read(g.auditPath(), func(ev *audit.Event) error {
		evs = append(evs, ev)
		return nil
	}); err != nil {
		t.Fatalf("reading the audit log: %v", err)
	}
	return evs
}

// findEvent returns the first event matching.
func findEvent(evs []*audit.Event, match func(*audit.Event) bool) *audit.Event {
	for _, ev := range evs {
		if match(ev) {
			return ev
		}
	}
	return nil
}

func TestAuditEvents(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"rateLimit": {"perKeyRequestsPerMinute": 60, "perKeyBurst": 2},
		"mcpServers": {
			"s": {"command": %[1]s, "allowedTools": ["echo", "fail"]},
			"down": {"command": %[1]s, "args": ["-fail-start"]}
		}
	}`, jsonString(up)))
	key := g.keys["default"]
	id := strings.Split(key, "_")[1]
	cs := connect(t, g.URL(), nil)
	callTool(t, cs, "s__echo", map[string]any{"text": "audited"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__environ", Arguments: map[string]any{}}) // filtered
	for range 2 {                                                                                 // the second goes over the burst of 2
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": "over"}})
	}
	initialize(t, nil, g.URL(), bearer("tg_aaaaaaaaaaaa_"+strings.Repeat("b", 52)))
	out := g.runCLI(t, "keys", "create", "--name", "second", "--json")
	var created cliKey
	_ = json.Unmarshal([]byte(out), &created)
	if err := g.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	want := map[string]func(*audit.Event) bool{
		"tool.call ok": func(ev *audit.Event) bool {
			return ev.Type == "tool.call" && ev.Tool == "s__echo" && ev.Server == "s" && ev.Outcome == "ok" &&
				ev.KeyID == id && ev.ClientIP == "127.0.0.1" && ev.ArgsSHA256 != "" && ev.ArgsBytes > 0 && ev.ResultBytes > 0 && ev.Arguments == nil
		},
		"tool.denied": func(ev *audit.Event) bool {
			return ev.Type == "tool.denied" && ev.Tool == "s__environ" && ev.Decision == "deny"
		},
		"ratelimit.hit": func(ev *audit.Event) bool { return ev.Type == "ratelimit.hit" && ev.KeyID == id },
		"auth.failure": func(ev *audit.Event) bool {
			return ev.Type == "auth.failure" && ev.Reason == "malformed_key" && ev.ClientIP != ""
		},
		"upstream.error": func(ev *audit.Event) bool {
			return ev.Type == "upstream.error" && ev.Server == "down" && ev.Error != ""
		},
		"key.created":   func(ev *audit.Event) bool { return ev.Type == "key.created" && ev.KeyID == created.ID },
		"config.reload": func(ev *audit.Event) bool { return ev.Type == "config.reload" && ev.Outcome == "applied" },
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		evs := g.auditEvents(t)
		for name, match := range want {
			if findEvent(evs, match) != nil {
				delete(want, name)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(want) > 0 {
		t.Errorf("missing events: %v", slices.Sorted(maps.Keys(want)))
	}
	out = g.runCLI(t, "audit", "verify")
	if !strings.Contains(out, "OK") {
		t.Errorf("audit verify = %q", out)
	}
	if out := g.runCLI(t, "audit", "--type", "tool.denied"); !strings.Contains(out, "s__environ") {
		t.Errorf("audit --type tool.denied = %q", out)
	}

	// Removing a line breaks the chain and verify says where.
	b, err := os.ReadFile(g.auditPath())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	tampered := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(tampered, []byte(strings.Join(append(slices.Clone(lines[:1]), lines[2:]...), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Broken == nil || rep.Broken.Line != 2 {
		t.Errorf("a removed line was not found: %+v", rep)
	}
}

// Killed with SIGKILL during a burst, the gateway has every answered call
// in its audit log, and the log parses.
func TestAuditSurvivesKill(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	var answered sync.Map
	var n atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				text := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": text}})
				cancel()
				if err != nil {
					return
				}
				if res != nil && !res.IsError {
					answered.Store(text, true)
					n.Add(1)
				}
			}
		})
	}
	eventually(t, 30*time.Second, "a burst of answered calls", func() bool { return n.Load() >= 100 })
	if err := g.proc.SignalGroup(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	logged := map[string]bool{} // the log holds the SHA-256 of each call's arguments
	rep, err := audit.Read(g.auditPath(), func(ev *audit.Event) error {
		if ev.Type == "tool.call" && ev.Outcome == "ok" {
			logged[ev.ArgsSHA256] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the log does not parse after SIGKILL: %v", err)
	}
	missing := 0
	answered.Range(func(k, _ any) bool {
		ev := &audit.Event{}
		b, _ := json.Marshal(map[string]any{"text": k.(string)})
		ev.SetArguments(b)
		if !logged[ev.ArgsSHA256] {
			missing++
		}
		return true
	})
	if missing > 0 {
		t.Errorf("%d answered calls are not in the audit log (%d lines read, torn %v)", missing, rep.Lines, rep.Torn)
	}
}

// An audit log that cannot be written makes the gateway refuse calls and
// report unready.
func TestAuditUnwritableFailsClosed(t *testing.T) {
	up := testUpstream(t)
	dir := t.TempDir()
	auditDir := filepath.Join(dir, "audit")
	if err := os.Mkdir(auditDir, 0o700); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, fmt.Sprintf(`{"audit": {"path": %s}, "mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`,
		jsonString(filepath.Join(auditDir, "audit.jsonl")), jsonString(up)))
	cs := connect(t, g.URL(), nil)
	callTool(t, cs, "s__echo", map[string]any{"text": "fine"})
	// Replace the log's folder by a file: no write can succeed any more.
	if err := os.RemoveAll(auditDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(auditDir, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := callTool(t, cs, "s__echo", map[string]any{"text": "refused"})
	if !res.IsError || !strings.Contains(text(res), "audit log") {
		t.Fatalf("a call with an unwritable audit log = %v %q", res.IsError, text(res))
	}
	eventually(t, 10*time.Second, "readyz to report unready", func() bool {
		code, _ := g.readyz(t)
		return code == 503
	})
	// Writable again: calls resume.
	if err := os.Remove(auditDir); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "calls to resume", func() bool {
		r := callTool(t, cs, "s__echo", map[string]any{"text": "back"})
		return !r.IsError
	})
}

// A tools/call refused by a rate limit at the HTTP layer, whose refusal
// cannot be audited, fails like a call that cannot be recorded: no 429.
func TestAuditUnwritableRateLimitRefusal(t *testing.T) {
	up := testUpstream(t)
	dir := t.TempDir()
	auditDir := filepath.Join(dir, "audit")
	if err := os.Mkdir(auditDir, 0o700); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, fmt.Sprintf(`{"audit": {"path": %s}, "toolLimits": {"s__echo": {"requestsPerMinute": 1, "burst": 1}},
		"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`,
		jsonString(filepath.Join(auditDir, "audit.jsonl")), jsonString(up)))
	cs := connect(t, g.URL(), nil)
	callTool(t, cs, "s__echo", map[string]any{"text": "spends the one token"})
	if err := os.RemoveAll(auditDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(auditDir, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": "rate limited"}})
	// The SDK's client shows the status, not the body, of a refused POST.
	if err == nil || !strings.Contains(err.Error(), "Service Unavailable") {
		t.Fatalf("a rate-limit refusal with an unwritable audit log = %v, want 503 (not 429)", err)
	}
}

// An alert rule posts to a webhook once per condition.
func TestAlertWebhook(t *testing.T) {
	var mu sync.Mutex
	var alerts []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var a map[string]any
		_ = json.Unmarshal(b, &a)
		mu.Lock()
		alerts = append(alerts, a)
		mu.Unlock()
	}))
	defer hook.Close()
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"alerts": {"webhook": %s, "rules": [{"event": "auth.failure", "threshold": 3, "window": "1m"}]},
		"mcpServers": {"s": {"command": %s}}
	}`, jsonString(hook.URL), jsonString(up)))
	for range 10 {
		initialize(t, nil, g.URL(), bearer("nope"))
	}
	eventually(t, 15*time.Second, "the alert", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(alerts) >= 1
	})
	// More failures while the condition lasts do not post again.
	for range 5 {
		initialize(t, nil, g.URL(), bearer("nope"))
	}
	// Observe runs inside each refused request, so every alert that fired
	// is in the log by now; exactly one did.
	if n := strings.Count(g.proc.Stderr(), "msg=alert "); n != 1 {
		t.Errorf("%d alerts fired, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(alerts) != 1 {
		t.Errorf("got %d alerts, want 1: %v", len(alerts), alerts)
	}
	if len(alerts) > 0 && fmt.Sprint(dig(alerts[0], "rule", "event")) != "auth.failure" {
		t.Errorf("alert = %v", alerts[0])
	}
}
