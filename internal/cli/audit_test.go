package cli

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/policy/audit"
)

// auditConfig writes a configuration whose dataDir is "data" beside it,
// and returns its path and the audit log's path.
func auditConfig(t *testing.T) (cfgPath, logPath string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "toolgate.json")
	doc := `{"dataDir": "data", "projects": {"default": {"mcpServers": {}}, "team": {"mcpServers": {}}}}`
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, filepath.Join(dir, "data", "audit.jsonl")
}

// writeAudit writes events to the log at path.
func writeAudit(t *testing.T, path string, events ...*audit.Event) {
	t.Helper()
	a, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if err := a.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

// sampleEvents are events of an hour's traffic, the first two of them
// two hours old.
func sampleEvents(now time.Time) []*audit.Event {
	old := now.Add(-2 * time.Hour)
	return []*audit.Event{
		{Time: old, Type: audit.EventKeyCreated, Project: "team", KeyID: "k1", KeyName: "ci"},
		{Time: old, Type: audit.EventToolCall, Project: "team", KeyID: "k1", Server: "fs", Tool: "read_file",
			Decision: "allow", Outcome: "ok", LatencyMs: 1.25},
		{Time: now, Type: audit.EventToolDenied, Project: "default", KeyID: "k2", Server: "fs", Tool: "delete_file",
			Decision: "deny", Reason: "filtered"},
		{Time: now, Type: audit.EventToolCall, Project: "default", KeyID: "k2", Server: "github", Tool: "read_issue",
			Decision: "allow", Outcome: "error", Error: "upstream \x1b[31mred\x1b[0m\nsecond line"},
		{Time: now, Type: audit.EventKeyRotated, Project: "team", KeyID: "k1", NewKeyID: "k3", KeyName: "ci"},
		{Time: now, Type: audit.EventAuthFailure, ClientIP: "10.0.0.7", Reason: "unknown key"},
		{Time: now, Type: audit.EventToolCall, Project: "team", Subject: "alice@example.com", Server: "fs", Tool: "list_dir",
			Decision: "allow", Outcome: "ok"},
	}
}

// auditJSON runs the audit command with --json and returns the tool (or
// type, for events without a tool) of each event printed.
func auditJSON(t *testing.T, args ...string) []string {
	t.Helper()
	code, out, errOut := run(t, "", append(args, "--json")...)
	if code != 0 {
		t.Fatalf("audit %v: exit %d: %s", args, code, errOut)
	}
	var got []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if e.Prev == "" {
			t.Errorf("line without prev: %s", sc.Text())
		}
		if e.Tool != "" {
			got = append(got, e.Tool)
		} else {
			got = append(got, e.Type)
		}
	}
	return got
}

func TestAuditQuery(t *testing.T) {
	cfg, log := auditConfig(t)
	now := time.Now().UTC()
	writeAudit(t, log, sampleEvents(now)...)

	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"key.created", "read_file", "delete_file", "read_issue", "key.rotated", "auth.failure", "list_dir"}},
		{[]string{"--type", "tool.denied"}, []string{"delete_file"}},
		{[]string{"--type", "tool.denied,auth.failure"}, []string{"delete_file", "auth.failure"}},
		{[]string{"--type", "key.*"}, []string{"key.created", "key.rotated"}},
		{[]string{"--key", "k1"}, []string{"key.created", "read_file", "key.rotated"}},
		{[]string{"--key", "k3"}, []string{"key.rotated"}},
		{[]string{"--tool", "read_*"}, []string{"read_file", "read_issue"}},
		{[]string{"--tool", "fs__*"}, []string{"read_file", "delete_file", "list_dir"}},
		{[]string{"--project", "team"}, []string{"key.created", "read_file", "key.rotated", "list_dir"}},
		{[]string{"--subject", "alice@example.com"}, []string{"list_dir"}},
		{[]string{"--since", "1h"}, []string{"delete_file", "read_issue", "key.rotated", "auth.failure", "list_dir"}},
		{[]string{"--since", now.Add(-3 * time.Hour).Format(time.RFC3339)}, []string{"key.created", "read_file", "delete_file", "read_issue", "key.rotated", "auth.failure", "list_dir"}},
		{[]string{"--since", "1h", "--tool", "read_*", "--type", "tool.call"}, []string{"read_issue"}},
		{[]string{"--key", "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			got := auditJSON(t, append([]string{"-c", cfg, "audit"}, tt.args...)...)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}

	code, out, errOut := run(t, "", "-c", cfg, "audit")
	if code != 0 {
		t.Fatalf("audit: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "TOOL/SERVER") {
		t.Fatalf("table:\n%s", out)
	}
	for _, want := range []string{"fs/delete_file", "deny", "filtered", "github/read_issue", "1.25ms", "replaced by k3", "from 10.0.0.7", "sub:alice@example.com"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") || !strings.Contains(out, "upstream ?[31mred?[0m?second line") {
		t.Errorf("control characters not escaped:\n%q", out)
	}

	code, out, errOut = run(t, "", "-c", cfg, "audit", "--key", "nobody")
	if code != 0 || out != "" || !strings.Contains(errOut, "No matching events") {
		t.Errorf("no match: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestAuditUsageErrors(t *testing.T) {
	cfg, _ := auditConfig(t)
	for _, args := range [][]string{
		{"--type", "tool.dneied"},
		{"--since", "yesterday"},
		{"--since", "2026-13-01T00:00:00Z"},
		{"--since", "-1h"},
		{"--tool", "[a-"},
		{"--nope"},
		{"extra"},
		{"verify", "extra"},
	} {
		code, _, errOut := run(t, "", append([]string{"-c", cfg, "audit"}, args...)...)
		if code != exitUsage {
			t.Errorf("audit %v: exit %d, want %d: %s", args, code, exitUsage, errOut)
		}
	}
}

func TestAuditVerifyCommand(t *testing.T) {
	cfg, log := auditConfig(t)
	writeAudit(t, log, sampleEvents(time.Now())...)

	code, out, errOut := run(t, "", "-c", cfg, "audit", "verify")
	if code != 0 || !strings.HasPrefix(out, "OK: 7 lines in 1 file") || !strings.Contains(out, "Head: ") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = run(t, "", "-c", cfg, "audit", "verify", "--json")
	if v := decode[map[string]any](t, out); code != 0 || v["ok"] != true || v["lines"] != 7.0 || v["start"] != audit.Genesis {
		t.Errorf("verify --json: exit %d: %s", code, out)
	}

	// Remove the third line.
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if err := os.WriteFile(log, []byte(strings.Join(append(lines[:2:2], lines[3:]...), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, "", "-c", cfg, "audit", "verify")
	if code != exitFailed || !strings.Contains(out, "BROKEN at "+log+":3:") || !strings.Contains(errOut, "hash chain broken at "+log+":3") {
		t.Errorf("verify of a log missing a line: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "", "-c", cfg, "audit", "verify", "--json")
	v := decode[struct {
		OK     bool
		Broken struct {
			File string
			Line int
		}
	}](t, out)
	if code != exitFailed || v.OK || v.Broken.File != log || v.Broken.Line != 3 {
		t.Errorf("verify --json of a log missing a line: exit %d: %s", code, out)
	}

	// A torn last line is reported, not an error.
	writeAudit(t, log) // reopening truncates nothing here: the file ends with a newline
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-`)
	f.Close()
	code, _, errOut = run(t, "", "-c", cfg, "audit")
	if code != 0 || !strings.Contains(errOut, "torn last line at "+log+":7") {
		t.Errorf("audit with a torn line: exit %d: %s", code, errOut)
	}
}

func TestAuditWithoutConfig(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	code, out, errOut := run(t, "", "audit")
	if code != 0 || out != "" || !strings.Contains(errOut, "No audit log at toolgate-data/audit.jsonl") {
		t.Errorf("audit without a log: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := run(t, "", "audit", "verify"); code != exitFailed || !strings.Contains(errOut, "no audit log") {
		t.Errorf("verify without a log: exit %d: %s", code, errOut)
	}

	writeAudit(t, filepath.Join(dir, "toolgate-data", "audit.jsonl"), sampleEvents(time.Now())[:2]...)
	if got := auditJSON(t, "audit"); !cmp.Equal(got, []string{"key.created", "read_file"}) {
		t.Errorf("events: %v", got)
	}
	if code, out, _ := run(t, "", "audit", "verify"); code != 0 || !strings.HasPrefix(out, "OK: 2 lines") {
		t.Errorf("verify: exit %d: %s", code, out)
	}
}
