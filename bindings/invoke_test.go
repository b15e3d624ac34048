package bindings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
)

// callerFunc adapts a function to ToolCaller.
type callerFunc func(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error)

func (f callerFunc) CallTool(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error) {
	return f(ctx, name, args)
}

var _ ToolCaller = callerFunc(nil)

// codedError is an error of another package that carries a code and a
// retry hint, as the gateway's errors may.
type codedError struct {
	code  string
	retry time.Duration
}

func (e *codedError) Error() string             { return "refused: " + e.code }
func (e *codedError) ErrorCode() string         { return e.code }
func (e *codedError) RetryAfter() time.Duration { return e.retry }

func text(s string) *mcp.TextContent { return &mcp.TextContent{Text: s} }

func TestInvoke(t *testing.T) {
	image := &mcp.ImageContent{Data: []byte("PNG"), MIMEType: "image/png"}
	for _, tc := range []struct {
		name    string
		result  *mcp.CallToolResult
		err     error
		want    string         // value JSON
		wantErr *callerr.Error // or this
	}{
		{
			name:   "structuredContent",
			result: &mcp.CallToolResult{StructuredContent: map[string]any{"b": 2, "a": []int{1}}, Content: []mcp.Content{text(`{"ignored":true}`)}},
			want:   `{"a":[1],"b":2}`,
		},
		{
			name:   "structuredContent as raw JSON",
			result: &mcp.CallToolResult{StructuredContent: json.RawMessage(`{"z": 1, "a": "x"}`)},
			want:   `{"z":1,"a":"x"}`,
		},
		{
			name:   "structuredContent that is not an object",
			result: &mcp.CallToolResult{StructuredContent: []string{"a"}},
			want:   `["a"]`,
		},
		{
			name:   "null structuredContent falls back to text",
			result: &mcp.CallToolResult{StructuredContent: json.RawMessage(`null`), Content: []mcp.Content{text("hi")}},
			want:   `"hi"`,
		},
		{
			name:   "JSON text",
			result: &mcp.CallToolResult{Content: []mcp.Content{text(" {\"a\": [1, 2]}\n")}},
			want:   `{"a":[1,2]}`,
		},
		{
			name:   "JSON number text",
			result: &mcp.CallToolResult{Content: []mcp.Content{text("42")}},
			want:   `42`,
		},
		{
			name:   "JSON string text",
			result: &mcp.CallToolResult{Content: []mcp.Content{text(`"quoted"`)}},
			want:   `"quoted"`,
		},
		{
			name:   "non-JSON text",
			result: &mcp.CallToolResult{Content: []mcp.Content{text("hello <world> & \"friends\"\u2028")}},
			want:   `"hello <world> & \"friends\"\u2028"`,
		},
		{
			name:   "empty text",
			result: &mcp.CallToolResult{Content: []mcp.Content{text("")}},
			want:   `""`,
		},
		{
			name:   "multiple text blocks",
			result: &mcp.CallToolResult{Content: []mcp.Content{text("first"), text("second")}},
			want:   `"first\nsecond"`,
		},
		{
			name:   "multiple text blocks forming JSON",
			result: &mcp.CallToolResult{Content: []mcp.Content{text(`[1,`), text(`2]`)}},
			want:   `[1,2]`,
		},
		{
			name:   "multiple JSON text blocks",
			result: &mcp.CallToolResult{Content: []mcp.Content{text(`{"a":1}`), text(`{"b":2}`)}},
			want:   `"{\"a\":1}\n{\"b\":2}"`,
		},
		{
			name:   "invalid UTF-8 text",
			result: &mcp.CallToolResult{Content: []mcp.Content{text("\"a\xffb\"")}},
			want:   `"\"a\ufffdb\""`,
		},
		{
			name:   "image only",
			result: &mcp.CallToolResult{Content: []mcp.Content{image}},
			want:   `[{"type":"image","mimeType":"image/png","data":"UE5H"}]`,
		},
		{
			name:   "text and image",
			result: &mcp.CallToolResult{Content: []mcp.Content{text("a logo:"), image}},
			want:   `[{"type":"text","text":"a logo:"},{"type":"image","mimeType":"image/png","data":"UE5H"}]`,
		},
		{
			name:   "no content",
			result: &mcp.CallToolResult{},
			want:   `[]`,
		},
		{
			name:    "isError",
			result:  &mcp.CallToolResult{IsError: true, Content: []mcp.Content{text("file not found"), text("(ENOENT)")}},
			wantErr: &callerr.Error{Code: callerr.ToolError, Message: "file not found\n(ENOENT)"},
		},
		{
			name:    "isError beats structuredContent",
			result:  &mcp.CallToolResult{IsError: true, StructuredContent: map[string]any{"a": 1}, Content: []mcp.Content{text("bad")}},
			wantErr: &callerr.Error{Code: callerr.ToolError, Message: "bad"},
		},
		{
			name:    "isError without text",
			result:  &mcp.CallToolResult{IsError: true, Content: []mcp.Content{image}},
			wantErr: &callerr.Error{Code: callerr.ToolError, Message: "the tool reported an error without a message"},
		},
		{
			name:    "CallError from the caller",
			err:     &callerr.Error{Code: callerr.NotFound, Message: `unknown tool "x"`},
			wantErr: &callerr.Error{Code: callerr.NotFound, Message: `unknown tool "x"`},
		},
		{
			name:    "wrapped CallError",
			err:     fmt.Errorf("calling upstream: %w", &callerr.Error{Code: callerr.Unavailable, Message: "server down", RetryAfter: 50 * time.Millisecond}),
			wantErr: &callerr.Error{Code: callerr.Unavailable, Message: "calling upstream: server down", RetryAfter: 50 * time.Millisecond},
		},
		{
			name:    "coded error with retry hint",
			err:     fmt.Errorf("policy: %w", &codedError{code: callerr.RateLimited, retry: 1500 * time.Millisecond}),
			wantErr: &callerr.Error{Code: callerr.RateLimited, Message: "policy: refused: rate_limited", RetryAfter: 1500 * time.Millisecond},
		},
		{
			name:    "coded error with empty code",
			err:     &codedError{},
			wantErr: &callerr.Error{Code: callerr.Internal, Message: "refused: "},
		},
		{
			name:    "denied",
			err:     &codedError{code: callerr.Denied},
			wantErr: &callerr.Error{Code: callerr.Denied, Message: "refused: denied"},
		},
		{
			name:    "deadline",
			err:     fmt.Errorf("calling tool: %w", context.DeadlineExceeded),
			wantErr: &callerr.Error{Code: callerr.Timeout, Message: "calling tool: context deadline exceeded"},
		},
		{
			name:    "canceled",
			err:     context.Canceled,
			wantErr: &callerr.Error{Code: callerr.Canceled, Message: "context canceled"},
		},
		{
			name:    "other error",
			err:     errors.New("boom"),
			wantErr: &callerr.Error{Code: callerr.Internal, Message: "boom"},
		},
		{
			name:    "no result and no error",
			wantErr: &callerr.Error{Code: callerr.Internal, Message: "the tool path returned no result"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caller := callerFunc(func(_ context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error) {
				if name != "srv__tool" || string(args) != `{"x":1}` {
					t.Errorf("caller got %q %s", name, args)
				}
				return tc.result, tc.err
			})
			got, err := Invoke(context.Background(), caller, "srv__tool", []byte(`{"x":1}`))
			if tc.wantErr != nil {
				var ce *callerr.Error
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v (%T), want %+v", err, err, tc.wantErr)
				}
				if diff := cmp.Diff(tc.wantErr, ce); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
				if got != nil {
					t.Errorf("value %s beside an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("value = %s\n want   %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Errorf("value is not JSON: %s", got)
			}
		})
	}
}

func TestInvokeArguments(t *testing.T) {
	for _, tc := range []struct {
		name, args, sent string
		wantErr          bool
	}{
		{"object", `{"a":1}`, `{"a":1}`, false},
		{"spaced object", " {\"a\": 1}\n", `{"a": 1}`, false},
		{"empty", ``, `{}`, false},
		{"null", `null`, `{}`, false},
		{"array", `[1]`, "", true},
		{"string", `"x"`, "", true},
		{"number", `1`, "", true},
		{"broken", `{"a":`, "", true},
		{"trailing", `{} {}`, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent json.RawMessage
			called := false
			caller := callerFunc(func(_ context.Context, _ string, args json.RawMessage) (*mcp.CallToolResult, error) {
				called, sent = true, args
				return &mcp.CallToolResult{Content: []mcp.Content{text("ok")}}, nil
			})
			_, err := Invoke(context.Background(), caller, "t", []byte(tc.args))
			if tc.wantErr {
				var ce *callerr.Error
				if !errors.As(err, &ce) || ce.Code != callerr.InvalidArguments {
					t.Errorf("err = %v, want invalid_arguments", err)
				}
				if called {
					t.Error("the caller ran on invalid arguments")
				}
				return
			}
			if err != nil || string(sent) != tc.sent {
				t.Errorf("sent %s, err %v; want %s", sent, err, tc.sent)
			}
		})
	}
}

func TestInvokePassesContext(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "principal")
	caller := callerFunc(func(ctx context.Context, _ string, _ json.RawMessage) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{StructuredContent: map[string]any{"who": ctx.Value(key{})}}, nil
	})
	got, err := Invoke(ctx, caller, "t", nil)
	if err != nil || string(got) != `{"who":"principal"}` {
		t.Errorf("got %s, %v", got, err)
	}
}

func TestCallErrorJSON(t *testing.T) {
	b, err := json.Marshal(AsCallError(&codedError{code: callerr.RateLimited, retry: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"code":"rate_limited","message":"refused: rate_limited","retryAfterMs":1000}`; string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
	b, _ = json.Marshal(&callerr.Error{Code: callerr.NotFound, Message: "gone"})
	if want := `{"code":"not_found","message":"gone"}`; string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
	if AsCallError(nil) != nil {
		t.Error("AsCallError(nil) != nil")
	}
}

// sessionCaller calls tools over an MCP client session, as a ToolCaller.
type sessionCaller struct{ cs *mcp.ClientSession }

func (c sessionCaller) CallTool(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error) {
	return c.cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
}

// TestInvokeOverMCP maps results that went through a real MCP session, so
// the content and structuredContent are what the SDK client decodes.
func TestInvokeOverMCP(t *testing.T) {
	ctx := context.Background()
	server := mcp.NewServer(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	type sumIn struct {
		A, B int
	}
	type sumOut struct {
		Sum int `json:"sum"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "sum"}, func(_ context.Context, _ *mcp.CallToolRequest, in sumIn) (*mcp.CallToolResult, sumOut, error) {
		return nil, sumOut{Sum: in.A + in.B}, nil
	})
	server.AddTool(&mcp.Tool{Name: "json_text", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{text(`[{"name":"a.txt"}]`)}}, nil
	})
	server.AddTool(&mcp.Tool{Name: "plain_text", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{text("args were " + string(req.Params.Arguments))}}, nil
	})
	server.AddTool(&mcp.Tool{Name: "image", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{Data: []byte{1, 2, 3}, MIMEType: "image/png"}}}, nil
	})
	mcp.AddTool(server, &mcp.Tool{Name: "fails"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return nil, nil, errors.New("disk on fire")
	})
	ct, st := mcp.NewInMemoryTransports()
	ss, err := server.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "client", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	caller := sessionCaller{cs}

	for _, tc := range []struct {
		tool, args, want, wantCode string
	}{
		{tool: "sum", args: `{"A":2,"B":3}`, want: `{"sum":5}`},
		{tool: "json_text", want: `[{"name":"a.txt"}]`},
		{tool: "plain_text", args: `{"k":"v"}`, want: `"args were {\"k\":\"v\"}"`},
		{tool: "image", want: `[{"type":"image","mimeType":"image/png","data":"AQID"}]`},
		{tool: "fails", wantCode: callerr.ToolError},
		{tool: "missing", wantCode: callerr.Internal}, // a protocol error without a code of ours
	} {
		t.Run(tc.tool, func(t *testing.T) {
			got, err := Invoke(ctx, caller, tc.tool, []byte(tc.args))
			if tc.wantCode != "" {
				var ce *callerr.Error
				if !errors.As(err, &ce) || ce.Code != tc.wantCode {
					t.Fatalf("err = %v, want code %s", err, tc.wantCode)
				}
				if tc.tool == "fails" && ce.Message != "disk on fire" {
					t.Errorf("message = %q, want the tool's text", ce.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("value = %s, want %s", got, tc.want)
			}
		})
	}
}
