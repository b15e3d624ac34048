package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// env returns a lookup function over a fixed environment.
func env(kv map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := kv[name]
		return v, ok
	}
}

func ptr[T any](v T) *T { return &v }

var fullEnv = map[string]string{
	"SAFE_DIR":  "/safe/path",
	"GH_TOKEN":  "ghp_secret",
	"API_TOKEN": "s3cret",
}

// fullWant is testdata/full.{json,yaml,toml} after loading with fullEnv.
func fullWant() *Config {
	return withDefaults(&Config{
		Listen:         "0.0.0.0:9090",
		CallTimeout:    Duration(45 * time.Second),
		StartupTimeout: Duration(5 * time.Second),
		Projects: map[string]*Project{
			DefaultProject: {
				Name:         DefaultProject,
				AllowedTools: []string{"filesystem__read_file", "GitHub__create_issue"},
				MCPServers: map[string]*Server{
					"filesystem": {
						Name:             "filesystem",
						Command:          "npx",
						Args:             []string{"-y", "@modelcontextprotocol/server-filesystem", "/safe/path"},
						Env:              map[string]string{"NODE_ENV": "production", "GitHub_Token": "ghp_secret"},
						Transport:        TransportStdio,
						AllowedToolsGlob: []string{"read_*", "list_*"},
						DenyToolsGlob:    []string{"*delete*", "*write*", "*remove*"},
						Timeout:          Duration(2 * time.Minute),
					},
					"GitHub": {
						Name:            "GitHub",
						URL:             "https://api.example.com/mcp",
						Headers:         map[string]string{"Authorization": "Bearer s3cret", "X-Template": "${NOT_A_VAR}"},
						Transport:       TransportHTTP,
						Prefix:          ptr(""),
						DenyPromptsGlob: []string{"{admin,debug}_*"},
						Disabled:        true,
					},
					"events": {
						Name:      "events",
						URL:       "https://events.example.com/v1/sse",
						Transport: TransportSSE,
					},
				},
			},
		},
	})
}

func TestParseFormatsEqual(t *testing.T) {
	for _, file := range []string{"full.json", "full.yaml", "full.toml"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			format, err := FormatOf(file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parse(data, format, env(fullEnv))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if diff := cmp.Diff(fullWant(), got); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	for k, v := range fullEnv {
		t.Setenv(k, v)
	}
	path := filepath.Join("testdata", "full.json")
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := fullWant()
	want.Path = path
	want.DataDir = filepath.Join("testdata", DefaultDataDir) // relative to the file
	want.Audit.Path = filepath.Join(want.DataDir, "audit.jsonl")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Run("invalid file lists every problem", func(t *testing.T) {
		path := filepath.Join("testdata", "invalid.json")
		_, err := Load(path)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("Load error = %v, want *Error", err)
		}
		want := strings.Join([]string{
			path + `: listen: invalid address "localhost": missing port in address (want host:port)`,
			path + `: mcpServers.api.headers.Authorization: environment variable API_TOKEN is not set`,
			path + `: mcpServers.api.url: environment variable API_URL is not set`,
			path + `: mcpServers.fs.denyToolsGlob[0]: invalid glob "[a-": glob: syntax error at 3: unexpected end of input`,
			path + `: mcpServers.github: needs command (a local server) or url (a remote one)`,
			path + `: mcpServers.github.comand: unknown key (did you mean "command"?)`,
		}, "\n")
		if diff := cmp.Diff(want, err.Error()); diff != "" {
			t.Errorf("error mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load error = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("unknown extension", func(t *testing.T) {
		_, err := Load("toolgate.ini")
		if err == nil || !strings.Contains(err.Error(), `unknown format ".ini"`) {
			t.Errorf("Load error = %v, want unknown format", err)
		}
	})
	t.Run("syntax error names the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "toolgate.json")
		if err := os.WriteFile(path, []byte(`{"listen": `), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		var ce *Error
		if err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), path) {
			t.Errorf("Load error = %v, want a syntax error naming %s", err, path)
		}
	})
}

func TestParseProjects(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "projects.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := parse(data, FormatYAML, env(nil))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := withDefaults(&Config{
		Listen:         "127.0.0.1:8081",
		CallTimeout:    Duration(DefaultCallTimeout),
		StartupTimeout: Duration(DefaultStartupTimeout),
		Projects: map[string]*Project{
			"team": {
				Name:         "team",
				AllowedTools: []string{"docs__search"},
				MCPServers: map[string]*Server{
					"docs": {Name: "docs", URL: "http://127.0.0.1:9000/mcp", Transport: TransportHTTP},
				},
			},
			"ops": {
				Name: "ops",
				MCPServers: map[string]*Server{
					"shell": {Name: "shell", Command: "./ops-server", Cwd: "/srv/ops", Transport: TransportStdio},
				},
			},
			"empty": {Name: "empty"},
		},
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
}

func TestParseDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, format, doc string
	}{
		{"empty json object", FormatJSON, `{}`},
		{"json null", FormatJSON, `null`},
		{"empty yaml", FormatYAML, ``},
		{"empty toml", FormatTOML, ``},
		{"projects null", FormatYAML, `projects: null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse([]byte(tc.doc), tc.format, env(nil))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			want := withDefaults(&Config{
				Listen:         DefaultListen,
				CallTimeout:    Duration(DefaultCallTimeout),
				StartupTimeout: Duration(DefaultStartupTimeout),
				Projects:       map[string]*Project{DefaultProject: {Name: DefaultProject}},
			})
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDurations(t *testing.T) {
	for _, tc := range []struct {
		name, format, value string
		want                time.Duration
	}{
		{"go string", FormatJSON, `"1m30s"`, 90 * time.Second},
		{"json milliseconds", FormatJSON, `1500`, 1500 * time.Millisecond},
		{"json fractional milliseconds", FormatJSON, `1.5`, 1500 * time.Microsecond},
		{"yaml milliseconds", FormatYAML, `250`, 250 * time.Millisecond},
		{"toml milliseconds", FormatTOML, `250`, 250 * time.Millisecond},
		{"toml float", FormatTOML, `2.0`, 2 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var doc string
			switch tc.format {
			case FormatJSON:
				doc = `{"callTimeout": ` + tc.value + `}`
			case FormatYAML:
				doc = "callTimeout: " + tc.value
			case FormatTOML:
				doc = "callTimeout = " + tc.value
			}
			got, err := parse([]byte(doc), tc.format, env(nil))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got.CallTimeout.D() != tc.want {
				t.Errorf("callTimeout = %v, want %v", got.CallTimeout.D(), tc.want)
			}
		})
	}
}

func TestParseKeepsCase(t *testing.T) {
	doc := `
mcpServers:
  MyServer:
    Command: run        # struct keys match case-insensitively
    ENV: {Api_Key: x, api_key: y}
  myserver:
    URL: https://example.com/mcp
    Headers: {X-Request-ID: abc, Authorization: z}
`
	got, err := parse([]byte(doc), FormatYAML, env(nil))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	servers := got.Projects[DefaultProject].MCPServers
	want := map[string]*Server{
		"MyServer": {Name: "MyServer", Command: "run", Transport: TransportStdio,
			Env: map[string]string{"Api_Key": "x", "api_key": "y"}},
		"myserver": {Name: "myserver", URL: "https://example.com/mcp",
			Headers: map[string]string{"X-Request-ID": "abc", "Authorization": "z"}},
	}
	if diff := cmp.Diff(want, servers); diff != "" {
		t.Errorf("servers mismatch (-want +got):\n%s", diff)
	}
}

func TestParseInterpolation(t *testing.T) {
	doc := `{
  "mcpServers": {
    "local": {
      "command": "${BIN_DIR}/server",
      "args": ["--token=${env:TOKEN}", "$${LITERAL}", "cost: $5", "${EMPTY}"],
      "env": {"TOKEN": "${TOKEN}", "PATH": "${env:PATH_}:/bin"},
      "cwd": "${HOME_}"
    },
    "remote": {
      "url": "https://${HOST}/mcp",
      "headers": {"Authorization": "Bearer ${TOKEN}", "X-Glob": "$${a}${TOKEN}"},
      "allowedToolsGlob": ["${NOT_INTERPOLATED}"]
    }
  }
}`
	lookup := env(map[string]string{
		"BIN_DIR": "/opt/bin", "TOKEN": "t0k", "EMPTY": "", "PATH_": "/usr/bin",
		"HOME_": "/home/me", "HOST": "api.example.com",
	})
	got, err := parse([]byte(doc), FormatJSON, lookup)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	servers := got.Projects[DefaultProject].MCPServers
	want := map[string]*Server{
		"local": {
			Name:      "local",
			Command:   "/opt/bin/server",
			Args:      []string{"--token=t0k", "${LITERAL}", "cost: $5", ""},
			Env:       map[string]string{"TOKEN": "t0k", "PATH": "/usr/bin:/bin"},
			Cwd:       "/home/me",
			Transport: TransportStdio,
		},
		"remote": {
			Name:             "remote",
			URL:              "https://api.example.com/mcp",
			Headers:          map[string]string{"Authorization": "Bearer t0k", "X-Glob": "${a}t0k"},
			AllowedToolsGlob: []string{"${NOT_INTERPOLATED}"},
		},
	}
	if diff := cmp.Diff(want, servers); diff != "" {
		t.Errorf("servers mismatch (-want +got):\n%s", diff)
	}
}

func TestParseTransport(t *testing.T) {
	for _, tc := range []struct {
		name, server, want string
	}{
		{"command", `{"command": "x"}`, TransportStdio},
		{"explicit stdio", `{"command": "x", "transport": "stdio"}`, TransportStdio},
		{"type stdio", `{"command": "x", "type": "stdio"}`, TransportStdio},
		{"url", `{"url": "https://h/mcp"}`, ""},
		{"url ending in sse", `{"url": "https://h/sse"}`, TransportSSE},
		{"url ending in sse slash", `{"url": "https://h/x/sse/?a=b"}`, TransportSSE},
		{"sse only as a suffix", `{"url": "https://h/sse/mcp"}`, ""},
		{"type http", `{"url": "https://h/sse", "type": "http"}`, TransportHTTP},
		{"type streamable-http", `{"url": "https://h/mcp", "type": "streamable-http"}`, TransportHTTP},
		{"type streamableHttp", `{"url": "https://h/mcp", "type": "streamableHttp"}`, TransportHTTP},
		{"transport sse", `{"url": "https://h/events", "transport": "sse"}`, TransportSSE},
		{"type and transport agree", `{"url": "https://h/mcp", "transport": "http", "type": "streamable-http"}`, TransportHTTP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"mcpServers": {"s": ` + tc.server + `}}`
			got, err := parse([]byte(doc), FormatJSON, env(nil))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			s := got.Projects[DefaultProject].MCPServers["s"]
			if s.Transport != tc.want || s.Type != "" {
				t.Errorf("transport, type = %q, %q; want %q, \"\"", s.Transport, s.Type, tc.want)
			}
		})
	}
}

func TestFind(t *testing.T) {
	// Files and variables name places under the test's own folder: cwd/
	// is the working directory, home/ is $HOME, xdg/ is $XDG_CONFIG_HOME
	// and etc/ stands for /etc/toolgate. ROOT/ in a variable or in want
	// is that folder.
	for _, tc := range []struct {
		name     string
		files    []string
		env      map[string]string
		explicit string
		want     string
		wantErr  string
	}{
		{name: "none", want: ""},
		{name: "json", files: []string{"cwd/toolgate.json"}, want: "toolgate.json"},
		{name: "yaml", files: []string{"cwd/toolgate.yaml"}, want: "toolgate.yaml"},
		{name: "yml", files: []string{"cwd/toolgate.yml"}, want: "toolgate.yml"},
		{name: "toml", files: []string{"cwd/toolgate.toml"}, want: "toolgate.toml"},
		{name: "json first", files: []string{"cwd/toolgate.toml", "cwd/toolgate.yaml", "cwd/toolgate.json"}, want: "toolgate.json"},
		{name: "yaml before yml", files: []string{"cwd/toolgate.yml", "cwd/toolgate.yaml"}, want: "toolgate.yaml"},
		{name: "explicit", files: []string{"cwd/toolgate.json", "cwd/other.yaml"}, explicit: "other.yaml", want: "other.yaml"},
		{name: "explicit missing", files: []string{"cwd/toolgate.json"}, explicit: "missing.yaml", want: "missing.yaml", wantErr: "config file: stat missing.yaml: no such file"},
		{name: "explicit directory", files: []string{"cwd/dir/x"}, explicit: "dir", want: "dir", wantErr: "config file dir: is a directory"},
		{name: "directory is skipped", files: []string{"cwd/toolgate.json/x", "cwd/toolgate.toml"}, want: "toolgate.toml"},

		{name: "working directory first", env: map[string]string{"XDG_CONFIG_HOME": "ROOT/xdg"},
			files: []string{"cwd/toolgate.toml", "xdg/toolgate/toolgate.json", "etc/toolgate.json"}, want: "toolgate.toml"},
		{name: "XDG_CONFIG_HOME", env: map[string]string{"XDG_CONFIG_HOME": "ROOT/xdg", "HOME": "ROOT/home"},
			files: []string{"xdg/toolgate/toolgate.yaml", "home/.config/toolgate/toolgate.json", "etc/toolgate.json"}, want: "ROOT/xdg/toolgate/toolgate.yaml"},
		{name: "XDG_CONFIG_HOME set: ~/.config is not searched", env: map[string]string{"XDG_CONFIG_HOME": "ROOT/xdg", "HOME": "ROOT/home"},
			files: []string{"home/.config/toolgate/toolgate.json", "etc/toolgate.json"}, want: "ROOT/etc/toolgate.json"},
		{name: "~/.config", env: map[string]string{"HOME": "ROOT/home"},
			files: []string{"home/.config/toolgate/toolgate.toml", "etc/toolgate.json"}, want: "ROOT/home/.config/toolgate/toolgate.toml"},
		{name: "relative XDG_CONFIG_HOME is ignored", env: map[string]string{"XDG_CONFIG_HOME": "xdg", "HOME": "ROOT/home"},
			files: []string{"cwd/xdg/toolgate/toolgate.json", "home/.config/toolgate/toolgate.json"}, want: "ROOT/home/.config/toolgate/toolgate.json"},
		{name: "/etc/toolgate", env: map[string]string{"HOME": "ROOT/home"}, files: []string{"etc/toolgate.yml"}, want: "ROOT/etc/toolgate.yml"},
		{name: "a file in the way of a folder", env: map[string]string{"HOME": "ROOT/home"},
			files: []string{"home/.config/toolgate", "etc/toolgate.json"}, want: "ROOT/etc/toolgate.json"},

		{name: "TOOLGATE_CONFIG", env: map[string]string{"TOOLGATE_CONFIG": "ROOT/other/x.yaml"},
			files: []string{"cwd/toolgate.json", "other/x.yaml"}, want: "ROOT/other/x.yaml"},
		{name: "TOOLGATE_CONFIG missing", env: map[string]string{"TOOLGATE_CONFIG": "ROOT/missing.json"},
			files: []string{"cwd/toolgate.json"}, want: "ROOT/missing.json", wantErr: "TOOLGATE_CONFIG: config file: stat "},
		{name: "explicit beats TOOLGATE_CONFIG", env: map[string]string{"TOOLGATE_CONFIG": "b.json"},
			files: []string{"cwd/a.json", "cwd/b.json"}, explicit: "a.json", want: "a.json"},
		{name: "empty TOOLGATE_CONFIG is not set", env: map[string]string{"TOOLGATE_CONFIG": ""},
			files: []string{"cwd/toolgate.json"}, want: "toolgate.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			rooted := func(s string) string {
				if rest, ok := strings.CutPrefix(s, "ROOT/"); ok {
					return filepath.Join(root, filepath.FromSlash(rest))
				}
				return s
			}
			for _, f := range append([]string{"cwd/"}, tc.files...) {
				p := filepath.Join(root, filepath.FromSlash(f))
				if strings.HasSuffix(f, "/") {
					if err := os.MkdirAll(p, 0o755); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			t.Chdir(filepath.Join(root, "cwd"))
			vars := map[string]string{}
			for k, v := range tc.env {
				vars[k] = rooted(v)
			}
			f := finder{lookup: env(vars), system: filepath.Join(root, "etc")}
			got, err := f.find(tc.explicit)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("find(%q) error = %v, want %q", tc.explicit, err, tc.wantErr)
			}
			if want := rooted(tc.want); got != want {
				t.Errorf("find(%q) = %q, want %q", tc.explicit, got, want)
			}
		})
	}

	// Find reads the variables of the process.
	dir := t.TempDir()
	path := filepath.Join(dir, "named.toml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv(EnvConfigFile, path)
	if got, err := Find(""); got != path || err != nil {
		t.Errorf("Find with %s=%s: %q, %v", EnvConfigFile, path, got, err)
	}
}

func TestEqual(t *testing.T) {
	base := func() *Server {
		return &Server{Name: "s", Command: "x", Args: []string{"a"}, Env: map[string]string{"K": "v"}}
	}
	if !Equal(base(), base()) {
		t.Error("Equal(s, copy of s) = false")
	}
	if !Equal(nil, nil) || Equal(nil, base()) || Equal(base(), nil) {
		t.Error("Equal with nil servers is wrong")
	}
	if !Equal(&Server{Args: []string{}, Env: map[string]string{}}, &Server{}) {
		t.Error("empty and nil lists and maps differ")
	}
	if Equal(&Server{Prefix: ptr("")}, &Server{}) {
		t.Error(`prefix "" (no prefix) equals an unset prefix (default prefix)`)
	}
	if !Equal(&Server{Prefix: ptr("p")}, &Server{Prefix: ptr("p")}) {
		t.Error("equal prefixes differ")
	}

	// Every field counts: changing any one of them makes servers differ.
	// This fails when a field is added to Server but not to Equal.
	st := reflect.TypeFor[Server]()
	for i := range st.NumField() {
		f := st.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			a, b := base(), base()
			v := reflect.ValueOf(b).Elem().Field(i)
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "changed")
			case reflect.Slice:
				v.Set(reflect.ValueOf([]string{"changed"}))
			case reflect.Map:
				v.Set(reflect.ValueOf(map[string]string{"changed": "x"}))
			case reflect.Pointer:
				v.Set(reflect.ValueOf(ptr("changed")))
			case reflect.Bool:
				v.SetBool(!v.Bool())
			case reflect.Int64:
				v.SetInt(v.Int() + 1)
			default:
				t.Fatalf("field %s of kind %s: teach this test how to change it", f.Name, v.Kind())
			}
			if Equal(a, b) {
				t.Errorf("Equal ignores a change of %s", f.Name)
			}
		})
	}
}

// withDefaults fills in the defaults Load applies to the access-control
// keys that a test's expected Config leaves out.
func withDefaults(c *Config) *Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	c.TLS.MinVersion = "1.2"
	c.Audit = Audit{Path: filepath.Join(c.DataDir, "audit.jsonl"), Fsync: "batch", FsyncInterval: Duration(100 * time.Millisecond), MaxSizeMB: 100, MaxFiles: 10, RetainAtLeast: Duration(7 * 24 * time.Hour)}
	c.KeyMaxAge = Duration(90 * 24 * time.Hour)
	if c.ShutdownGracePeriod == 0 {
		c.ShutdownGracePeriod = Duration(DefaultShutdownGracePeriod)
	}
	c.CodeMode = CodeMode{Timeout: Duration(10 * time.Second), MemoryLimitMB: 64, MaxToolCalls: 100, MaxConcurrentToolCalls: 8,
		MaxCodeBytes: 256 << 10, MaxOutputBytes: 1 << 20, MaxConcurrentExecutions: 16, DeclarationBudgetBytes: 8192,
		FetchMaxResponseBytes: 1 << 20, FetchMaxRequests: 20}
	c.Limits = Limits{
		MaxRequestBodyBytes: DefaultMaxRequestBodyBytes,
		MaxHeaderBytes:      DefaultMaxHeaderBytes,
		ReadHeaderTimeout:   Duration(DefaultReadHeaderTimeout),
		ReadTimeout:         Duration(DefaultReadTimeout),
		IdleTimeout:         Duration(DefaultIdleTimeout),
		MaxSessionsPerKey:   DefaultMaxSessionsPerKey,
		MaxInFlightCalls:    DefaultMaxInFlightCalls,
	}
	return c
}

// TestLoadState: the state commands' loader reads no `${VAR}` and
// reports only the problems of dataDir, audit and the file as a whole.
func TestLoadState(t *testing.T) {
	dir := t.TempDir()
	write := func(doc string) string {
		p := filepath.Join(dir, "toolgate.json")
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("TG_STATE_SECRET", "s3cret")
	p := write(`{
		"dataDir": "data",
		"audit": {"path": "a.jsonl"},
		"tls": {"certFile": "${TG_STATE_UNSET}"},
		"cluster": {"postgres": {"url": "postgres://tg:${TG_STATE_SECRET}@127.0.0.1/tg"}},
		"mcpServers": {
			"api": {"url": "${TG_STATE_UNSET}", "headers": {"Authorization": "Bearer ${TG_STATE_SECRET}"}},
			"fs": {"command": "${TG_STATE_UNSET}", "args": ["${oops"]},
		},
	}`)
	c, err := LoadState(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "data"); c.DataDir != want || c.Audit.Path != filepath.Join(want, "a.jsonl") {
		t.Errorf("dataDir %q, audit %q", c.DataDir, c.Audit.Path)
	}
	if h := c.Projects[DefaultProject].MCPServers["api"].Headers["Authorization"]; strings.Contains(h, "s3cret") {
		t.Errorf("LoadState read a variable: %q", h)
	}
	// The shared stores the commands open take credentials from the
	// environment.
	if u := c.Cluster.Postgres.URL; u != "postgres://tg:s3cret@127.0.0.1/tg" {
		t.Errorf("cluster.postgres.url = %q, want its variable read", u)
	}
	if _, err := Load(p); err == nil {
		t.Error("Load accepted the file; the test needs one that Load refuses")
	}

	t.Setenv("TOOLGATE_DATA_DIR", filepath.Join(dir, "from-env"))
	if c, err := LoadState(p); err != nil || c.DataDir != filepath.Join(dir, "from-env") {
		t.Errorf("TOOLGATE_DATA_DIR: %v, %v", c, err)
	}
	t.Setenv("TOOLGATE_DATA_DIR", "")

	for doc, want := range map[string]string{
		`{"dataDir": 5}`:                      "dataDir: expected a string",
		`{"audit": {"fsync": "never"}}`:       `audit.fsync: unknown mode "never"`,
		`{"dataDir": "d",`:                    "decode json",
		`{"mcpServers": {"a": {"url": "x"}}}`: "",
	} {
		_, err := LoadState(write(doc))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("LoadState(%s) = %v, want %q", doc, err, want)
		}
	}
}

func TestSearchPlaces(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	s := SearchPlaces()
	if want := []string{".", filepath.Join(home, ".config", "toolgate"), "/etc/toolgate"}; !slices.Equal(s.Dirs, want) {
		t.Errorf("dirs %q, want %q", s.Dirs, want)
	}
	wd, _ := os.Getwd()
	text := s.String()
	for _, want := range []string{"$TOOLGATE_CONFIG is not set", "toolgate.json, toolgate.yaml, toolgate.yml or toolgate.toml", ". (" + wd + ")", home, "/etc/toolgate"} {
		if !strings.Contains(text, want) {
			t.Errorf("%q lacks %q", text, want)
		}
	}
}
