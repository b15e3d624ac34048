package audit

import (
	"testing"

	"github.com/toolgate/toolgate/internal/leakcheck"
)

// TestMain fails the package's tests when they leave goroutines running.
func TestMain(m *testing.M) {
	leakcheck.Main(m)
}
