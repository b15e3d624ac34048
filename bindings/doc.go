// Package bindings turns the filtered tool list of a project into what a
// Code Mode script and the agent writing it see, and bridges the script's
// calls back to the gateway's one tool path:
//
//   - [Declarations] renders TypeScript declarations of the tools (for the
//     execute_code description and search_tools), [Search] picks the tools
//     that match a query;
//   - [Prelude] renders the JavaScript a sandbox evaluates before a script:
//     tools.<server>.<tool>(args), a global per server where the name is
//     free, and callTool(fullName, args), all calling one host primitive;
//   - [Invoke] runs one such call on a [ToolCaller] and maps the MCP result
//     to the value the script receives (structuredContent, else the text
//     parsed as JSON when it is JSON, else the content array), or to a
//     [callerr.Error] with a code; [Bridge] hands [Invoke] to a sandbox as
//     the host side of the script's calls.
//
// The package must not know how the tool path is implemented: it receives
// a plain [Tool] list and a [ToolCaller], never the gateway, the policy
// engine or the interpreter. Which tools a script sees is decided before
// the list reaches this package; a call is allowed or refused by the
// ToolCaller alone.
package bindings
