package demo_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/demo"
	"github.com/toolgate/toolgate/internal/mcpclient"
)

// connect runs a demo server and a real client over in-memory transports
// and closes both when the test ends.
func connect(t *testing.T) *mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	st, ct := mcp.NewInMemoryTransports()
	ss, err := demo.NewServer().Connect(ctx, st, nil)
	if err != nil {
		t.Fatalf("server connect: %v", err)
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "demo-test", Version: "0.0.0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		ss.Close()
		t.Fatalf("client connect: %v", err)
	}
	t.Cleanup(func() {
		cs.Close()
		ss.Wait()
	})
	return cs
}

func call(t *testing.T, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("CallTool(%s, %v): protocol error %v", name, args, err)
	}
	return res
}

// text joins the text content of res.
var text = mcpclient.ResultText

// structured decodes the structured content of res into a value of type T.
func structured[T any](t *testing.T, res *mcp.CallToolResult) T {
	t.Helper()
	var v T
	if res.StructuredContent == nil {
		t.Fatalf("no structured content; content: %q", text(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding structured content %s: %v", b, err)
	}
	return v
}

func decodeJSON(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad test JSON %s: %v", s, err)
	}
	return v
}

func TestServerInfo(t *testing.T) {
	cs := connect(t)
	init := cs.InitializeResult()
	if init == nil || init.ServerInfo == nil {
		t.Fatal("no initialize result")
	}
	if got, want := init.ServerInfo.Name, "toolgate-demo"; got != want {
		t.Errorf("server name = %q, want %q", got, want)
	}
	if init.Instructions == "" {
		t.Error("server has no instructions")
	}
}

func TestListTools(t *testing.T) {
	cs := connect(t)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		if tool.Description == "" {
			t.Errorf("%s: no description", tool.Name)
		}
		in := decodeJSON(t, mustJSON(t, tool.InputSchema)).(map[string]any)
		if in["type"] != "object" {
			t.Errorf("%s: input schema type = %v, want object", tool.Name, in["type"])
		}
		props, _ := in["properties"].(map[string]any)
		for p, s := range props {
			if s.(map[string]any)["description"] == nil {
				t.Errorf("%s: input property %s has no description", tool.Name, p)
			}
		}
		if got, want := tool.OutputSchema != nil, tool.Name != "echo"; got != want {
			t.Errorf("%s: has output schema = %v, want %v", tool.Name, got, want)
		}
		if a := tool.Annotations; a == nil || !a.ReadOnlyHint || a.OpenWorldHint == nil || *a.OpenWorldHint {
			t.Errorf("%s: annotations %+v, want read-only and closed-world", tool.Name, a)
		}
	}
	slices.Sort(names)
	want := []string{"add", "echo", "export_records", "get_record", "list_records", "search_notes", "word_count"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("tool names (-want +got):\n%s", diff)
	}

	// The bounds that struct tags cannot express are in the schema.
	i := slices.IndexFunc(res.Tools, func(tool *mcp.Tool) bool { return tool.Name == "list_records" })
	in := decodeJSON(t, mustJSON(t, res.Tools[i].InputSchema)).(map[string]any)
	limit := in["properties"].(map[string]any)["limit"].(map[string]any)
	if diff := cmp.Diff(map[string]any{"minimum": 1.0, "maximum": 20.0, "default": nil}, map[string]any{
		"minimum": limit["minimum"], "maximum": limit["maximum"], "default": limit["default"],
	}); diff != "" {
		t.Errorf("list_records limit schema (-want +got):\n%s", diff)
	}
	if d, _ := limit["description"].(string); !strings.Contains(d, "default 10") {
		t.Errorf("list_records limit description %q does not give the default", d)
	}
	if req, _ := in["required"].([]any); len(req) != 0 {
		t.Errorf("list_records requires %v, want no required arguments", req)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTools(t *testing.T) {
	cs := connect(t)
	tests := []struct {
		name     string
		tool     string
		args     map[string]any
		wantJSON string // structured content; "" means none
		wantText string // text content, checked when wantJSON is ""
		wantErr  string // non-empty: an isError result containing this
	}{
		{name: "echo", tool: "echo", args: map[string]any{"text": "héllo, world"}, wantText: "héllo, world"},
		{name: "echo empty", tool: "echo", args: map[string]any{"text": ""}, wantText: ""},
		{name: "echo missing text", tool: "echo", args: map[string]any{}, wantErr: `["text"]`},
		{name: "add", tool: "add", args: map[string]any{"a": 2, "b": 3.5}, wantJSON: `{"sum": 5.5}`},
		{name: "add negative", tool: "add", args: map[string]any{"a": -1.25, "b": 1}, wantJSON: `{"sum": -0.25}`},
		{name: "add overflow", tool: "add", args: map[string]any{"a": 1e308, "b": 1e308}, wantErr: "too large"},
		{name: "add missing b", tool: "add", args: map[string]any{"a": 1}, wantErr: `["b"]`},
		{name: "add string", tool: "add", args: map[string]any{"a": "1", "b": 2}, wantErr: "/properties/a"},
		{
			name:     "word count",
			tool:     "word_count",
			args:     map[string]any{"text": "The quick brown fox\njumps over\n"},
			wantJSON: `{"words": 6, "lines": 2, "characters": 31}`,
		},
		{
			name:     "word count empty",
			tool:     "word_count",
			args:     map[string]any{"text": ""},
			wantJSON: `{"words": 0, "lines": 0, "characters": 0}`,
		},
		{
			name:     "word count unicode and blank line",
			tool:     "word_count",
			args:     map[string]any{"text": "naïve café\n\n  über"},
			wantJSON: `{"words": 3, "lines": 3, "characters": 18}`,
		},
		{
			name:     "get record",
			tool:     "get_record",
			args:     map[string]any{"id": 1},
			wantJSON: `{"id": 1, "name": "Ada Almeida", "city": "Lisbon", "amount": 1962, "tags": ["new", "returning"]}`,
		},
		{
			name:     "get last record",
			tool:     "get_record",
			args:     map[string]any{"id": 50},
			wantJSON: `{"id": 50, "name": "Zofia Umarov", "city": "Toronto", "amount": 337, "tags": ["new", "returning", "wholesale"]}`,
		},
		{name: "get unknown record", tool: "get_record", args: map[string]any{"id": 51}, wantErr: "no record with id 51"},
		{name: "get far unknown record", tool: "get_record", args: map[string]any{"id": 9999}, wantErr: "no record with id 9999"},
		{name: "get record zero", tool: "get_record", args: map[string]any{"id": 0}, wantErr: "/properties/id"},
		{name: "get record without id", tool: "get_record", args: map[string]any{}, wantErr: `["id"]`},
		{name: "export rows too many", tool: "export_records", args: map[string]any{"rows": 5001}, wantErr: "/properties/rows"},
		{name: "export rows zero", tool: "export_records", args: map[string]any{"rows": -1}, wantErr: "/properties/rows"},
		{name: "list records limit too large", tool: "list_records", args: map[string]any{"limit": 21}, wantErr: "/properties/limit"},
		{name: "list records negative offset", tool: "list_records", args: map[string]any{"offset": -1}, wantErr: "/properties/offset"},
		{
			name: "search notes",
			tool: "search_notes",
			args: map[string]any{"query": "osaka PRIORITY"},
			wantJSON: `{"query": "osaka PRIORITY", "noteIds": ["n05"], "matches": [
				{"noteId": "n05", "title": "Osaka shipping", "line": 2, "text": "Priority orders to Osaka go by air."}
			]}`,
		},
		{
			name:     "search notes without match",
			tool:     "search_notes",
			args:     map[string]any{"query": "zebra"},
			wantJSON: `{"query": "zebra", "noteIds": [], "matches": []}`,
		},
		{name: "search notes blank query", tool: "search_notes", args: map[string]any{"query": "   "}, wantErr: "at least one word"},
		{name: "search notes empty query", tool: "search_notes", args: map[string]any{"query": ""}, wantErr: "/properties/query"},
		{name: "unknown argument", tool: "echo", args: map[string]any{"text": "x", "txet": "y"}, wantErr: "txet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, cs, tt.tool, tt.args)
			if tt.wantErr != "" {
				if !res.IsError {
					t.Fatalf("IsError = false, want an error containing %q; content: %q", tt.wantErr, text(res))
				}
				if !strings.Contains(text(res), tt.wantErr) {
					t.Errorf("error %q does not contain %q", text(res), tt.wantErr)
				}
				return
			}
			if res.IsError {
				t.Fatalf("unexpected tool error: %s", text(res))
			}
			if tt.wantJSON == "" {
				if res.StructuredContent != nil {
					t.Errorf("unexpected structured content %v", res.StructuredContent)
				}
				if got := text(res); got != tt.wantText {
					t.Errorf("text = %q, want %q", got, tt.wantText)
				}
				return
			}
			got := structured[any](t, res)
			if diff := cmp.Diff(decodeJSON(t, tt.wantJSON), got); diff != "" {
				t.Errorf("structured content (-want +got):\n%s", diff)
			}
			// The text content carries the same JSON for clients that
			// ignore structured content.
			if diff := cmp.Diff(got, decodeJSON(t, text(res))); diff != "" {
				t.Errorf("text content differs from structured content (-structured +text):\n%s", diff)
			}
		})
	}
}

// TestNullArguments sends "arguments": null to every tool. go-sdk v1.8.0
// panics (taking the process down) when it applies schema defaults to null
// arguments, so the demo schemas carry no defaults; this keeps it that way.
func TestNullArguments(t *testing.T) {
	cs := connect(t)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		res := call(t, cs, tool.Name, json.RawMessage("null"))
		if tool.Name == "list_records" {
			if res.IsError || len(structured[page](t, res).Records) != 10 {
				t.Errorf("list_records with null arguments: %s, want the first page", text(res))
			}
		}
	}
}

type record struct {
	ID     int      `json:"id"`
	Name   string   `json:"name"`
	City   string   `json:"city"`
	Amount int      `json:"amount"`
	Tags   []string `json:"tags"`
}

type page struct {
	Records    []record `json:"records"`
	Total      int      `json:"total"`
	Offset     int      `json:"offset"`
	Limit      int      `json:"limit"`
	NextOffset *int     `json:"nextOffset"`
}

func TestListRecordsPages(t *testing.T) {
	cs := connect(t)
	tests := []struct {
		name        string
		args        map[string]any
		wantIDs     []int
		wantLimit   int
		wantNextOff *int
	}{
		{name: "defaults", args: map[string]any{}, wantIDs: ids(1, 10), wantLimit: 10, wantNextOff: ptr(10)},
		{name: "offset only", args: map[string]any{"offset": 45}, wantIDs: ids(46, 50), wantLimit: 10},
		{name: "middle page", args: map[string]any{"limit": 20, "offset": 20}, wantIDs: ids(21, 40), wantLimit: 20, wantNextOff: ptr(40)},
		{name: "short last page", args: map[string]any{"limit": 5, "offset": 48}, wantIDs: ids(49, 50), wantLimit: 5},
		{name: "past the end", args: map[string]any{"offset": 50}, wantIDs: []int{}, wantLimit: 10},
		{name: "far past the end", args: map[string]any{"offset": 1000, "limit": 1}, wantIDs: []int{}, wantLimit: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, cs, "list_records", tt.args)
			if res.IsError {
				t.Fatalf("tool error: %s", text(res))
			}
			p := structured[page](t, res)
			if p.Records == nil {
				t.Error("records is null, want an array")
			}
			gotIDs := []int{}
			for _, r := range p.Records {
				gotIDs = append(gotIDs, r.ID)
			}
			if diff := cmp.Diff(tt.wantIDs, gotIDs); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if p.Total != 50 || p.Limit != tt.wantLimit {
				t.Errorf("total, limit = %d, %d; want 50, %d", p.Total, p.Limit, tt.wantLimit)
			}
			if diff := cmp.Diff(tt.wantNextOff, p.NextOffset); diff != "" {
				t.Errorf("nextOffset (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAggregate does what an agent would: page through every record, check
// each against get_record, and total the amounts per city.
func TestAggregate(t *testing.T) {
	cs := connect(t)
	var all []record
	calls := 0
	for offset := 0; ; calls++ {
		res := call(t, cs, "list_records", map[string]any{"limit": 20, "offset": offset})
		if res.IsError {
			t.Fatalf("list_records: %s", text(res))
		}
		p := structured[page](t, res)
		all = append(all, p.Records...)
		if p.NextOffset == nil {
			break
		}
		offset = *p.NextOffset
	}
	if calls+1 != 3 || len(all) != 50 {
		t.Fatalf("got %d records in %d pages, want 50 in 3", len(all), calls+1)
	}
	perCity := map[string]int{}
	for i, r := range all {
		if r.ID != i+1 {
			t.Fatalf("record %d has id %d", i+1, r.ID)
		}
		if r.Name == "" || r.City == "" || r.Amount <= 0 || len(r.Tags) == 0 {
			t.Errorf("record %d is incomplete: %+v", r.ID, r)
		}
		res := call(t, cs, "get_record", map[string]any{"id": r.ID})
		if diff := cmp.Diff(r, structured[record](t, res)); diff != "" {
			t.Errorf("get_record %d differs from list_records (-list +get):\n%s", r.ID, diff)
		}
		perCity[r.City] += r.Amount
	}
	want := map[string]int{"Berlin": 6510, "Lisbon": 13910, "Nairobi": 16184, "Osaka": 13951, "Toronto": 12628}
	if diff := cmp.Diff(want, perCity); diff != "" {
		t.Errorf("amount per city (-want +got):\n%s", diff)
	}
}

// TestResultsAreNotShared checks that a result cannot alter the table.
func TestResultsAreNotShared(t *testing.T) {
	cs := connect(t)
	first := text(call(t, cs, "get_record", map[string]any{"id": 2}))
	call(t, cs, "list_records", map[string]any{"limit": 20})
	if again := text(call(t, connect(t), "get_record", map[string]any{"id": 2})); again != first {
		t.Errorf("get_record 2 changed from %s to %s", first, again)
	}
}

func TestSearchNotesRefund(t *testing.T) {
	cs := connect(t)
	res := call(t, cs, "search_notes", map[string]any{"query": "Refund"})
	type match struct {
		NoteID string `json:"noteId"`
		Line   int    `json:"line"`
	}
	got := structured[struct {
		NoteIDs []string `json:"noteIds"`
		Matches []match  `json:"matches"`
	}](t, res)
	if diff := cmp.Diff([]string{"n02", "n03", "n06"}, got.NoteIDs); diff != "" {
		t.Errorf("note ids (-want +got):\n%s", diff)
	}
	want := []match{{"n02", 2}, {"n03", 1}, {"n03", 2}, {"n03", 3}, {"n06", 2}}
	if diff := cmp.Diff(want, got.Matches); diff != "" {
		t.Errorf("matches (-want +got):\n%s", diff)
	}
}

func TestReadme(t *testing.T) {
	cs := connect(t)
	ctx := context.Background()
	list, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Resources) != 1 {
		t.Fatalf("got %d resources, want 1", len(list.Resources))
	}
	r := list.Resources[0]
	if r.URI != "demo://readme" || r.MIMEType != "text/markdown" || r.Name == "" || r.Description == "" {
		t.Errorf("resource = %+v", r)
	}

	res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://readme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Contents) != 1 {
		t.Fatalf("got %d contents, want 1", len(res.Contents))
	}
	c := res.Contents[0]
	if c.URI != "demo://readme" || c.MIMEType != "text/markdown" || !strings.HasPrefix(c.Text, "# toolgate demo\n") {
		t.Errorf("contents = %q (%s, %s)", c.Text, c.URI, c.MIMEType)
	}
	if r.Size != int64(len(c.Text)) {
		t.Errorf("listed size %d, read %d bytes", r.Size, len(c.Text))
	}
	// The readme stays true: it names every tool and the prompt.
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		if !strings.Contains(c.Text, "`"+tool.Name+"`") {
			t.Errorf("readme does not mention tool %s", tool.Name)
		}
	}
	if !strings.Contains(c.Text, "`summarize_records`") {
		t.Error("readme does not mention the prompt")
	}

	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://nothing"}); err == nil {
		t.Error("reading demo://nothing succeeded")
	}
}

func TestSummarizeRecordsPrompt(t *testing.T) {
	cs := connect(t)
	ctx := context.Background()
	list, err := cs.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Prompts) != 1 || list.Prompts[0].Name != "summarize_records" {
		t.Fatalf("prompts = %v, want only summarize_records", list.Prompts)
	}
	args := list.Prompts[0].Arguments
	if len(args) != 1 || args[0].Name != "city" || !args[0].Required || !strings.Contains(args[0].Description, "Nairobi") {
		t.Errorf("arguments = %+v, want one required city listing the cities", args)
	}

	tests := []struct {
		name    string
		city    string
		want    string // in the message text
		wantErr string
	}{
		{name: "exact", city: "Lisbon", want: "demo records of Lisbon"},
		{name: "any case", city: "  osaka ", want: "demo records of Osaka"},
		{name: "unknown", city: "Paris", wantErr: `unknown city "Paris"`},
		{name: "missing", city: "", wantErr: `"city"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{
				Name:      "summarize_records",
				Arguments: map[string]string{"city": tt.city},
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) != 1 || res.Messages[0].Role != "user" {
				t.Fatalf("messages = %+v, want one user message", res.Messages)
			}
			msg := res.Messages[0].Content.(*mcp.TextContent).Text
			for _, w := range []string{tt.want, "list_records", "nextOffset"} {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func ids(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func ExampleNewServer() {
	ctx := context.Background()
	st, ct := mcp.NewInMemoryTransports()
	ss, err := demo.NewServer().Connect(ctx, st, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ss.Wait()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "example", Version: "0.0.0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer cs.Close()

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 2, "b": 3}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Content[0].(*mcp.TextContent).Text)

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_record", Arguments: map[string]any{"id": 99}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.IsError, res.Content[0].(*mcp.TextContent).Text)
	// Output:
	// {"sum":5}
	// true no record with id 99: ids run from 1 to 50
}

func TestExportRecords(t *testing.T) {
	cs := connect(t)
	type export struct {
		Rows  []record `json:"rows"`
		Count int      `json:"count"`
	}
	tests := []struct {
		name string
		args any
		want int
	}{
		{"default", map[string]any{}, 1000},
		{"null arguments", json.RawMessage("null"), 1000},
		{"one", map[string]any{"rows": 1}, 1},
		{"most", map[string]any{"rows": 5000}, 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, cs, "export_records", tt.args)
			if res.IsError {
				t.Fatalf("tool error: %s", text(res))
			}
			got := structured[export](t, res)
			if got.Count != tt.want || len(got.Rows) != tt.want {
				t.Fatalf("count %d, %d rows; want %d", got.Count, len(got.Rows), tt.want)
			}
			for i, r := range got.Rows {
				if r.ID != i+1 {
					t.Fatalf("row %d has id %d", i, r.ID)
				}
			}
		})
	}
	// Row 51 is record 1 again, with id 51 and its amount raised by one.
	got := structured[export](t, call(t, cs, "export_records", map[string]any{"rows": 51}))
	want := record{ID: 51, Name: "Ada Almeida", City: "Lisbon", Amount: 1963, Tags: []string{"new", "returning"}}
	if diff := cmp.Diff(want, got.Rows[50]); diff != "" {
		t.Errorf("row 51 (-want +got):\n%s", diff)
	}
}
