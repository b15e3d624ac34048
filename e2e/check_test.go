package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// runToolgateSplit runs the toolgate binary to completion in dir and
// returns its exit code, standard output and standard error apart.
func runToolgateSplit(t *testing.T, dir string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runToolgateWithin(t, 60*time.Second, dir, env, args...)
}

// runToolgateWithin is runToolgateSplit for a command that may take up to
// timeout.
func runToolgateWithin(t *testing.T, timeout time.Duration, dir string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2etest.BuildBinary(t, "./cmd/toolgate"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// `toolgate check --json` grades files that do not load: each problem is a
// failed check with its key path, next to the checks that could still
// run, in exactly one JSON document, with exit code 1. The reports are
// in testdata/check/*.golden.json (go test -run TestCheckGradesAnyFile
// -update rewrites them).
func TestCheckGradesAnyFile(t *testing.T) {
	for _, tt := range []struct {
		file     string
		wantFail []string // key paths of failed checks ("" for the file)
	}{
		{"broken.json", []string{"limits.maxInFlightCalls", "mcpServers.files.comand", "mcpServers.search.headers.Authorization"}},
		{"insecure.json", []string{"mcpServers.github.url", "mcpServers.github.headers.Authorization", "auth.required", "listen", "codeMode.allowFetch"}},
		{"unparsable.yaml", []string{""}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "check", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.file), data, 0o600); err != nil {
				t.Fatal(err)
			}
			// broken.json names a variable that must not be set.
			t.Setenv("TOOLGATE_E2E_UNSET_TOKEN", "")
			os.Unsetenv("TOOLGATE_E2E_UNSET_TOKEN")
			code, out, errOut := runToolgateSplit(t, dir, nil, "check", "--json", "-c", tt.file)
			if code != 1 || !strings.Contains(errOut, "fails the security checklist") {
				t.Errorf("exit %d, stderr %q; want 1", code, errOut)
			}
			dec := json.NewDecoder(strings.NewReader(out))
			var rep struct {
				Items []struct {
					ID, Status, Path string
				}
				Summary struct{ Failed int }
			}
			if err := dec.Decode(&rep); err != nil {
				t.Fatalf("stdout is not a JSON document: %v\n%s", err, out)
			}
			if dec.More() {
				t.Errorf("stdout holds more than one JSON document:\n%s", out)
			}
			failed := map[string]bool{}
			for _, it := range rep.Items {
				if it.Status == "fail" {
					failed[it.Path] = true
				}
			}
			for _, p := range tt.wantFail {
				if !failed[p] {
					t.Errorf("no failed check at %q; failed: %v", p, failed)
				}
			}
			if strings.Contains(out, "FAKEfake") {
				t.Error("the report shows the literal token")
			}

			golden := filepath.Join("testdata", "check", strings.TrimSuffix(tt.file, filepath.Ext(tt.file))+".golden.json")
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run TestCheckGradesAnyFile -update writes it)", err)
			}
			if diff := cmp.Diff(string(want), out); diff != "" {
				t.Errorf("report differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}
