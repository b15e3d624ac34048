package apikey

import (
	"os"
	"testing"

	"github.com/toolgate/toolgate/internal/servertest"

	"github.com/toolgate/toolgate/internal/leakcheck"
)

// TestMain fails the package's tests when they leave goroutines running.
func TestMain(m *testing.M) {
	os.Exit(leakcheck.Verify(servertest.Main(m)))
}
