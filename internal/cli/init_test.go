package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/config"
)

// initIn runs toolgate init in dir with args.
func initIn(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Chdir(dir)
	return run(t, "", append([]string{"init"}, args...)...)
}

var printedKeyRE = regexp.MustCompile(`tg_[a-z0-9]+_[a-z0-9]+`)

func TestInitStarter(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := initIn(t, dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	cfg, err := config.Load(filepath.Join(dir, "toolgate.json"))
	if err != nil {
		t.Fatalf("the starter does not load: %v", err)
	}
	if !cfg.AuthRequired() || !cfg.CodeMode.Enabled || cfg.CodeMode.AllowFetch || cfg.Projects["default"].RateLimit.PerKeyRequestsPerMinute == 0 || len(cfg.Projects["default"].MCPServers) != 0 {
		t.Errorf("starter settings: %+v", cfg)
	}
	if _, err := os.Stat(filepath.Join(dir, "toolgate-data", "toolgate.db")); err != nil {
		t.Errorf("no key store beside the file: %v", err)
	}
	key := printedKeyRE.FindString(out)
	for _, want := range []string{
		"claude mcp add --transport http toolgate http://127.0.0.1:8080/mcp --header \"Authorization: Bearer " + key + "\"",
		`"mcpServers": {`, `"servers": {`, `"type": "http"`, `"Authorization": "Bearer ` + key + `"`,
	} {
		if key == "" || !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := run(t, "", "check"); code != 0 {
		t.Errorf("check of the starter: exit %d\n%s", code, out)
	}

	// An existing file stays unless --force.
	before, _ := os.ReadFile("toolgate.json")
	if code, _, errOut := initIn(t, dir); code != exitFailed || !strings.Contains(errOut, "--force") {
		t.Errorf("second init: exit %d, %s", code, errOut)
	}
	if after, _ := os.ReadFile("toolgate.json"); string(after) != string(before) {
		t.Error("init without --force changed the file")
	}
	if code, _, errOut := initIn(t, dir, "--force"); code != 0 {
		t.Errorf("init --force: exit %d, %s", code, errOut)
	}
	if code, _, errOut := initIn(t, dir, "-c", "toolgate.yaml"); code != exitUsage || !strings.Contains(errOut, "JSON") {
		t.Errorf("init -c toolgate.yaml: exit %d, %s", code, errOut)
	}
	// -c names the file, in a folder init creates; the data folder is
	// beside it.
	code, out, errOut = initIn(t, dir, "-c", filepath.Join("etc", "toolgate", "gw.json"))
	if code != 0 || !strings.Contains(out, "toolgate -c "+filepath.Join("etc", "toolgate", "gw.json")+" check") {
		t.Fatalf("init -c: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc", "toolgate", "toolgate-data", "toolgate.db")); err != nil {
		t.Errorf("no key store beside the file -c named: %v", err)
	}
}

func TestInitFrom(t *testing.T) {
	const secretA = "ghp_FAKEfake0123456789TESTtest0123456789"
	const secretB = "sk_live_FAKEfake0123456789TESTtest0123"
	ws := t.TempDir()
	vscode := filepath.Join(ws, ".vscode", "mcp.json")
	if err := os.MkdirAll(filepath.Dir(vscode), 0o755); err != nil {
		t.Fatal(err)
	}
	doc := `{
		// comments and trailing commas, as VS Code allows
		"inputs": [{"type": "promptString", "id": "api-key", "description": "The API key", "password": true}],
		"servers": {
			"gh": {"type": "http", "url": "https://gh.example/mcp", "headers": {"Authorization": "Bearer ` + secretA + `"}},
			"gh again": {"type": "streamable-http", "url": "https://gh2.example/mcp", "headers": {"Authorization": "token ` + secretA + `"}},
			"pay": {"command": "npx", "args": ["pay-mcp", "--api-key=` + secretB + `", "${workspaceFolder}/data"], "env": {"PAY_KEY": "${input:api-key}", "N": 5}},
			"odd": {"command": "x", "args": ["${command:pickFolder}"], "envFile": ".env", "dev": {"watch": "x"}},
		},
	}`
	if err := os.WriteFile(vscode, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	code, out, errOut := initIn(t, dir, "--from", vscode)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	written, err := os.ReadFile(filepath.Join(dir, "toolgate.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{secretA, secretB} {
		if strings.Contains(out+errOut, secret) || strings.Contains(string(written), secret) {
			t.Errorf("the secret %s was printed or written", secret)
		}
	}
	in, err := config.Inspect(filepath.Join(dir, "toolgate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var unset []string
	for _, p := range in.Problems {
		name, ok := strings.CutPrefix(p.Message, "environment variable ")
		if !ok || !strings.HasSuffix(name, " is not set") {
			t.Errorf("problem other than a variable not set: %s", p)
		}
		unset = append(unset, strings.TrimSuffix(name, " is not set"))
	}
	slices.Sort(unset)
	if want := []string{"API_KEY", "GH_TOKEN", "PAY_TOKEN"}; !slices.Equal(slices.Compact(unset), want) {
		t.Errorf("variables the file reads: %v, want %v", unset, want)
	}
	srv := in.Config.Projects["default"].MCPServers
	if len(srv) != 4 || srv["gh-again"] == nil || srv["gh-again"].Transport != config.TransportHTTP {
		t.Fatalf("servers: %v", srv)
	}
	file := in.File.Get("mcpServers")
	text := func(n config.Node) string { s, _ := n.Text(); return s }
	for path, want := range map[string]string{
		"gh.headers.Authorization":       "Bearer ${GH_TOKEN}",
		"gh-again.headers.Authorization": "token ${GH_TOKEN}", // one credential, one variable
		"pay.args[1]":                    "--api-key=${PAY_TOKEN}",
		"pay.args[2]":                    ws + "/data",
		"pay.env.PAY_KEY":                "${API_KEY}",
		"pay.env.N":                      "5",
		"odd.args[0]":                    "$${command:pickFolder}",
	} {
		n := file
		for _, part := range strings.Split(strings.ReplaceAll(path, "[", ".["), ".") {
			if strings.HasPrefix(part, "[") {
				n = n.Index(int(part[1] - '0'))
			} else {
				n = n.Get(part)
			}
		}
		if got := text(n); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	for _, s := range srv {
		if !slices.Contains(s.DenyToolsGlob, "*write*") || !slices.Contains(s.DenyToolsGlob, "*delete*") {
			t.Errorf("%s: deny list %v", s.Name, s.DenyToolsGlob)
		}
	}
	for _, want := range []string{"GH_TOKEN", "PAY_TOKEN", `the VS Code input "api-key" (The API key)`, `"gh again" is named "gh-again"`,
		"left out dev, envFile", "${command:pickFolder} is no variable toolgate knows",
		"gh-again and gh use the same credential (GH_TOKEN)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// With the variables set, check fails only on the credential the
	// client's file gave two servers, which init pointed out.
	for _, v := range []string{"API_KEY", "GH_TOKEN", "PAY_TOKEN"} {
		t.Setenv(v, "value-of-"+v)
	}
	code, out, _ = run(t, "", "check", "--json")
	rep := decode[checkReport](t, out)
	for _, it := range rep.Items {
		if it.Status == statusFail && it.ID != "credential-per-server" {
			t.Errorf("check: %+v", it)
		}
	}
	if code != exitFailed || rep.Summary.Failed != 1 {
		t.Errorf("check: exit %d, %+v", code, rep.Summary)
	}
}

func TestInitFromErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name, doc, want string
	}{
		{"none.json", `{"globalShortcut": "x"}`, `no servers in it`},
		{"bad.json", `{"mcpServers": `, "not JSON"},
		{"badurl.json", `{"mcpServers": {"a": {"url": "ftp://x"}}}`, "mcpServers.a.url"},
	} {
		out := t.TempDir()
		code, _, errOut := initIn(t, out, "--from", write(tt.name, tt.doc))
		if code != exitFailed || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, %s; want %q", tt.name, code, errOut, tt.want)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("%s: a refused init left %v", tt.name, entries)
		}
	}
}
