package gateway

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bindings"
	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
)

// TestMetaToolsAreToolCalls proves a call of execute_code or search_tools
// is a tool.call event with its outcome (the execution's carrying the
// executionId of its code.execution event and inner calls) and counts in
// toolgate_tool_calls_total.
func TestMetaToolsAreToolCalls(t *testing.T) {
	g, auditPath := codeModeFixture(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := connectInMemory(t, g.Server(config.DefaultProject))
	for _, c := range []struct {
		name string
		args map[string]any
	}{
		{SearchToolsTool, map[string]any{"query": "echo"}},
		{ExecuteCodeTool, map[string]any{"code": `return (await tools.demo.echo({text: "hi"})).text`}},
		{ExecuteCodeTool, map[string]any{"code": `throw new Error("no")`}},
	} {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: c.name, Arguments: c.args}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	var calls []*audit.Event
	execs := map[string]bool{}
	inner := map[string]bool{}
	if _, err := audit.Read(auditPath, func(ev *audit.Event) error {
		switch {
		case ev.Type == audit.EventToolCall && (ev.Tool == ExecuteCodeTool || ev.Tool == SearchToolsTool):
			calls = append(calls, ev)
		case ev.Type == audit.EventCodeExecution:
			execs[ev.ExecutionID] = true
		case ev.Type == audit.EventToolCall && ev.ExecutionID != "":
			inner[ev.ExecutionID] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"search_tools ok", "execute_code ok", "execute_code tool_error"}
	if len(calls) != len(want) {
		t.Fatalf("%d meta-tool events, want %d: %+v", len(calls), len(want), calls)
	}
	for i, ev := range calls {
		if got := ev.Tool + " " + ev.Outcome; got != want[i] || ev.Server != "" || ev.Decision != "allow" || ev.ArgsSHA256 == "" || ev.ResultBytes == 0 {
			t.Errorf("event %d = %+v, want %s", i, ev, want[i])
		}
		if ev.Tool == ExecuteCodeTool && !execs[ev.ExecutionID] {
			t.Errorf("execute_code event %+v has no code.execution event", ev)
		}
	}
	if !inner[calls[1].ExecutionID] {
		t.Errorf("the inner call is not linked to execution %s", calls[1].ExecutionID)
	}
	for _, c := range []struct {
		tool, outcome string
		n             float64
	}{{SearchToolsTool, "ok", 1}, {ExecuteCodeTool, "ok", 1}, {ExecuteCodeTool, "tool_error", 1}} {
		if got := callCount(t, g, c.tool, c.outcome); got != c.n {
			t.Errorf("toolgate_tool_calls_total{tool=%q,outcome=%q} = %v, want %v", c.tool, c.outcome, got, c.n)
		}
	}
}

// breakAudit makes the audit log unwritable: a folder takes its place.
func breakAudit(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestRefusalsFailClosed proves a refused call whose refusal cannot be
// audited fails as an answered one does: "unavailable", not the refusal,
// whether a client or a script's binding made it.
func TestRefusalsFailClosed(t *testing.T) {
	ctx := context.Background()
	t.Run("client", func(t *testing.T) {
		g, auditPath := codeModeFixture(t, "")
		breakAudit(t, auditPath)
		_, err := g.CallTool(ctx, &ToolCall{Principal: Principal{Project: config.DefaultProject}, Name: "demo__hidden", Arguments: json.RawMessage(`{}`)})
		if ce, ok := err.(*callerr.Error); !ok || ce.Code != callerr.Unavailable {
			t.Fatalf("a refusal that cannot be audited = %v, want an unavailable error", err)
		}
	})
	t.Run("script", func(t *testing.T) {
		g, auditPath := codeModeFixture(t, "")
		breakAudit(t, auditPath)
		tc := &scriptCaller{p: g.project(config.DefaultProject), pr: Principal{Project: config.DefaultProject}, execID: "x1"}
		_, err := bindings.Invoke(ctx, tc, "demo__hidden", []byte(`{}`))
		if be := bindings.AsCallError(err); be == nil || be.Code != callerr.Unavailable {
			t.Fatalf("a script's refusal that cannot be audited = %v, want code unavailable", err)
		}
	})
}

// callCount reads toolgate_tool_calls_total of a tool without a server in
// the default project.
func callCount(t *testing.T, g *Gateway, tool, outcome string) float64 {
	t.Helper()
	mfs, err := g.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "toolgate_tool_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["project"] == config.DefaultProject && labels["server"] == "" && labels["tool"] == tool && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
