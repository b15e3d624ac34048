package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/policy/audit"
)

// verifyAudit runs `toolgate audit verify` and fails unless the chain is
// whole.
func (g *gateway) verifyAudit(t *testing.T) {
	t.Helper()
	if out := g.runCLI(t, "audit", "verify"); !strings.Contains(out, "OK") {
		t.Errorf("audit verify = %q", out)
	}
}

// auditBytes is the size of the gateway's audit log, rotated files
// included.
func (g *gateway) auditBytes(t *testing.T) int64 {
	t.Helper()
	files, err := filepath.Glob(g.auditPath() + "*")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// metrics fetches the gateway's /metrics.
func (g *gateway) metrics(t *testing.T) string {
	t.Helper()
	code, body := httpGet(t, g.base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	return string(body)
}

// checkClipped checks that ev's tool field is name cut to its cap, with
// the full length and SHA-256 kept.
func checkClipped(t *testing.T, ev *audit.Event, name string) {
	t.Helper()
	sum := sha256.Sum256([]byte(name))
	c, ok := ev.Clipped["tool"]
	if !ok || c.Bytes != int64(len(name)) || c.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("clipped tool = %+v (present %v), want %d bytes and the name's SHA-256", c, ok, len(name))
	}
	if len(ev.Tool) > 256 || !strings.HasPrefix(ev.Tool, "up__environ") || !strings.HasSuffix(ev.Tool, fmt.Sprintf("…[%d bytes]", len(name))) {
		t.Errorf("tool = %.80q (%d bytes), want the name's start and its length", ev.Tool, len(ev.Tool))
	}
	if len(ev.Error) > 1024 {
		t.Errorf("error text of %d bytes", len(ev.Error))
	}
}

// A refused call is audited however long its tool name, whether a client
// or a script makes it: the name is cut, its length and SHA-256 kept. An
// 8.4 MB name used to make the line (name twice) too long to write.
func TestAuditOversizedRefusals(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"limits": {"maxRequestBodyBytes": 33554432},
		"codeMode": {"enabled": true, "directTools": true, "timeout": 30000},
		"mcpServers": {"up": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	name := "up__environ" + strings.Repeat(" ", 8400000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("direct", func(t *testing.T) {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
		if err == nil || !strings.Contains(err.Error(), "unknown tool") {
			t.Fatalf("a hidden tool with a long name: %v", err)
		}
		ev := findEvent(g.auditEvents(t), func(ev *audit.Event) bool {
			return ev.Type == audit.EventToolDenied && ev.ExecutionID == "" && strings.HasPrefix(ev.Tool, "up__environ")
		})
		if ev == nil {
			t.Fatal("the refusal is not in the audit log")
		}
		checkClipped(t, ev, name)
	})

	t.Run("script", func(t *testing.T) {
		_, ex := execute(t, cs, `try { await callTool('up__environ' + ' '.repeat(8400000), {}); return "called"; } catch (e) { return e.code; }`)
		if string(ex.Result) != `"not_found"` {
			t.Fatalf("script result %s, error %+v", ex.Result, ex.Error)
		}
		evs := g.auditEvents(t)
		exec := findEvent(evs, func(ev *audit.Event) bool { return ev.Type == audit.EventCodeExecution })
		if exec == nil {
			t.Fatal("no code.execution event")
		}
		ev := findEvent(evs, func(ev *audit.Event) bool {
			return ev.Type == audit.EventToolDenied && ev.ExecutionID == exec.ExecutionID
		})
		if ev == nil {
			t.Fatalf("the script's refusal is not in the audit log (execution %s)", exec.ExecutionID)
		}
		checkClipped(t, ev, name)
	})

	b, err := os.ReadFile(g.auditPath())
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.SplitAfter(string(b), "\n") {
		if len(line) > audit.MaxEventBytes {
			t.Errorf("line %d has %d bytes", i+1, len(line))
		}
	}
	g.verifyAudit(t)
}

// An execution writes a bounded amount, and rotation keeps every file
// younger than audit.retainAtLeast: a flood of refused calls does not
// push earlier evidence out of a small log, and the files kept past
// maxFiles show in the log, /readyz, /metrics and an alert.
func TestAuditFloodKeepsEvidence(t *testing.T) {
	up := testUpstream(t)
	const maxToolCalls = 1000
	g := startGateway(t, fmt.Sprintf(`{
		"audit": {"maxSizeMB": 1, "maxFiles": 1},
		"codeMode": {"enabled": true, "directTools": true, "timeout": 60000, "maxToolCalls": %d},
		"mcpServers": {"up": {"command": %s, "allowedTools": ["echo"]}}
	}`, maxToolCalls, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	marker := map[string]any{"evidence": strconv.FormatInt(time.Now().UnixNano(), 36)}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__environ", Arguments: marker}); err == nil {
		t.Fatal("the hidden tool answered")
	}
	var want audit.Event
	b, _ := json.Marshal(marker)
	want.SetArguments(b)
	isEvidence := func(ev *audit.Event) bool {
		return ev.Type == audit.EventToolDenied && ev.Tool == "up__environ" && ev.ArgsSHA256 == want.ArgsSHA256
	}
	if findEvent(g.auditEvents(t), isEvidence) == nil {
		t.Fatal("the refused call is not in the audit log")
	}

	flood := fmt.Sprintf(`
const name = "up__environ" + "<".repeat(600);
let refused = 0;
for (let i = 0; i < %d; i += 8) {
  const batch = [];
  for (let j = 0; j < 8; j++) batch.push(callTool(name + (i + j), {}).catch((e) => { if (e.code === "not_found") refused++; }));
  await Promise.all(batch);
}
return refused;`, maxToolCalls)
	retentionLines := func() int {
		n := 0
		for _, ev := range g.auditEvents(t) {
			if ev.Type == audit.EventAuditRetention {
				n++
			}
		}
		return n
	}
	for i := range 3 {
		before, kept := g.auditBytes(t), retentionLines()
		_, ex := execute(t, cs, flood)
		if string(ex.Result) != strconv.Itoa(maxToolCalls) {
			t.Fatalf("execution %d: result %s, error %+v", i, ex.Result, ex.Error)
		}
		// Its calls, its code.execution event and execute_code's own
		// tool.call, and the audit.retention line of each rotation.
		bound := int64(maxToolCalls+2+retentionLines()-kept) * audit.MaxEventBytes
		if wrote := g.auditBytes(t) - before; wrote > bound {
			t.Errorf("execution %d wrote %d bytes to the audit log, more than its bound %d", i, wrote, bound)
		}
	}

	evs := g.auditEvents(t)
	if findEvent(evs, isEvidence) == nil {
		t.Error("the flood pushed the earlier refusal out of the audit log")
	}
	if findEvent(evs, func(ev *audit.Event) bool { return ev.Type == audit.EventAuditRetention }) == nil {
		t.Error("no audit.retention event")
	}
	if _, err := os.Stat(g.auditPath() + ".3"); err != nil {
		t.Errorf("files past maxFiles: %v", err)
	}
	_, ready := g.readyz(t)
	if problems := fmt.Sprint(dig(ready, "projects", "default", "problems")); !strings.Contains(problems, "audit log:") || !strings.Contains(problems, "audit.retainAtLeast") {
		t.Errorf("/readyz problems = %s", problems)
	}
	over := regexp.MustCompile(`(?m)^toolgate_audit_files_over_limit (\d+)$`).FindStringSubmatch(g.metrics(t))
	if over == nil || over[1] == "0" {
		t.Errorf("toolgate_audit_files_over_limit = %v", over)
	}
	g.proc.WaitForLine(t, "event=audit.retention", 10*time.Second) // the alert
	g.verifyAudit(t)
}

// keyEvents counts the audit log's key events by "type keyId", and
// returns their times.
func keyEvents(t *testing.T, g *gateway) (map[string]int, map[string]time.Time) {
	t.Helper()
	n, at := map[string]int{}, map[string]time.Time{}
	for _, ev := range g.auditEvents(t) {
		if strings.HasPrefix(ev.Type, "key.") {
			k := ev.Type + " " + ev.KeyID
			n[k]++
			at[k] = ev.Time
		}
	}
	return n, at
}

// listedKey is a key as `keys list --json` prints it.
type listedKey struct {
	ID        string     `json:"id"`
	Created   time.Time  `json:"created"`
	Revoked   *time.Time `json:"revoked"`
	RotatedTo string     `json:"rotatedTo"`
}

// Keys created, rotated and revoked with the command line are in the
// audit log once each, with the time of the change: before serve starts,
// while it runs, and across a restart.
func TestKeyChangesAudited(t *testing.T) {
	up := testUpstream(t)
	path := writeConfig(t, fmt.Sprintf(`{"mcpServers": {"up": {"command": %s, "allowedTools": ["echo"]}}}`, jsonString(up)))
	dir := filepath.Dir(path)
	cli := func(args ...string) string {
		t.Helper()
		code, out := runToolgate(t, dir, nil, append(args, "-c", path)...)
		if code != 0 {
			t.Fatalf("toolgate %v: exit %d\n%s", args, code, out)
		}
		return out
	}
	create := func(name string) string {
		t.Helper()
		var k cliKey
		if err := json.Unmarshal([]byte(cli("keys", "create", "--name", name, "--json")), &k); err != nil || k.ID == "" {
			t.Fatalf("keys create: %v", err)
		}
		return k.ID
	}
	// Before the gateway ever ran.
	var ids []string
	for i := range 4 {
		ids = append(ids, create(fmt.Sprintf("before-%d", i)))
	}
	cli("keys", "rotate", ids[0], "--overlap", "1h")
	cli("keys", "revoke", ids[1])

	g := startGatewayFile(t, path)
	ids = append(ids, create("while-running"))
	cli("keys", "revoke", ids[2])

	var listed []listedKey
	if err := json.Unmarshal([]byte(cli("keys", "list", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{}
	for _, k := range listed {
		want["key.created "+k.ID] = k.Created
		if k.RotatedTo != "" {
			want["key.rotated "+k.ID] = time.Time{} // the successor's creation time, checked below
		}
		if k.Revoked != nil {
			want["key.revoked "+k.ID] = *k.Revoked
		}
	}
	for _, k := range listed {
		if k.RotatedTo != "" {
			want["key.rotated "+k.ID] = want["key.created "+k.RotatedTo]
		}
	}
	if len(want) != len(listed)+3 {
		t.Fatalf("%d keys listed, %d changes expected: %v", len(listed), len(want), want)
	}
	check := func(when string) {
		t.Helper()
		var n map[string]int
		var at map[string]time.Time
		eventually(t, 20*time.Second, "every key change in the audit log "+when, func() bool {
			n, at = keyEvents(t, g)
			for k := range want {
				if n[k] == 0 {
					return false
				}
			}
			return true
		})
		for k, wt := range want {
			if n[k] != 1 || !at[k].Equal(wt) {
				t.Errorf("%s: %s recorded %d times at %v, want once at %v", when, k, n[k], at[k], wt)
			}
		}
	}
	check("while running")

	// A restart records nothing again (and the new key its helper makes).
	g.proc.Stop()
	g = startGatewayFile(t, path)
	check("after a restart")
	g.verifyAudit(t)
}

// execute_code and search_tools are tool.call events, linked to the
// execution, and count in toolgate_tool_calls_total.
func TestMetaToolCallsAudited(t *testing.T) {
	up := testUpstream(t)
	g := startGateway(t, fmt.Sprintf(`{
		"codeMode": {"enabled": true},
		"mcpServers": {"up": {"command": %s, "allowedTools": ["echo"]}}
	}`, jsonString(up)))
	cs := connect(t, g.URL(), nil)
	if res := callTool(t, cs, "search_tools", map[string]any{"query": "echo"}); res.IsError {
		t.Fatalf("search_tools: %s", text(res))
	}
	if _, ex := execute(t, cs, `return (await tools.up.echo({text: "hi"})).text`); string(ex.Result) != `"hi"` {
		t.Fatalf("execute_code: %s %+v", ex.Result, ex.Error)
	}
	if res, _ := execute(t, cs, `throw new Error("no")`); !res.IsError {
		t.Fatal("a failing script is not an error")
	}

	evs := g.auditEvents(t)
	var meta []*audit.Event
	for _, ev := range evs {
		if ev.Type == audit.EventToolCall && (ev.Tool == "execute_code" || ev.Tool == "search_tools") {
			meta = append(meta, ev)
		}
	}
	want := []string{"search_tools ok", "execute_code ok", "execute_code tool_error"}
	if len(meta) != len(want) {
		t.Fatalf("%d meta-tool events, want %d", len(meta), len(want))
	}
	for i, ev := range meta {
		if ev.Tool+" "+ev.Outcome != want[i] || ev.KeyID == "" || ev.ArgsSHA256 == "" {
			t.Errorf("event %d = %+v, want %s", i, ev, want[i])
		}
	}
	run := meta[1].ExecutionID
	if findEvent(evs, func(ev *audit.Event) bool { return ev.Type == audit.EventCodeExecution && ev.ExecutionID == run }) == nil ||
		findEvent(evs, func(ev *audit.Event) bool {
			return ev.Type == audit.EventToolCall && ev.Tool == "up__echo" && ev.ExecutionID == run
		}) == nil {
		t.Errorf("execute_code's event (execution %q) is not linked to its execution and inner call", run)
	}
	body := g.metrics(t)
	for _, w := range []string{
		`toolgate_tool_calls_total{outcome="ok",project="default",server="",tool="search_tools"} 1`,
		`toolgate_tool_calls_total{outcome="ok",project="default",server="",tool="execute_code"} 1`,
		`toolgate_tool_calls_total{outcome="tool_error",project="default",server="",tool="execute_code"} 1`,
		`toolgate_tool_calls_total{outcome="ok",project="default",server="up",tool="up__echo"} 1`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	g.verifyAudit(t)
}
