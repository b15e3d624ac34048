package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// testEngine is shared by the package's tests: creating an engine costs a
// self-test and, on a cold cache, compiling the interpreter.
var testEngine *Engine

func TestMain(m *testing.M) {
	dir := os.Getenv("TOOLGATE_TEST_CACHE")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "toolgate-sandbox-test-cache")
	}
	e, err := NewEngine(context.Background(), &EngineOptions{CacheDir: dir, PoolSize: 4})
	if err != nil {
		panic(err)
	}
	testEngine = e
	code := m.Run()
	e.Close()
	os.Exit(code)
}
