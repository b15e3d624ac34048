package apikey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/toolgate/toolgate/internal/pgschema"
	"github.com/toolgate/toolgate/policy/audit"
)

// pgMigrations are the PostgreSQL schema of the key store: the tables of
// the SQLite store, with the same columns and meanings (times in Unix
// nanoseconds, 0 for none). Append only.
var pgMigrations = []string{
	`CREATE TABLE keys (
		id            TEXT PRIMARY KEY,
		project       TEXT NOT NULL,
		name          TEXT NOT NULL,
		secret_sha256 TEXT NOT NULL,
		created       BIGINT NOT NULL,
		expires       BIGINT NOT NULL DEFAULT 0,
		revoked       BIGINT NOT NULL DEFAULT 0,
		last_used     BIGINT NOT NULL DEFAULT 0,
		calls         BIGINT NOT NULL DEFAULT 0,
		rotated_to    TEXT NOT NULL DEFAULT '',
		ttl           BIGINT NOT NULL DEFAULT 0
	);
	CREATE INDEX keys_by_project ON keys (project, created);
	CREATE TABLE meta (
		name  TEXT PRIMARY KEY,
		value BIGINT NOT NULL
	);
	INSERT INTO meta (name, value) VALUES ('version', 1);
	-- Key changes not yet in an audit log. A gateway claims the changes
	-- it records (claimed_by, claimed_at), so that two replicas do not
	-- both record one; a claim older than a minute is taken over.
	CREATE TABLE key_changes (
		seq        BIGSERIAL PRIMARY KEY,
		time       BIGINT NOT NULL,
		type       TEXT NOT NULL,
		key_id     TEXT NOT NULL,
		project    TEXT NOT NULL,
		name       TEXT NOT NULL,
		new_key_id TEXT NOT NULL DEFAULT '',
		claimed_by TEXT NOT NULL DEFAULT '',
		claimed_at BIGINT NOT NULL DEFAULT 0
	);`,
}

// keysChannel is the LISTEN/NOTIFY channel of key changes.
const keysChannel = "toolgate_keys"

// claimTimeout is how long a gateway's claim on pending key changes
// keeps other gateways from recording them.
const claimTimeout = time.Minute

// PGStore keeps API keys and their usage in PostgreSQL, for gateways
// that run as several replicas: the same records and behaviour as
// [Store], with usage counts added up from every replica, and key
// changes announced with NOTIFY so that every replica sees them at once
// (the authenticator's polling of Version stays as the fallback).
//
// A PGStore is safe for concurrent use.
type PGStore struct {
	pool  *pgxpool.Pool
	url   string
	claim string // this store's name in key_changes.claimed_by
	log   *slog.Logger

	listenOnce sync.Once
	changed    chan struct{}
	stop       context.CancelFunc
	done       chan struct{}
}

// PGOptions configure a [PGStore]. A nil *PGOptions means defaults.
type PGOptions struct {
	// Logger receives the errors of the background listener (default
	// slog.Default()).
	Logger *slog.Logger
}

// OpenPGStore connects to the PostgreSQL database at url and brings the
// key tables up to date.
func OpenPGStore(ctx context.Context, url string, opts *PGOptions) (*PGStore, error) {
	var o PGOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	pool, err := pgschema.Open(ctx, url, 4)
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	if err := pgschema.Migrate(ctx, pool, "keys", pgMigrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open key store: %w", err)
	}
	var b [8]byte
	rand.Read(b[:])
	return &PGStore{pool: pool, url: url, claim: hex.EncodeToString(b[:]), log: o.Logger, changed: make(chan struct{}, 1)}, nil
}

// Close stops the listener and closes the connections.
func (s *PGStore) Close() error {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
	s.pool.Close()
	return nil
}

// Changed implements notifier: it receives a value after a key is
// created, rotated or revoked through any PGStore of the database. The
// first call starts listening.
func (s *PGStore) Changed() <-chan struct{} {
	s.listenOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop, s.done = cancel, make(chan struct{})
		go s.listen(ctx)
	})
	return s.changed
}

// listen keeps a connection listening for key changes until ctx is done,
// reconnecting after a failure. Each (re)connection is also announced as
// a change: what was missed meanwhile is then reloaded.
func (s *PGStore) listen(ctx context.Context) {
	defer close(s.done)
	failing := false
	for ctx.Err() == nil {
		err := s.listenOnce1(ctx, &failing)
		if ctx.Err() != nil {
			return
		}
		if !failing {
			s.log.Warn("key store: lost the PostgreSQL notifications of key changes; polling meanwhile", "error", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *PGStore) listenOnce1(ctx context.Context, failing *bool) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+keysChannel); err != nil {
		return err
	}
	if *failing {
		s.log.Info("key store: PostgreSQL notifications of key changes work again")
		*failing = false
	}
	s.signal()
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			conn.Conn().Close(context.Background()) // a broken or cancelled connection is not reused
			return err
		}
		s.signal()
	}
}

func (s *PGStore) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// write runs fn in a transaction; with change, it also increments the
// version and notifies the listeners when it commits.
func (s *PGStore) write(ctx context.Context, change bool, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if change {
			// Taken first: writers of key changes queue here, in one order.
			if _, err := tx.Exec(ctx, `UPDATE meta SET value = value + 1 WHERE name = 'version'`); err != nil {
				return err
			}
		}
		if err := fn(tx); err != nil {
			return err
		}
		if change {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, keysChannel); err != nil {
				return err
			}
		}
		return nil
	})
}

// Version implements [Backend].
func (s *PGStore) Version(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, `SELECT value FROM meta WHERE name = 'version'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read key store version: %w", err)
	}
	return v, nil
}

// Create implements [Backend]; see [Store.Create].
func (s *PGStore) Create(ctx context.Context, project, name string, ttl time.Duration) (plaintext string, key *Key, err error) {
	if !projectRE.MatchString(project) {
		return "", nil, fmt.Errorf("create key: invalid project name %q (want 1 to 64 letters, digits, _ or -)", project)
	}
	if err := checkKeyName(name); err != nil {
		return "", nil, fmt.Errorf("create key: %w", err)
	}
	if ttl < 0 {
		return "", nil, fmt.Errorf("create key: negative lifetime %v", ttl)
	}
	err = s.write(ctx, true, func(tx pgx.Tx) error {
		plaintext, key, err = pgInsertKey(ctx, tx, project, name, ttl, now())
		if err != nil {
			return err
		}
		return pgRecordChange(ctx, tx, Change{Time: key.Created, Type: audit.EventKeyCreated, KeyID: key.ID, Project: project, KeyName: name})
	})
	if err != nil {
		return "", nil, fmt.Errorf("create key: %w", err)
	}
	return plaintext, key, nil
}

func pgInsertKey(ctx context.Context, tx pgx.Tx, project, name string, ttl time.Duration, created time.Time) (string, *Key, error) {
	for range 5 {
		plaintext, id, hash, err := Generate()
		if err != nil {
			return "", nil, err
		}
		k := &Key{ID: id, Name: name, Project: project, Created: created, Source: SourceStore}
		if ttl > 0 {
			k.Expires = created.Add(ttl)
		}
		tag, err := tx.Exec(ctx,
			`INSERT INTO keys (id, project, name, secret_sha256, created, expires, ttl)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			id, project, name, hash, toNanos(k.Created), toNanos(k.Expires), int64(ttl))
		if err != nil {
			return "", nil, err
		}
		if tag.RowsAffected() == 1 {
			return plaintext, k, nil
		}
	}
	return "", nil, errors.New("could not draw an unused key id")
}

// List implements [Backend].
func (s *PGStore) List(ctx context.Context, project string) ([]*Key, error) {
	q := `SELECT ` + keyColumns + ` FROM keys`
	var args []any
	if project != "" {
		q += ` WHERE project = $1`
		args = append(args, project)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY project, created, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	var keys []*Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// Get implements [Backend].
func (s *PGStore) Get(ctx context.Context, id string) (*Key, error) {
	k, err := pgGetKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = $1`, id), id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("get key: %w", err)
	}
	return k, err
}

func pgGetKey(row pgx.Row, id string, extra ...any) (*Key, error) {
	k, err := scanKey(row, extra...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound(id)
	}
	return k, err
}

// Revoke implements [Backend]; see [Store.Revoke].
func (s *PGStore) Revoke(ctx context.Context, id string) error {
	err := s.write(ctx, true, func(tx pgx.Tx) error {
		t := now()
		var project, name string
		err := tx.QueryRow(ctx, `UPDATE keys SET revoked = $1 WHERE id = $2 AND revoked = 0 RETURNING project, name`, toNanos(t), id).Scan(&project, &name)
		if err == nil {
			return pgRecordChange(ctx, tx, Change{Time: t, Type: audit.EventKeyRevoked, KeyID: id, Project: project, KeyName: name})
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var one int
		err = tx.QueryRow(ctx, `SELECT 1 FROM keys WHERE id = $1`, id).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound(id)
		}
		return err // nil: already revoked
	})
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	return nil
}

// Rotate implements [Backend]; see [Store.Rotate].
func (s *PGStore) Rotate(ctx context.Context, id string, overlap time.Duration) (plaintext string, successor *Key, err error) {
	if overlap < 0 {
		return "", nil, fmt.Errorf("rotate key %q: negative overlap %v", id, overlap)
	}
	err = s.write(ctx, true, func(tx pgx.Tx) error {
		var ttl int64
		old, err := pgGetKey(tx.QueryRow(ctx, `SELECT `+keyColumns+`, ttl FROM keys WHERE id = $1 FOR UPDATE`, id), id, &ttl)
		if err != nil {
			return err
		}
		switch {
		case !old.Revoked.IsZero():
			return fmt.Errorf("key %q is revoked; create a new key instead", id)
		case old.RotatedTo != "":
			return fmt.Errorf("key %q was already rotated to %q; rotate that one instead", id, old.RotatedTo)
		}
		t := now()
		plaintext, successor, err = pgInsertKey(ctx, tx, old.Project, old.Name, time.Duration(ttl), t)
		if err != nil {
			return err
		}
		stop := t.Add(overlap)
		if !old.Expires.IsZero() && old.Expires.Before(stop) {
			stop = old.Expires
		}
		if _, err = tx.Exec(ctx, `UPDATE keys SET expires = $1, rotated_to = $2 WHERE id = $3`, toNanos(stop), successor.ID, id); err != nil {
			return err
		}
		if err := pgRecordChange(ctx, tx, Change{Time: t, Type: audit.EventKeyCreated, KeyID: successor.ID, Project: old.Project, KeyName: old.Name}); err != nil {
			return err
		}
		return pgRecordChange(ctx, tx, Change{Time: t, Type: audit.EventKeyRotated, KeyID: id, Project: old.Project, KeyName: old.Name, NewKeyID: successor.ID})
	})
	if err != nil {
		return "", nil, fmt.Errorf("rotate key: %w", err)
	}
	return plaintext, successor, nil
}

// AddUsage implements [Backend]: the counts add to what other replicas
// wrote. Keys are updated in id order, so that two replicas writing the
// same keys at once do not deadlock.
func (s *PGStore) AddUsage(ctx context.Context, usage map[string]Usage) error {
	if len(usage) == 0 {
		return nil
	}
	ids := make([]string, 0, len(usage))
	for id := range usage {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	err := s.write(ctx, false, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, id := range ids {
			u := usage[id]
			b.Queue(`UPDATE keys SET calls = calls + $1, last_used = GREATEST(last_used, $2) WHERE id = $3`, u.Calls, toNanos(u.LastUsed), id)
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("record key usage: %w", err)
	}
	return nil
}

func pgRecordChange(ctx context.Context, tx pgx.Tx, c Change) error {
	_, err := tx.Exec(ctx, `INSERT INTO key_changes (time, type, key_id, project, name, new_key_id) VALUES ($1, $2, $3, $4, $5, $6)`,
		toNanos(c.Time), c.Type, c.KeyID, c.Project, c.KeyName, c.NewKeyID)
	return err
}

// PendingChanges implements [Backend]. The changes returned are claimed
// by this store for a minute: another replica's PendingChanges does not
// return them meanwhile, so that one change is recorded by one gateway
// (after a crash, the claim runs out and another records it).
func (s *PGStore) PendingChanges(ctx context.Context) ([]Change, error) {
	t := time.Now()
	rows, err := s.pool.Query(ctx, `UPDATE key_changes SET claimed_by = $1, claimed_at = $2
		WHERE seq IN (SELECT seq FROM key_changes WHERE claimed_by = $1 OR claimed_at < $3 ORDER BY seq FOR UPDATE SKIP LOCKED)
		RETURNING seq, time, type, key_id, project, name, new_key_id`,
		s.claim, t.UnixNano(), t.Add(-claimTimeout).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("read pending key changes: %w", err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var tn int64
		if err := rows.Scan(&c.Seq, &tn, &c.Type, &c.KeyID, &c.Project, &c.KeyName, &c.NewKeyID); err != nil {
			return nil, fmt.Errorf("read pending key changes: %w", err)
		}
		c.Time = fromNanos(tn)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending key changes: %w", err)
	}
	slices.SortFunc(out, func(a, b Change) int { return int(a.Seq - b.Seq) })
	return out, nil
}

// AckChanges implements [Backend]: it forgets the changes up to seq that
// this store claimed.
func (s *PGStore) AckChanges(ctx context.Context, seq int64) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM key_changes WHERE seq <= $1 AND claimed_by = $2`, seq, s.claim); err != nil {
		return fmt.Errorf("acknowledge key changes: %w", err)
	}
	return nil
}

// Export implements [Backend].
func (s *PGStore) Export(ctx context.Context) ([]Record, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+`, secret_sha256, ttl FROM keys ORDER BY project, created, id`)
	if err != nil {
		return nil, fmt.Errorf("export keys: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var ttl int64
		k, err := scanKey(rows, &r.SecretSHA256, &ttl)
		if err != nil {
			return nil, fmt.Errorf("export keys: %w", err)
		}
		r.Key, r.TTL = *k, time.Duration(ttl)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("export keys: %w", err)
	}
	return out, nil
}

// Import implements [Backend].
func (s *PGStore) Import(ctx context.Context, keys []Record) (int, error) {
	if err := checkRecords(keys); err != nil {
		return 0, err
	}
	added := 0
	err := s.write(ctx, true, func(tx pgx.Tx) error {
		added = 0
		for _, r := range keys {
			tag, err := tx.Exec(ctx,
				`INSERT INTO keys (id, project, name, secret_sha256, created, expires, revoked, last_used, calls, rotated_to, ttl)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
				r.ID, r.Project, r.Name, strings.ToLower(r.SecretSHA256), toNanos(r.Created), toNanos(r.Expires), toNanos(r.Revoked),
				toNanos(r.LastUsed), r.Calls, r.RotatedTo, int64(r.TTL))
			if err != nil {
				return err
			}
			added += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("import keys: %w", err)
	}
	return added, nil
}
