package benchcompare

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// The npm servers a run needs, pinned by a package.json and lock file of
// their own (the same versions as the end-to-end tests' e2e/npm, a test
// keeps the two in step). Outside a source checkout, Run installs them
// once with `npm ci` into the user's cache folder.

//go:embed npm/package.json npm/package-lock.json
var npmProject embed.FS

// npmProjectFiles are the files of the embedded npm project.
var npmProjectFiles = []string{"package.json", "package-lock.json"}

// npmCacheName is the folder, inside the user's cache folder, that holds
// the installed servers: one subfolder per version of the lock file.
var npmCacheName = filepath.Join("toolgate", "bench-compare-npm")

// npmLockHash names the installation of the embedded lock file.
func npmLockHash() string {
	b, err := npmProject.ReadFile("npm/package-lock.json")
	if err != nil {
		panic(err) // embedded
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// hasServers reports whether the node_modules folder dir holds both
// servers' entry points.
func hasServers(dir string) bool {
	for _, entry := range []string{filesystemEntry, memoryEntry} {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(entry))); err != nil {
			return false
		}
	}
	return true
}

// nodeModules returns the node_modules folder of dir: dir/node_modules
// when dir is an npm project folder holding one, else dir itself.
func nodeModules(dir string) string {
	if filepath.Base(dir) != "node_modules" {
		if st, err := os.Stat(filepath.Join(dir, "node_modules")); err == nil && st.IsDir() {
			return filepath.Join(dir, "node_modules")
		}
	}
	return dir
}

// installServers returns the node_modules folder of the pinned servers in
// the cache folder cache ("" means the user's cache folder), installing
// them with npm ci the first time, with npm's output and a line before
// and after on progress.
func installServers(ctx context.Context, cache string, progress io.Writer) (string, error) {
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no folder to install the npm servers in (%v): pass --npm-dir, or set $TOOLGATE_NPM_DIR", err)
		}
		cache = filepath.Join(base, npmCacheName)
	}
	final := filepath.Join(cache, npmLockHash())
	nm := filepath.Join(final, "node_modules")
	if hasServers(nm) {
		return nm, nil
	}
	if progress == nil {
		progress = io.Discard
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", errors.New("the npm MCP servers are not installed and npm is not on $PATH: install Node.js with npm, or pass --npm-dir the folder where they are installed")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("creating the npm cache folder: %w", err)
	}
	// Install beside the final folder, then move it in place, so that an
	// interrupted install leaves nothing that looks complete.
	tmp, err := os.MkdirTemp(cache, ".install-")
	if err != nil {
		return "", fmt.Errorf("creating the npm cache folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, name := range npmProjectFiles {
		b, err := npmProject.ReadFile("npm/" + name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return "", err
		}
	}
	fmt.Fprintf(progress, "Installing the npm MCP servers bench compare runs (@modelcontextprotocol/server-filesystem and server-memory, pinned) into %s; this happens once.\n", final)
	start := time.Now()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--no-update-notifier", "--ignore-scripts")
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = progress, progress
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("installing the npm servers with npm ci in %s: %w", tmp, err)
	}
	if !hasServers(filepath.Join(tmp, "node_modules")) {
		return "", fmt.Errorf("npm ci in %s did not install the servers", tmp)
	}
	if err := os.Rename(tmp, final); err != nil && !hasServers(nm) {
		// Not another run that installed them first: an incomplete
		// earlier install is in the way.
		os.RemoveAll(final)
		if err := os.Rename(tmp, final); err != nil {
			return "", fmt.Errorf("moving the npm servers into %s: %w", final, err)
		}
	}
	fmt.Fprintf(progress, "Installed the npm MCP servers in %.1f s.\n", time.Since(start).Seconds())
	return nm, nil
}
