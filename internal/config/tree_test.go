package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// inspect writes doc as a file named name and inspects it.
func inspect(t *testing.T, name, doc string) *Inspection {
	t.Helper()
	clearEnv(t)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestNodePaths(t *testing.T) {
	docs := map[string]string{
		"a.json": `{
			"MCPServers": {"Api": {"URL": "${API_URL}", "headers": {"X.Key": "v"}, "args": ["-v", 5]}, "b": null},
			"alerts": {"webhook": 3},
		}`,
		"a.yaml": "MCPServers:\n  Api:\n    URL: ${API_URL}\n    headers: {X.Key: v}\n    args: [-v, 5]\n  b: null\nalerts: {webhook: 3}\n",
		"a.toml": "alerts = {webhook = 3}\n[MCPServers.Api]\nURL = \"${API_URL}\"\nargs = [\"-v\", 5]\nheaders = {\"X.Key\" = \"v\"}\n",
	}
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			root := inspect(t, name, doc).File
			servers := root.Get("mcpServers")
			api := servers.Get("Api")
			url := api.Get("url")
			type seen struct {
				Path, Key string
				Exists    bool
				Text      string
			}
			look := func(n Node) seen {
				s, _ := n.Text()
				return seen{n.Path(), n.Key(), n.Exists(), s}
			}
			var got []seen
			for _, n := range []Node{
				servers, // a setting matched regardless of case, spelled as Config spells it
				url,     // the same, inside a name
				api.Get("headers").Get("X.Key"),
				api.Get("args").Index(0),
				api.Get("args").Index(1), // not a string
				api.Get("args").Index(2), // past the end
				servers.Get("api"),       // names match exactly
				servers.Get("b"),         // null (TOML has no null: absent)
				root.Get("alerts").Get("webhook"),
				root.Get("codeMode").Get("timeout"), // absent, path still spelled
				root.Get("projects").Get("p q").Get("mcpServers"),
			} {
				got = append(got, look(n))
			}
			want := []seen{
				{"mcpServers", "mcpServers", true, ""},
				{"mcpServers.Api.url", "url", true, "${API_URL}"},
				{`mcpServers.Api.headers["X.Key"]`, "X.Key", true, "v"},
				{"mcpServers.Api.args[0]", "", true, "-v"},
				{"mcpServers.Api.args[1]", "", true, ""},
				{"mcpServers.Api.args[2]", "", false, ""},
				{"mcpServers.api", "api", false, ""},
				{"mcpServers.b", "b", false, ""},
				{"alerts.webhook", "webhook", true, ""},
				{"codeMode.timeout", "timeout", false, ""},
				{`projects["p q"].mcpServers`, "mcpServers", false, ""},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}

			var keys []string
			for _, e := range api.Entries() {
				keys = append(keys, e.Path())
			}
			if diff := cmp.Diff([]string{"mcpServers.Api.url", "mcpServers.Api.args", "mcpServers.Api.headers"}, keys); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if n := len(api.Get("args").Elems()); n != 2 {
				t.Errorf("%d elements, want 2", n)
			}
			if len(url.Entries()) != 0 || len(url.Elems()) != 0 {
				t.Errorf("a string has entries or elements")
			}
		})
	}
}

// Node.Get finds the value the loader decodes when a file spells a key
// several ways: the exact spelling first, then the first in sorted order.
func TestNodeGetMatchesTheLoader(t *testing.T) {
	for _, doc := range []string{
		`{"mcpServers": {"a": {"command": "exact", "Command": "other"}}}`,
		`{"mcpServers": {"a": {"Command": "other", "command": "exact"}}}`,
		`{"mcpServers": {"a": {"COMMAND": "first", "Command": "second"}}}`,
		`{"mcpServers": {"a": {"cOMMAND": "second", "Command": "first"}}}`,
	} {
		in := inspect(t, "toolgate.json", doc)
		got, _ := in.File.Get("mcpServers").Get("a").Get("command").Text()
		if want := in.Config.Projects[DefaultProject].MCPServers["a"].Command; got != want {
			t.Errorf("%s: Get = %q, the loader decoded %q", doc, got, want)
		}
	}
}
