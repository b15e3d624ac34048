// Package leakcheck fails tests that leave goroutines running. It wraps
// go.uber.org/goleak and gives goroutines that are winding down (a closed
// connection's read loop, a stopped process's wait) up to Settle to end
// before it reports them, so a loaded CI machine does not turn a clean
// shutdown into a failure. Only tests import it.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Settle is how long goroutines get to end before they count as leaked.
const Settle = 10 * time.Second

// Find returns nil once no unexpected goroutine is left, or goleak's
// report of those still running after Settle.
func Find(opts ...goleak.Option) error { return find(Settle, opts...) }

func find(settle time.Duration, opts ...goleak.Option) error {
	deadline := time.Now().Add(settle)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Check fails t when goroutines other than those opts ignore are still
// running after Settle. Call it last, e.g. from the first t.Cleanup a test
// registers.
func Check(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	if err := Find(opts...); err != nil {
		t.Error(err)
	}
}

// Main runs a package's tests and exits; when they passed but left
// goroutines running, it reports them and exits with 1. It is a whole
// TestMain: func TestMain(m *testing.M) { leakcheck.Main(m) }.
func Main(m *testing.M, opts ...goleak.Option) {
	os.Exit(Verify(m.Run(), opts...))
}

// Verify is Main's check for a TestMain that has its own teardown between
// m.Run and the check: it returns the exit code to use.
func Verify(code int, opts ...goleak.Option) int {
	if code != 0 {
		return code
	}
	if err := Find(opts...); err != nil {
		fmt.Fprintf(os.Stderr, "leakcheck: goroutines left running after the tests: %v\n", err)
		return 1
	}
	return 0
}
