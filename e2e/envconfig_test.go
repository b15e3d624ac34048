package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// `toolgate serve` takes its settings from TOOLGATE_ variables over the
// file (and --listen over both), finds its file through TOOLGATE_CONFIG
// or $XDG_CONFIG_HOME/toolgate, and runs the demo, moved by the same
// variables, when there is no file.
func TestServeFromEnvironment(t *testing.T) {
	bin := e2etest.BuildBinary(t, "./cmd/toolgate")
	fileAddr := fmt.Sprintf("127.0.0.1:%d", e2etest.FreePort(t))
	envAddr := fmt.Sprintf("127.0.0.1:%d", e2etest.FreePort(t))
	doc := `{"listen": "` + fileAddr + `", "mcpServers": {}}`

	tests := []struct {
		name  string
		file  string // where the configuration is written, under home/ (or "" for none)
		args  []string
		env   []string // HOME/ stands for the test's home folder
		want  string   // the address it listens on ("" for any other)
		extra string   // a line of stderr to wait for
	}{
		{name: "TOOLGATE_LISTEN over the file", file: "work/toolgate.json", args: []string{"-c", "HOME/work/toolgate.json"},
			env: []string{"TOOLGATE_LISTEN=" + envAddr}, want: envAddr, extra: "vars=TOOLGATE_LISTEN"},
		{name: "--listen over TOOLGATE_LISTEN", file: "work/toolgate.json", args: []string{"-c", "HOME/work/toolgate.json", "--listen", "127.0.0.1:0"},
			env: []string{"TOOLGATE_LISTEN=" + envAddr}},
		{name: "the file without TOOLGATE_LISTEN", file: "work/toolgate.json", args: []string{"-c", "HOME/work/toolgate.json"}, want: fileAddr},
		{name: "TOOLGATE_CONFIG", file: "etc/gw.json", env: []string{"TOOLGATE_CONFIG=HOME/etc/gw.json"}, want: fileAddr},
		{name: "XDG_CONFIG_HOME", file: "xdg/toolgate/toolgate.json", env: []string{"XDG_CONFIG_HOME=HOME/xdg"}, want: fileAddr},
		{name: "~/.config", file: ".config/toolgate/toolgate.json", want: fileAddr},
		{name: "demo moved by TOOLGATE_LISTEN", env: []string{"TOOLGATE_LISTEN=" + envAddr}, want: envAddr, extra: "built-in demo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			home := t.TempDir()
			cwd := filepath.Join(home, "cwd")
			if err := os.Mkdir(cwd, 0o755); err != nil {
				t.Fatal(err)
			}
			if tt.file != "" {
				p := filepath.Join(home, filepath.FromSlash(tt.file))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// Only the places of this test may hold a configuration.
			env := []string{"HOME=" + home, "XDG_CONFIG_HOME=", "TOOLGATE_CONFIG=", "TOOLGATE_LISTEN="}
			for _, kv := range tt.env {
				env = append(env, strings.ReplaceAll(kv, "HOME/", home+"/"))
			}
			args := []string{"serve"}
			for _, a := range tt.args {
				args = append(args, strings.ReplaceAll(a, "HOME/", home+"/"))
			}
			proc := e2etest.StartProcess(t, e2etest.ProcOptions{Path: bin, Args: args, Env: env, Dir: cwd})
			line := proc.WaitForLine(t, "toolgate listening on", 60*time.Second)
			m := listeningLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("no address in %q", line)
			}
			got := strings.TrimPrefix(m[1], "http://")
			switch {
			case tt.want != "" && got != tt.want:
				t.Errorf("listening on %s, want %s", got, tt.want)
			case tt.want == "" && (got == envAddr || got == fileAddr):
				t.Errorf("listening on %s, want a port of its own", got)
			}
			if tt.extra != "" {
				proc.WaitForLine(t, tt.extra, 10*time.Second)
			}
			resp, err := http.Get(m[1] + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("/healthz: %s", resp.Status)
			}
		})
	}
}

// A bad value in a TOOLGATE_ variable stops serve with the variable's
// name, as a bad value in the file does with its key path.
func TestServeRefusesBadEnvironment(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "toolgate.json"), []byte(`{"mcpServers": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runToolgateSplit(t, dir, []string{"TOOLGATE_LISTEN=nowhere", "TOOLGATE_CODE_MODE_MAX_TOOL_CALLS=lots"}, "serve")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		`TOOLGATE_CODE_MODE_MAX_TOOL_CALLS (codeMode.maxToolCalls): expected an integer, got "lots"`,
		`TOOLGATE_LISTEN (listen): invalid address "nowhere"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}
