package cli

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/policy/apikey"
)

// The -update flag rewrites testdata/check/*.golden. It is registered in
// init, after every package variable, so that another test file of the
// package may define its own -update with flag.Bool; both then share it.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files in testdata")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// The fake GitHub token of testdata/check/bad.json, which GH_TOKEN repeats.
const fakeGitHubToken = "ghp_FAKEfake0123456789TESTtest0123456789"

func TestCheckGolden(t *testing.T) {
	testdata, err := filepath.Abs(filepath.Join("testdata", "check"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string // of the golden file
		config   string
		args     []string
		env      map[string]string
		wantCode int
	}{
		{
			name:   "good",
			config: "good.json",
			env: map[string]string{
				"GITHUB_TOKEN":      "ghp_OTHERother0123456789TESTtest01234567",
				"SEARCH_API_KEY":    "k3yF0rS34rchOnlyN0tSh4r3d",
				"ALERT_WEBHOOK_URL": "https://alerts.example.com/hooks/Yb7nQ3wE5rT8yU1iO4pA6sD9",
			},
		},
		{name: "bad", config: "bad.json", env: map[string]string{"GH_TOKEN": fakeGitHubToken}, wantCode: 1},
		{name: "bad-json", config: "bad.json", args: []string{"--json"}, env: map[string]string{"GH_TOKEN": fakeGitHubToken}, wantCode: 1},
		{
			name:     "projects",
			config:   "projects.yaml",
			env:      map[string]string{"NOTES_TOKEN": "n0tes-Sh4red-Acr0ss-Pr0jects", "TEAM_NOTES_TOKEN": "n0tes-Sh4red-Acr0ss-Pr0jects"},
			wantCode: 1,
		},
		{name: "oauth", config: "oauth.yaml"},
		{
			name:     "secrets",
			config:   "secrets.toml",
			env:      map[string]string{"AWS_SECRET_ACCESS_KEY": "unused-in-the-check", "DB_TOKEN": "also-unused"},
			wantCode: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Run in a folder of its own, so that the default dataDir and
			// audit log beside the file are fresh and the paths short.
			dir := t.TempDir()
			data, err := os.ReadFile(filepath.Join(testdata, tt.config))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tt.config), data, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Chdir(dir)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, out, errOut := run(t, "", append([]string{"-c", tt.config, "check"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, errOut)
			}
			if tt.wantCode == 1 && !strings.Contains(errOut, "the configuration fails the security checklist") {
				t.Errorf("stderr = %q", errOut)
			}
			for _, v := range tt.env {
				if strings.Contains(out, v) {
					t.Errorf("the report shows the secret %q", v)
				}
			}
			if strings.Contains(out, fakeGitHubToken[:8]) {
				t.Errorf("the report shows more of the literal token than its first characters")
			}
			if !strings.Contains(out, "toolgate-data") {
				t.Errorf("the report does not name the audit log's place")
			}
			if _, err := os.Stat(filepath.Join(dir, "toolgate-data")); err == nil {
				t.Errorf("check created the data folder")
			}
			if len(tt.args) > 0 && tt.args[0] == "--json" {
				var rep checkReport
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Fatalf("--json output is not JSON: %v\n%s", err, out)
				}
			}
			golden := filepath.Join(testdata, tt.name+".golden")
			if updateGolden() {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestCheckGolden -update)", err)
			}
			if diff := cmp.Diff(string(want), out); diff != "" {
				t.Errorf("report differs from %s (-want +got; go test -run TestCheckGolden -update rewrites it):\n%s", golden, diff)
			}
		})
	}
}

func TestCheckUsageAndLoadErrors(t *testing.T) {
	dir := t.TempDir()
	for name, doc := range map[string]string{
		"invalid.json":     `{"mcpServers": {"a": {"comand": "x"}}}`,
		"unparsable.json":  `{"mcpServers": {"a": {"command": "x"}},, }`,
		"unset.yaml":       "mcpServers:\n  api:\n    url: ${TOOLGATE_TEST_UNSET_URL}\n    allowedTools: [search]\n",
		"empty-tool.toml":  "allowedTools = [\"\"]\n",
		"bad-format.jsonc": `{}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
		wantOut  []string // in the report, each "path: reason" line or part of it
	}{
		{"no config file", []string{"check"}, 2, "no configuration file to check", nil},
		{"extra argument", []string{"check", "x.json"}, 2, "takes no arguments", nil},
		{"unknown flag", []string{"check", "--jsn"}, 2, "unknown flag", nil},
		{"missing file", []string{"-c", "missing.json", "check"}, 1, "1 item failed", []string{"✗ the file cannot be read", "missing.json", "fix: pass -c the path"}},
		{"invalid config", []string{"-c", "invalid.json", "check"}, 1, "2 items failed", []string{
			`✗ mcpServers.a.comand: unknown key (did you mean "command"?)`, "✗ mcpServers.a: needs command", "✓ API key authentication", "✓ Code Mode limits"}},
		{"unparsable", []string{"-c", "unparsable.json", "check"}, 1, "1 item failed", []string{"✗ the file cannot be read as a configuration, so no other check could run: load config unparsable.json: decode json"}},
		{"unset variable", []string{"-c", "unset.yaml", "check"}, 1, "1 item failed", []string{
			"✗ mcpServers.api.url: environment variable TOOLGATE_TEST_UNSET_URL is not set", "fix: set TOOLGATE_TEST_UNSET_URL in the environment", "✓ mcpServers.api: only the tools its allow list matches"}},
		{"invalid toml", []string{"-c", "empty-tool.toml", "check"}, 1, "1 item failed", []string{"✗ allowedTools[0]: empty tool name"}},
		{"unknown format", []string{"-c", "bad-format.jsonc", "check"}, 1, "1 item failed", []string{`unknown format ".jsonc"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, "", tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if len(tt.wantOut) == 0 && out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}

			// With --json: one JSON document whatever the outcome, and
			// the same exit code.
			if tt.name == "unknown flag" {
				return // the command line stops before --json is read
			}
			code, out, _ = run(t, "", append(tt.args, "--json")...)
			if code != tt.wantCode {
				t.Errorf("--json: exit %d, want %d", code, tt.wantCode)
			}
			dec := json.NewDecoder(strings.NewReader(out))
			var doc map[string]any
			if err := dec.Decode(&doc); err != nil {
				t.Fatalf("--json printed no JSON document: %v\n%s", err, out)
			}
			if dec.More() {
				t.Errorf("--json printed more than one document:\n%s", out)
			}
			if (doc["error"] != nil) != (tt.wantCode == 2) || (doc["items"] == nil) != (tt.wantCode == 2) {
				t.Errorf("--json document = %v", doc)
			}
		})
	}
}

// parseCheckInput builds the input of the checks from a JSON document.
func parseCheckInput(t *testing.T, doc string, now time.Time) *checkInput {
	t.Helper()
	path := filepath.Join(t.TempDir(), "toolgate.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return loadCheckInput(path, now)
}

func statuses(fs []checkFinding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.status+" "+f.path)
	}
	return out
}

func TestCheckKeyAge(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "toolgate.json")
	if err := os.WriteFile(cfgPath, []byte(`{"dataDir": "data", "keyMaxAge": "2160h"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	in := loadCheckInput(cfgPath, time.Now())
	if got := checkKeyAge(ctx, in); len(got) != 1 || got[0].status != statusPass || !strings.HasPrefix(got[0].reason, "no keys yet") {
		t.Fatalf("without a store: %+v", got)
	}

	s, err := apikey.OpenStore(ctx, filepath.Join(dir, "data", "toolgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	_, old, err := s.Create(ctx, "default", "ci", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, revoked, err := s.Create(ctx, "default", "gone", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, "team", "short-lived", time.Hour); err != nil {
		t.Fatal(err)
	}
	s.Close()

	const day = 24 * time.Hour
	tests := []struct {
		age        time.Duration
		wantStatus string
		wantReason string
	}{
		{30 * day, statusPass, "2 active keys, none older than 90 days"},
		{100 * day, statusWarn, `key ` + old.ID + ` ("ci", project "default") is 100 days old; the rotation schedule (keyMaxAge) is 90 days`},
		{181 * day, statusFail, "is 181 days old; the rotation schedule (keyMaxAge) is 90 days, more than twice over"},
	}
	for _, tt := range tests {
		t.Run(tt.wantStatus, func(t *testing.T) {
			in.now = old.Created.Add(tt.age + time.Minute)
			if tt.age == 30*day {
				in.now = old.Created.Add(30 * time.Minute) // the hour-long key is still active
			}
			got := checkKeyAge(ctx, in)
			if len(got) != 1 || got[0].status != tt.wantStatus || !strings.Contains(got[0].reason, tt.wantReason) {
				t.Fatalf("got %+v, want one %s containing %q", got, tt.wantStatus, tt.wantReason)
			}
			if tt.wantStatus != statusPass && !strings.Contains(got[0].fix, "toolgate keys rotate "+old.ID) {
				t.Errorf("fix = %q", got[0].fix)
			}
		})
	}
}

func TestCheckAuthAndListener(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		wantAuth  []string
		wantHTTPS []string
	}{
		{"defaults", `{}`, []string{"pass "}, []string{"warn listen"}},
		{"auth off on loopback", `{"auth": {"required": false}, "listen": "localhost:9000"}`, []string{"warn auth.required"}, []string{"warn listen"}},
		{"auth off on all interfaces", `{"auth": {"required": false}, "listen": ":9000"}`, []string{"fail auth.required"}, []string{"fail listen"}},
		{"auth off on loopback, any origin", `{"auth": {"required": false}, "allowedOrigins": ["*"]}`, []string{"fail allowedOrigins"}, []string{"warn listen"}},
		{"auth off on loopback, any host", `{"auth": {"required": false}, "allowedHosts": ["mcp.example.com", "*"]}`, []string{"fail allowedHosts"}, []string{"warn listen"}},
		{"auth off on loopback, a project's any origin", `{"auth": {"required": false}, "projects": {"p": {"allowedOrigins": ["*"]}}}`, []string{"fail projects.p.allowedOrigins"}, []string{"warn listen"}},
		{"auth off on loopback, listed origins", `{"auth": {"required": false}, "allowedOrigins": ["http://localhost:5173"]}`, []string{"warn auth.required"}, []string{"warn listen"}},
		{"any origin with keys", `{"allowedOrigins": ["*"]}`, []string{"pass "}, []string{"warn listen"}},
		{"insecure http allowed", `{"listen": "[::]:9000", "allowInsecureHTTP": true}`, []string{"pass "}, []string{"warn allowInsecureHTTP"}},
		{"tls", `{"listen": "10.1.2.3:443", "tls": {"certFile": "c.pem", "keyFile": "k.pem"}}`, []string{"pass "}, []string{"pass tls"}},
		{"upstreams", `{"listen": "[::1]:9000", "mcpServers": {
			"a": {"url": "https://a.example.com/mcp"},
			"b": {"url": "http://localhost:9100/mcp"},
			"c": {"url": "http://c.internal/mcp", "allowInsecure": true},
			"d": {"command": "x"}}}`,
			[]string{"pass "}, []string{"warn listen", "pass mcpServers.a.url", "pass mcpServers.b.url", "warn mcpServers.c.url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := parseCheckInput(t, tt.doc, time.Now())
			if diff := cmp.Diff(tt.wantAuth, statuses(checkAuth(context.Background(), in))); diff != "" {
				t.Errorf("auth (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantHTTPS, statuses(checkHTTPS(context.Background(), in))); diff != "" {
				t.Errorf("https (-want +got):\n%s", diff)
			}
		})
	}

	// Package config refuses plain http to a remote host without
	// allowInsecure; the check still fails it should that ever load.
	in := parseCheckInput(t, `{"mcpServers": {"a": {"url": "https://a.example.com/mcp"}}}`, time.Now())
	in.cfg.Projects["default"].MCPServers["a"].URL = "http://a.example.com/mcp"
	if diff := cmp.Diff([]string{"warn listen", "fail mcpServers.a.url"}, statuses(checkHTTPS(context.Background(), in))); diff != "" {
		t.Errorf("plain http upstream (-want +got):\n%s", diff)
	}
}

func TestCheckToolFiltering(t *testing.T) {
	in := parseCheckInput(t, `{"projects": {
		"p": {"allowedTools": ["a__x"], "mcpServers": {"a": {"command": "x"}}},
		"q": {"mcpServers": {
			"allow": {"command": "x", "allowedTools": ["t"]},
			"deny": {"command": "x", "denyToolsGlob": ["*"]},
			"none": {"command": "x", "allowedResourcesGlob": ["file:*"]}}}}}`, time.Now())
	want := []string{
		"pass projects.p.mcpServers.a",
		"pass projects.q.mcpServers.allow",
		"warn projects.q.mcpServers.deny",
		"fail projects.q.mcpServers.none",
	}
	if diff := cmp.Diff(want, statuses(checkToolFiltering(context.Background(), in))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestCheckAuditNotWritable(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs a user that file permissions apply to")
	}
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o700) })
	in := parseCheckInput(t, `{"audit": {"path": "`+filepath.ToSlash(filepath.Join(ro, "sub", "audit.jsonl"))+`"}}`, time.Now())
	got := checkAudit(context.Background(), in)
	if len(got) != 1 || got[0].status != statusFail || !strings.Contains(got[0].reason, "is not writable") {
		t.Errorf("got %+v", got)
	}
}

func TestGradeCodeMode(t *testing.T) {
	tests := []struct {
		name string
		s    codeModeSettings
		want []string
	}{
		{"off", codeModeSettings{Path: "codeMode"}, []string{"pass codeMode"}},
		{"defaults", codeModeSettings{Path: "codeMode", Enabled: true}, []string{"pass codeMode"}},
		{"long timeout", codeModeSettings{Path: "codeMode", Enabled: true, Timeout: 5 * time.Minute}, []string{"warn codeMode.timeout"}},
		{"open fetch", codeModeSettings{Path: "codeMode", Enabled: true, AllowFetch: true}, []string{"fail codeMode.allowFetch"}},
		{"restricted fetch", codeModeSettings{Path: "codeMode", Enabled: true, AllowFetch: true, FetchAllowHosts: []string{"api.example.com"}}, []string{"pass codeMode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, statuses(gradeCodeMode(tt.s))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// A grant that matches every tool name is graded as one, however its glob
// says it; one that picks tools is not.
func TestGrantsEverything(t *testing.T) {
	for glob, want := range map[string]bool{
		"*":         true,
		"**":        true,
		"*__*":      true,
		"*_*":       true,
		"?*":        true,
		"*__read_*": false,
		"github__*": false,
		"*__*_*":    false,
		"*_":        false,
		"??????*":   false,
		"[":         false, // not a glob: the configuration refuses it
		"up__echo":  false,
		"*__list_*": false,
		"{a,b}__*":  false,
		"*{__,_}*":  true,
	} {
		if got := grantsEverything(glob); got != want {
			t.Errorf("grantsEverything(%q) = %v, want %v", glob, got, want)
		}
	}
}

// The values check scans for literal credentials are read from the file
// as written, in every format, with the key paths of package config.
func TestRawCredentialFieldsFormats(t *testing.T) {
	docs := map[string]string{
		"toolgate.json": `{"mcpServers": {"Api": {"URL": "${U}", "headers": {"X-Key": "v", "X.Y": "w"}, "args": ["--token=t", 5]},},}`,
		"toolgate.yaml": "mcpServers:\n  Api:\n    URL: ${U}\n    headers:\n      X-Key: v\n      X.Y: w\n    args: [--token=t, 5]\n",
		"toolgate.toml": "[mcpServers.Api]\nURL = \"${U}\"\nargs = [\"--token=t\", 5]\n[mcpServers.Api.headers]\nX-Key = \"v\"\n\"X.Y\" = \"w\"\n",
	}
	want := []rawField{
		{path: "mcpServers.Api.url", kind: "url", server: "mcpServers.Api", value: "${U}"},
		{path: "mcpServers.Api.headers.X-Key", kind: "header", name: "X-Key", server: "mcpServers.Api", value: "v"},
		{path: `mcpServers.Api.headers["X.Y"]`, kind: "header", name: "X.Y", server: "mcpServers.Api", value: "w"},
		{path: "mcpServers.Api.args[0]", kind: "arg", name: "token", server: "mcpServers.Api", value: "t"},
	}
	for name, doc := range docs {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		in := loadCheckInput(path, time.Time{})
		if in.cfg == nil {
			t.Fatalf("%s: %v", name, in.loadErr)
		}
		if diff := cmp.Diff(want, in.rawCredentialFields(), cmp.AllowUnexported(rawField{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}

// Settings from TOOLGATE_ variables are graded as they apply, listed
// apart (by variable, never by value), and a bad one is a failed check
// that names its variable.
func TestCheckFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	doc := `{"listen": "127.0.0.1:8080", "codeMode": {"enabled": true, "timeout": "5s"},
		"mcpServers": {"a": {"command": "x", "allowedTools": ["t"]}}}`
	if err := os.WriteFile(filepath.Join(dir, "toolgate.json"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("TOOLGATE_LISTEN", "0.0.0.0:9000")
	t.Setenv("TOOLGATE_CODE_MODE_TIMEOUT", "soon")
	t.Setenv("TOOLGATE_ALERTS_WEBHOOK", "https://hooks.example.com/T0ken5ecretXk9mP2qR7sT4vW")

	code, out, _ := run(t, "", "check")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"Settings from the environment, in place of the file's:\n  alerts.webhook: TOOLGATE_ALERTS_WEBHOOK\n  codeMode.timeout: TOOLGATE_CODE_MODE_TIMEOUT\n  listen: TOOLGATE_LISTEN\n",
		`✗ codeMode.timeout: invalid duration "soon" (want e.g. "60s" or a number of milliseconds): time: invalid duration "soon" (the value of TOOLGATE_CODE_MODE_TIMEOUT)`,
		"fix: correct TOOLGATE_CODE_MODE_TIMEOUT in the environment of toolgate, or unset it to use the file's value",
		"✗ listen: listen 0.0.0.0:9000 is reachable from other machines without TLS",
		"✓ no literal credential in url, headers, env or args",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "T0ken5ecret") {
		t.Errorf("the report shows a value of the environment:\n%s", out)
	}

	_, out, _ = run(t, "", "check", "--json")
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	want := []checkEnv{
		{Var: "TOOLGATE_ALERTS_WEBHOOK", Path: "alerts.webhook"},
		{Var: "TOOLGATE_CODE_MODE_TIMEOUT", Path: "codeMode.timeout"},
		{Var: "TOOLGATE_LISTEN", Path: "listen"},
	}
	if diff := cmp.Diff(want, rep.FromEnv); diff != "" {
		t.Errorf("fromEnvironment (-want +got):\n%s", diff)
	}

	// TOOLGATE_CONFIG names the file when -c does not.
	t.Setenv("TOOLGATE_CONFIG", filepath.Join(dir, "missing.yaml"))
	code, out, _ = run(t, "", "check")
	if code != 1 || !strings.Contains(out, "TOOLGATE_CONFIG: config file: stat ") ||
		!strings.Contains(out, "fix: set TOOLGATE_CONFIG to the path of an existing configuration file, or unset it") {
		t.Errorf("exit %d, report:\n%s", code, out)
	}
}
