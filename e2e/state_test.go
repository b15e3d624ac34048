package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// isolatedEnv returns variables that give a toolgate process a home of
// its own (a temporary folder) and no configuration from the test
// machine: no $TOOLGATE_CONFIG, no $XDG_CONFIG_HOME or $XDG_CACHE_HOME.
func isolatedEnv(t *testing.T) (home string, env []string) {
	t.Helper()
	home = t.TempDir()
	return home, []string{"HOME=" + home, "XDG_CONFIG_HOME=", "XDG_CACHE_HOME=", "TOOLGATE_CONFIG="}
}

// toolgateJSON runs toolgate with args, expects exit 0 and decodes its
// standard output into a T.
func toolgateJSON[T any](t *testing.T, dir string, env []string, args ...string) T {
	t.Helper()
	code, out, errOut := runToolgateSplit(t, dir, env, args...)
	if code != 0 {
		t.Fatalf("toolgate %v: exit %d\n%s%s", args, code, out, errOut)
	}
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("toolgate %v: output is not JSON (%v):\n%s", args, err, out)
	}
	return v
}

// The keys, audit and tools commands read only dataDir and audit: a
// shell without the variables the servers name runs them, and the key
// they create is the one the gateway (started with the variables)
// accepts. A rotated key is listed as rotated, with its successor.
func TestStateCommandsWithoutUpstreamVariables(t *testing.T) {
	up := testUpstream(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "toolgate.json")
	doc := `{
		"dataDir": "data",
		"alerts": {"webhook": "${TG_E2E_ADMIN_WEBHOOK}"},
		"mcpServers": {
			"s": {
				"command": "${TG_E2E_ADMIN_CMD}",
				"env": {"TOKEN": "${TG_E2E_ADMIN_TOKEN}"},
				"allowedTools": ["echo"]
			}
		}
	}`
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, admin := isolatedEnv(t) // none of the TG_E2E_ADMIN_ variables

	// serve and check need them, and say so.
	if code, out := runToolgate(t, dir, admin, "serve", "-c", cfg, "--listen", "127.0.0.1:0"); code == 0 || !strings.Contains(out, "TG_E2E_ADMIN_CMD is not set") {
		t.Fatalf("serve without the variables: exit %d\n%s", code, out)
	}

	type key struct {
		ID        string `json:"id"`
		Key       string `json:"key"`
		Status    string `json:"status"`
		RotatedTo string `json:"rotatedTo"`
	}
	created := toolgateJSON[key](t, dir, admin, "-c", cfg, "keys", "create", "--name", "admin", "--json")
	if _, err := os.Stat(filepath.Join(dir, "data", "toolgate.db")); err != nil {
		t.Fatalf("the key is not in dataDir: %v", err)
	}

	checkLeaks(t)
	proc := e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: e2etest.BuildBinary(t, "./cmd/toolgate"),
		Args: []string{"serve", "-c", cfg, "--listen", "127.0.0.1:0"},
		Env:  append(admin, "TG_E2E_ADMIN_CMD="+up, "TG_E2E_ADMIN_TOKEN=t0ken", "TG_E2E_ADMIN_WEBHOOK=http://127.0.0.1:9/hook"),
		Dir:  dir,
	})
	m := listeningLine.FindStringSubmatch(proc.WaitForLine(t, "toolgate listening on", 60*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := e2etest.ConnectHTTP(t, ctx, m[1]+"/mcp", bearer(created.Key), nil)
	if got := text(callTool(t, cs, "s__echo", map[string]any{"text": "hi"})); got != "hi" {
		t.Fatalf("echo = %q", got)
	}

	rotated := toolgateJSON[key](t, dir, admin, "-c", cfg, "keys", "rotate", created.ID, "--json")
	listed := map[string]key{}
	for _, k := range toolgateJSON[[]key](t, dir, admin, "-c", cfg, "keys", "list", "--json") {
		listed[k.ID] = k
	}
	if old := listed[created.ID]; old.Status != "rotated" || old.RotatedTo != rotated.ID || listed[rotated.ID].Status != "active" {
		t.Errorf("keys list after rotate: %+v", listed)
	}
	code, out, errOut := runToolgateSplit(t, dir, admin, "-c", cfg, "keys", "list")
	if code != 0 || !strings.Contains(out, "rotated to "+rotated.ID) {
		t.Errorf("keys list: exit %d\n%s%s", code, out, errOut)
	}

	// The gateway's audit log, read without the variables.
	var audit string
	defer func() {
		if t.Failed() {
			t.Logf("last audit output: %s", audit)
		}
	}()
	eventually(t, 30*time.Second, "the tool call in the audit log", func() bool {
		code, out, errOut := runToolgateSplit(t, dir, admin, "-c", cfg, "audit", "--type", "tool.call", "--json")
		audit = fmt.Sprintf("exit %d\n%s%s", code, out, errOut)
		return code == 0 && strings.Contains(out, `"tool":"s__echo"`)
	})
	if code, out, errOut := runToolgateSplit(t, dir, admin, "-c", cfg, "audit", "verify"); code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Errorf("audit verify: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runToolgateSplit(t, dir, admin, "-c", cfg, "tools", "pending"); code != 0 {
		t.Errorf("tools pending: exit %d\n%s%s", code, out, errOut)
	}
	toolgateJSON[key](t, dir, admin, "-c", cfg, "keys", "rotate", rotated.ID, "--overlap", "0", "--json")
	if code, out, errOut := runToolgateSplit(t, dir, admin, "-c", cfg, "keys", "revoke", rotated.ID); code != 0 {
		t.Errorf("keys revoke: exit %d\n%s%s", code, out, errOut)
	}
}

// Without a configuration file, keys create refuses (naming every place
// it looked) and creates nothing; with --data-dir it writes the key where
// a gateway whose dataDir is that folder finds it.
func TestKeysCreateWithoutConfig(t *testing.T) {
	home, env := isolatedEnv(t)
	work := t.TempDir()
	code, out, errOut := runToolgateSplit(t, work, env, "keys", "create", "--name", "ci")
	if code != 1 || out != "" {
		t.Fatalf("keys create without a config: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"TOOLGATE_CONFIG", "toolgate.json", "toolgate.yaml", "toolgate.toml",
		work, filepath.Join(home, ".config", "toolgate"), "/etc/toolgate", "-c FILE", "--data-dir DIR"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the refusal does not name %q:\n%s", want, errOut)
		}
	}
	if entries, _ := os.ReadDir(work); len(entries) > 0 {
		t.Errorf("the refused command left %v in the working folder", entries)
	}

	data := filepath.Join(t.TempDir(), "gateway-data")
	created := toolgateJSON[struct {
		Key string `json:"key"`
	}](t, work, env, "keys", "create", "--name", "ci", "--data-dir", data, "--json")
	cfg := writeConfig(t, fmt.Sprintf(`{"dataDir": %s, "mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}}`,
		jsonString(data), jsonString(testUpstream(t))))
	checkLeaks(t)
	proc := e2etest.StartProcess(t, e2etest.ProcOptions{
		Path: e2etest.BuildBinary(t, "./cmd/toolgate"),
		Args: []string{"serve", "-c", cfg, "--listen", "127.0.0.1:0"},
		Env:  env,
	})
	m := listeningLine.FindStringSubmatch(proc.WaitForLine(t, "toolgate listening on", 60*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := e2etest.ConnectHTTP(t, ctx, m[1]+"/mcp", bearer(created.Key), nil)
	if got := text(callTool(t, cs, "s__echo", map[string]any{"text": "ok"})); got != "ok" {
		t.Errorf("echo = %q", got)
	}
}
