package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var fuzzFormats = []string{FormatJSON, FormatYAML, FormatTOML}

// fuzzEnv sets every variable except those whose name starts with U.
func fuzzEnv(name string) (string, bool) {
	if strings.HasPrefix(name, "U") {
		return "", false
	}
	return "v-" + name, true
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		format, err := FormatOf(file)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(slices.Index(fuzzFormats, format)))
	}
	f.Add([]byte(`{"mcpServers": {"a": {"url": "${UNSET}", "Type": "sse", "prefix": "a.b"}}}`), uint8(0))
	f.Add([]byte("projects:\n  p:\n    mcpServers:\n      s: {command: x, timeout: 5}\n"), uint8(1))

	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		format := fuzzFormats[int(sel)%len(fuzzFormats)]
		c, err := parse(data, format, fuzzEnv)
		c2, err2 := parse(data, format, fuzzEnv)
		// Deterministic, whatever the map iteration order.
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("parse is not deterministic: %v\nthen: %v", err, err2)
		}
		if err != nil {
			if c != nil {
				t.Fatalf("parse returned a config and an error: %v", err)
			}
			var ce *Error
			if errors.As(err, &ce) {
				if len(ce.Problems) == 0 {
					t.Fatal("*Error without problems")
				}
				if !slices.IsSortedFunc(ce.Problems, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) }) {
					t.Fatalf("problems not sorted: %v", ce.Problems)
				}
			}
			return
		}
		if diff := cmp.Diff(c, c2); diff != "" {
			t.Fatalf("parse is not deterministic:\n%s", diff)
		}
		checkInvariants(t, c)
	})
}

// checkInvariants checks what Load promises about a valid Config.
func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if c.Listen == "" || c.CallTimeout <= 0 || c.StartupTimeout <= 0 {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if len(c.Projects) == 0 || c.MCPServers != nil || c.AllowedTools != nil {
		t.Fatalf("not normalised: %+v", c)
	}
	for name, p := range c.Projects {
		if p == nil || p.Name != name {
			t.Fatalf("project %q: bad name", name)
		}
		for sn, s := range p.MCPServers {
			if s == nil || s.Name != sn {
				t.Fatalf("server %q: bad name", sn)
			}
			if (s.Command == "") == (s.URL == "") {
				t.Fatalf("server %q: want exactly one of command and url", sn)
			}
			if s.Type != "" || !slices.Contains([]string{"", TransportStdio, TransportHTTP, TransportSSE}, s.Transport) {
				t.Fatalf("server %q: transport %q type %q", sn, s.Transport, s.Type)
			}
			if s.Command != "" && s.Transport != TransportStdio {
				t.Fatalf("server %q: command with transport %q", sn, s.Transport)
			}
			if s.Timeout < 0 {
				t.Fatalf("server %q: negative timeout", sn)
			}
		}
	}
}
