// Package wasm is the WebAssembly layer under the Code Mode sandbox: the
// wazero settings a guest runs with, the compilation cache kept on disk, the
// host-side configuration of what a guest can reach, and linear memory with a
// hard cap and accounting.
//
// It knows nothing about JavaScript: the sandbox package decides what runs in
// a guest and what its memory holds; this package only gives every guest a
// memory it cannot grow past its limit, a way to signal a running guest from
// another goroutine (an atomic write into its memory), and a cache directory
// that lets a restarted process skip compilation.
package wasm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tetratelabs/wazero/experimental"
)

// PageSize is the size of one WebAssembly memory page.
const PageSize = 64 << 10

// MaxMemoryBytes is the largest linear memory a 32-bit guest can address.
const MaxMemoryBytes = 4 << 30

// MissingDir returns a path inside parent that does not exist, for runtimes
// that insist on mounting a host directory as the guest's root: with nothing
// there, the guest can neither read nor create files (wazero fails every
// path lookup with ENOENT). parent must be private to this process's user so
// that nobody else can create the path later; the compilation cache
// directory (mode 0700) is a good parent.
func MissingDir(parent string) (string, error) {
	dir := filepath.Join(parent, ".no-filesystem", "absent")
	if err := os.MkdirAll(filepath.Dir(dir), 0o500); err != nil {
		return "", fmt.Errorf("preparing empty guest root: %w", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("guest root %s must not exist", dir)
	}
	return dir, nil
}

// PrepareCacheDir makes dir ready to hold wazero's compilation cache: it is
// created with mode 0700 when missing, and must be a writable directory.
// The cache stores compiled machine code keyed by the module's hash, the
// wazero version and the CPU features, so a restarted process reuses it.
func PrepareCacheDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("compilation cache dir is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving compilation cache dir: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("creating compilation cache dir: %w", err)
	}
	probe, err := os.CreateTemp(abs, ".probe-*")
	if err != nil {
		return "", fmt.Errorf("compilation cache dir is not writable: %w", err)
	}
	name := probe.Name()
	probe.Close()
	os.Remove(name)
	return abs, nil
}

// WithMemory returns a context that makes the next module instantiated with
// it use m as its linear memory. A Memory backs exactly one module instance;
// instantiating a second module with the same context fails that
// instantiation's memory allocation.
func WithMemory(ctx context.Context, m *Memory) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(m.allocate))
}
