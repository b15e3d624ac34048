package gateway

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

func tool(name string) *mcp.Tool {
	return &mcp.Tool{Name: name, InputSchema: map[string]any{"type": "object"}}
}

func strp(s string) *string { return &s }

// fakeSetup builds a setup whose upstreams are ready with the given tools.
func fakeSetup(t *testing.T, allow []string, servers ...*config.Server) setup {
	t.Helper()
	return fakeSetupWith(t, allow, map[string][]*mcp.Tool{}, servers...)
}

func fakeSetupWith(t *testing.T, allow []string, tools map[string][]*mcp.Tool, servers ...*config.Server) setup {
	t.Helper()
	cfg := &config.Project{Name: "p", AllowedTools: allow, MCPServers: map[string]*config.Server{}}
	s := setup{cfg: cfg, upstreams: map[string]*upstream{}, rules: map[string]serverRules{}}
	if allow != nil {
		s.allow = map[string]bool{}
		for _, a := range allow {
			s.allow[a] = true
		}
	}
	for _, sc := range servers {
		cfg.MCPServers[sc.Name] = sc
		r, err := compileRules(sc)
		if err != nil {
			t.Fatal(err)
		}
		s.rules[sc.Name] = r
		ts, ok := tools[sc.Name]
		if !ok {
			ts = []*mcp.Tool{tool("read_file"), tool("write_file"), tool("delete_file"), tool("list_directory")}
		}
		s.upstreams[sc.Name] = &upstream{cfg: sc, state: StateReady, cat: catalog{tools: ts}}
	}
	return s
}

func TestComputeToolNames(t *testing.T) {
	tests := []struct {
		name     string
		allow    []string
		tools    map[string][]*mcp.Tool
		servers  []*config.Server
		want     []string
		problems []string // substrings, one per problem
		warnings []string
	}{
		{
			name:    "default namespace",
			servers: []*config.Server{{Name: "fs"}},
			want:    []string{"fs__delete_file", "fs__list_directory", "fs__read_file", "fs__write_file"},
		},
		{
			name:    "custom and empty prefixes",
			servers: []*config.Server{{Name: "fs", Prefix: strp("files.")}, {Name: "other", Prefix: strp(""), AllowedTools: []string{"list_directory"}}},
			want:    []string{"files.delete_file", "files.list_directory", "files.read_file", "files.write_file", "list_directory"},
		},
		{
			name:    "allow glob",
			servers: []*config.Server{{Name: "fs", AllowedToolsGlob: []string{"read_*", "list_*"}}},
			want:    []string{"fs__list_directory", "fs__read_file"},
		},
		{
			name:    "deny glob beats allow glob",
			servers: []*config.Server{{Name: "fs", AllowedToolsGlob: []string{"*_file"}, DenyToolsGlob: []string{"*delete*", "*write*"}}},
			want:    []string{"fs__read_file"},
		},
		{
			name:    "exact allow switches to default deny, deny still wins",
			servers: []*config.Server{{Name: "fs", AllowedTools: []string{"read_file", "write_file"}, DenyToolsGlob: []string{"write_*"}}},
			want:    []string{"fs__read_file"},
		},
		{
			name:    "empty exact allow list hides everything",
			servers: []*config.Server{{Name: "fs", AllowedTools: []string{}}},
			want:    nil,
		},
		{
			name:    "project allowedTools is default deny for the project",
			allow:   []string{"fs__read_file", "git__status"},
			servers: []*config.Server{{Name: "fs"}, {Name: "git"}},
			want:    []string{"fs__read_file"},
		},
		{
			name:     "collision is a problem naming both servers",
			servers:  []*config.Server{{Name: "a", Prefix: strp("")}, {Name: "b", Prefix: strp(""), AllowedTools: []string{"read_file"}}},
			want:     []string{"delete_file", "list_directory", "read_file", "write_file"},
			problems: []string{`tool name "read_file" is offered by servers a and b`},
		},
		{
			name:     "names breaking the MCP rules are problems",
			tools:    map[string][]*mcp.Tool{"fs": {tool("ok"), tool("has space"), tool(strings.Repeat("x", 125)), tool("ünïcode")}},
			servers:  []*config.Server{{Name: "fs"}},
			want:     []string{"fs__ok"},
			problems: []string{`"fs__has space" breaks the MCP name rules`, `breaks the MCP name rules`, `"fs__ünïcode" breaks`},
		},
		{
			name:     "schema that the MCP rules refuse is left out with a warning",
			tools:    map[string][]*mcp.Tool{"fs": {tool("ok"), {Name: "arr", InputSchema: map[string]any{"type": "array"}}}},
			servers:  []*config.Server{{Name: "fs"}},
			want:     []string{"fs__ok"},
			warnings: []string{`tool "arr": input schema must have type "object"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := fakeSetupWith(t, tc.allow, tc.tools, tc.servers...)
			reg, problems, warnings := compute(s)
			got := slices.Sorted(maps.Keys(reg.tools))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("tools (-want +got):\n%s", diff)
			}
			checkMessages(t, "problems", problems, tc.problems)
			checkMessages(t, "warnings", warnings, tc.warnings)
			for name, r := range reg.tools {
				if def := r.def.(*mcp.Tool); def.Name != name {
					t.Errorf("tool %s shown with definition name %s", name, def.Name)
				}
			}
		})
	}
}

func checkMessages(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %q, want %d matching %q", what, got, len(want), want)
		return
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.Contains(g, w) }) {
			t.Errorf("%s %q: none contains %q", what, got, w)
		}
	}
}

func TestComputeSkipsUpstreamsThatAreNotReady(t *testing.T) {
	s := fakeSetup(t, nil, &config.Server{Name: "up"}, &config.Server{Name: "down"})
	s.upstreams["down"].state = StateUnhealthy
	reg, _, _ := compute(s)
	for name := range reg.tools {
		if strings.HasPrefix(name, "down__") {
			t.Errorf("tool %s of an unhealthy upstream is shown", name)
		}
	}
	if len(reg.tools) != 4 {
		t.Errorf("got %d tools, want the 4 of the ready upstream", len(reg.tools))
	}
}

func TestResourceAndPromptFilters(t *testing.T) {
	sc := &config.Server{Name: "s", DenyResourcesGlob: []string{"*secret*"}, AllowedPromptsGlob: []string{"greet*"}}
	s := fakeSetup(t, nil, sc)
	u := s.upstreams["s"]
	u.cat.resources = []*mcp.Resource{{URI: "file:///public.txt"}, {URI: "file:///secret.txt"}}
	u.cat.templates = []*mcp.ResourceTemplate{{URITemplate: "file:///{name}"}, {URITemplate: "secret:///{x}"}}
	u.cat.prompts = []*mcp.Prompt{{Name: "greet"}, {Name: "other"}}
	reg, problems, warnings := compute(s)
	if len(problems)+len(warnings) > 0 {
		t.Fatalf("problems %v warnings %v", problems, warnings)
	}
	if diff := cmp.Diff([]string{"file:///public.txt"}, slices.Sorted(maps.Keys(reg.resources))); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"file:///{name}"}, slices.Sorted(maps.Keys(reg.templates))); diff != "" {
		t.Errorf("templates (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"s__greet"}, slices.Sorted(maps.Keys(reg.prompts))); diff != "" {
		t.Errorf("prompts (-want +got):\n%s", diff)
	}
	// A concrete URI that a template matches is still filtered.
	r := &registry{routes: reg}
	if rt := r.resourceRoute("file:///secret-plans"); rt != nil {
		t.Error("a denied URI is reachable through a template")
	}
	if rt := r.resourceRoute("file:///notes"); rt == nil {
		t.Error("an allowed URI is not reachable through its template")
	}
}

func TestSameConnection(t *testing.T) {
	base := &config.Server{Name: "s", Command: "srv", Args: []string{"a"}}
	filtered := *base
	filtered.DenyToolsGlob = []string{"x*"}
	filtered.Prefix = strp("")
	if !sameConnection(base, &filtered) {
		t.Error("a filter or prefix change restarts the upstream")
	}
	moved := *base
	moved.Args = []string{"b"}
	if sameConnection(base, &moved) {
		t.Error("an args change keeps the old upstream")
	}
}
