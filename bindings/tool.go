package bindings

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
)

// Tool is one tool a script may call, as the project's filtered tool list
// shows it.
type Tool struct {
	// Server is the name of the upstream server, e.g. "filesystem". It is
	// the namespace in scripts: tools.filesystem, and the global
	// filesystem when that name is free (see Prelude).
	Server string
	// Name is the tool's name at its server, e.g. "read_file". It is the
	// method in scripts: tools.filesystem.read_file(args).
	Name string
	// FullName is the name the gateway shows and takes for the tool, e.g.
	// "filesystem__read_file": what bindings hand to the ToolCaller, and
	// what callTool(name, args) takes. When empty, Name is used.
	FullName string
	// Description is the tool's description, shown as JSDoc.
	Description string
	// InputSchema is the JSON Schema of the tool's arguments.
	InputSchema json.RawMessage
	// OutputSchema is the JSON Schema of the tool's structured result, if
	// it declares one.
	OutputSchema json.RawMessage
}

// callName returns the name a call of t hands to the tool path.
func (t *Tool) callName() string {
	if t.FullName != "" {
		return t.FullName
	}
	return t.Name
}

// normalize returns tools sorted by server, then name, then full name, with
// repeated (server, name) pairs dropped after their first occurrence.
func normalize(tools []Tool) []Tool {
	out := slices.Clone(tools)
	slices.SortStableFunc(out, func(a, b Tool) int {
		return cmp.Or(
			strings.Compare(a.Server, b.Server),
			strings.Compare(a.Name, b.Name),
			strings.Compare(a.callName(), b.callName()),
		)
	})
	return slices.CompactFunc(out, func(a, b Tool) bool {
		return a.Server == b.Server && a.Name == b.Name
	})
}

// Search returns the tools that match query, in their original order.
// The query is split into words; a tool matches when every word occurs,
// ignoring case, in its server name, its name, its full name or its
// description. An empty query matches every tool.
func Search(tools []Tool, query string) []Tool {
	words := strings.Fields(strings.ToLower(query))
	var out []Tool
	for _, t := range tools {
		text := strings.ToLower(t.Server + "\n" + t.Name + "\n" + t.FullName + "\n" + t.Description)
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(text, w) }) {
			out = append(out, t)
		}
	}
	return out
}
