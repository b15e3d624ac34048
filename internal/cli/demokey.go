package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/toolgate/toolgate/policy/apikey"
)

// The built-in demo keeps its API key in the user's configuration folder
// (os.UserConfigDir: $XDG_CONFIG_HOME or ~/.config on Linux, ~/Library/
// Application Support on macOS, %AppData% on Windows), in
// toolgate/demo/key, so that a client set up with the key the demo printed
// keeps working when the demo starts again. Only the demo's key is there:
// it opens the demo's tools and nothing else. Removing the file gives the
// next demo a new key.

// demoKeyFile is the file of the demo's key inside the user's
// configuration folder.
var demoKeyFile = filepath.Join("toolgate", "demo", "key")

// demoKey is the demo's API key and where it is kept.
type demoKey struct {
	key string
	// path is the file holding the key; "" when it could not be kept, and
	// then why says why (the key lasts as long as the process).
	path, why string
	// created is set when the key is new.
	created bool
}

// loadDemoKey returns the demo's key from its file, creating the file with
// a new key the first time. A key that cannot be kept (no configuration
// folder, a folder that cannot be written) is still returned, for this
// run only, with the reason.
func loadDemoKey() (demoKey, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return freshDemoKey(fmt.Sprintf("no folder to keep it in: %v", err))
	}
	path := filepath.Join(base, demoKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key := strings.TrimSpace(string(b))
		if _, _, perr := apikey.Parse(key); perr == nil {
			return demoKey{key: key, path: path}, nil
		}
		// Not a key: replace it below.
	case !errors.Is(err, fs.ErrNotExist):
		return freshDemoKey(fmt.Sprintf("%s cannot be read: %v", path, unwrapPathError(err)))
	}
	key, _, _, err := apikey.Generate()
	if err != nil {
		return demoKey{}, err
	}
	if err := writeDemoKey(path, key); err != nil {
		return demoKey{key: key, why: fmt.Sprintf("%s cannot be written: %v", path, err)}, nil
	}
	return demoKey{key: key, path: path, created: true}, nil
}

func freshDemoKey(why string) (demoKey, error) {
	key, _, _, err := apikey.Generate()
	if err != nil {
		return demoKey{}, err
	}
	return demoKey{key: key, why: why}, nil
}

// writeDemoKey writes the key readable by its owner only, replacing the
// file in one step so that a demo starting at the same time reads either
// the old file or the new one.
func writeDemoKey(path, key string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return unwrapPathError(err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return unwrapPathError(err)
	}
	defer os.Remove(f.Name()) // fails once renamed
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
