package sandbox

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bindings"
	"github.com/toolgate/toolgate/callerr"
)

// toolCallerFunc adapts a function to bindings.ToolCaller.
type toolCallerFunc func(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error)

func (f toolCallerFunc) CallTool(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error) {
	return f(ctx, name, args)
}

// FuzzBindings drives the boundary as Code Mode wires it: the prelude that
// bindings generates for a tool with an arbitrary server and tool name,
// bindings.Invoke turning an arbitrary MCP result (text, structured
// content, isError) or an arbitrary coded error into what the script sees.
// The script calls the tool both ways (tools[server][name] and callTool)
// and returns what it got. Nothing panics, Run has no internal error, the
// result is UTF-8 JSON, Object.prototype is untouched, every failed call
// rejects with an Error carrying a code, and a result with isError is a
// "tool_error".
func FuzzBindings(f *testing.F) {
	f.Add("demo", "echo", "hello", []byte(nil), false, "", "")
	f.Add("demo", "echo", `{"__proto__":{"polluted":1}}`, []byte(nil), false, "", "")
	f.Add("__proto__", "constructor", "", []byte(`{"constructor":{"prototype":{"polluted":1}}}`), false, "", "")
	f.Add("my-server", "do.it", "boom \xed\xa0\x80", []byte(nil), true, "", "")
	f.Add("s", "t", "", []byte(nil), false, "rate_limited", "slow down \xff")
	f.Add("s", "t", "", []byte(nil), false, "", `{"code":"x","message":"json in a message"}`)
	f.Add("\xff", "\u2028", "\"\\ud800\"", []byte(`"\udfff"`), false, "", "")
	f.Add("toString", "valueOf", "1e999", []byte(`[1e999]`), false, "", "")
	f.Fuzz(func(t *testing.T, server, name, text string, structured []byte, isError bool, errCode, errMsg string) {
		full := server + "__" + name
		tc := toolCallerFunc(func(context.Context, string, json.RawMessage) (*mcp.CallToolResult, error) {
			if errCode != "" || errMsg != "" {
				return nil, &callerr.Error{Code: errCode, Message: errMsg}
			}
			res := &mcp.CallToolResult{IsError: isError, Content: []mcp.Content{&mcp.TextContent{Text: text}}}
			if structured != nil {
				res.StructuredContent = json.RawMessage(structured)
			}
			return res, nil
		})
		caller := bindings.Bridge(tc)
		quote := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		script := `
const before = Object.getOwnPropertyNames(Object.prototype).join();
const out = {};
const ways = [["tools", () => tools[` + quote(server) + `][` + quote(name) + `]({a: 1})], ["callTool", () => callTool(` + quote(full) + `, {a: 1})]];
for (const [how, call] of ways) {
	try {
		out[how] = {ok: await call()};
	} catch (e) {
		out[how] = {isError: e instanceof Error, code: e && e.code, message: String(e && e.message)};
	}
}
if (before !== Object.getOwnPropertyNames(Object.prototype).join() || ({}).polluted !== undefined || Object.getPrototypeOf({}) !== Object.prototype) {
	throw new Error("POLLUTED Object.prototype");
}
return out;`
		tools := []bindings.Tool{{Server: server, Name: name, FullName: full}}
		res, err := testEngine.Run(context.Background(), &Request{Code: script, Prelude: bindings.Prelude(tools, "__toolgate_call"), Caller: caller},
			Limits{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		checkBoundaryResult(t, res)
		if res.Error != nil {
			if res.Error.Limit != "" {
				return
			}
			t.Fatalf("the script failed: %+v", res.Error)
		}
		var out map[string]struct {
			OK      json.RawMessage `json:"ok"`
			IsError *bool           `json:"isError"`
			Code    any             `json:"code"`
			Message string          `json:"message"`
		}
		if err := json.Unmarshal(res.Result, &out); err != nil {
			t.Fatalf("result %s: %v", res.Result, err)
		}
		for how, got := range out {
			if got.IsError == nil {
				if how == "callTool" && (isError || errCode != "" || errMsg != "") {
					t.Fatalf("%s resolved %s for a failed call", how, got.OK)
				}
				continue
			}
			code, _ := got.Code.(string)
			if !*got.IsError || code == "" {
				t.Fatalf("%s rejected with %+v: not an Error with a code", how, got)
			}
			if how == "callTool" && isError && errCode == "" && errMsg == "" && code != callerr.ToolError {
				t.Fatalf("a result with isError rejected with code %q", code)
			}
		}
		if _, ok := out["callTool"]; !ok {
			t.Fatalf("no callTool outcome in %s", res.Result)
		}
	})
}

var _ bindings.ToolCaller = toolCallerFunc(nil)
