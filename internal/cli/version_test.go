package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/buildinfo"
)

// TestVersion runs `toolgate version` in both forms; the versions of
// go-sdk, wazero and qjs come from the test binary's build information,
// which links all three.
func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"version", "--json"}, strings.NewReader(""), &out, &errb); code != exitOK {
		t.Fatalf("version --json: exit %d, %s", code, errb.String())
	}
	var info buildinfo.Info
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		t.Fatalf("version --json printed %s: %v", out.String(), err)
	}
	// A test binary records no dependencies: the versions are checked on
	// real builds (e2e, TestMakeInstall and TestInstallAsADependency).
	var names []string
	for _, d := range info.Dependencies {
		names = append(names, d.Name)
	}
	if info.Version == "" || info.Go == "" || strings.Join(names, " ") != "go-sdk wazero qjs" {
		t.Errorf("version --json = %+v", info)
	}

	out.Reset()
	if code := Main([]string{"version"}, strings.NewReader(""), &out, &errb); code != exitOK {
		t.Fatalf("version: exit %d, %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{"toolgate", "commit", "go", "go-sdk", "wazero", "qjs"}
	if len(lines) != len(want) {
		t.Fatalf("version printed %q, want the lines %q", out.String(), want)
	}
	for i, w := range want {
		if f := strings.Fields(lines[i]); len(f) < 2 || f[0] != w {
			t.Errorf("line %d = %q, want %s and its value", i+1, lines[i], w)
		}
	}
	if !strings.HasPrefix(out.String(), "toolgate  "+info.Version+"\n") {
		t.Errorf("version printed\n%s\nnot starting with the version %s", out.String(), info.Version)
	}

	if code := Main([]string{"version", "extra"}, strings.NewReader(""), &out, &errb); code != exitUsage {
		t.Errorf("version extra: exit %d, want %d", code, exitUsage)
	}
}
