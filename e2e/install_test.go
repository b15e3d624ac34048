package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/buildinfo"
)

// The versions `toolgate version` must report: those toolgate's go.mod
// requires.
var linkedVersions = map[string]string{
	"go-sdk": "v1.8.0",
	"wazero": "v1.11.0",
	"qjs":    "v0.0.6",
}

// TestInstallAsADependency builds the command the way `go install
// github.com/toolgate/toolgate/cmd/toolgate@VERSION` builds it: as a
// package of a module that another module requires. The go command then
// ignores the replace directives of toolgate's go.mod (and go install
// refuses a module that has any), so the command must build from
// toolgate's requirements alone: the released go-sdk, no local copies.
// The consumer module reaches this checkout through a replace of its
// own, which is allowed there.
func TestInstallAsADependency(t *testing.T) {
	root := moduleRoot(t)

	// What go install checks first: no replace or exclude directive.
	out, err := exec.Command("go", "mod", "edit", "-json", filepath.Join(root, "go.mod")).Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	var mod struct {
		Replace []any
		Exclude []any
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	if len(mod.Replace) > 0 || len(mod.Exclude) > 0 {
		t.Errorf("go.mod has %d replace and %d exclude directives; go install module@version refuses it", len(mod.Replace), len(mod.Exclude))
	}

	consumer := t.TempDir()
	gomod := "module toolgate.test/consumer\n\ngo 1.26.0\n\n" +
		"require " + buildinfo.Module + " v0.0.0-00010101000000-000000000000\n\n" +
		"replace " + buildinfo.Module + " => " + root + "\n"
	if err := os.WriteFile(filepath.Join(consumer, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	// Start from toolgate's sums, so that the build needs no network.
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(consumer, "go.sum"), sums, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(consumer, "toolgate")
	build := exec.Command("go", "build", "-mod=mod", "-o", bin, buildinfo.Module+"/cmd/toolgate")
	build.Dir = consumer
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the command as a dependency: %v\n%s", err, b)
	}

	info := versionInfo(t, bin)
	// Built as a dependency, toolgate is the replaced requirement.
	if want := "v0.0.0-00010101000000-000000000000 => " + root; info.Version != want {
		t.Errorf("version %q, want %q", info.Version, want)
	}
	if info.Commit != "" {
		t.Errorf("commit %q, want none (the consumer's build knows none)", info.Commit)
	}
	checkLinked(t, info)
}

// TestMakeInstall runs `make install` into a folder of its own and
// `toolgate version` on what it installed: the commit of the checkout and
// a version naming it, "+dirty" and modified when the tree has
// uncommitted changes.
func TestMakeInstall(t *testing.T) {
	root := moduleRoot(t)
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	status, err := exec.Command("git", "-C", root, "status", "--porcelain").Output()
	if err != nil {
		t.Fatal(err)
	}
	gobin := t.TempDir()
	make := exec.Command("make", "-C", root, "install")
	make.Env = append(os.Environ(), "GOBIN="+gobin)
	if b, err := make.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, b)
	}
	bin := filepath.Join(gobin, "toolgate")
	info := versionInfo(t, bin)
	checkLinked(t, info)
	commit := strings.TrimSpace(string(head))
	modified := len(status) > 0
	if info.Commit != commit || info.Modified != modified {
		t.Errorf("commit %q (modified %v), want the checkout's %s (modified %v)", info.Commit, info.Modified, commit, modified)
	}
	if !strings.HasPrefix(info.Version, "v") || strings.HasSuffix(info.Version, "+dirty") != modified {
		t.Errorf("version %q, want a version, with +dirty when modified (%v)", info.Version, modified)
	}

	text, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("toolgate version: %v", err)
	}
	commitLine := "commit    " + commit
	if modified {
		commitLine += " (modified)"
	}
	for _, want := range []string{"toolgate  " + info.Version, commitLine, "go-sdk    v1.8.0", "wazero    v1.11.0", "qjs       v0.0.6"} {
		if !strings.Contains(string(text), want+"\n") {
			t.Errorf("toolgate version printed\n%s\nwithout the line %q", text, want)
		}
	}
}

// versionInfo runs `toolgate version --json` with bin.
func versionInfo(t *testing.T, bin string) buildinfo.Info {
	t.Helper()
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("toolgate version --json: %v", err)
	}
	var info buildinfo.Info
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("toolgate version --json printed %s: %v", out, err)
	}
	return info
}

// checkLinked checks the versions of go-sdk, wazero and qjs in info.
func checkLinked(t *testing.T, info buildinfo.Info) {
	t.Helper()
	got := map[string]string{}
	for _, d := range info.Dependencies {
		got[d.Name] = d.Version
	}
	for name, want := range linkedVersions {
		if got[name] != want {
			t.Errorf("%s %q, want %s", name, got[name], want)
		}
	}
}

// moduleRoot is the folder of toolgate's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}
