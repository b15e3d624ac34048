package gateway

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
)

// TestJSONSize checks that the size recorded as an event's resultBytes is
// the length of the result's JSON encoding.
func TestJSONSize(t *testing.T) {
	tests := []struct {
		name string
		v    any
	}{
		{"text", &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello <world> & \"you\"\n"}}}},
		{"tool error", &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "boom"}}}},
		{"structured", &mcp.CallToolResult{
			Content:           []mcp.Content{&mcp.TextContent{Text: `{"n":1}`}, &mcp.ImageContent{Data: []byte{0, 1, 2, 255}, MIMEType: "image/png"}},
			StructuredContent: map[string]any{"n": 1, "s": []any{"a", "ü", 2.5}},
		}},
		{"empty", &mcp.CallToolResult{}},
		{"string", "plain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if got := jsonSize(tc.v); got != int64(len(b)) {
				t.Errorf("jsonSize = %d, want %d (%s)", got, len(b), b)
			}
		})
	}
	if got := jsonSize(map[string]any{"f": func() {}}); got != 0 {
		t.Errorf("jsonSize of a value that does not encode = %d, want 0", got)
	}
}

func TestAlertFields(t *testing.T) {
	ev := &audit.Event{Type: audit.EventToolCall, Project: "p", KeyID: "k1", Tool: "up__echo", Error: "boom"}
	want := map[string]any{"keyId": "k1", "tool": "up__echo", "error": "boom"}
	if got := alertFields(ev); !cmp.Equal(got, want) {
		t.Errorf("alertFields = %v, want %v", got, want)
	}
}

// BenchmarkCallEvent measures building the audit event of one echo call
// and the fields the alert rules see.
func BenchmarkCallEvent(b *testing.B) {
	r := &route{up: &upstream{cfg: &config.Server{Name: "up"}}, upstream: "echo"}
	call := &ToolCall{Principal: Principal{Project: "default", KeyID: "k1", ClientIP: "127.0.0.1"}, Name: "up__echo", Arguments: json.RawMessage(`{"text":"hello from the toolgate benchmark"}`)}
	res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello from the toolgate benchmark"}}}
	b.ReportAllocs()
	for b.Loop() {
		ev := callEvent("default", r, call, "", res, nil, nil, "ok", time.Millisecond)
		if ev.ResultBytes == 0 || len(alertFields(ev)) == 0 {
			b.Fatal("no result size or alert fields")
		}
	}
}

// TestRecordKeyChangeOnce proves a key change already in the log (written
// before a crash kept the store from forgetting it) is not written again,
// while the others are, each with the time of the change.
func TestRecordKeyChangeOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	auditLog, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer auditLog.Close()
	at := time.Now().Add(-time.Hour).UTC()
	done := apikey.Change{Seq: 1, Time: at, Type: audit.EventKeyCreated, KeyID: "k1", Project: "p", KeyName: "ci"}
	if err := auditLog.Write(done.Event()); err != nil { // the previous process wrote it
		t.Fatal(err)
	}
	if err := auditLog.Write(&audit.Event{Type: audit.EventToolCall, Tool: "later"}); err != nil {
		t.Fatal(err)
	}
	g := New(&config.Config{}, &Options{Audit: auditLog})
	defer g.Close()
	next := apikey.Change{Seq: 2, Time: at.Add(time.Minute), Type: audit.EventKeyRevoked, KeyID: "k1", Project: "p", KeyName: "ci"}
	for _, c := range []apikey.Change{done, next, next} {
		if err := g.RecordKeyChange(c); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if _, err := audit.Read(path, func(ev *audit.Event) error {
		if ev.KeyID != "" {
			got = append(got, ev.Type+" "+ev.Time.Format(time.RFC3339Nano))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"key.created " + at.Format(time.RFC3339Nano), "key.revoked " + next.Time.Format(time.RFC3339Nano)}
	if !cmp.Equal(got, want) {
		t.Errorf("key events = %v, want %v", got, want)
	}
}
