package config

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseProblems(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format string // FormatJSON when empty
		doc    string
		env    map[string]string
		want   []string // lines of the error, all of them
	}{
		// Strict decoding.
		{
			name: "unknown server key",
			doc:  `{"mcpServers": {"github": {"comand": "npx", "url": "https://h/mcp"}}}`,
			want: []string{`mcpServers.github.comand: unknown key (did you mean "command"?)`},
		},
		{
			name: "unknown top-level key",
			doc:  `{"tlsConfig": {"certFile": "x"}}`,
			want: []string{`tlsConfig: unknown key`},
		},
		{
			name: "tls needs both files and a known version",
			doc:  `{"tls": {"certFile": "c.pem", "minVersion": "1.0"}}`,
			want: []string{`tls: needs both certFile and keyFile`, `tls.minVersion: unsupported TLS version "1.0" (want "1.2" or "1.3")`},
		},
		{
			name: "ip lists name each bad entry",
			doc:  `{"allowedIPs": ["10.0.0.0/8", "10.0.0.0/33"], "trustedProxies": ["proxy"], "projects": {"p": {"deniedIPs": ["::1", "nope"]}}}`,
			want: []string{
				`allowedIPs[1]: "10.0.0.0/33" is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address`,
				`projects.p.deniedIPs[1]: "nope" is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address`,
				`trustedProxies[0]: "proxy" is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address`,
			},
		},
		{
			name: "host and origin lists name each bad entry",
			doc: `{"allowedHosts": ["mcp.example.com", "*", "MCP.example.com:8443", "[::1]:8080", "fd00::1", "http://x", "a:0", "[::1", "bad host"],
				"allowedOrigins": ["https://app.example.com", "*", "null", "ftp://x", "https://x/path", "http://h:99999"],
				"projects": {"p": {"allowedHosts": ["ok.example"], "allowedOrigins": ["app.example.com"]}}}`,
			want: []string{
				`allowedHosts[5]: "http://x": want a host name or address with an optional port (no scheme or path)`,
				`allowedHosts[6]: "a:0": invalid port "0"`,
				`allowedHosts[7]: "[::1": missing ]`,
				`allowedHosts[8]: "bad host": want a host name or address with an optional port (no scheme or path)`,
				`allowedOrigins[2]: "null": the "null" origin (sandboxed frames, local files) cannot be allowed`,
				`allowedOrigins[3]: "ftp://x": want an http or https origin (scheme://host[:port])`,
				`allowedOrigins[4]: "https://x/path": want scheme://host[:port], nothing else`,
				`allowedOrigins[5]: "http://h:99999": invalid port "99999"`,
				`projects.p.allowedOrigins[0]: "app.example.com": want an http or https origin (scheme://host[:port])`,
			},
		},
		{
			name: "config keys need a name and a sha256",
			doc:  `{"apiKeys": [{"name": "", "sha256": "abc"}]}`,
			want: []string{`apiKeys[0].name: empty key name`, `apiKeys[0].sha256: want the 64 hex digits of the SHA-256 of the key (toolgate keys hash prints it)`},
		},
		{
			name: "negative limits",
			doc:  `{"rateLimit": {"burst": -1}, "toolLimits": {"a__b": {"requestsPerMinute": -5}}, "limits": {"maxSessionsPerKey": -1}}`,
			want: []string{`limits.maxSessionsPerKey: must not be negative`, `rateLimit: rates and bursts must not be negative`, `toolLimits.a__b: rates and bursts must not be negative`},
		},
		{
			name: "plain http upstream off loopback",
			doc:  `{"mcpServers": {"api": {"url": "http://api.example.com/mcp"}, "local": {"url": "http://127.0.0.1:9/mcp"}, "ok": {"url": "http://10.1.2.3/mcp", "allowInsecure": true}}}`,
			want: []string{`mcpServers.api.url: plain http to api.example.com sends credentials and results in the clear: use https, or set allowInsecure: true`},
		},
		{
			name: "audit and alert rules",
			doc:  `{"audit": {"fsync": "never"}, "alerts": {"webhook": "ftp://x", "rules": [{"event": "tool.cal", "threshold": 0, "window": "0s"}]}}`,
			want: []string{
				`alerts.rules[0].event: unknown event type "tool.cal" (one of auth.failure, tool.call, tool.denied, ratelimit.hit, ip.denied, code.execution, code.fetch, upstream.error, upstream.restart, config.reload, key.created, key.rotated, key.revoked, tools.changed, audit.retention, origin.denied, store.unavailable)`,
				`alerts.rules[0].threshold: must be at least 1`,
				`alerts.rules[0].window: must be a positive duration`,
				`alerts.webhook: invalid url: want an absolute http or https URL`,
				`audit.fsync: unknown mode "never" (want "batch" or "always")`,
			},
		},
		{
			name: "cluster engines",
			doc:  `{"cluster": {"node": "a b", "redis": {"url": "http://secret@h:6379", "timeout": "-1s"}, "postgres": {"url": "postgres:///db"}}}`,
			want: []string{
				`cluster.node: invalid node name "a b" (want 1 to 64 letters, digits, '.', '_' or '-')`,
				`cluster.postgres.url: missing host`,
				`cluster.redis.timeout: negative duration "-1s"`,
				`cluster.redis.url: want a redis:// or rediss:// URL`,
			},
		},
		{
			name: "cluster settings without their engine",
			doc:  `{"cluster": {"node": "a", "redis": {"failOpen": true}, "postgres": {"url": "mysql://h/db"}}}`,
			want: []string{
				`cluster.postgres.url: want a postgres:// or postgresql:// URL`,
				`cluster.redis: failOpen and timeout need cluster.redis.url`,
			},
		},
		{
			name: "cluster urls from the environment",
			doc:  `{"cluster": {"redis": {"url": "${REDIS_URL}"}, "postgres": {"url": "${PG_URL}"}}}`,
			env:  map[string]string{"REDIS_URL": "redis://:pw@127.0.0.1:6379/0"},
			want: []string{`cluster.postgres.url: environment variable PG_URL is not set`},
		},
		{
			name: "unknown key in a project",
			doc:  `{"projects": {"team": {"mcpServers": {"a": {"command": "x", "args2": []}}}}}`,
			want: []string{`projects.team.mcpServers.a.args2: unknown key (did you mean "args"?)`},
		},
		{
			name: "name is not a key",
			doc:  `{"mcpServers": {"a": {"name": "b", "command": "x"}}}`,
			want: []string{`mcpServers.a.name: unknown key`},
		},
		{
			name: "duplicate key differing in case",
			doc:  `{"mcpServers": {"a": {"command": "x", "Command": "y"}}}`,
			want: []string{`mcpServers.a.Command: duplicate key (also given as "command")`},
		},
		{
			name: "string expected",
			doc:  `{"mcpServers": {"a": {"command": 5}}}`,
			want: []string{`mcpServers.a.command: expected a string, got a number (quote it)`},
		},
		{
			name:   "yaml number as env value",
			format: FormatYAML,
			doc:    "mcpServers:\n  a:\n    command: x\n    env: {PORT: 8080}\n",
			want:   []string{`mcpServers.a.env.PORT: expected a string, got a number (quote it)`},
		},
		{
			name: "list expected",
			doc:  `{"mcpServers": {"a": {"command": "x", "args": "-y"}}}`,
			want: []string{`mcpServers.a.args: expected a list of strings, got a string`},
		},
		{
			name: "null in a list",
			doc:  `{"mcpServers": {"a": {"command": "x", "args": ["a", null]}}}`,
			want: []string{`mcpServers.a.args[1]: expected a string, got null`},
		},
		{
			name: "object expected",
			doc:  `{"mcpServers": ["a"]}`,
			want: []string{`mcpServers: expected an object, got a list`},
		},
		{
			name: "boolean expected",
			doc:  `{"mcpServers": {"a": {"command": "x", "disabled": "yes"}}}`,
			want: []string{`mcpServers.a.disabled: expected true or false, got a string`},
		},
		{
			name:   "yaml key not a string",
			format: FormatYAML,
			doc:    "mcpServers:\n  a:\n    command: x\n    env: {1: one}\n",
			want:   []string{`mcpServers.a.env: key 1 is not a string (quote it)`},
		},
		{
			name: "odd keys are quoted in paths",
			doc:  `{"mcpServers": {"a": {"url": "https://h/mcp", "headers": {"X.Y": "${NOPE}"}}}}`,
			want: []string{`mcpServers.a.headers["X.Y"]: environment variable NOPE is not set`},
		},

		// Durations.
		{
			name: "bad duration string",
			doc:  `{"callTimeout": "abc"}`,
			want: []string{`callTimeout: invalid duration "abc" (want e.g. "60s" or a number of milliseconds): time: invalid duration "abc"`},
		},
		{
			name: "duration without unit",
			doc:  `{"callTimeout": "60"}`,
			want: []string{`callTimeout: invalid duration "60" (want e.g. "60s" or a number of milliseconds): time: missing unit in duration "60"`},
		},
		{
			name: "negative duration string",
			doc:  `{"startupTimeout": "-5s"}`,
			want: []string{`startupTimeout: negative duration "-5s"`},
		},
		{
			name: "negative grace period",
			doc:  `{"shutdownGracePeriod": "-1s"}`,
			want: []string{`shutdownGracePeriod: negative duration "-1s"`},
		},
		{
			name: "grace period too long",
			doc:  `{"shutdownGracePeriod": "2h"}`,
			want: []string{`shutdownGracePeriod: at most 1h (got 2h0m0s)`},
		},
		{
			name: "negative retention",
			doc:  `{"audit": {"retainAtLeast": "-24h"}}`,
			want: []string{`audit.retainAtLeast: negative duration "-24h"`},
		},
		{
			name: "negative in-flight cap",
			doc:  `{"limits": {"maxInFlightCalls": -3}}`,
			want: []string{`limits.maxInFlightCalls: must not be negative`},
		},
		{
			name: "negative milliseconds",
			doc:  `{"mcpServers": {"a": {"command": "x", "timeout": -1}}}`,
			want: []string{`mcpServers.a.timeout: negative duration -1ms`},
		},
		{
			name: "huge milliseconds",
			doc:  `{"callTimeout": 1e300}`,
			want: []string{`callTimeout: duration 1e+300ms is too large`},
		},
		{
			name: "duration of the wrong type",
			doc:  `{"callTimeout": true}`,
			want: []string{`callTimeout: expected a duration ("60s" or a number of milliseconds), got a boolean`},
		},

		// Interpolation.
		{
			name: "missing variable",
			doc:  `{"mcpServers": {"api": {"url": "https://h/mcp", "headers": {"Authorization": "Bearer ${API_TOKEN}"}}}}`,
			want: []string{`mcpServers.api.headers.Authorization: environment variable API_TOKEN is not set`},
		},
		{
			name: "missing variable env spelling, in args",
			doc:  `{"mcpServers": {"a": {"command": "x", "args": ["ok", "--key=${env:KEY}"]}}}`,
			want: []string{`mcpServers.a.args[1]: environment variable KEY is not set`},
		},
		{
			name: "every missing variable",
			doc:  `{"mcpServers": {"a": {"command": "${A}", "cwd": "${B}/${C}", "env": {"X": "${D}"}}}}`,
			want: []string{
				`mcpServers.a.command: environment variable A is not set`,
				`mcpServers.a.cwd: environment variable B is not set`,
				`mcpServers.a.cwd: environment variable C is not set`,
				`mcpServers.a.env.X: environment variable D is not set`,
			},
		},
		{
			name: "missing url variable is not also a bad url",
			doc:  `{"mcpServers": {"a": {"url": "${API_URL}"}}}`,
			want: []string{`mcpServers.a.url: environment variable API_URL is not set`},
		},
		{
			name: "unterminated reference",
			doc:  `{"mcpServers": {"a": {"command": "x", "args": ["${TOKEN"]}}}`,
			want: []string{`mcpServers.a.args[0]: unterminated reference "${TOKEN" (missing "}")`},
		},
		{
			name: "empty reference",
			doc:  `{"mcpServers": {"a": {"command": "x", "env": {"A": "${}", "B": "${env:}"}}}}`,
			want: []string{
				`mcpServers.a.env.A: empty reference "${}"`,
				`mcpServers.a.env.B: empty reference "${env:}"`,
			},
		},
		{
			name: "invalid variable name",
			doc:  `{"mcpServers": {"a": {"command": "x", "cwd": "${1DIR}", "args": ["${A-B}", "${X:-default}"]}}}`,
			want: []string{
				`mcpServers.a.args[0]: invalid reference "${A-B}" (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)`,
				`mcpServers.a.args[1]: invalid reference "${X:-default}" (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)`,
				`mcpServers.a.cwd: invalid reference "${1DIR}" (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)`,
			},
		},
		{
			name: "a bad url does not show the secret",
			doc:  `{"mcpServers": {"a": {"url": "ftp://${TOKEN}@h/"}}}`,
			env:  map[string]string{"TOKEN": "hunter2"},
			want: []string{`mcpServers.a.url: invalid url "ftp://${TOKEN}@h/": want an absolute http or https URL`},
		},

		// Servers.
		{
			name: "both command and url",
			doc:  `{"mcpServers": {"a": {"command": "x", "url": "https://h/mcp"}}}`,
			want: []string{`mcpServers.a: has both command and url (set exactly one)`},
		},
		{
			name: "neither command nor url",
			doc:  `{"mcpServers": {"a": {"args": ["x"]}}}`,
			want: []string{`mcpServers.a: needs command (a local server) or url (a remote one)`},
		},
		{
			name: "null server",
			doc:  `{"mcpServers": {"a": null}}`,
			want: []string{`mcpServers.a: needs command (a local server) or url (a remote one)`},
		},
		{
			name: "bad urls",
			doc: `{"mcpServers": {
				"a": {"url": "ftp://h/mcp"},
				"b": {"url": "/relative/mcp"},
				"c": {"url": "https:///mcp"},
				"d": {"url": "http://h:port/"}
			}}`,
			want: []string{
				`mcpServers.a.url: invalid url "ftp://h/mcp": want an absolute http or https URL`,
				`mcpServers.b.url: invalid url "/relative/mcp": want an absolute http or https URL`,
				`mcpServers.c.url: invalid url "https:///mcp": missing host`,
				`mcpServers.d.url: invalid url "http://h:port/": invalid port ":port" after host`,
			},
		},
		{
			name: "stdio options with url",
			doc:  `{"mcpServers": {"a": {"url": "https://h/mcp", "args": ["x"], "env": {"A": "b"}, "cwd": "/"}}}`,
			want: []string{
				`mcpServers.a.args: only valid with command, not url`,
				`mcpServers.a.cwd: only valid with command, not url`,
				`mcpServers.a.env: only valid with command, not url`,
			},
		},
		{
			name: "headers with command",
			doc:  `{"mcpServers": {"a": {"command": "x", "headers": {"A": "b"}}}}`,
			want: []string{`mcpServers.a.headers: only valid with url, not command`},
		},
		{
			name: "conflicting type and transport",
			doc:  `{"mcpServers": {"a": {"url": "https://h/mcp", "transport": "sse", "type": "streamable-http"}}}`,
			want: []string{`mcpServers.a.type: type "streamable-http" conflicts with transport "sse"`},
		},
		{
			name: "unknown transport",
			doc:  `{"mcpServers": {"a": {"url": "https://h/mcp", "transport": "websocket", "type": "grpc"}}}`,
			want: []string{
				`mcpServers.a.transport: unknown transport "websocket" (want stdio, http or sse)`,
				`mcpServers.a.type: unknown transport "grpc" (want stdio, http or sse)`,
			},
		},
		{
			name: "stdio transport with url",
			doc:  `{"mcpServers": {"a": {"url": "https://h/mcp", "type": "stdio"}}}`,
			want: []string{`mcpServers.a.transport: transport stdio needs command, not url`},
		},
		{
			name: "http transport with command",
			doc:  `{"mcpServers": {"a": {"command": "x", "transport": "http"}}}`,
			want: []string{`mcpServers.a.transport: transport http needs url, not command`},
		},
		{
			name: "bad server names",
			doc:  `{"mcpServers": {"my server": {"command": "x"}, "": {"command": "x"}, "a.b": {"command": "x"}}}`,
			want: []string{
				`mcpServers[""]: invalid server name "" (want 1 to 64 letters, digits, _ or -)`,
				`mcpServers["a.b"]: invalid server name "a.b" (want 1 to 64 letters, digits, _ or -)`,
				`mcpServers["my server"]: invalid server name "my server" (want 1 to 64 letters, digits, _ or -)`,
			},
		},
		{
			name: "server name too long",
			doc:  `{"mcpServers": {"` + strings.Repeat("a", 65) + `": {"command": "x"}}}`,
			want: []string{`mcpServers.` + strings.Repeat("a", 65) + `: invalid server name "` + strings.Repeat("a", 40) + `..." (want 1 to 64 letters, digits, _ or -)`},
		},
		{
			name: "bad project name",
			doc:  `{"projects": {"a/b": {}}}`,
			want: []string{`projects["a/b"]: invalid project name "a/b" (want 1 to 64 letters, digits, _ or -)`},
		},
		{
			name: "bad prefix",
			doc:  `{"mcpServers": {"a": {"command": "x", "prefix": "my prefix"}, "b": {"command": "x", "prefix": "x:y"}}}`,
			want: []string{
				`mcpServers.a.prefix: invalid prefix "my prefix" (want at most 64 letters, digits, _, . or -)`,
				`mcpServers.b.prefix: invalid prefix "x:y" (want at most 64 letters, digits, _, . or -)`,
			},
		},
		{
			name: "bad globs",
			doc: `{"mcpServers": {"a": {"command": "x",
				"allowedToolsGlob": ["ok_*", "{a,b"],
				"denyToolsGlob": [""],
				"allowedResourcesGlob": ["file://[z-a]"],
				"denyResourcesGlob": ["\\"],
				"allowedPromptsGlob": ["[]"],
				"denyPromptsGlob": ["}"]}}}`, // a lone } is a literal
			want: []string{
				`mcpServers.a.allowedPromptsGlob[0]: invalid glob "[]": glob: syntax error at 2: could not parse range`,
				`mcpServers.a.allowedResourcesGlob[0]: invalid glob "file://[z-a]": glob: syntax error at 12: range hi character is less than lo`,
				"mcpServers.a.allowedToolsGlob[1]: invalid glob \"{a,b\": glob: syntax error at 4: unclosed `{`",
				`mcpServers.a.denyResourcesGlob[0]: invalid glob "\\": glob: syntax error at 1: trailing backslash`,
				`mcpServers.a.denyToolsGlob[0]: empty pattern`,
			},
		},
		{
			name: "empty allowed tool names",
			doc:  `{"allowedTools": ["a__b", ""], "mcpServers": {"a": {"command": "x", "allowedTools": [" "]}}}`,
			want: []string{
				`allowedTools[1]: empty tool name`,
				`mcpServers.a.allowedTools[0]: empty tool name`,
			},
		},

		// The file as a whole.
		{
			name: "projects and top-level servers",
			doc:  `{"allowedTools": ["a__b"], "mcpServers": {"a": {"command": "x"}}, "projects": {"p": {}}}`,
			want: []string{
				`allowedTools: not allowed together with projects (move it into a project)`,
				`mcpServers: not allowed together with projects (move it into a project)`,
			},
		},
		{
			name: "no projects",
			doc:  `{"projects": {}}`,
			want: []string{`projects: no projects defined`},
		},
		{
			name: "bad listen",
			doc:  `{"listen": "localhost"}`,
			want: []string{`listen: invalid address "localhost": missing port in address (want host:port)`},
		},
		{
			name: "bad listen port",
			doc:  `{"listen": "localhost:99999"}`,
			want: []string{`listen: invalid port "99999" in "localhost:99999"`},
		},
		{
			name:   "toml",
			format: FormatTOML,
			doc:    "[mcpServers.a]\ncomand = \"x\"\n",
			want: []string{
				`mcpServers.a: needs command (a local server) or url (a remote one)`,
				`mcpServers.a.comand: unknown key (did you mean "command"?)`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format := tc.format
			if format == "" {
				format = FormatJSON
			}
			c, err := parse([]byte(tc.doc), format, env(tc.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("parse error = %v, want *Error", err)
			}
			if c != nil {
				t.Errorf("parse returned a config with an error")
			}
			if diff := cmp.Diff(strings.Join(tc.want, "\n"), err.Error()); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	for _, tc := range []struct {
		name, format, doc, want string
	}{
		{"json", FormatJSON, `{"a": }`, "decode json: "},
		{"json not an object", FormatJSON, `[1]`, "decode json: "},
		{"yaml", FormatYAML, "a: [", "decode yaml: "},
		{"toml", FormatTOML, "a = ", "decode toml: "},
		{"format", "ini", "", `unknown config format "ini"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse([]byte(tc.doc), tc.format, env(nil))
			var ce *Error
			if err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parse error = %v, want a non-*Error containing %q", err, tc.want)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	e := newError([]Problem{
		{Path: "b", Message: "two"},
		{Path: "", Message: "whole file"},
		{Path: "a", Message: "one"},
		{Path: "a", Message: "one"},
	})
	want := []Problem{{Path: "", Message: "whole file"}, {Path: "a", Message: "one"}, {Path: "b", Message: "two"}}
	if !slices.Equal(e.Problems, want) {
		t.Errorf("Problems = %v, want %v", e.Problems, want)
	}
	if got, want := e.Error(), "whole file\na: one\nb: two"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e.File = "toolgate.yaml"
	if got, want := e.Error(), "toolgate.yaml: whole file\ntoolgate.yaml: a: one\ntoolgate.yaml: b: two"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// A value from the environment is not in the file: its line names
	// the variable instead.
	e.Problems = append(e.Problems, Problem{Path: "listen", Message: "bad", Var: "TOOLGATE_LISTEN"})
	if got, want := e.Error(), "toolgate.yaml: whole file\ntoolgate.yaml: a: one\ntoolgate.yaml: b: two\nTOOLGATE_LISTEN (listen): bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
