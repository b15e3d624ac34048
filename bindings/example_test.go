package bindings_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/bindings"
)

func ExampleDeclarations() {
	tools := []bindings.Tool{{
		Server:      "filesystem",
		Name:        "read_file",
		FullName:    "filesystem__read_file",
		Description: "Read a text file.",
		InputSchema: json.RawMessage(`{
			"type": "object",
			"properties": {
				"path": {"type": "string", "description": "Absolute path of the file."},
				"head": {"type": "integer", "description": "Only the first N lines."}
			},
			"required": ["path"]
		}`),
		OutputSchema: json.RawMessage(`{"type":"object","properties":{"content":{"type":"string"}},"required":["content"]}`),
	}}
	fmt.Print(bindings.Declarations(tools))
	// Output:
	// interface FilesystemTools {
	//   /** Read a text file. */
	//   read_file(args: {
	//     /** Absolute path of the file. */
	//     path: string;
	//     /** Only the first N lines. */
	//     head?: number;
	//   }): Promise<{
	//     content: string;
	//   }>;
	// }
	//
	// declare const tools: {
	//   readonly filesystem: FilesystemTools;
	// };
	// declare const filesystem: FilesystemTools;
	// /**
	//  * Calls a tool by its full name; the same call as tools.<server>.<tool>(args).
	//  * Every call resolves to the tool's structured result when it has one (typed
	//  * above), else to its text (parsed when it is JSON), else to its content blocks.
	//  */
	// declare function callTool(name: "filesystem__read_file", args?: object): Promise<unknown>;
	// /**
	//  * Every failed call rejects with a ToolError. code is "tool_error" (the tool
	//  * reported an error; message is its text), "not_found", "denied",
	//  * "rate_limited" (see retryAfterMs), "timeout", "unavailable",
	//  * "invalid_arguments" or "internal".
	//  */
	// interface ToolError extends Error { code: string; tool: string; retryAfterMs?: number }
	// declare const console: { log(...data: unknown[]): void; info(...data: unknown[]): void; warn(...data: unknown[]): void; error(...data: unknown[]): void };
}

func ExampleSearch() {
	tools := []bindings.Tool{
		{Server: "filesystem", Name: "read_file", Description: "Read a file."},
		{Server: "filesystem", Name: "write_file", Description: "Write a file."},
		{Server: "github", Name: "create_issue", Description: "Open an issue."},
	}
	for _, t := range bindings.Search(tools, "FILE read") {
		fmt.Println(t.Server, t.Name)
	}
	// Output:
	// filesystem read_file
}

// staticCaller answers every call with the same result.
type staticCaller struct{ result *mcp.CallToolResult }

func (c staticCaller) CallTool(context.Context, string, json.RawMessage) (*mcp.CallToolResult, error) {
	return c.result, nil
}

func ExampleInvoke() {
	ctx := context.Background()
	listing := staticCaller{&mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: `["a.txt", "b.txt"]`}}}}
	v, _ := bindings.Invoke(ctx, listing, "filesystem__list_directory", []byte(`{"path":"/safe"}`))
	fmt.Println(string(v))

	failing := staticCaller{&mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "ENOENT: no such file"}}}}
	_, err := bindings.Invoke(ctx, failing, "filesystem__read_file", []byte(`{"path":"/nope"}`))
	b, _ := json.Marshal(err) // what the host primitive rejects with
	fmt.Println(string(b))
	// Output:
	// ["a.txt","b.txt"]
	// {"code":"tool_error","message":"ENOENT: no such file"}
}
