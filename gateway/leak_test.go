package gateway

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/leakcheck"
	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/apikey"
)

// TestMain fails the package's tests when they leave goroutines running.
func TestMain(m *testing.M) {
	os.Exit(leakcheck.Verify(servertest.Main(m)))
}

// TestCloseStopsGoroutines: a started and closed gateway leaves nothing
// running, including the eviction loop of the rate limiter New made for
// it (found by the leak check).
func TestCloseStopsGoroutines(t *testing.T) {
	defer leakcheck.Check(t, goleak.IgnoreCurrent())
	cfg := config.Demo("http://127.0.0.1:1/mcp", strings.Repeat("0", 64))
	cfg.Projects[config.DefaultProject].MCPServers = nil
	cfg.CodeMode.Enabled = false
	cfg.DataDir = "" // no pin store in the working directory
	auth, err := apikey.NewAuthenticator(context.Background(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := New(cfg, &Options{Auth: auth, Logger: slog.New(slog.DiscardHandler)})
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.Close()
	g.Close() // a second Close is harmless
}
