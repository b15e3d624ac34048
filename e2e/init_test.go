package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

var initKeyRE = regexp.MustCompile(`tg_[a-z0-9]+_[a-z0-9]+`)

// checkFailures runs toolgate check --json in dir and returns the reasons
// of its failed items, and its exit code.
func checkFailures(t *testing.T, dir string, env []string) (int, []string) {
	t.Helper()
	code, out, errOut := runToolgateSplit(t, dir, env, "check", "--json")
	var rep struct {
		Items []struct {
			ID, Status, Reason string
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json: %v\n%s%s", err, out, errOut)
	}
	var failed []string
	for _, it := range rep.Items {
		if it.Status == "fail" {
			failed = append(failed, it.ID+": "+it.Reason)
		}
	}
	slices.Sort(failed)
	return code, failed
}

// toolgate init --from takes a desktop client's MCP configuration (the
// samples in testdata/init), writes a toolgate.json with its credentials
// moved to ${VAR}s, prints the variables (never the values), creates a
// key and prints the clients' commands. check then fails only because
// those variables are not set, and passes once they are.
func TestInitFromDesktopConfigs(t *testing.T) {
	for _, tt := range []struct {
		sample  string // in testdata/init
		place   string // where the client keeps it, in a workspace
		secrets []string
		vars    []string
		written []string // in the toolgate.json written
	}{
		{
			sample: "claude_desktop_config.json", place: "claude_desktop_config.json",
			secrets: []string{"ghp_FAKEfake0123456789TESTtest0123456789", "BSAfakeFAKE0123456789abcdefXYZ"},
			vars:    []string{"BRAVE_API_KEY", "GITHUB_PERSONAL_ACCESS_TOKEN"},
			written: []string{`"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_PERSONAL_ACCESS_TOKEN}"`, `"brave-search": {`},
		},
		{
			sample: "cursor-mcp.json", place: ".cursor/mcp.json",
			secrets: []string{"secret_FAKEfake0123456789TESTtest0123456789", "s3cr3tPassw0rd"},
			vars:    []string{"CURSOR_SAMPLE_API_BASE", "NOTION_TOKEN", "POSTGRES_TOKEN"},
			written: []string{`"Authorization": "Bearer ${NOTION_TOKEN}"`, `"postgresql://app:${POSTGRES_TOKEN}@db.internal:5432/app"`,
				`"API_BASE": "${CURSOR_SAMPLE_API_BASE}"`, `"WORKSPACE"`},
		},
		{
			sample: "vscode-mcp.json", place: ".vscode/mcp.json",
			secrets: []string{"sk_live_FAKEfake0123456789TESTtest0123"},
			vars:    []string{"GITHUB_TOKEN", "STRIPE_TOKEN"},
			written: []string{`"Authorization": "Bearer ${GITHUB_TOKEN}"`, `"--api-key=${STRIPE_TOKEN}"`,
				`"MEMORY_FILE_PATH": "WORKSPACE/.memory.jsonl"`, `"transport": "http"`},
		},
	} {
		t.Run(tt.sample, func(t *testing.T) {
			_, env := isolatedEnv(t)
			ws := t.TempDir()
			from := filepath.Join(ws, filepath.FromSlash(tt.place))
			b, err := os.ReadFile(filepath.Join("testdata", "init", tt.sample))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(from), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(from, b, 0o600); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			code, out, errOut := runToolgateSplit(t, dir, env, "init", "--from", from)
			if code != 0 {
				t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
			}
			written, err := os.ReadFile(filepath.Join(dir, "toolgate.json"))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.secrets {
				if strings.Contains(out+errOut, s) || strings.Contains(string(written), s) {
					t.Errorf("the credential %s was printed or written", s)
				}
			}
			for _, w := range tt.written {
				w = strings.ReplaceAll(w, "WORKSPACE", ws)
				if !strings.Contains(string(written), w) {
					t.Errorf("toolgate.json lacks %s:\n%s", w, written)
				}
			}
			for _, glob := range []string{`"*write*"`, `"*delete*"`, `"*remove*"`} {
				if strings.Count(string(written), glob) < 2 {
					t.Errorf("the servers do not all deny %s", glob)
				}
			}
			for _, v := range tt.vars {
				if !regexp.MustCompile(`(?m)^  ` + v + ` +\S`).MatchString(out) {
					t.Errorf("init does not ask for %s:\n%s", v, out)
				}
			}
			key := initKeyRE.FindString(out)
			for _, want := range []string{
				`claude mcp add --transport http toolgate http://127.0.0.1:8080/mcp --header "Authorization: Bearer ` + key + `"`,
				"Cursor (", `"mcpServers": {`, "VS Code (.vscode/mcp.json)", `"servers": {`, `"type": "http"`,
			} {
				if key == "" || !strings.Contains(out, want) {
					t.Errorf("init output lacks %q:\n%s", want, out)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "toolgate-data", "toolgate.db")); err != nil {
				t.Errorf("no key store in the data folder the file names: %v", err)
			}

			// Without the variables, check fails on them only.
			code, failed := checkFailures(t, dir, env)
			var want []string
			for _, v := range tt.vars {
				want = append(want, "config: environment variable "+v+" is not set")
			}
			slices.Sort(want)
			// One failure per key path that names the variable.
			if code != 1 || !cmp.Equal(slices.Compact(failed), want) {
				t.Errorf("check without the variables: exit %d, failed %q, want %q", code, failed, want)
			}
			// With them, it passes.
			withVars := slices.Clone(env)
			for _, v := range tt.vars {
				withVars = append(withVars, v+"=value-of-"+v)
			}
			if code, failed := checkFailures(t, dir, withVars); code != 0 || len(failed) > 0 {
				t.Errorf("check with the variables: exit %d, failed %q", code, failed)
			}

			// The file stays unless --force.
			if code, _, errOut := runToolgateSplit(t, dir, env, "init", "--from", from); code != 1 || !strings.Contains(errOut, "--force") {
				t.Errorf("second init: exit %d\n%s", code, errOut)
			}
			if again, _ := os.ReadFile(filepath.Join(dir, "toolgate.json")); string(again) != string(written) {
				t.Error("a refused init changed the file")
			}
		})
	}
}

// What init writes from a client's file serves: the key it printed
// authenticates, the credential reaches the server from the variable, and
// the tools that change things are hidden.
func TestInitServes(t *testing.T) {
	checkLeaks(t)
	_, env := isolatedEnv(t)
	const secret = "ghp_FAKEfake0123456789TESTtest0123456789"
	src := filepath.Join(t.TempDir(), "claude_desktop_config.json")
	doc := fmt.Sprintf(`{"mcpServers": {"up": {"command": %s, "env": {"UP_TOKEN": %q}}}}`, jsonString(testUpstream(t)), secret)
	if err := os.WriteFile(src, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	code, out, errOut := runToolgateSplit(t, dir, env, "init", "--from", src)
	if code != 0 {
		t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
	}
	key := initKeyRE.FindString(out)
	proc := e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: e2etest.BuildBinary(t, "./cmd/toolgate"),
		Args: []string{"serve", "--listen", "127.0.0.1:0"},
		Dir:  dir,
		Env:  append(env, "UP_TOKEN="+secret),
	})
	m := listeningLine.FindStringSubmatch(proc.WaitForLine(t, "toolgate listening on", 60*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := e2etest.ConnectHTTP(t, ctx, m[1]+"/mcp", bearer(key), nil)
	names := toolNames(t, cs)
	if !slices.Contains(names, "execute_code") || slices.Contains(names, "up__echo") {
		t.Errorf("tools %v: want Code Mode's tools in place of the direct ones", names)
	}
	script := `
const visible = Object.keys(tools.up);
let removeTool;
try { await tools.up.remove_tool({ name: "x" }); removeTool = "resolved"; } catch (e) { removeTool = e.code; }
const env = await tools.up.environ({ names: ["UP_TOKEN"] });
return { visible, removeTool, token: env.env.UP_TOKEN === ` + jsonString(secret) + ` };`
	res := callTool(t, cs, "execute_code", map[string]any{"code": script})
	b, _ := json.Marshal(res.StructuredContent)
	var ex struct {
		Result struct {
			Visible    []string `json:"visible"`
			RemoveTool string   `json:"removeTool"`
			Token      bool     `json:"token"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &ex); err != nil || !ex.Result.Token || ex.Result.RemoveTool != "not_found" ||
		!slices.Contains(ex.Result.Visible, "echo") || !slices.Contains(ex.Result.Visible, "environ") || slices.Contains(ex.Result.Visible, "remove_tool") {
		t.Errorf("execute_code: %s (%v)", b, err)
	}
}
