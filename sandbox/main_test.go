package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/toolgate/toolgate/internal/leakcheck"
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
	// The tests must leave no goroutine running once the engine is closed
	// (executions, tool calls, timers, the pool filler).
	os.Exit(leakcheck.Verify(code))
}
