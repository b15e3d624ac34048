package deptest_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/deptest"
)

const mod = deptest.Module + "/"

// TestModule checks the import rules against the module as it is.
func TestModule(t *testing.T) {
	pkgs, err := deptest.List(context.Background(), ".", deptest.Module+"/...")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(pkgs, func(p deptest.Package) bool { return p.ImportPath == mod+"gateway" }) {
		t.Fatalf("go list reported %d packages, without %sgateway", len(pkgs), mod)
	}
	for _, v := range deptest.Check(pkgs, deptest.Rules) {
		t.Error(v)
	}
	for _, pat := range deptest.Unmatched(pkgs, deptest.Rules) {
		t.Errorf("the rule about %s checks nothing: no package matches it (renamed or removed?)", pat)
	}
}

// TestEveryRuleBites builds, for every package and every denied package
// of every rule, an import graph where the one reaches the other through
// a package in between, and expects the violation reported with its
// import chain and the rule's reason.
func TestEveryRuleBites(t *testing.T) {
	const mid = "example.com/in/between"
	for _, r := range deptest.Rules {
		for _, from := range concrete(r.From) {
			for _, dep := range concrete(r.Deny) {
				if from == dep {
					continue
				}
				t.Run(strings.TrimPrefix(from, mod)+" -> "+strings.TrimPrefix(dep, mod), func(t *testing.T) {
					pkgs := []deptest.Package{
						{ImportPath: from, Imports: []string{"fmt", mid}},
						{ImportPath: mid, Imports: []string{dep}},
						{ImportPath: dep},
					}
					want := []string{from, mid, dep}
					for _, v := range deptest.Check(pkgs, deptest.Rules) {
						if slices.Equal(v.Chain, want) && v.Rule.Why == r.Why {
							return
						}
					}
					t.Errorf("%s -> %s -> %s: not reported as breaking %q", from, mid, dep, r.Why)
				})
			}
		}
	}
}

// concrete returns import paths that the patterns match: each pattern's
// own path and, for a pattern ending in "/...", a package under it.
func concrete(patterns []string) []string {
	var out []string
	for _, p := range patterns {
		if base, ok := strings.CutSuffix(p, "/..."); ok {
			out = append(out, base, base+"/sub")
			continue
		}
		out = append(out, p)
	}
	return out
}

// graph builds an import graph from "path: import import ..." lines,
// paths of the module written relative to it.
func graph(lines ...string) []deptest.Package {
	abs := func(p string) string {
		first, _, _ := strings.Cut(p, "/")
		if strings.Contains(first, ".") || first == "net" || first == "fmt" {
			return p
		}
		return mod + p
	}
	var pkgs []deptest.Package
	for _, l := range lines {
		path, imports, _ := strings.Cut(l, ":")
		p := deptest.Package{ImportPath: abs(strings.TrimSpace(path))}
		for _, imp := range strings.Fields(imports) {
			p.Imports = append(p.Imports, abs(imp))
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestCheck(t *testing.T) {
	const sdk = "github.com/modelcontextprotocol/go-sdk"
	tests := []struct {
		name  string
		graph []string
		want  []string // the messages, in order
	}{
		{
			name:  "sandbox imports gateway",
			graph: []string{"sandbox: wasm gateway", "wasm:", "gateway:"},
			want:  []string{"sandbox must not depend on gateway (sandbox -> gateway): a script reaches tools through the ToolCaller it is given, so that the tool path stays in one place"},
		},
		{
			name:  "bindings reaches gateway through another package",
			graph: []string{"bindings: internal/helper", "internal/helper: gateway/sub", "gateway/sub:"},
			want:  []string{"bindings must not depend on gateway/sub (bindings -> internal/helper -> gateway/sub): a script reaches tools through the ToolCaller it is given, so that the tool path stays in one place"},
		},
		{
			name:  "bindings imports the sandbox",
			graph: []string{"bindings: sandbox", "sandbox:"},
			want:  []string{"bindings must not depend on sandbox (bindings -> sandbox): bindings turns tool lists into declarations and stubs; how a call is checked or a script run is not its business"},
		},
		{
			name:  "wasm imports sandbox",
			graph: []string{"wasm: sandbox", "sandbox:"},
			want:  []string{"wasm must not depend on sandbox (wasm -> sandbox): the wazero layer knows nothing of JavaScript or of the scripts run on it"},
		},
		{
			name:  "the audit log imports net/http",
			graph: []string{"policy/audit: fmt net/http", "net/http:"},
			want: []string{
				"policy/audit must not depend on net/http (policy/audit -> net/http): a storage package keeps state on disk; requests reach it through the gateway, never by a transport of its own",
				"policy/audit must not depend on net/http (policy/audit -> net/http): policy decides on plain names and values handed to it; it knows neither MCP transports nor Code Mode",
			},
		},
		{
			name: "the key store reaches the MCP SDK through a helper",
			// Reported where the path enters the SDK, not again at the
			// net/http behind it.
			graph: []string{"policy/apikey: internal/helper", "internal/helper: " + sdk + "/mcp", sdk + "/mcp: net/http", "net/http:"},
			want: []string{
				"policy/apikey must not depend on " + sdk + "/mcp (policy/apikey -> internal/helper -> " + sdk + "/mcp): a storage package keeps state on disk; requests reach it through the gateway, never by a transport of its own",
				"policy/apikey must not depend on " + sdk + "/mcp (policy/apikey -> internal/helper -> " + sdk + "/mcp): policy decides on plain names and values handed to it; it knows neither MCP transports nor Code Mode",
			},
		},
		{
			name:  "policy imports net/http",
			graph: []string{"policy: net/http/httptrace", "net/http/httptrace:"},
			want:  []string{"policy must not depend on net/http/httptrace (policy -> net/http/httptrace): policy decides on plain names and values handed to it; it knows neither MCP transports nor Code Mode"},
		},
		{
			name:  "alerts speak server-sent events",
			graph: []string{"policy/alert: github.com/tmaxmax/go-sse", "github.com/tmaxmax/go-sse:"},
			want:  []string{"policy/alert must not depend on github.com/tmaxmax/go-sse (policy/alert -> github.com/tmaxmax/go-sse): policy decides on plain names and values handed to it; it knows neither MCP transports nor Code Mode"},
		},
		{
			name:  "the audit log imports the key store",
			graph: []string{"policy/audit: policy/apikey", "policy/apikey: policy/audit"},
			want:  []string{"policy/audit must not depend on policy/apikey (policy/audit -> policy/apikey): the audit log is the lowest of the policy packages: the others import it for its event types"},
		},
		{
			name:  "filters import the audit log",
			graph: []string{"policy: policy/audit", "policy/audit:"},
			want:  []string{"policy must not depend on policy/audit (policy -> policy/audit): filters, IP rules and limits decide; what is kept about access (keys, audit, alerts) builds on them, not the other way"},
		},
		{
			name: "the module as it is meant to be",
			graph: []string{
				"gateway: policy policy/audit policy/apikey policy/alert sandbox bindings net/http " + sdk + "/mcp",
				"sandbox: wasm bindings net/http github.com/tetratelabs/wazero",
				"bindings: " + sdk + "/mcp",
				"wasm: github.com/tetratelabs/wazero/api",
				"policy: github.com/gobwas/glob",
				"policy/apikey: policy/audit modernc.org/sqlite",
				"policy/alert: policy/audit",
				"policy/audit: internal/clip",
				"internal/webhook: net/http policy/alert",
			},
		},
		{
			name:  "a pattern's path is not a prefix of other names",
			graph: []string{"sandboxes: gateway", "wasmtime: sandbox", "policyx: net/http"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range deptest.Check(graph(tt.graph...), deptest.Rules) {
				got = append(got, v.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnmatched(t *testing.T) {
	rules := []deptest.Rule{
		{From: []string{mod + "gateway", mod + "renamed/..."}, Deny: []string{"net/http/..."}},
		{From: []string{mod + "policy/..."}, Deny: []string{"net/http/..."}},
	}
	got := deptest.Unmatched(graph("gateway:", "policy/audit:"), rules)
	if diff := cmp.Diff([]string{mod + "renamed/..."}, got); diff != "" {
		t.Errorf("Unmatched (-want +got):\n%s", diff)
	}
}
