package audit

import (
	"os"
	"testing"

	"github.com/toolgate/toolgate/internal/leakcheck"
	"github.com/toolgate/toolgate/internal/servertest"
)

// TestMain fails the package's tests when they leave goroutines running.
func TestMain(m *testing.M) {
	os.Exit(leakcheck.Verify(servertest.Main(m)))
}
