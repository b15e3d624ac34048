package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/audit"
)

// clusterConfig writes a configuration with a cluster block on the
// database at pgURL, whose audit log (this replica's, node) is "audit.jsonl"
// in dataDir "data" beside it; it returns the configuration's path and
// the log's.
func clusterConfig(t *testing.T, pgURL, node string) (cfgPath, logPath string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "toolgate.json")
	doc := fmt.Sprintf(`{"dataDir": "data", "cluster": {"node": %q, "postgres": {"url": %q}},
		"projects": {"default": {"mcpServers": {}}, "team": {"mcpServers": {}}}}`, node, pgURL)
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, filepath.Join(dir, "data", "audit.jsonl")
}

// shipAll ships everything the local log at path holds as node's chain.
func shipAll(t *testing.T, pgURL, node, path string) {
	t.Helper()
	s, err := audit.NewShipper(context.Background(), pgURL, node, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ShipOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The audit commands read the shared trail with a cluster block: every
// node's events, one node's with --node, this replica's file with
// --local; verify checks every chain, or one with --node, and names the
// node of a broken one.
func TestSharedAuditCommands(t *testing.T) {
	pgURL := servertest.Postgres(t)
	cfgA, logA := clusterConfig(t, pgURL, "a")
	cfgB, logB := clusterConfig(t, pgURL, "b")
	now := time.Now().UTC()
	ev := func(d time.Duration, tool string) *audit.Event {
		return &audit.Event{Time: now.Add(d), Type: audit.EventToolCall, Project: "default", Server: "s", Tool: tool, Decision: "allow", Outcome: "ok"}
	}
	writeAudit(t, logA, ev(-3*time.Hour, "a1"), ev(-time.Minute, "a2"), ev(time.Second, "a3"))
	writeAudit(t, logB, ev(-2*time.Hour, "b1"), ev(0, "b2"))
	shipAll(t, pgURL, "a", logA)
	shipAll(t, pgURL, "b", logB)
	writeAudit(t, logA, ev(2*time.Second, "a4")) // written, not shipped yet

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"every node, by time", []string{"-c", cfgA, "audit"}, []string{"a1", "b1", "a2", "b2", "a3"}},
		{"one node", []string{"-c", cfgA, "audit", "--node", "b"}, []string{"b1", "b2"}},
		{"one node since", []string{"-c", cfgB, "audit", "--node", "a", "--since", "1h"}, []string{"a2", "a3"}},
		{"this replica's file", []string{"-c", cfgA, "audit", "--local"}, []string{"a1", "a2", "a3", "a4"}},
		{"no such node", []string{"-c", cfgA, "audit", "--node", "c"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := auditJSON(t, tt.args...); !cmp.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}

	code, out, errOut := run(t, "", "-c", cfgB, "audit", "verify")
	if code != 0 || !strings.Contains(out, "node a: OK: 3 lines") || !strings.Contains(out, "node b: OK: 2 lines") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = run(t, "", "-c", cfgB, "audit", "verify", "--node", "a", "--json")
	type nodeReport struct {
		Node  string
		OK    bool
		Lines int
		Head  string
	}
	type report struct {
		OK    bool
		Nodes []nodeReport
	}
	got := decode[report](t, out)
	if code != 0 || !got.OK || len(got.Nodes) != 1 || got.Nodes[0].Node != "a" || got.Nodes[0].Lines != 3 {
		t.Errorf("verify --node a --json: exit %d\n%s%s", code, out, errOut)
	}
	// Once shipped, node a's chain ends where its file does.
	shipAll(t, pgURL, "a", logA)
	_, out, _ = run(t, "", "-c", cfgA, "audit", "verify", "--node", "a", "--json")
	shared := decode[report](t, out)
	_, out, _ = run(t, "", "-c", cfgA, "audit", "verify", "--local", "--json")
	local := decode[struct{ Head string }](t, out)
	if len(shared.Nodes) != 1 || shared.Nodes[0].Head != local.Head || shared.Nodes[0].Lines != 4 {
		t.Errorf("node a in PostgreSQL: %+v; its local head %s", shared, local.Head)
	}

	code, _, errOut = run(t, "", "-c", cfgA, "audit", "verify", "--node", "c")
	if code != exitFailed || !strings.Contains(errOut, `no chain of node "c"`) {
		t.Errorf("verify --node c: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{
		{"-c", cfgA, "audit", "--node", "a", "--local"},
		{"-c", cfgA, "audit", "verify", "--node", "a", "--local"},
	} {
		if code, _, errOut := run(t, "", args...); code != exitUsage || !strings.Contains(errOut, "--node reads the shared audit trail") {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
	}
	plain, _ := auditConfig(t)
	if code, _, errOut := run(t, "", "-c", plain, "audit", "--node", "a"); code != exitUsage || !strings.Contains(errOut, "no cluster.postgres.url") {
		t.Errorf("--node without a cluster block: exit %d: %s", code, errOut)
	}

	// A line changed in the database breaks node b's chain, not a's.
	conn, err := pgx.Connect(context.Background(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE audit_events SET line = replace(line, '"b1"', '"bX"') WHERE node = 'b' AND seq = 1`); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, "", "-c", cfgA, "audit", "verify")
	if code != exitFailed || !strings.Contains(out, "node a: OK") || !strings.Contains(out, "node b: BROKEN at b:2") || !strings.Contains(errOut, "node b at line 2") {
		t.Errorf("verify of a changed line: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, _ := run(t, "", "-c", cfgA, "audit", "verify", "--node", "a"); code != 0 {
		t.Errorf("verify --node a after b was changed: exit %d", code)
	}
	var v report
	_, out, _ = run(t, "", "-c", cfgA, "audit", "verify", "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.OK || len(v.Nodes) != 2 || v.Nodes[1].OK {
		t.Errorf("verify --json of a changed line: %s", out)
	}
}
