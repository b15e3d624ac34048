package cli

import (
	"os"
	"testing"

	"github.com/toolgate/toolgate/internal/servertest"
)

// TestMain stops the PostgreSQL server that the tests of the cluster
// commands start.
func TestMain(m *testing.M) {
	os.Exit(servertest.Main(m))
}
