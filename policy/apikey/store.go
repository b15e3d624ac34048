package apikey

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/toolgate/toolgate/policy/audit"
)

// ErrNotFound is returned (wrapped, with the id) by [Store] methods
// given the id of a key the store does not hold.
var ErrNotFound = errors.New("no such API key")

// Usage is what the gateway observed of one key since its last report to
// the store.
type Usage struct {
	// Calls is the number of uses to add to the key's count.
	Calls int64
	// LastUsed is the time of the latest of those uses.
	LastUsed time.Time
}

// Store keeps API keys and their usage in a SQLite database file. Of a
// key's secret it keeps only the SHA-256. Several processes may use one
// file at once (the command line and a running gateway): the database is
// in WAL mode, writers wait for each other (busy timeout), and
// [Store.Version] lets a reader notice the writes of others.
//
// A Store is safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string
}

// busyTimeout bounds how long a statement waits for another connection
// (or process) holding the write lock.
const busyTimeout = 10 * time.Second

// migrations are the schema versions in order: the database's
// PRAGMA user_version is the number of them applied. Append only; never
// edit one that has shipped.
var migrations = []string{
	// 1: the keys.
	`CREATE TABLE keys (
		id            TEXT PRIMARY KEY,
		project       TEXT NOT NULL,
		name          TEXT NOT NULL,
		secret_sha256 TEXT NOT NULL,
		created       INTEGER NOT NULL, -- Unix nanoseconds
		expires       INTEGER NOT NULL DEFAULT 0, -- 0: never
		revoked       INTEGER NOT NULL DEFAULT 0, -- 0: not revoked
		last_used     INTEGER NOT NULL DEFAULT 0, -- 0: never
		calls         INTEGER NOT NULL DEFAULT 0,
		rotated_to    TEXT NOT NULL DEFAULT ''
	) STRICT;
	CREATE INDEX keys_by_project ON keys (project, created);`,

	// 2: each key's lifetime, which a rotation gives to the successor, and
	// a counter of changes that other processes poll.
	`ALTER TABLE keys ADD COLUMN ttl INTEGER NOT NULL DEFAULT 0; -- nanoseconds, 0: never expires
	UPDATE keys SET ttl = expires - created WHERE expires > created;
	CREATE TABLE meta (
		name  TEXT PRIMARY KEY,
		value INTEGER NOT NULL
	) STRICT;
	INSERT INTO meta (name, value) VALUES ('version', 1);`,

	// 3: key changes not yet in the audit log. Each change is recorded
	// here by the transaction that makes it; the gateway, the only writer
	// of the audit log, appends them and deletes them. AUTOINCREMENT:
	// sequence numbers are never reused.
	`CREATE TABLE key_changes (
		seq        INTEGER PRIMARY KEY AUTOINCREMENT,
		time       INTEGER NOT NULL, -- Unix nanoseconds
		type       TEXT NOT NULL,    -- key.created, key.rotated or key.revoked
		key_id     TEXT NOT NULL,
		project    TEXT NOT NULL,
		name       TEXT NOT NULL,
		new_key_id TEXT NOT NULL DEFAULT ''
	) STRICT;`,
}

// OpenStore opens the key database at path, creating it (and its
// folder, with mode 0700; the file gets mode 0600) when missing, and
// brings its schema up to date. A database written by a newer toolgate
// (a schema this one does not know) is refused.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("open key store: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open key store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	// Create the file ourselves so that it gets mode 0600; SQLite gives
	// its -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open key store: %w", err)
	}
	f.Close()

	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Write transactions take the write lock at BEGIN, so two writers
	// never deadlock upgrading read locks; they queue on busy_timeout.
	q.Set("_txlock", "immediate")
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open key store %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &Store{db: db, path: path}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open key store %s: %w", path, err)
	}
	return s, nil
}

// migrate applies the migrations the database lacks, all in one write
// transaction, so that two processes opening a new file at once do not
// both apply them.
func (s *Store) migrate(ctx context.Context) error {
	return s.write(ctx, false, func(tx *sql.Tx) error {
		var have int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&have); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if have > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this toolgate knows (%d): upgrade toolgate", have, len(migrations))
		}
		for i := have; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
			}
		}
		if have < len(migrations) {
			// PRAGMA takes no parameters; the value is our own integer.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
				return fmt.Errorf("set schema version: %w", err)
			}
		}
		return nil
	})
}

// Path returns the path the store was opened with.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// write runs fn in a write transaction; with change, it also increments
// the change counter that [Store.Version] reads.
func (s *Store) write(ctx context.Context, change bool, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if change {
		if _, err := tx.ExecContext(ctx, "UPDATE meta SET value = value + 1 WHERE name = 'version'"); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Version returns a number that changes whenever a key is created, revoked
// or rotated, by this process or another. Recording usage does not change
// it. It is one small read.
func (s *Store) Version(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE name = 'version'").Scan(&v); err != nil {
		return 0, fmt.Errorf("read key store version: %w", err)
	}
	return v, nil
}

// projectRE is the rule for project names, the same as the configuration's.
var projectRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// maxKeyNameLen bounds a key's name, in characters.
const maxKeyNameLen = 100

func checkKeyName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errors.New("empty key name")
	case !utf8.ValidString(name):
		return errors.New("key name is not valid UTF-8")
	case utf8.RuneCountInString(name) > maxKeyNameLen:
		return fmt.Errorf("key name longer than %d characters", maxKeyNameLen)
	case strings.ContainsFunc(name, unicode.IsControl):
		return errors.New("key name contains a control character")
	}
	return nil
}

// Create issues a new key for project, labelled name, that expires after
// ttl (0: never). It returns the key itself, which is not kept and cannot
// be shown again, and its description.
func (s *Store) Create(ctx context.Context, project, name string, ttl time.Duration) (plaintext string, key *Key, err error) {
	if !projectRE.MatchString(project) {
		return "", nil, fmt.Errorf("create key: invalid project name %q (want 1 to 64 letters, digits, _ or -)", project)
	}
	if err := checkKeyName(name); err != nil {
		return "", nil, fmt.Errorf("create key: %w", err)
	}
	if ttl < 0 {
		return "", nil, fmt.Errorf("create key: negative lifetime %v", ttl)
	}
	err = s.write(ctx, true, func(tx *sql.Tx) error {
		plaintext, key, err = insertKey(ctx, tx, project, name, ttl, now())
		if err != nil {
			return err
		}
		return recordChange(ctx, tx, Change{Time: key.Created, Type: audit.EventKeyCreated, KeyID: key.ID, Project: project, KeyName: name})
	})
	if err != nil {
		return "", nil, fmt.Errorf("create key: %w", err)
	}
	return plaintext, key, nil
}

// now is the store's clock: UTC, without a monotonic reading, so that a
// Key read back equals the one returned.
func now() time.Time { return time.Now().UTC().Round(0) }

// insertKey generates a key and inserts it. Ids are random (60 bits); on
// the rare clash with an existing id it draws again.
func insertKey(ctx context.Context, tx *sql.Tx, project, name string, ttl time.Duration, created time.Time) (string, *Key, error) {
	for range 5 {
		plaintext, id, hash, err := Generate()
		if err != nil {
			return "", nil, err
		}
		k := &Key{ID: id, Name: name, Project: project, Created: created, Source: SourceStore}
		if ttl > 0 {
			k.Expires = created.Add(ttl)
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO keys (id, project, name, secret_sha256, created, expires, ttl)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			id, project, name, hash, toNanos(k.Created), toNanos(k.Expires), int64(ttl))
		if err != nil {
			return "", nil, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return "", nil, err
		} else if n == 1 {
			return plaintext, k, nil
		}
	}
	return "", nil, errors.New("could not draw an unused key id")
}

const keyColumns = `id, project, name, created, expires, revoked, last_used, calls, rotated_to`

type rowScanner interface{ Scan(...any) error }

// scanKey reads the keyColumns of a row, followed by extra columns.
func scanKey(r rowScanner, extra ...any) (*Key, error) {
	var (
		k                                   = &Key{Source: SourceStore}
		created, expires, revoked, lastUsed int64
	)
	dest := append([]any{&k.ID, &k.Project, &k.Name, &created, &expires, &revoked, &lastUsed, &k.Calls, &k.RotatedTo}, extra...)
	if err := r.Scan(dest...); err != nil {
		return nil, err
	}
	k.Created, k.Expires, k.Revoked, k.LastUsed = fromNanos(created), fromNanos(expires), fromNanos(revoked), fromNanos(lastUsed)
	return k, nil
}

// toNanos stores a time as Unix nanoseconds, the zero time as 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// List returns the keys of project, or of all projects when project is
// "", ordered by project and creation time.
func (s *Store) List(ctx context.Context, project string) ([]*Key, error) {
	q := `SELECT ` + keyColumns + ` FROM keys`
	var args []any
	if project != "" {
		q += ` WHERE project = ?`
		args = append(args, project)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY project, created, id`, args...)
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

// Export implements [Backend].
func (s *Store) Export(ctx context.Context) ([]Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+`, secret_sha256, ttl FROM keys ORDER BY project, created, id`)
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
func (s *Store) Import(ctx context.Context, keys []Record) (int, error) {
	if err := checkRecords(keys); err != nil {
		return 0, err
	}
	added := 0
	err := s.write(ctx, true, func(tx *sql.Tx) error {
		added = 0
		for _, r := range keys {
			res, err := tx.ExecContext(ctx,
				`INSERT INTO keys (id, project, name, secret_sha256, created, expires, revoked, last_used, calls, rotated_to, ttl)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
				r.ID, r.Project, r.Name, strings.ToLower(r.SecretSHA256), toNanos(r.Created), toNanos(r.Expires), toNanos(r.Revoked),
				toNanos(r.LastUsed), r.Calls, r.RotatedTo, int64(r.TTL))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				added++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("import keys: %w", err)
	}
	return added, nil
}

// checkRecords checks keys to import: ids, projects, names and hashes of
// the shapes the store makes.
func checkRecords(keys []Record) error {
	for i, r := range keys {
		switch {
		case len(r.ID) != IDLen || badBase32(r.ID) >= 0:
			return fmt.Errorf("import keys: record %d: invalid key id %q", i, r.ID)
		case !projectRE.MatchString(r.Project):
			return fmt.Errorf("import keys: key %s: invalid project name %q", r.ID, r.Project)
		case checkKeyName(r.Name) != nil:
			return fmt.Errorf("import keys: key %s: %w", r.ID, checkKeyName(r.Name))
		case r.Created.IsZero():
			return fmt.Errorf("import keys: key %s: no creation time", r.ID)
		case r.TTL < 0 || r.Calls < 0:
			return fmt.Errorf("import keys: key %s: negative lifetime or call count", r.ID)
		}
		if _, err := decodeHash(strings.ToLower(r.SecretSHA256)); err != nil {
			return fmt.Errorf("import keys: key %s: secret hash: %w", r.ID, err)
		}
	}
	return nil
}

// Get returns the key with the given id; an unknown id is an error that
// wraps [ErrNotFound].
func (s *Store) Get(ctx context.Context, id string) (*Key, error) {
	k, err := getKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = ?`, id), id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("get key: %w", err)
	}
	return k, err
}

func getKey(row *sql.Row, id string, extra ...any) (*Key, error) {
	k, err := scanKey(row, extra...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(id)
	}
	return k, err
}

func notFound(id string) error { return fmt.Errorf("key %q: %w", id, ErrNotFound) }

// Revoke revokes the key with the given id at once. Revoking a revoked
// key changes nothing; an unknown id is an error that wraps
// [ErrNotFound].
func (s *Store) Revoke(ctx context.Context, id string) error {
	err := s.write(ctx, true, func(tx *sql.Tx) error {
		t := now()
		res, err := tx.ExecContext(ctx, `UPDATE keys SET revoked = ? WHERE id = ? AND revoked = 0`, toNanos(t), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			k, err := getKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE id = ?`, id), id)
			if err != nil {
				return err
			}
			return recordChange(ctx, tx, Change{Time: t, Type: audit.EventKeyRevoked, KeyID: id, Project: k.Project, KeyName: k.Name})
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM keys WHERE id = ?`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return notFound(id)
		}
		return err // nil: already revoked
	})
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	return nil
}

// Rotate replaces the key with the given id: it issues a successor in the
// same project with the same name and the same lifetime (counted from
// now; a key that never expires gets a successor that never expires),
// makes the old key expire after overlap (or keeps its expiry when that
// comes sooner), and records the successor's id in the old key's
// RotatedTo. It returns the successor's plaintext, which is not kept and
// cannot be shown again. A revoked key, or one already rotated, cannot be
// rotated; an expired one can.
func (s *Store) Rotate(ctx context.Context, id string, overlap time.Duration) (plaintext string, successor *Key, err error) {
	if overlap < 0 {
		return "", nil, fmt.Errorf("rotate key %q: negative overlap %v", id, overlap)
	}
	err = s.write(ctx, true, func(tx *sql.Tx) error {
		var ttl int64
		old, err := getKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+`, ttl FROM keys WHERE id = ?`, id), id, &ttl)
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
		plaintext, successor, err = insertKey(ctx, tx, old.Project, old.Name, time.Duration(ttl), t)
		if err != nil {
			return err
		}
		stop := t.Add(overlap)
		if !old.Expires.IsZero() && old.Expires.Before(stop) {
			stop = old.Expires
		}
		if _, err = tx.ExecContext(ctx, `UPDATE keys SET expires = ?, rotated_to = ? WHERE id = ?`, toNanos(stop), successor.ID, id); err != nil {
			return err
		}
		if err := recordChange(ctx, tx, Change{Time: t, Type: audit.EventKeyCreated, KeyID: successor.ID, Project: old.Project, KeyName: old.Name}); err != nil {
			return err
		}
		return recordChange(ctx, tx, Change{Time: t, Type: audit.EventKeyRotated, KeyID: id, Project: old.Project, KeyName: old.Name, NewKeyID: successor.ID})
	})
	if err != nil {
		return "", nil, fmt.Errorf("rotate key: %w", err)
	}
	return plaintext, successor, nil
}

// AddUsage adds the calls of each key in usage to its count and moves its
// last use forward, in one transaction. Ids the store does not hold are
// ignored (a key listed in the configuration is not in the store).
func (s *Store) AddUsage(ctx context.Context, usage map[string]Usage) error {
	if len(usage) == 0 {
		return nil
	}
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE keys SET calls = calls + ?, last_used = MAX(last_used, ?) WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, u := range usage {
			if _, err := stmt.ExecContext(ctx, u.Calls, toNanos(u.LastUsed), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record key usage: %w", err)
	}
	return nil
}

// Change is a key created, rotated or revoked, as the store recorded it
// in the transaction that made the change, for the audit log. A key is
// created, rotated and revoked at most once each, so Type and KeyID name
// one change.
type Change struct {
	// Seq orders the changes of one store; it is never reused.
	Seq int64
	// Time is when the change was made.
	Time time.Time
	// Type is [audit.EventKeyCreated], [audit.EventKeyRotated] or
	// [audit.EventKeyRevoked].
	Type string
	// KeyID, Project and KeyName describe the key; NewKeyID is the
	// successor of a rotated key.
	KeyID, Project, KeyName, NewKeyID string
}

// Event returns the audit event of the change, dated when it was made.
func (c Change) Event() *audit.Event {
	return &audit.Event{Time: c.Time, Type: c.Type, Project: c.Project, KeyID: c.KeyID, KeyName: c.KeyName, NewKeyID: c.NewKeyID}
}

// recordChange adds c to the changes waiting for the audit log.
func recordChange(ctx context.Context, tx *sql.Tx, c Change) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO key_changes (time, type, key_id, project, name, new_key_id) VALUES (?, ?, ?, ?, ?, ?)`,
		toNanos(c.Time), c.Type, c.KeyID, c.Project, c.KeyName, c.NewKeyID)
	return err
}

// PendingChanges returns the key changes not yet acknowledged with
// [Store.AckChanges], oldest first: every key created, rotated or
// revoked through this store (by any process) that no audit log has
// recorded yet.
func (s *Store) PendingChanges(ctx context.Context) ([]Change, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, time, type, key_id, project, name, new_key_id FROM key_changes ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read pending key changes: %w", err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var c Change
		var t int64
		if err := rows.Scan(&c.Seq, &t, &c.Type, &c.KeyID, &c.Project, &c.KeyName, &c.NewKeyID); err != nil {
			return nil, fmt.Errorf("read pending key changes: %w", err)
		}
		c.Time = fromNanos(t)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending key changes: %w", err)
	}
	return out, nil
}

// AckChanges forgets the pending key changes up to seq, which an audit
// log has recorded.
func (s *Store) AckChanges(ctx context.Context, seq int64) error {
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM key_changes WHERE seq <= ?`, seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("acknowledge key changes: %w", err)
	}
	return nil
}
