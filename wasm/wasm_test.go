package wasm

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
)

// growModule exports grow(pages) -> old size or -1, size() -> pages and
// store(addr, v), with one page of memory and no maximum.
// Assembled with wat2wasm from:
//
//	(module
//	  (memory 1)
//	  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
//	  (func (export "size") (result i32) memory.size)
//	  (func (export "store") (param i32 i32) local.get 0 local.get 1 i32.store))
var growModule = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0f, 0x03, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x01, 0x7f, 0x60, 0x02, 0x7f, 0x7f, 0x00, 0x03, 0x04, 0x03, 0x00, 0x01, 0x02, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x17, 0x03, 0x04, 0x67, 0x72, 0x6f, 0x77, 0x00, 0x00, 0x04, 0x73, 0x69, 0x7a, 0x65, 0x00, 0x01, 0x05, 0x73, 0x74, 0x6f, 0x72, 0x65, 0x00, 0x02, 0x0a, 0x17, 0x03, 0x06, 0x00, 0x20, 0x00, 0x40, 0x00, 0x0b, 0x04, 0x00, 0x3f, 0x00, 0x0b, 0x09, 0x00, 0x20, 0x00, 0x20, 0x01, 0x36, 0x02, 0x00, 0x0b,
}

func instantiate(t *testing.T, m *Memory, hook func(context.Context)) (call func(name string, args ...uint64) uint64) {
	t.Helper()
	ctx := WithMemory(context.Background(), m)
	if hook != nil {
		ctx = WithCallHook(ctx, 2, hook)
	}
	r := wazero.NewRuntime(ctx)
	t.Cleanup(func() { r.Close(ctx) })
	mod, err := r.Instantiate(ctx, growModule)
	if err != nil {
		t.Fatal(err)
	}
	return func(name string, args ...uint64) uint64 {
		out, err := mod.ExportedFunction(name).Call(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) == 0 {
			return 0
		}
		return out[0]
	}
}

func TestMemoryLimit(t *testing.T) {
	tests := []struct {
		name        string
		ceiling     uint64
		limit       uint64
		grow        uint64
		wantOK      bool
		wantPeakPgs uint64
	}{
		{"within the limit", 16 * PageSize, 4 * PageSize, 3, true, 4},
		{"past the limit", 16 * PageSize, 4 * PageSize, 4, false, 1},
		{"past the ceiling", 4 * PageSize, 100 * PageSize, 8, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(tc.ceiling)
			m.SetLimit(tc.limit)
			call := instantiate(t, m, nil)
			old := int32(call("grow", tc.grow))
			if (old >= 0) != tc.wantOK {
				t.Fatalf("grow(%d) = %d, want ok=%v", tc.grow, old, tc.wantOK)
			}
			if got := m.Peak(); got != tc.wantPeakPgs*PageSize {
				t.Fatalf("peak %d, want %d", got, tc.wantPeakPgs*PageSize)
			}
			if !tc.wantOK && m.Refusals() == 0 {
				t.Fatal("refusal not counted")
			}
		})
	}
}

func TestAtomicAccess(t *testing.T) {
	m := NewMemory(4 * PageSize)
	call := instantiate(t, m, nil)
	call("store", 64, 1)
	if !m.AtomicOr32(64, 4) {
		t.Fatal("AtomicOr32 in range failed")
	}
	if v, ok := m.AtomicLoad32(64); !ok || v != 5 {
		t.Fatalf("load = %d, %v", v, ok)
	}
	if m.AtomicOr32(PageSize, 1) || m.AtomicOr32(3, 1) {
		t.Fatal("out-of-range or unaligned access allowed")
	}
	m.Free()
	if m.AtomicOr32(64, 1) {
		t.Fatal("access after Free allowed")
	}
}

func TestCallHook(t *testing.T) {
	calls := 0
	call := instantiate(t, NewMemory(PageSize), func(context.Context) { calls++ })
	call("size")
	call("store", 0, 1)
	call("store", 4, 1)
	if calls != 2 {
		t.Fatalf("hook ran %d times, want 2 (only for the hooked function)", calls)
	}
}

func TestPrepareCacheDirAndMissingDir(t *testing.T) {
	parent := t.TempDir()
	dir, err := PrepareCacheDir(filepath.Join(parent, "a", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir %v %v", fi, err)
	}
	missing, err := MissingDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("%s exists", missing)
	}
	if _, err := PrepareCacheDir(""); err == nil {
		t.Fatal("empty dir accepted")
	}
}
