package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clearEnv unsets, for the test, every variable that overrides a setting
// and TOOLGATE_CONFIG, so that the environment of the test run does not
// leak into what the test reads.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

// TestEnvVarNames lists every variable that overrides a setting. A new
// gateway-wide setting appears here (and needs a line); renaming a key
// renames its variable, which operators' deployments rely on.
func TestEnvVarNames(t *testing.T) {
	want := [][2]string{
		{"alerts.webhook", "TOOLGATE_ALERTS_WEBHOOK"},
		{"allowInsecureHTTP", "TOOLGATE_ALLOW_INSECURE_HTTP"},
		{"allowedHosts", "TOOLGATE_ALLOWED_HOSTS"},
		{"allowedIPs", "TOOLGATE_ALLOWED_IPS"},
		{"allowedOrigins", "TOOLGATE_ALLOWED_ORIGINS"},
		{"audit.fsync", "TOOLGATE_AUDIT_FSYNC"},
		{"audit.fsyncInterval", "TOOLGATE_AUDIT_FSYNC_INTERVAL"},
		{"audit.logArguments", "TOOLGATE_AUDIT_LOG_ARGUMENTS"},
		{"audit.maxFiles", "TOOLGATE_AUDIT_MAX_FILES"},
		{"audit.maxSizeMB", "TOOLGATE_AUDIT_MAX_SIZE_MB"},
		{"audit.path", "TOOLGATE_AUDIT_PATH"},
		{"audit.retainAtLeast", "TOOLGATE_AUDIT_RETAIN_AT_LEAST"},
		{"audit.stdout", "TOOLGATE_AUDIT_STDOUT"},
		{"auth.required", "TOOLGATE_AUTH_REQUIRED"},
		{"callTimeout", "TOOLGATE_CALL_TIMEOUT"},
		{"cluster.node", "TOOLGATE_CLUSTER_NODE"},
		{"cluster.postgres.url", "TOOLGATE_CLUSTER_POSTGRES_URL"},
		{"cluster.redis.failOpen", "TOOLGATE_CLUSTER_REDIS_FAIL_OPEN"},
		{"cluster.redis.timeout", "TOOLGATE_CLUSTER_REDIS_TIMEOUT"},
		{"cluster.redis.url", "TOOLGATE_CLUSTER_REDIS_URL"},
		{"codeMode.allowFetch", "TOOLGATE_CODE_MODE_ALLOW_FETCH"},
		{"codeMode.declarationBudgetBytes", "TOOLGATE_CODE_MODE_DECLARATION_BUDGET_BYTES"},
		{"codeMode.directTools", "TOOLGATE_CODE_MODE_DIRECT_TOOLS"},
		{"codeMode.enabled", "TOOLGATE_CODE_MODE_ENABLED"},
		{"codeMode.fetchAllowHosts", "TOOLGATE_CODE_MODE_FETCH_ALLOW_HOSTS"},
		{"codeMode.fetchMaxRequests", "TOOLGATE_CODE_MODE_FETCH_MAX_REQUESTS"},
		{"codeMode.fetchMaxResponseBytes", "TOOLGATE_CODE_MODE_FETCH_MAX_RESPONSE_BYTES"},
		{"codeMode.maxCodeBytes", "TOOLGATE_CODE_MODE_MAX_CODE_BYTES"},
		{"codeMode.maxConcurrentExecutions", "TOOLGATE_CODE_MODE_MAX_CONCURRENT_EXECUTIONS"},
		{"codeMode.maxConcurrentToolCalls", "TOOLGATE_CODE_MODE_MAX_CONCURRENT_TOOL_CALLS"},
		{"codeMode.maxOutputBytes", "TOOLGATE_CODE_MODE_MAX_OUTPUT_BYTES"},
		{"codeMode.maxStackKB", "TOOLGATE_CODE_MODE_MAX_STACK_KB"},
		{"codeMode.maxToolCalls", "TOOLGATE_CODE_MODE_MAX_TOOL_CALLS"},
		{"codeMode.memoryLimitMB", "TOOLGATE_CODE_MODE_MEMORY_LIMIT_MB"},
		{"codeMode.timeout", "TOOLGATE_CODE_MODE_TIMEOUT"},
		{"dataDir", "TOOLGATE_DATA_DIR"},
		{"deniedIPs", "TOOLGATE_DENIED_IPS"},
		{"keyMaxAge", "TOOLGATE_KEY_MAX_AGE"},
		{"limits.idleTimeout", "TOOLGATE_LIMITS_IDLE_TIMEOUT"},
		{"limits.maxHeaderBytes", "TOOLGATE_LIMITS_MAX_HEADER_BYTES"},
		{"limits.maxInFlightCalls", "TOOLGATE_LIMITS_MAX_IN_FLIGHT_CALLS"},
		{"limits.maxRequestBodyBytes", "TOOLGATE_LIMITS_MAX_REQUEST_BODY_BYTES"},
		{"limits.maxSessionsPerKey", "TOOLGATE_LIMITS_MAX_SESSIONS_PER_KEY"},
		{"limits.readHeaderTimeout", "TOOLGATE_LIMITS_READ_HEADER_TIMEOUT"},
		{"limits.readTimeout", "TOOLGATE_LIMITS_READ_TIMEOUT"},
		{"limits.writeTimeout", "TOOLGATE_LIMITS_WRITE_TIMEOUT"},
		{"listen", "TOOLGATE_LISTEN"},
		{"metrics.listen", "TOOLGATE_METRICS_LISTEN"},
		{"quarantineChangedTools", "TOOLGATE_QUARANTINE_CHANGED_TOOLS"},
		{"sessionKey", "TOOLGATE_SESSION_KEY"},
		{"shutdownGracePeriod", "TOOLGATE_SHUTDOWN_GRACE_PERIOD"},
		{"startupTimeout", "TOOLGATE_STARTUP_TIMEOUT"},
		{"tls.certFile", "TOOLGATE_TLS_CERT_FILE"},
		{"tls.keyFile", "TOOLGATE_TLS_KEY_FILE"},
		{"tls.minVersion", "TOOLGATE_TLS_MIN_VERSION"},
		{"trustedProxies", "TOOLGATE_TRUSTED_PROXIES"},
	}
	var got [][2]string
	for _, s := range envSettings {
		got = append(got, [2]string{s.path, s.name})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("variables (-want +got):\n%s", diff)
	}
}

// loadEnv writes doc as toolgate.json into a folder of its own, sets
// vars, and loads it.
func loadEnv(t *testing.T, doc string, vars map[string]string) (*Config, error) {
	t.Helper()
	clearEnv(t)
	for k, v := range vars {
		t.Setenv(k, v)
	}
	path := filepath.Join(t.TempDir(), "toolgate.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func TestEnvOverrides(t *testing.T) {
	for _, tc := range []struct {
		name    string
		doc     string
		vars    map[string]string
		got     func(*Config) any
		want    any
		wantEnv []EnvOverride
	}{
		{
			name: "default", doc: `{}`,
			got: func(c *Config) any { return c.Listen }, want: DefaultListen,
		},
		{
			name: "file over default", doc: `{"listen": "127.0.0.1:9000"}`,
			got: func(c *Config) any { return c.Listen }, want: "127.0.0.1:9000",
		},
		{
			name: "environment over file", doc: `{"listen": "127.0.0.1:9000"}`,
			vars: map[string]string{"TOOLGATE_LISTEN": "127.0.0.1:9001"},
			got:  func(c *Config) any { return c.Listen }, want: "127.0.0.1:9001",
			wantEnv: []EnvOverride{{"listen", "TOOLGATE_LISTEN"}},
		},
		{
			name: "environment over default", doc: `{}`,
			vars: map[string]string{"TOOLGATE_LISTEN": "[::1]:9001"},
			got:  func(c *Config) any { return c.Listen }, want: "[::1]:9001",
			wantEnv: []EnvOverride{{"listen", "TOOLGATE_LISTEN"}},
		},
		{
			name: "empty variable is not set", doc: `{"listen": "127.0.0.1:9000"}`,
			vars: map[string]string{"TOOLGATE_LISTEN": ""},
			got:  func(c *Config) any { return c.Listen }, want: "127.0.0.1:9000",
		},
		{
			name: "key of the file in another case", doc: `{"Listen": "127.0.0.1:9000", "CODEMODE": {"Timeout": 5000}}`,
			vars: map[string]string{"TOOLGATE_LISTEN": "127.0.0.1:9001", "TOOLGATE_CODE_MODE_TIMEOUT": "7s"},
			got:  func(c *Config) any { return []any{c.Listen, c.CodeMode.Timeout.D()} }, want: []any{"127.0.0.1:9001", 7 * time.Second},
			wantEnv: []EnvOverride{{"codeMode.timeout", "TOOLGATE_CODE_MODE_TIMEOUT"}, {"listen", "TOOLGATE_LISTEN"}},
		},
		{
			name: "duration string", doc: `{"codeMode": {"timeout": 5000}}`,
			vars: map[string]string{"TOOLGATE_CODE_MODE_TIMEOUT": "1m30s"},
			got:  func(c *Config) any { return c.CodeMode.Timeout.D() }, want: 90 * time.Second,
			wantEnv: []EnvOverride{{"codeMode.timeout", "TOOLGATE_CODE_MODE_TIMEOUT"}},
		},
		{
			name: "duration in milliseconds", doc: `{}`,
			vars: map[string]string{"TOOLGATE_CALL_TIMEOUT": "2500"},
			got:  func(c *Config) any { return c.CallTimeout.D() }, want: 2500 * time.Millisecond,
			wantEnv: []EnvOverride{{"callTimeout", "TOOLGATE_CALL_TIMEOUT"}},
		},
		{
			name: "integer, the rest of the section from the file", doc: `{"limits": {"maxHeaderBytes": 1024}}`,
			vars: map[string]string{"TOOLGATE_LIMITS_MAX_REQUEST_BODY_BYTES": "1048576"},
			got:  func(c *Config) any { return []any{c.Limits.MaxRequestBodyBytes, c.Limits.MaxHeaderBytes} }, want: []any{int64(1 << 20), 1024},
			wantEnv: []EnvOverride{{"limits.maxRequestBodyBytes", "TOOLGATE_LIMITS_MAX_REQUEST_BODY_BYTES"}},
		},
		{
			name: "booleans", doc: `{"codeMode": {"enabled": false}}`,
			vars: map[string]string{"TOOLGATE_CODE_MODE_ENABLED": "true", "TOOLGATE_AUDIT_STDOUT": "1", "TOOLGATE_AUTH_REQUIRED": "false"},
			got:  func(c *Config) any { return []any{c.CodeMode.Enabled, c.Audit.Stdout, c.AuthRequired()} }, want: []any{true, true, false},
			wantEnv: []EnvOverride{
				{"audit.stdout", "TOOLGATE_AUDIT_STDOUT"}, {"auth.required", "TOOLGATE_AUTH_REQUIRED"}, {"codeMode.enabled", "TOOLGATE_CODE_MODE_ENABLED"}},
		},
		{
			name: "list", doc: `{"allowedIPs": ["192.168.0.0/16"]}`,
			vars:    map[string]string{"TOOLGATE_ALLOWED_IPS": " 10.0.0.0/8, 127.0.0.1/32 ,", "TOOLGATE_CODE_MODE_FETCH_ALLOW_HOSTS": "api.example.com"},
			got:     func(c *Config) any { return [][]string{c.AllowedIPs, c.CodeMode.FetchAllowHosts} },
			want:    [][]string{{"10.0.0.0/8", "127.0.0.1/32"}, {"api.example.com"}},
			wantEnv: []EnvOverride{{"allowedIPs", "TOOLGATE_ALLOWED_IPS"}, {"codeMode.fetchAllowHosts", "TOOLGATE_CODE_MODE_FETCH_ALLOW_HOSTS"}},
		},
		{
			name: "string of a section", doc: `{"audit": {"fsync": "always"}}`,
			vars:    map[string]string{"TOOLGATE_AUDIT_PATH": "/var/log/toolgate/audit.jsonl", "TOOLGATE_METRICS_LISTEN": "127.0.0.1:9100"},
			got:     func(c *Config) any { return []string{c.Audit.Path, c.Audit.Fsync, c.Metrics.Listen} },
			want:    []string{"/var/log/toolgate/audit.jsonl", "always", "127.0.0.1:9100"},
			wantEnv: []EnvOverride{{"audit.path", "TOOLGATE_AUDIT_PATH"}, {"metrics.listen", "TOOLGATE_METRICS_LISTEN"}},
		},
		{
			name: "not interpolated", doc: `{}`,
			vars: map[string]string{"TOOLGATE_TLS_CERT_FILE": "/certs/${HOST}.pem", "TOOLGATE_TLS_KEY_FILE": "/certs/key.pem"},
			got:  func(c *Config) any { return c.TLS.CertFile }, want: "/certs/${HOST}.pem",
			wantEnv: []EnvOverride{{"tls.certFile", "TOOLGATE_TLS_CERT_FILE"}, {"tls.keyFile", "TOOLGATE_TLS_KEY_FILE"}},
		},
		{
			name: "keys of a project have no variable", doc: `{"rateLimit": {"burst": 5}}`,
			vars: map[string]string{"TOOLGATE_RATE_LIMIT_BURST": "9", "TOOLGATE_MCP_SERVERS": "x", "TOOLGATE_PROJECTS": "x"},
			got:  func(c *Config) any { return c.Projects[DefaultProject].RateLimit.Burst }, want: 5,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadEnv(t, tc.doc, tc.vars)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tc.want, tc.got(c)); diff != "" {
				t.Errorf("value (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantEnv, c.FromEnv); diff != "" {
				t.Errorf("FromEnv (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnvBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		vars map[string]string
		want []string // lines of the error
	}{
		{
			name: "not an integer", doc: `{"limits": {"maxHeaderBytes": 1024}}`,
			vars: map[string]string{"TOOLGATE_LIMITS_MAX_HEADER_BYTES": "64KiB"},
			want: []string{`TOOLGATE_LIMITS_MAX_HEADER_BYTES (limits.maxHeaderBytes): expected an integer, got "64KiB"`},
		},
		{
			name: "not a boolean", doc: `{}`,
			vars: map[string]string{"TOOLGATE_CODE_MODE_ENABLED": "yes"},
			want: []string{`TOOLGATE_CODE_MODE_ENABLED (codeMode.enabled): expected true or false, got "yes"`},
		},
		{
			name: "not a duration", doc: `{}`,
			vars: map[string]string{"TOOLGATE_CODE_MODE_TIMEOUT": "soon"},
			want: []string{`TOOLGATE_CODE_MODE_TIMEOUT (codeMode.timeout): invalid duration "soon" (want e.g. "60s" or a number of milliseconds): time: invalid duration "soon"`},
		},
		{
			name: "negative duration", doc: `{}`,
			vars: map[string]string{"TOOLGATE_CALL_TIMEOUT": "-5"},
			want: []string{`TOOLGATE_CALL_TIMEOUT (callTimeout): negative duration -5ms`},
		},
		{
			name: "integer out of range", doc: `{}`,
			vars: map[string]string{"TOOLGATE_LIMITS_MAX_HEADER_BYTES": "99999999999999999999"},
			want: []string{`TOOLGATE_LIMITS_MAX_HEADER_BYTES (limits.maxHeaderBytes): expected an integer, got "99999999999999999999"`},
		},
		{
			name: "fails validation", doc: `{"audit": {"fsync": "batch"}}`,
			vars: map[string]string{"TOOLGATE_AUDIT_FSYNC": "sometimes", "TOOLGATE_LISTEN": "nowhere"},
			want: []string{
				`TOOLGATE_AUDIT_FSYNC (audit.fsync): unknown mode "sometimes" (want "batch" or "always")`,
				`TOOLGATE_LISTEN (listen): `,
			},
		},
		{
			name: "element of a list", doc: `{}`,
			vars: map[string]string{"TOOLGATE_TRUSTED_PROXIES": "10.0.0.0/8,10.0.0.0/33"},
			want: []string{`TOOLGATE_TRUSTED_PROXIES (trustedProxies[1]): `},
		},
		{
			name: "file problems keep the file's name", doc: `{"callTimeout": "x"}`,
			vars: map[string]string{"TOOLGATE_STARTUP_TIMEOUT": "y"},
			want: []string{`toolgate.json: callTimeout: invalid duration "x"`, `TOOLGATE_STARTUP_TIMEOUT (startupTimeout): invalid duration "y"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadEnv(t, tc.doc, tc.vars)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load error = %v, want an *Error", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("error has %d lines, want %d:\n%s", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want it to contain %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestInspectEnv(t *testing.T) {
	clearEnv(t)
	t.Setenv("TOOLGATE_CODE_MODE_MAX_TOOL_CALLS", "many")
	t.Setenv("TOOLGATE_DATA_DIR", "state")
	dir := t.TempDir()
	path := filepath.Join(dir, "toolgate.yaml")
	doc := "codeMode:\n  maxToolCalls: 7\ntls:\n  certFile: c.pem\n  keyFile: k.pem\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	// The bad value is left out (the default stands), not the file's.
	want := []Problem{{Path: "codeMode.maxToolCalls", Message: `expected an integer, got "many"`, Var: "TOOLGATE_CODE_MODE_MAX_TOOL_CALLS"}}
	if diff := cmp.Diff(want, in.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if got := in.Config.CodeMode.MaxToolCalls; got != 100 {
		t.Errorf("maxToolCalls = %d, want the default 100", got)
	}
	// A relative path from the environment is relative to the working
	// directory, one from the file to the file's folder.
	c := in.Config
	if c.DataDir != "state" || c.Audit.Path != filepath.Join("state", "audit.jsonl") || c.TLS.CertFile != filepath.Join(dir, "c.pem") {
		t.Errorf("dataDir %q, audit.path %q, tls.certFile %q", c.DataDir, c.Audit.Path, c.TLS.CertFile)
	}
	// The file as written does not hold the environment's values.
	if v, _ := in.File.Get("codeMode").Get("maxToolCalls").Text(); v != "" || in.File.Get("dataDir").Exists() {
		t.Errorf("the file's tree holds values of the environment")
	}
}

func TestParseIgnoresEnvOverrides(t *testing.T) {
	clearEnv(t)
	t.Setenv("TOOLGATE_LISTEN", "127.0.0.1:1")
	c, err := Parse([]byte(`{}`), FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.FromEnv != nil {
		t.Errorf("listen %q, from the environment %v", c.Listen, c.FromEnv)
	}
}

func TestLoadDemo(t *testing.T) {
	const url, sum = "http://127.0.0.1:1234/mcp", "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
	clearEnv(t)
	got, err := LoadDemo(url, sum)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Demo(url, sum), got); diff != "" {
		t.Errorf("LoadDemo without variables differs from Demo (-want +got):\n%s", diff)
	}

	t.Setenv("TOOLGATE_LISTEN", "127.0.0.1:9999")
	t.Setenv("TOOLGATE_CODE_MODE_DIRECT_TOOLS", "false")
	got, err = LoadDemo(url, sum)
	if err != nil {
		t.Fatal(err)
	}
	if got.Listen != "127.0.0.1:9999" || got.CodeMode.DirectTools || !got.CodeMode.Enabled {
		t.Errorf("listen %q, codeMode %+v", got.Listen, got.CodeMode)
	}

	t.Setenv("TOOLGATE_LISTEN", "nowhere")
	if _, err := LoadDemo(url, sum); err == nil || !strings.HasPrefix(err.Error(), "TOOLGATE_LISTEN (listen): ") {
		t.Errorf("LoadDemo with a bad listen: %v", err)
	}
}

// TestSessionKey checks that sessionKey is taken from the environment only
// (a reference in the file, or TOOLGATE_SESSION_KEY), that each of its keys
// is long enough, and that no message quotes it.
func TestSessionKey(t *testing.T) {
	long := strings.Repeat("k", SessionKeyMinLen)
	for _, tc := range []struct {
		name    string
		doc     string
		vars    map[string]string
		want    []string // the keys; nil when the file is refused
		problem string
	}{
		{name: "none", doc: `{}`},
		{name: "a reference", doc: `{"sessionKey": "${SK}"}`, vars: map[string]string{"SK": long}, want: []string{long}},
		{name: "two references for a rotation", doc: `{"sessionKey": "${NEW}, ${OLD}"}`, vars: map[string]string{"NEW": long + "n", "OLD": long + "o"}, want: []string{long + "n", long + "o"}},
		{name: "the variable", doc: `{}`, vars: map[string]string{"TOOLGATE_SESSION_KEY": long + "," + long + "2"}, want: []string{long, long + "2"}},
		{name: "the variable over a literal", doc: `{"sessionKey": "in-the-file"}`, vars: map[string]string{"TOOLGATE_SESSION_KEY": long}, want: []string{long}},
		{name: "a literal", doc: `{"sessionKey": "` + long + `"}`, problem: "sessionKey: a secret does not belong in the file"},
		{name: "a literal beside a reference", doc: `{"sessionKey": "${SK}x"}`, vars: map[string]string{"SK": long}, problem: "sessionKey: a secret does not belong in the file"},
		{name: "too short", doc: `{"sessionKey": "${SK}"}`, vars: map[string]string{"SK": "short-secret"}, problem: "sessionKey: key 1 is 12 bytes long: at least 32 are needed"},
		{name: "second too short", vars: map[string]string{"TOOLGATE_SESSION_KEY": long + ",tiny"}, doc: `{}`, problem: "TOOLGATE_SESSION_KEY (sessionKey): key 2 is 4 bytes long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadEnv(t, tc.doc, tc.vars)
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("Load error = %v, want %q", err, tc.problem)
				}
				if strings.Contains(err.Error(), long) || strings.Contains(err.Error(), "short-secret") {
					t.Errorf("the error quotes the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tc.want, c.SessionKeys()); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}
