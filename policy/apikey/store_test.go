package apikey_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
)

// openStore opens a key store in a fresh temporary folder and closes it
// when the test ends.
func openStore(t testing.TB) (*apikey.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "toolgate.db")
	s, err := apikey.OpenStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// reopen opens a second handle on the file at path, as another process
// would.
func reopen(t testing.TB, path string) *apikey.Store {
	t.Helper()
	s, err := apikey.OpenStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustCreate(t testing.TB, s apikey.Backend, project, name string, ttl time.Duration) (string, *apikey.Key) {
	t.Helper()
	plaintext, k, err := s.Create(context.Background(), project, name, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return plaintext, k
}

func mustGet(t testing.TB, s apikey.Backend, id string) *apikey.Key {
	t.Helper()
	k, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// opener opens a new, empty key store of one backend; the function it
// returns opens another handle on the same store, as another process
// (the command line, another replica) would.
type opener func(t testing.TB) (apikey.Backend, func(t testing.TB) apikey.Backend)

// eachBackend runs a test of the key store against every backend: the
// SQLite file and PostgreSQL (a real server, see internal/servertest).
func eachBackend(t *testing.T, test func(t *testing.T, open opener)) {
	t.Run("sqlite", func(t *testing.T) {
		test(t, func(t testing.TB) (apikey.Backend, func(testing.TB) apikey.Backend) {
			s, path := openStore(t)
			return s, func(t testing.TB) apikey.Backend { return reopen(t, path) }
		})
	})
	t.Run("postgres", func(t *testing.T) {
		test(t, func(t testing.TB) (apikey.Backend, func(testing.TB) apikey.Backend) {
			url := servertest.Postgres(t)
			open := func(t testing.TB) apikey.Backend {
				s, err := apikey.OpenPGStore(context.Background(), url, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(t), open
		})
	})
}

func TestOpenKeyStoreCreatesPrivateFiles(t *testing.T) {
	s, path := openStore(t)
	if _, _, err := s.Create(context.Background(), "default", "ci", 0); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{
		filepath.Dir(path): 0o700 | os.ModeDir,
		path:               0o600,
		path + "-wal":      0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may only take permissions away.
		if got := fi.Mode(); got&^want != 0 {
			t.Errorf("%s has mode %v, want at most %v", p, got, want)
		}
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
}

func TestOpenKeyStoreErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	t.Run("empty path", func(t *testing.T) {
		if _, err := apikey.OpenStore(ctx, ""); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(dir, "junk.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := apikey.OpenStore(ctx, path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("error %v, want one naming %s", err, path)
		}
	})
	t.Run("folder in the way", func(t *testing.T) {
		file := filepath.Join(dir, "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := apikey.OpenStore(ctx, filepath.Join(file, "toolgate.db")); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("newer schema", func(t *testing.T) {
		path := filepath.Join(dir, "future.db")
		db := rawDB(t, path)
		if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err := apikey.OpenStore(ctx, path)
		if err == nil || !strings.Contains(err.Error(), "schema version 99 is newer") {
			t.Fatalf("error %v, want one about the newer schema", err)
		}
	})
}

// rawDB opens a database file with the driver alone.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// schemaV1 is the database as the first version of the key store wrote
// it. Kept verbatim so that the migration from it stays tested.
const schemaV1 = `
CREATE TABLE keys (
	id            TEXT PRIMARY KEY,
	project       TEXT NOT NULL,
	name          TEXT NOT NULL,
	secret_sha256 TEXT NOT NULL,
	created       INTEGER NOT NULL,
	expires       INTEGER NOT NULL DEFAULT 0,
	revoked       INTEGER NOT NULL DEFAULT 0,
	last_used     INTEGER NOT NULL DEFAULT 0,
	calls         INTEGER NOT NULL DEFAULT 0,
	rotated_to    TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX keys_by_project ON keys (project, created);
PRAGMA user_version = 1;
`

func TestOpenKeyStoreMigratesVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "toolgate.db")
	db := rawDB(t, path)
	if _, err := db.Exec(schemaV1); err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-time.Hour).UTC().Round(0)
	plaintext, id, hash, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	// A 30-day key, used 7 times.
	_, err = db.Exec(`INSERT INTO keys (id, project, name, secret_sha256, created, expires, last_used, calls) VALUES (?, 'team', 'old', ?, ?, ?, ?, 7)`,
		id, hash, created.UnixNano(), created.Add(30*24*time.Hour).UnixNano(), created.Add(time.Minute).UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := reopen(t, path)
	want := &apikey.Key{
		ID: id, Name: "old", Project: "team", Created: created, Expires: created.Add(30 * 24 * time.Hour),
		LastUsed: created.Add(time.Minute), Calls: 7, Source: apikey.SourceStore,
	}
	if diff := cmp.Diff(want, mustGet(t, s, id)); diff != "" {
		t.Errorf("key after migration (-want +got):\n%s", diff)
	}
	v1, err := s.Version(ctx)
	if err != nil {
		t.Fatalf("Version after migration: %v", err)
	}

	// The old key still authenticates.
	a, err := apikey.NewAuthenticator(ctx, s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(plaintext, "team"); err != nil {
		t.Errorf("key from version 1 refused: %v", err)
	}

	// Migration 2 derived the key's lifetime, which rotation hands on.
	_, succ, err := s.Rotate(ctx, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := succ.Expires.Sub(succ.Created); got != 30*24*time.Hour {
		t.Errorf("successor lifetime %v, want 720h", got)
	}
	if v2, _ := s.Version(ctx); v2 == v1 {
		t.Errorf("Version did not change on rotation")
	}

	// Migration 3 keeps the changes made since for the audit log; the
	// keys made before it are not in it.
	pending, err := s.PendingChanges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range pending {
		kinds = append(kinds, c.Type+" "+c.KeyID)
	}
	if want := []string{"key.created " + succ.ID, "key.rotated " + id}; !cmp.Equal(kinds, want) {
		t.Errorf("pending changes = %v, want %v", kinds, want)
	}

	var uv int
	if err := rawDB(t, path).QueryRow("PRAGMA user_version").Scan(&uv); err != nil || uv != 3 {
		t.Errorf("user_version = %d (%v), want 3", uv, err)
	}
	// Opening again applies nothing more.
	reopen(t, path)
}

func TestKeyStoreCreateGetList(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, _ := open(t)
		before := time.Now()
		plaintext, a, err := s.Create(ctx, "default", "ci", 90*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := apikey.Parse(plaintext)
		if err != nil || id != a.ID {
			t.Fatalf("plaintext id %q (%v), key id %q", id, err, a.ID)
		}
		if a.Created.Before(before.Add(-time.Second)) || a.Created.After(time.Now()) {
			t.Errorf("Created = %v, want about now", a.Created)
		}
		if got := a.Expires.Sub(a.Created); got != 90*24*time.Hour {
			t.Errorf("Expires - Created = %v, want 90 days", got)
		}
		if a.Source != apikey.SourceStore || a.Project != "default" || a.Name != "ci" {
			t.Errorf("key = %+v", a)
		}
		if diff := cmp.Diff(a, mustGet(t, s, a.ID)); diff != "" {
			t.Errorf("Get differs from Create (-create +get):\n%s", diff)
		}
		_, b := mustCreate(t, s, "team", "alice's laptop", 0)
		_, c := mustCreate(t, s, "default", "bench", 0)
		if !b.Expires.IsZero() {
			t.Errorf("ttl 0 gave expiry %v", b.Expires)
		}

		ids := func(keys []*apikey.Key) []string {
			var out []string
			for _, k := range keys {
				out = append(out, k.ID)
			}
			return out
		}
		all, err := s.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{a.ID, c.ID, b.ID}, ids(all)); diff != "" {
			t.Errorf("List(all) ids (-want +got):\n%s", diff)
		}
		team, err := s.List(ctx, "team")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]*apikey.Key{b}, team); diff != "" {
			t.Errorf("List(team) (-want +got):\n%s", diff)
		}
		none, err := s.List(ctx, "nobody")
		if err != nil || len(none) != 0 {
			t.Errorf("List(nobody) = %v, %v", none, err)
		}
	})
}

func TestKeyStoreCreateErrors(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		s, _ := open(t)
		tests := []struct {
			name, project, keyName string
			ttl                    time.Duration
			want                   string
		}{
			{"empty project", "", "ci", 0, `invalid project name ""`},
			{"bad project", "a/b", "ci", 0, `invalid project name "a/b"`},
			{"long project", strings.Repeat("p", 65), "ci", 0, "invalid project name"},
			{"empty name", "default", " ", 0, "empty key name"},
			{"control character", "default", "a\nb", 0, "control character"},
			{"long name", "default", strings.Repeat("n", 101), 0, "longer than 100"},
			{"invalid UTF-8", "default", "\xff", 0, "not valid UTF-8"},
			{"negative ttl", "default", "ci", -time.Second, "negative lifetime"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, _, err := s.Create(context.Background(), tt.project, tt.keyName, tt.ttl)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want one containing %q", err, tt.want)
				}
			})
		}
		if keys, _ := s.List(context.Background(), ""); len(keys) != 0 {
			t.Errorf("failed creates left %d keys", len(keys))
		}
	})
}

func TestKeyStoreUnknownID(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, _ := open(t)
		check := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, apikey.ErrNotFound) || !strings.Contains(err.Error(), `"nosuchkey234"`) {
				t.Errorf("%s: error %v, want ErrNotFound naming the id", what, err)
			}
		}
		_, err := s.Get(ctx, "nosuchkey234")
		check("Get", err)
		check("Revoke", s.Revoke(ctx, "nosuchkey234"))
		_, _, err = s.Rotate(ctx, "nosuchkey234", time.Hour)
		check("Rotate", err)
	})
}

func TestKeyStoreRevoke(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, _ := open(t)
		_, k := mustCreate(t, s, "default", "ci", 0)
		before := time.Now()
		if err := s.Revoke(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		got := mustGet(t, s, k.ID)
		if got.Revoked.Before(before.Add(-time.Second)) || got.Status(time.Now()) != apikey.StatusRevoked {
			t.Fatalf("after Revoke: %+v", got)
		}
		// Revoking again changes nothing.
		if err := s.Revoke(ctx, k.ID); err != nil {
			t.Fatalf("second Revoke: %v", err)
		}
		if again := mustGet(t, s, k.ID); !again.Revoked.Equal(got.Revoked) {
			t.Errorf("second Revoke moved the time from %v to %v", got.Revoked, again.Revoked)
		}
	})
}

func TestKeyStoreRotate(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, _ := open(t)

		t.Run("keeps project, name and lifetime", func(t *testing.T) {
			_, old := mustCreate(t, s, "team", "ci", 90*24*time.Hour)
			plaintext, succ, err := s.Rotate(ctx, old.ID, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if id, _, err := apikey.Parse(plaintext); err != nil || id != succ.ID {
				t.Fatalf("successor plaintext id %q (%v), key %q", id, err, succ.ID)
			}
			if succ.ID == old.ID || succ.Project != "team" || succ.Name != "ci" || succ.RotatedTo != "" {
				t.Errorf("successor = %+v", succ)
			}
			if got := succ.Expires.Sub(succ.Created); got != 90*24*time.Hour {
				t.Errorf("successor lifetime %v, want 90 days", got)
			}
			after := mustGet(t, s, old.ID)
			if after.RotatedTo != succ.ID {
				t.Errorf("old RotatedTo = %q, want %q", after.RotatedTo, succ.ID)
			}
			if got := after.Expires.Sub(succ.Created); got != 24*time.Hour {
				t.Errorf("old key expires %v after the rotation, want 24h", got)
			}
			if diff := cmp.Diff(succ, mustGet(t, s, succ.ID)); diff != "" {
				t.Errorf("stored successor (-returned +stored):\n%s", diff)
			}

			// Rotating the old key again would make a second successor.
			_, _, err = s.Rotate(ctx, old.ID, time.Hour)
			if err == nil || !strings.Contains(err.Error(), "already rotated to "+fmt.Sprintf("%q", succ.ID)) {
				t.Errorf("second rotation: %v", err)
			}
			// The successor itself can be rotated.
			if _, _, err := s.Rotate(ctx, succ.ID, 0); err != nil {
				t.Errorf("rotating the successor: %v", err)
			}
		})

		t.Run("never-expiring key", func(t *testing.T) {
			_, old := mustCreate(t, s, "default", "forever", 0)
			_, succ, err := s.Rotate(ctx, old.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !succ.Expires.IsZero() {
				t.Errorf("successor expires %v, want never", succ.Expires)
			}
			after := mustGet(t, s, old.ID)
			if !after.Expires.Equal(succ.Created) || after.Status(succ.Created) != apikey.StatusExpired {
				t.Errorf("with no overlap the old key should stop at once: expires %v, rotated %v", after.Expires, succ.Created)
			}
		})

		t.Run("sooner expiry stays", func(t *testing.T) {
			_, old := mustCreate(t, s, "default", "short", time.Hour)
			if _, _, err := s.Rotate(ctx, old.ID, 7*24*time.Hour); err != nil {
				t.Fatal(err)
			}
			if after := mustGet(t, s, old.ID); !after.Expires.Equal(old.Expires) {
				t.Errorf("old expiry moved from %v to %v", old.Expires, after.Expires)
			}
		})

		t.Run("revoked key", func(t *testing.T) {
			_, old := mustCreate(t, s, "default", "gone", 0)
			if err := s.Revoke(ctx, old.ID); err != nil {
				t.Fatal(err)
			}
			_, _, err := s.Rotate(ctx, old.ID, time.Hour)
			if err == nil || !strings.Contains(err.Error(), "is revoked") || !strings.Contains(err.Error(), old.ID) {
				t.Fatalf("error %v, want one saying %s is revoked", err, old.ID)
			}
		})

		t.Run("negative overlap", func(t *testing.T) {
			_, old := mustCreate(t, s, "default", "neg", 0)
			if _, _, err := s.Rotate(ctx, old.ID, -time.Second); err == nil || !strings.Contains(err.Error(), "negative overlap") {
				t.Fatalf("error %v", err)
			}
		})
	})
}

func TestKeyStoreVersion(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, reopen := open(t)
		other := reopen(t) // another process
		version := func() int64 {
			t.Helper()
			v, err := other.Version(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		v := version()
		_, k := mustCreate(t, s, "default", "ci", 0)
		if version() == v {
			t.Fatalf("Version did not change on create")
		}
		for _, step := range []struct {
			name   string
			do     func() error
			change bool
		}{
			{"usage", func() error {
				return s.AddUsage(ctx, map[string]apikey.Usage{k.ID: {Calls: 1, LastUsed: time.Now()}})
			}, false},
			{"rotate", func() error { _, _, err := s.Rotate(ctx, k.ID, time.Hour); return err }, true},
			{"revoke", func() error { return s.Revoke(ctx, k.ID) }, true},
			{"create", func() error { _, _, err := s.Create(ctx, "default", "x", 0); return err }, true},
		} {
			before := version()
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			if changed := version() != before; changed != step.change {
				t.Errorf("%s: version changed = %v, want %v", step.name, changed, step.change)
			}
		}
	})
}

func TestKeyStoreAddUsage(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, reopen := open(t)
		_, a := mustCreate(t, s, "default", "a", 0)
		_, b := mustCreate(t, s, "default", "b", 0)
		t1 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

		if err := s.AddUsage(ctx, nil); err != nil {
			t.Fatalf("empty AddUsage: %v", err)
		}
		if err := s.AddUsage(ctx, map[string]apikey.Usage{
			a.ID:           {Calls: 3, LastUsed: t1},
			"configkey123": {Calls: 9, LastUsed: t1}, // not in the store: ignored
		}); err != nil {
			t.Fatal(err)
		}
		// An older last use does not move LastUsed back.
		if err := s.AddUsage(ctx, map[string]apikey.Usage{a.ID: {Calls: 2, LastUsed: t1.Add(-time.Hour)}, b.ID: {Calls: 1, LastUsed: t1}}); err != nil {
			t.Fatal(err)
		}
		other := reopen(t)
		for _, tt := range []struct {
			id    string
			calls int64
		}{{a.ID, 5}, {b.ID, 1}} {
			k := mustGet(t, other, tt.id)
			if k.Calls != tt.calls || !k.LastUsed.Equal(t1) {
				t.Errorf("key %s: calls %d, last used %v; want %d, %v", tt.id, k.Calls, k.LastUsed, tt.calls, t1)
			}
		}
	})
}

// TestKeyStoreConcurrentHandles writes through two handles on one file
// at once, as the command line and a running gateway do.
func TestKeyStoreConcurrentHandles(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s1, reopen := open(t)
		s2 := reopen(t)
		_, shared := mustCreate(t, s1, "default", "shared", 0)

		const workers, each = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, 2*workers*each)
		for w := range 2 * workers {
			s := []apikey.Backend{s1, s2}[w%2]
			wg.Go(func() {
				for i := range each {
					if _, _, err := s.Create(ctx, "default", fmt.Sprintf("w%d-%d", w, i), 0); err != nil {
						errs <- err
					}
					if err := s.AddUsage(ctx, map[string]apikey.Usage{shared.ID: {Calls: 1, LastUsed: time.Now()}}); err != nil {
						errs <- err
					}
					if _, err := s.List(ctx, ""); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		keys, err := s2.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(keys), 1+2*workers*each; got != want {
			t.Errorf("%d keys, want %d", got, want)
		}
		if k := mustGet(t, s1, shared.ID); k.Calls != 2*workers*each {
			t.Errorf("shared key calls = %d, want %d", k.Calls, 2*workers*each)
		}
	})
}

// TestHelperProcess is not a test: it is the other process of the tests
// that share a key store between processes (see inOtherProcess).
func TestHelperProcess(t *testing.T) {
	path := os.Getenv("TOOLGATE_TEST_KEYSTORE")
	if path == "" {
		t.Skip("helper process for the tests that share a key store between processes")
	}
	ctx := context.Background()
	s, err := apikey.OpenStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if id := os.Getenv("TOOLGATE_TEST_REVOKE"); id != "" {
		if err := s.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := strconv.Atoi(os.Getenv("TOOLGATE_TEST_CREATE"))
	for i := range n {
		if _, _, err := s.Create(ctx, "default", fmt.Sprint("child", i), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// inOtherProcess starts this test binary as another process that opens the
// key store at path and applies env (TOOLGATE_TEST_REVOKE=id,
// TOOLGATE_TEST_CREATE=n). wait returns once it has exited.
func inOtherProcess(t *testing.T, path string, env ...string) (wait func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), "TOOLGATE_TEST_KEYSTORE="+path), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var once sync.Once
	wait = func() {
		once.Do(func() {
			if err := <-done; err != nil {
				t.Errorf("helper process: %v\n%s", err, out.String())
			}
		})
	}
	t.Cleanup(wait)
	return wait
}

// TestKeyStoreOtherProcess writes from another process while this one
// writes and reads.
func TestKeyStoreOtherProcess(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	_, k := mustCreate(t, s, "default", "mine", 0)
	const n = 30
	wait := inOtherProcess(t, path, "TOOLGATE_TEST_CREATE="+strconv.Itoa(n))
	for i := range n {
		if _, _, err := s.Create(ctx, "default", fmt.Sprint("parent", i), 0); err != nil {
			t.Fatal(err)
		}
		if err := s.AddUsage(ctx, map[string]apikey.Usage{k.ID: {Calls: 1, LastUsed: time.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
	wait()
	keys, err := s.List(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1+2*n {
		t.Errorf("%d keys, want %d", len(keys), 1+2*n)
	}
	if got := mustGet(t, s, k.ID).Calls; got != n {
		t.Errorf("calls = %d, want %d", got, n)
	}
}

// Each change is kept for the audit log, with its time, in the
// transaction that makes it, also when made through another handle (the
// command line while a gateway runs), until acknowledged.
func TestKeyStorePendingChanges(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s, reopen := open(t)
		other := reopen(t)
		_, k, err := other.Create(ctx, "team", "ci", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Revoke(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := other.Rotate(ctx, k.ID, time.Hour); err == nil {
			t.Fatal("rotated a revoked key")
		}
		revoked := mustGet(t, s, k.ID).Revoked
		got, err := s.PendingChanges(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []apikey.Change{
			{Seq: 1, Time: k.Created, Type: audit.EventKeyCreated, KeyID: k.ID, Project: "team", KeyName: "ci"},
			{Seq: 2, Time: revoked, Type: audit.EventKeyRevoked, KeyID: k.ID, Project: "team", KeyName: "ci"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("pending (-want +got):\n%s", diff)
		}
		if ev := got[1].Event(); ev.Type != audit.EventKeyRevoked || !ev.Time.Equal(revoked) || ev.KeyID != k.ID || ev.KeyName != "ci" {
			t.Errorf("event of %+v = %+v", got[1], ev)
		}
		if err := s.AckChanges(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Create(ctx, "team", "next", 0); err != nil {
			t.Fatal(err)
		}
		got, _ = s.PendingChanges(ctx)
		if len(got) != 2 || got[0].Seq != 2 || got[1].Seq != 3 {
			t.Errorf("after acknowledging 1: %+v", got)
		}
	})
}
