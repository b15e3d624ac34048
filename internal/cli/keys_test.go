package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// run runs the command line and returns its exit code and outputs.
func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// keysConfig writes a configuration whose dataDir is "data" beside it,
// and returns its path and the key store's path.
func keysConfig(t *testing.T) (cfgPath, dbPath string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "toolgate.json")
	doc := `{
		"dataDir": "data",
		"projects": {"default": {"mcpServers": {}}, "team": {"mcpServers": {}}},
	}`
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, filepath.Join(dir, "data", "toolgate.db")
}

// listedKey is one key of `keys list --json`.
type listedKey = keyJSON

type createdKey struct {
	Key string `json:"key"`
	listedKey
	Replaces   string    `json:"replaces"`
	OldExpires time.Time `json:"oldExpires"`
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return v
}

func listKeys(t *testing.T, cfg string, extra ...string) map[string]listedKey {
	t.Helper()
	code, out, errOut := run(t, "", append([]string{"-c", cfg, "keys", "list", "--json"}, extra...)...)
	if code != 0 {
		t.Fatalf("keys list: exit %d: %s", code, errOut)
	}
	keys := map[string]listedKey{}
	for _, k := range decode[[]listedKey](t, out) {
		keys[k.ID] = k
	}
	return keys
}

func TestKeysLifecycle(t *testing.T) {
	cfg, db := keysConfig(t)

	// create
	code, out, errOut := run(t, "", "-c", cfg, "keys", "create", "--project", "team", "--name", "ci", "--expires", "90d", "--json")
	if code != 0 {
		t.Fatalf("keys create: exit %d: %s", code, errOut)
	}
	created := decode[createdKey](t, out)
	id, _, err := apikey.Parse(created.Key)
	if err != nil || id != created.ID {
		t.Fatalf("created key %q (id %q): %v", created.Key, created.ID, err)
	}
	if created.Project != "team" || created.Name != "ci" || created.Status != "active" || created.Expires == nil ||
		created.Expires.Sub(*created.Created) != 90*24*time.Hour {
		t.Fatalf("created = %+v", created)
	}
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("the store is not in dataDir: %v", err)
	}

	// list
	keys := listKeys(t, cfg)
	if len(keys) != 1 || keys[id].Status != "active" || keys[id].Calls != 0 || keys[id].LastUsed != nil {
		t.Fatalf("list after create: %+v", keys)
	}
	if got := listKeys(t, cfg, "--project", "default"); len(got) != 0 {
		t.Errorf("list --project default: %+v", got)
	}

	// rotate
	code, out, errOut = run(t, "", "-c", cfg, "keys", "rotate", id, "--overlap", "24h", "--json")
	if code != 0 {
		t.Fatalf("keys rotate: exit %d: %s", code, errOut)
	}
	rotated := decode[createdKey](t, out)
	newID, _, err := apikey.Parse(rotated.Key)
	if err != nil || newID != rotated.ID || newID == id || rotated.Replaces != id {
		t.Fatalf("rotated = %+v (%v)", rotated, err)
	}
	if got := rotated.OldExpires.Sub(*rotated.Created); got != 24*time.Hour {
		t.Errorf("old key expires %v after the rotation, want 24h", got)
	}
	keys = listKeys(t, cfg)
	old, succ := keys[id], keys[newID]
	if len(keys) != 2 || old.Status != "rotated" || succ.Status != "active" {
		t.Fatalf("list after rotate: %+v", keys)
	}
	if old.Expires == nil || !old.Expires.Equal(rotated.OldExpires) || old.RotatedTo != newID {
		t.Errorf("old key after rotate: %+v", old)
	}
	if succ.Project != "team" || succ.Name != "ci" || succ.Expires == nil || succ.Expires.Sub(*succ.Created) != 90*24*time.Hour {
		t.Errorf("successor: %+v", succ)
	}
	// The table shows the rotated key as rotated, with its successor.
	code, out, errOut = run(t, "", "-c", cfg, "keys", "list")
	if code != 0 {
		t.Fatalf("keys list: exit %d: %s", code, errOut)
	}
	for l := range strings.Lines(out) {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, id+" ") && !strings.HasSuffix(l, "  rotated to "+newID) ||
			strings.HasPrefix(l, newID+" ") && !strings.HasSuffix(l, "  active") {
			t.Errorf("row after rotate: %q", l)
		}
	}

	// revoke
	code, out, errOut = run(t, "", "-c", cfg, "keys", "revoke", id)
	if code != 0 || !strings.Contains(out, "Revoked key "+id) {
		t.Fatalf("keys revoke: exit %d: %s%s", code, out, errOut)
	}
	keys = listKeys(t, cfg)
	if keys[id].Status != "revoked" || keys[id].Revoked == nil || keys[newID].Status != "active" {
		t.Fatalf("list after revoke: %+v", keys)
	}
	code, out, _ = run(t, "", "-c", cfg, "keys", "revoke", id)
	if code != 0 || !strings.Contains(out, "already revoked") {
		t.Errorf("second revoke: exit %d: %s", code, out)
	}

	// The table has the documented columns and one row per key.
	code, out, errOut = run(t, "", "-c", cfg, "keys", "list")
	if code != 0 {
		t.Fatalf("keys list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ID PROJECT NAME CREATED EXPIRES LAST USED CALLS STATUS" {
		t.Fatalf("table:\n%s", out)
	}
	for _, l := range lines[1:] {
		switch {
		case strings.HasPrefix(l, id+" "):
			if !strings.HasSuffix(l, " revoked, rotated to "+newID) {
				t.Errorf("row of the revoked key: %q", l)
			}
		case strings.HasPrefix(l, newID+" "):
			f := strings.Fields(l)
			if len(f) != 12 || f[1] != "team" || f[2] != "ci" || f[9] != "never" || f[10] != "0" || f[11] != "active" {
				t.Errorf("row of the successor: %q", l)
			}
		default:
			t.Errorf("unexpected row %q", l)
		}
	}
}

func TestKeysTextOutput(t *testing.T) {
	cfg, _ := keysConfig(t)
	code, out, errOut := run(t, "", "-c", cfg, "keys", "create", "--name", "laptop")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var plaintext string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "tg_") {
			plaintext = f
			break
		}
	}
	id, _, err := apikey.Parse(plaintext)
	if err != nil {
		t.Fatalf("no key in the output:\n%s", out)
	}
	for _, want := range []string{"Created API key " + id, `for project "default"`, "it never expires", "will not be shown again"} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = run(t, "", "-c", cfg, "keys", "rotate", id, "--overlap", "2d")
	if code != 0 {
		t.Fatalf("rotate: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Rotated key " + id, "will not be shown again", "The old key " + id + " keeps working until", "(for 2 days)"} {
		if !strings.Contains(out, want) {
			t.Errorf("rotate output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "tg_") != 1 {
		t.Errorf("rotate should print exactly the new key:\n%s", out)
	}
}

func TestKeysCreateWarnsAboutUnknownProject(t *testing.T) {
	cfg, _ := keysConfig(t)
	code, _, errOut := run(t, "", "-c", cfg, "keys", "create", "--name", "x", "--project", "nosuch")
	if code != 0 || !strings.Contains(errOut, `has no project "nosuch"`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestKeysErrors(t *testing.T) {
	cfg, db := keysConfig(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown id to revoke, no store yet", []string{"keys", "revoke", "nosuchkey234"}, exitFailed, `key "nosuchkey234": no such API key`},
		{"unknown id to rotate, no store yet", []string{"keys", "rotate", "nosuchkey234"}, exitFailed, `key "nosuchkey234": no such API key`},
		{"bad --expires", []string{"keys", "create", "--name", "x", "--expires", "soon"}, exitUsage, `--expires: invalid duration "soon"`},
		{"negative --expires", []string{"keys", "create", "--name", "x", "--expires", "-5h"}, exitUsage, `--expires: invalid duration "-5h"`},
		{"fractional days", []string{"keys", "create", "--name", "x", "--expires", "1.5d"}, exitUsage, "the days must be a whole number"},
		{"bad --overlap", []string{"keys", "rotate", "abc", "--overlap", "never"}, exitUsage, `--overlap: invalid duration "never"`},
		{"missing --name", []string{"keys", "create"}, exitUsage, "--name is required"},
		{"revoke without id", []string{"keys", "revoke"}, exitUsage, "takes one argument, the key id"},
		{"rotate with two ids", []string{"keys", "rotate", "a", "b"}, exitUsage, "takes one argument, the key id"},
		{"unknown subcommand", []string{"keys", "frob"}, exitUsage, `unknown command "frob"`},
		{"unknown flag", []string{"keys", "list", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{"list takes no arguments", []string{"keys", "list", "extra"}, exitUsage, `toolgate keys list takes no arguments (got "extra")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := run(t, "", append([]string{"-c", cfg}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tt.code, tt.want)
			}
		})
	}
	// Reading commands and failed ones left no store behind.
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Errorf("a key store was created: %v", err)
	}

	code, _, errOut := run(t, "", "-c", cfg, "keys", "create", "--name", "x", "--project", "a b")
	if code != exitFailed || !strings.Contains(errOut, `invalid project name "a b"`) {
		t.Errorf("bad project: exit %d, stderr %q", code, errOut)
	}
	// With a store, an unknown id is still named.
	if code, _, errOut := run(t, "", "-c", cfg, "keys", "create", "--name", "x"); code != 0 {
		t.Fatal(errOut)
	}
	for _, cmd := range []string{"revoke", "rotate"} {
		code, _, errOut = run(t, "", "-c", cfg, "keys", cmd, "nosuchkey234")
		if code != exitFailed || !strings.Contains(errOut, `key "nosuchkey234": no such API key`) {
			t.Errorf("%s: exit %d, stderr %q", cmd, code, errOut)
		}
	}
}

func TestKeysListEmpty(t *testing.T) {
	cfg, _ := keysConfig(t)
	code, out, _ := run(t, "", "-c", cfg, "keys", "list", "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("exit %d, output %q; want []", code, out)
	}
	code, out, errOut := run(t, "", "-c", cfg, "keys", "list")
	if code != 0 || out != "" || !strings.Contains(errOut, "No API keys") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestKeysWithoutConfigFile: without a configuration file the commands
// that change keys refuse, naming where they looked, and create nothing;
// --data-dir names the folder explicitly; list reads ./toolgate-data.
func TestKeysWithoutConfigFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv(config.EnvConfigFile, "")
	for _, args := range [][]string{
		{"keys", "create", "--name", "x"},
		{"keys", "rotate", "abcdefghijkl"},
		{"keys", "revoke", "abcdefghijkl"},
		{"tools", "approve", "--all"},
	} {
		code, _, errOut := run(t, "", args...)
		for _, want := range []string{"no configuration file names it", "TOOLGATE_CONFIG", "toolgate.json", dir, filepath.Join(home, ".config", "toolgate"), "/etc/toolgate", "--data-dir DIR"} {
			if code != exitFailed || !strings.Contains(errOut, want) {
				t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", args, code, errOut, want)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, config.DefaultDataDir)); !os.IsNotExist(err) {
		t.Errorf("a refused command created ./%s: %v", config.DefaultDataDir, err)
	}
	code, _, errOut := run(t, "", "keys", "list")
	if code != 0 || !strings.Contains(errOut, "No API keys in "+filepath.Join(config.DefaultDataDir, "toolgate.db")) || !strings.Contains(errOut, "no configuration file found") {
		t.Errorf("list: exit %d, stderr %q", code, errOut)
	}

	data := filepath.Join(t.TempDir(), "data")
	code, out, errOut := run(t, "", "keys", "create", "--name", "x", "--data-dir", data, "--json")
	if code != 0 {
		t.Fatalf("create --data-dir: exit %d: %s", code, errOut)
	}
	created := decode[createdKey](t, out)
	if _, err := os.Stat(filepath.Join(data, "toolgate.db")); err != nil {
		t.Errorf("no store in --data-dir: %v", err)
	}
	code, out, errOut = run(t, "", "keys", "list", "--json", "--data-dir", data)
	if code != 0 || len(decode[[]listedKey](t, out)) != 1 || decode[[]listedKey](t, out)[0].ID != created.ID {
		t.Errorf("list --data-dir: exit %d, %s%s", code, out, errOut)
	}
	code, _, errOut = run(t, "", "-c", "toolgate.json", "keys", "list", "--data-dir", data)
	if code != exitUsage || !strings.Contains(errOut, "-c and --data-dir") {
		t.Errorf("-c with --data-dir: exit %d, %s", code, errOut)
	}
}

// TestKeysNeedNoUpstreamVariables: the keys commands read dataDir, not
// the variables the servers name.
func TestKeysNeedNoUpstreamVariables(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "toolgate.json")
	doc := `{
		"dataDir": "data",
		"tls": {"certFile": "${TG_UNSET_CERT}", "keyFile": "${TG_UNSET_KEY}"},
		"alerts": {"webhook": "${TG_UNSET_WEBHOOK}"},
		"mcpServers": {
			"api": {"url": "${TG_UNSET_URL}", "headers": {"Authorization": "Bearer ${TG_UNSET_TOKEN}"}},
			"fs": {"command": "${TG_UNSET_CMD}", "args": ["${TG_UNSET_ARG}"], "env": {"T": "${TG_UNSET_ENV}"}},
		},
	}`
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "-c", cfg, "keys", "create", "--name", "admin", "--json")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	id := decode[createdKey](t, out).ID
	if _, err := os.Stat(filepath.Join(dir, "data", "toolgate.db")); err != nil {
		t.Errorf("no store in dataDir: %v", err)
	}
	for _, args := range [][]string{{"keys", "list"}, {"keys", "rotate", id}, {"audit"}, {"tools", "pending"}} {
		if code, _, errOut := run(t, "", append([]string{"-c", cfg}, args...)...); code != 0 || strings.Contains(errOut, "not set") {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
	}
	// What the commands use is still checked.
	if err := os.WriteFile(cfg, []byte(`{"dataDir": 5, "mcpServers": {"a": {"url": "${TG_UNSET_URL}"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, "", "-c", cfg, "keys", "list"); code != exitFailed || !strings.Contains(errOut, "dataDir") || strings.Contains(errOut, "TG_UNSET_URL") {
		t.Errorf("bad dataDir: exit %d: %s", code, errOut)
	}
}

func TestKeysHash(t *testing.T) {
	want := apikey.Hash("tg_secret")
	code, out, errOut := run(t, "tg_secret\n", "keys", "hash")
	if code != 0 || strings.TrimSpace(out) != want {
		t.Errorf("from stdin: exit %d, %q %q; want %s", code, out, errOut, want)
	}
	code, out, _ = run(t, "", "keys", "hash", "tg_secret")
	if code != 0 || strings.TrimSpace(out) != want {
		t.Errorf("from argument: exit %d, %q", code, out)
	}
	code, _, errOut = run(t, "", "keys", "hash")
	if code != exitUsage || !strings.Contains(errOut, "no key given") {
		t.Errorf("empty: exit %d, %q", code, errOut)
	}

	code, out, _ = run(t, "", "keys", "hash", "--generate")
	var key, hash string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "key:"); ok {
			key = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "sha256:"); ok {
			hash = strings.TrimSpace(v)
		}
	}
	if _, _, err := apikey.Parse(key); code != 0 || err != nil || hash != apikey.Hash(key) {
		t.Errorf("--generate: exit %d, output %q", code, out)
	}
}

func TestParseLifetime(t *testing.T) {
	tests := []struct {
		in    string
		never bool
		want  time.Duration
		err   bool
	}{
		{"90d", true, 90 * 24 * time.Hour, false},
		{"1d12h", true, 36 * time.Hour, false},
		{"36h", false, 36 * time.Hour, false},
		{"90m", false, 90 * time.Minute, false},
		{"0", false, 0, false},
		{"0d", false, 0, false},
		{"never", true, 0, false},
		{"never", false, 0, true},
		{"", false, 0, true},
		{"d", false, 0, true},
		{"-1d", true, 0, true},
		{"+1d", true, 0, true},
		{"1d-1h", true, 0, true},
		{"1dd", true, 0, true},
		{"99999999d", true, 0, true},
		{"36500d2562047h", true, 0, true},
	}
	for _, tt := range tests {
		got, err := parseLifetime("--x", tt.in, tt.never)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseLifetime(%q, %v) = %v, %v; want %v, error %v", tt.in, tt.never, got, err, tt.want, tt.err)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                  "0s",
		1500 * time.Millisecond:       "2s",
		90 * time.Minute:              "1h30m",
		5 * time.Hour:                 "5h",
		24 * time.Hour:                "1 day",
		48*time.Hour - time.Second:    "2 days",
		36 * time.Hour:                "1 day 12h",
		90*24*time.Hour + time.Minute: "90 days 1m",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestKeyStorePath(t *testing.T) {
	if got, want := keyStorePath(nil), filepath.Join("toolgate-data", "toolgate.db"); got != want {
		t.Errorf("keyStorePath(nil) = %q, want %q", got, want)
	}
	if got, want := keyStorePath(&config.Config{DataDir: "/var/lib/toolgate"}), "/var/lib/toolgate/toolgate.db"; got != want {
		t.Errorf("keyStorePath = %q, want %q", got, want)
	}
}
