package gateway

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/toolgate/toolgate/internal/pgschema"
)

// pgPinMigrations are the PostgreSQL tables of the pins: one row per pin
// and per pending change, and a counter of approvals that replicas poll.
var pgPinMigrations = []string{
	`CREATE TABLE tool_pins (
		key        TEXT PRIMARY KEY,
		hash       TEXT NOT NULL,
		first_seen TIMESTAMPTZ NOT NULL,
		approved   TIMESTAMPTZ
	);
	CREATE TABLE tool_pins_pending (
		key  TEXT PRIMARY KEY,
		hash TEXT NOT NULL,
		seen TIMESTAMPTZ NOT NULL
	);
	CREATE TABLE tool_pins_version (
		one   BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
		value BIGINT NOT NULL
	);
	INSERT INTO tool_pins_version (value) VALUES (1);`,
}

// PostgresPins is a [PinStore] in PostgreSQL, shared by replicas: a tool
// approved once is approved on every replica (each notices within
// pinInterval), and a changed definition is pending once for all.
type PostgresPins struct {
	pool    *pgxpool.Pool
	version int64
}

var _ PinStore = (*PostgresPins)(nil)

// OpenPostgresPins connects to the database at url and brings the pin
// tables up to date.
func OpenPostgresPins(ctx context.Context, url string) (*PostgresPins, error) {
	pool, err := pgschema.Open(ctx, url, 2)
	if err != nil {
		return nil, fmt.Errorf("open tool pins: %w", err)
	}
	if err := pgschema.Migrate(ctx, pool, "pins", pgPinMigrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open tool pins: %w", err)
	}
	s := &PostgresPins{pool: pool}
	s.version, _ = s.readVersion(ctx)
	return s, nil
}

// Close closes the connections.
func (s *PostgresPins) Close() { s.pool.Close() }

// String implements [PinStore].
func (s *PostgresPins) String() string { return "PostgreSQL tool_pins" }

func (s *PostgresPins) readVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT value FROM tool_pins_version`).Scan(&v)
	return v, err
}

// Check implements [PinStore] in one transaction, the pin's row locked:
// of replicas that see one changed definition at once, one records it
// (PinChanged) and the others find it pending.
func (s *PostgresPins) Check(ctx context.Context, key, hash string, now time.Time) (res PinResult, pinned string, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO tool_pins (key, hash, first_seen) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`, key, hash, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			res, pinned = PinNew, ""
			return nil
		}
		if err := tx.QueryRow(ctx, `SELECT hash FROM tool_pins WHERE key = $1 FOR UPDATE`, key).Scan(&pinned); err != nil {
			return err
		}
		if pinned == hash {
			// Changed back: nothing waits for approval any more.
			_, err := tx.Exec(ctx, `DELETE FROM tool_pins_pending WHERE key = $1`, key)
			res = PinSame
			return err
		}
		var pending string
		err = tx.QueryRow(ctx, `SELECT hash FROM tool_pins_pending WHERE key = $1`, key).Scan(&pending)
		if err == nil && pending == hash {
			res = PinPending
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO tool_pins_pending (key, hash, seen) VALUES ($1, $2, $3)
			ON CONFLICT (key) DO UPDATE SET hash = excluded.hash, seen = excluded.seen`, key, hash, now)
		res = PinChanged
		return err
	})
	if err != nil {
		return PinSame, "", fmt.Errorf("check tool pin: %w", err)
	}
	return res, pinned, nil
}

// Refresh implements [PinStore]: it reports whether an approval was
// made (by any process) since the last call.
func (s *PostgresPins) Refresh(ctx context.Context) bool {
	v, err := s.readVersion(ctx)
	if err != nil || v == s.version {
		return false
	}
	s.version = v
	return true
}

// Load implements [PinStore].
func (s *PostgresPins) Load(ctx context.Context) (*Pins, error) {
	p := &Pins{Pins: map[string]Pin{}, Pending: map[string]Change{}}
	rows, err := s.pool.Query(ctx, `SELECT key, hash, first_seen, approved FROM tool_pins`)
	if err != nil {
		return nil, fmt.Errorf("read tool pins: %w", err)
	}
	for rows.Next() {
		var key string
		var pin Pin
		var approved *time.Time
		if err := rows.Scan(&key, &pin.Hash, &pin.FirstSeen, &approved); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read tool pins: %w", err)
		}
		pin.FirstSeen = pin.FirstSeen.UTC()
		if approved != nil {
			pin.Approved = approved.UTC()
		}
		p.Pins[key] = pin
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tool pins: %w", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT key, hash, seen FROM tool_pins_pending`)
	if err != nil {
		return nil, fmt.Errorf("read tool pins: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		var c Change
		if err := rows.Scan(&key, &c.Hash, &c.Seen); err != nil {
			return nil, fmt.Errorf("read tool pins: %w", err)
		}
		c.Seen = c.Seen.UTC()
		p.Pending[key] = c
	}
	return p, rows.Err()
}

// Approve implements [PinStore] in one transaction.
func (s *PostgresPins) Approve(ctx context.Context, keys []string, now time.Time) ([]string, error) {
	var approved []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		approved = approved[:0]
		if len(keys) == 0 {
			rows, err := tx.Query(ctx, `SELECT key FROM tool_pins_pending FOR UPDATE`)
			if err != nil {
				return err
			}
			all, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			keys = all
		}
		keys = append([]string(nil), keys...)
		sort.Strings(keys)
		for _, k := range keys {
			var hash string
			err := tx.QueryRow(ctx, `DELETE FROM tool_pins_pending WHERE key = $1 RETURNING hash`, k).Scan(&hash)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("no changed definition is waiting for approval under %q", k)
			}
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO tool_pins (key, hash, first_seen, approved) VALUES ($1, $2, $3, $3)
				ON CONFLICT (key) DO UPDATE SET hash = excluded.hash, approved = excluded.approved`, k, hash, now); err != nil {
				return err
			}
			approved = append(approved, k)
		}
		if len(approved) > 0 {
			_, err := tx.Exec(ctx, `UPDATE tool_pins_version SET value = value + 1`)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return approved, nil
}
