package apikey

import (
	"context"
	"time"
)

// Backend keeps API keys and their usage: [Store] in a SQLite file of
// one machine, or [PGStore] in a PostgreSQL database that several
// gateways (replicas) share. Both hold the same records and behave the
// same; one table of tests runs against both.
type Backend interface {
	// Create issues a new key for project, labelled name, that expires
	// after ttl (0: never). It returns the key itself, which is not kept
	// and cannot be shown again, and its description.
	Create(ctx context.Context, project, name string, ttl time.Duration) (plaintext string, key *Key, err error)
	// List returns the keys of project, or of all projects when project
	// is "", ordered by project and creation time.
	List(ctx context.Context, project string) ([]*Key, error)
	// Get returns the key with the given id; an unknown id is an error
	// that wraps [ErrNotFound].
	Get(ctx context.Context, id string) (*Key, error)
	// Revoke revokes the key at once (see [Store.Revoke]).
	Revoke(ctx context.Context, id string) error
	// Rotate replaces the key by a successor (see [Store.Rotate]).
	Rotate(ctx context.Context, id string, overlap time.Duration) (plaintext string, successor *Key, err error)
	// AddUsage adds calls and moves last uses forward (see
	// [Store.AddUsage]); the counts of every gateway add up.
	AddUsage(ctx context.Context, usage map[string]Usage) error
	// Version changes whenever a key is created, revoked or rotated.
	Version(ctx context.Context) (int64, error)
	// PendingChanges returns the key changes no audit log has recorded
	// yet, oldest first; AckChanges forgets those up to seq.
	PendingChanges(ctx context.Context) ([]Change, error)
	AckChanges(ctx context.Context, seq int64) error
	// Export returns every key with the hash of its secret, for moving
	// keys to another backend ([Backend.Import]) and for the
	// authenticator.
	Export(ctx context.Context) ([]Record, error)
	// Import adds keys exported from another backend, as they are (ids,
	// hashes, times, usage). A key whose id the backend already holds is
	// skipped; it returns how many were added. It records no key change:
	// the changes were recorded where the keys were made.
	Import(ctx context.Context, keys []Record) (added int, err error)
	// Close releases the backend.
	Close() error
}

var (
	_ Backend = (*Store)(nil)
	_ Backend = (*PGStore)(nil)
)

// Record is a stored key as [Backend.Export] gives it: its description,
// the hex SHA-256 of its secret, and the lifetime a rotation hands on.
type Record struct {
	Key
	// SecretSHA256 is the hex SHA-256 of the key's secret part.
	SecretSHA256 string
	// TTL is the key's lifetime, which its successor gets (0: never
	// expires).
	TTL time.Duration
}

// notifier is a backend that says when keys may have changed, sooner than
// polling Version would tell.
type notifier interface {
	// Changed receives a value when keys may have changed.
	Changed() <-chan struct{}
}
