package servertest_test

import (
	"context"
	"os"
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
