package servertest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/toolgate/toolgate/internal/servertest"
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m)) }

func TestRedisStopStart(t *testing.T) {
	r := servertest.StartRedis(t)
	if err := servertest.Ping(r.Addr()); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := servertest.Ping(r.Addr()); err == nil {
		t.Fatal("a stopped server answered")
	}
	r.Start()
	if err := servertest.Ping(r.Addr()); err != nil {
		t.Fatalf("after Start: %v", err)
	}
}

func TestPostgresDatabasesAreSeparate(t *testing.T) {
	ctx := context.Background()
	a, b := servertest.Postgres(t), servertest.Postgres(t)
	if a == b {
		t.Fatalf("two tests share the database %s", a)
	}
	for _, url := range []string{a, b} {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Errorf("%s: %v", url, err)
		}
		conn.Close(ctx)
	}
}

func TestPGBinNewestVersion(t *testing.T) {
	root := t.TempDir()
	for _, dir := range []string{"13/bin", "15/bin", "17/bin", "9.6/bin", "tools"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, bin := range []string{"13/bin/postgres", "15/bin/postgres", "9.6/bin/postgres"} { // 17 is half installed
		if err := os.WriteFile(filepath.Join(root, bin), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := servertest.PGBin(root), filepath.Join(root, "15", "bin"); got != want {
		t.Errorf("PGBin = %q, want %q", got, want)
	}
	if got := servertest.PGBin(filepath.Join(root, "none")); got != "" {
		t.Errorf("PGBin of a missing folder = %q", got)
	}
}
