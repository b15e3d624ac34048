package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
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
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
		code = 1
	}
	os.Exit(code)
}
