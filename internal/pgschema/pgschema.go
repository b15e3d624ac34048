// Package pgschema applies the schema migrations of toolgate's tables in
// a PostgreSQL database shared by several processes: each part (keys,
// pins, audit) has its own list of migrations, applied in order under an
// advisory lock, so that replicas starting at once apply each migration
// once. It also opens the connection pools, with the settings every part
// shares.
package pgschema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// lockKey is the advisory lock taken while migrating.
const lockKey = 0x746f6f6c67617465 // "toolgate"

// Open opens a pool of at most maxConns connections to the database at
// url and checks that it answers. Errors never quote the URL, which may
// hold a password.
func Open(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("invalid PostgreSQL URL")
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Migrate brings the tables of component up to date: migrations[i] takes
// them from version i to i+1. Append only; never edit one that shipped.
// A database migrated by a newer toolgate is refused.
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, migrations []string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lockKey)); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_versions (
			component TEXT PRIMARY KEY,
			version   INTEGER NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_versions: %w", err)
		}
		var have int
		err := tx.QueryRow(ctx, `SELECT version FROM schema_versions WHERE component = $1`, component).Scan(&have)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read schema version of %s: %w", component, err)
		}
		if have > len(migrations) {
			return fmt.Errorf("schema version %d of %s is newer than this toolgate knows (%d): upgrade toolgate", have, component, len(migrations))
		}
		for i := have; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migrate %s to version %d: %w", component, i+1, err)
			}
		}
		if have < len(migrations) {
			if _, err := tx.Exec(ctx, `INSERT INTO schema_versions (component, version) VALUES ($1, $2)
				ON CONFLICT (component) DO UPDATE SET version = excluded.version`, component, len(migrations)); err != nil {
				return fmt.Errorf("set schema version of %s: %w", component, err)
			}
		}
		return nil
	})
}
