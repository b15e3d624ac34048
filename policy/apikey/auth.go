package apikey

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons an API key is refused. [Authenticator.Authenticate] returns an
// [*AuthError] that wraps one of them (test with errors.Is).
var (
	ErrMissing      = errors.New("no API key presented")
	ErrMalformed    = errors.New("malformed API key")
	ErrUnknown      = errors.New("unknown API key")
	ErrRevoked      = errors.New("API key revoked")
	ErrExpired      = errors.New("API key expired")
	ErrWrongProject = errors.New("API key not valid for this project")
)

// AuthError is a refused API key. Its message is meant for the client
// that presented the key: it names the key's id only when the client
// proved it holds the key, and never the key's project.
type AuthError struct {
	// KeyID is the id of the key when the presented secret matched it
	// (revoked, expired or wrong project), for logs and audit; else "".
	KeyID string
	err   error // one of the sentinels, or Parse's error wrapping ErrMalformed
	at    time.Time
}

// Error says why the key was refused, with the key's id when the client
// proved it holds the key, and the expiry of an expired key.
func (e *AuthError) Error() string {
	switch {
	case errors.Is(e.err, ErrExpired):
		return fmt.Sprintf("%v (key %s, at %s)", e.err, e.KeyID, e.at.UTC().Format(time.RFC3339))
	case e.KeyID != "":
		return fmt.Sprintf("%v (key %s)", e.err, e.KeyID)
	}
	return e.err.Error()
}

// Unwrap returns the reason, one of the Err sentinels (for a malformed
// key, an error that wraps ErrMalformed).
func (e *AuthError) Unwrap() error { return e.err }

// Reason is a short, stable name of the reason, for metrics and audit
// events: "missing_key", "malformed_key", "unknown_key", "revoked_key",
// "expired_key" or "wrong_project".
func (e *AuthError) Reason() string {
	for _, r := range reasons {
		if errors.Is(e.err, r.err) {
			return r.name
		}
	}
	return "unknown_key"
}

var reasons = []struct {
	err  error
	name string
}{
	{ErrMissing, "missing_key"},
	{ErrMalformed, "malformed_key"},
	{ErrUnknown, "unknown_key"},
	{ErrRevoked, "revoked_key"},
	{ErrExpired, "expired_key"},
	{ErrWrongProject, "wrong_project"},
}

// ConfigKey is a key listed in the configuration file by the hex SHA-256
// of the whole key (see [Hash]), for deployments without a key store.
type ConfigKey struct {
	Name    string // a label, as for stored keys
	Project string // the only project whose endpoint accepts the key
	SHA256  string // the hex SHA-256 of the whole key
}

// AuthOptions configure an [Authenticator]. A nil *AuthOptions, and zero
// fields, mean the defaults.
type AuthOptions struct {
	// Now is the clock that decides expiry (default time.Now).
	Now func() time.Time
	// RefreshInterval is how often Run asks the store whether keys changed
	// (default 2s): a key revoked by another process stops working within
	// about this long.
	RefreshInterval time.Duration
	// FlushInterval is how often Run writes recorded usage to the store
	// (default 5s).
	FlushInterval time.Duration
	// Logger receives store errors met in the background (default
	// slog.Default()).
	Logger *slog.Logger
	// OnKeyChange, when set, records a key change in the audit log. The
	// store keeps every key created, rotated or revoked (by any process,
	// with or without a gateway running) until it is recorded: Refresh
	// calls OnKeyChange for each change pending, oldest first, and the
	// store then forgets the ones it recorded. A change whose call fails
	// stays pending, with those after it, for the next Refresh. Each
	// change is handed over once per process, even when the store could
	// not be told it was recorded. NewAuthenticator does not call it: the
	// first Refresh after it (a call, or Run's first tick) does, whether
	// or not the keys changed meanwhile.
	OnKeyChange func(Change) error
}

// Defaults of [AuthOptions].
const (
	DefaultRefreshInterval = 2 * time.Second
	DefaultFlushInterval   = 5 * time.Second
)

// finalFlushTimeout bounds the flush Run does on its way out.
const finalFlushTimeout = 5 * time.Second

// Authenticator checks API keys presented by clients. It holds every key
// in memory, so [Authenticator.Authenticate] never touches the disk; Run
// keeps that copy in step with the store and writes usage back in
// batches. It is safe for concurrent use.
type Authenticator struct {
	store        Backend
	now          func() time.Time
	refreshEvery time.Duration
	flushEvery   time.Duration
	log          *slog.Logger
	onKeyChange  func(Change) error

	snap atomic.Pointer[authSnapshot] // read lock-free by Authenticate

	refreshMu sync.Mutex     // one Refresh at a time; guards version, loaded, pending and handed
	version   int64          // store version of storeKeys
	loaded    bool           // storeKeys has been loaded once
	pending   bool           // key changes may wait for OnKeyChange
	handed    map[int64]bool // changes OnKeyChange took that the store still holds

	mu        sync.Mutex // serialises snapshot rebuilds; guards storeKeys and cfgKeys
	storeKeys map[string]authEntry
	cfgKeys   []authEntry

	flushMu sync.Mutex // one flush at a time, so Flush returns after any flush in flight
	usageMu sync.Mutex
	usage   map[string]Usage
}

// authSnapshot is an immutable view of all keys.
type authSnapshot struct {
	store  map[string]authEntry // by id
	config []authEntry
}

// authEntry is a key and the SHA-256 that proves it: of the secret for a
// stored key, of the whole key for a configuration key.
type authEntry struct {
	key  *Key
	hash [sha256.Size]byte
}

// dummyHash stands in for the hash of an unknown key id, so that an
// unknown id costs the same hashing and comparing as a known one.
var dummyHash = sha256.Sum256([]byte("toolgate: no key has this id"))

// NewAuthenticator returns an authenticator for the keys in store (which
// may be nil: configuration keys only) and configKeys, all loaded into
// memory now. A configuration key with a malformed hash or no project is
// an error.
func NewAuthenticator(ctx context.Context, store Backend, configKeys []ConfigKey, opts *AuthOptions) (*Authenticator, error) {
	if opts == nil {
		opts = &AuthOptions{}
	}
	switch s := store.(type) {
	case *Store:
		if s == nil {
			store = nil // a nil *Store is no store, as before Backend
		}
	case *PGStore:
		if s == nil {
			store = nil
		}
	}
	a := &Authenticator{
		store:        store,
		now:          opts.Now,
		refreshEvery: opts.RefreshInterval,
		flushEvery:   opts.FlushInterval,
		log:          opts.Logger,
		onKeyChange:  opts.OnKeyChange,
		storeKeys:    map[string]authEntry{},
		handed:       map[int64]bool{},
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.refreshEvery <= 0 {
		a.refreshEvery = DefaultRefreshInterval
	}
	if a.flushEvery <= 0 {
		a.flushEvery = DefaultFlushInterval
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if err := a.SetConfigKeys(configKeys); err != nil {
		return nil, err
	}
	if err := a.Refresh(ctx); err != nil {
		return nil, err
	}
	a.pending = true // for the first Refresh after this one
	return a, nil
}

// SetConfigKeys replaces the configuration keys (on a configuration
// reload). When one of them is invalid it returns an error naming it and
// keeps the previous ones.
func (a *Authenticator) SetConfigKeys(keys []ConfigKey) error {
	entries := make([]authEntry, 0, len(keys))
	var errs []error
	for i, ck := range keys {
		h, err := decodeHash(strings.ToLower(ck.SHA256))
		if err != nil {
			errs = append(errs, fmt.Errorf("config key %d (%q): sha256: %w", i, ck.Name, err))
			continue
		}
		if ck.Project == "" {
			errs = append(errs, fmt.Errorf("config key %d (%q): no project", i, ck.Name))
			continue
		}
		entries = append(entries, authEntry{hash: h, key: &Key{
			ID:      configKeyID(h),
			Name:    ck.Name,
			Project: ck.Project,
			Source:  SourceConfig,
		}})
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cfgKeys = entries
	a.publish()
	return nil
}

// configKeyID names a configuration key, which is known only by the hash
// of the whole key, by the first 12 hex digits of that hash. When the key
// is presented with the tg_ shape, Authenticate reports its own id instead.
func configKeyID(h [sha256.Size]byte) string {
	return fmt.Sprintf("%x", h[:IDLen/2])
}

// publish makes the current keys visible to Authenticate; a.mu is held.
func (a *Authenticator) publish() {
	a.snap.Store(&authSnapshot{store: a.storeKeys, config: a.cfgKeys})
}

// Refresh reloads the stored keys when the store changed since the last
// load, and hands the key changes pending in the store to OnKeyChange
// (see [AuthOptions]). Run calls it every RefreshInterval; call it
// directly to apply a change at once. When the keys cannot be loaded, the
// keys in memory stay as they were; when a change cannot be recorded, it
// stays pending.
func (a *Authenticator) Refresh(ctx context.Context) error {
	if a.store == nil {
		return nil
	}
	a.refreshMu.Lock()
	defer a.refreshMu.Unlock()
	// Read the version first: a change made while loading is then loaded
	// again on the next refresh, never missed.
	v, err := a.store.Version(ctx)
	if err != nil {
		return err
	}
	if a.loaded && v == a.version {
		return a.recordChanges(ctx)
	}
	stored, err := a.store.Export(ctx)
	if err != nil {
		return err
	}
	keys := make(map[string]authEntry, len(stored))
	for i := range stored {
		sk := &stored[i]
		h, err := decodeHash(sk.SecretSHA256)
		if err != nil {
			a.log.Error("key store holds a malformed hash; the key is ignored", "key", sk.ID, "error", err)
			continue
		}
		keys[sk.ID] = authEntry{key: &sk.Key, hash: h}
	}
	a.mu.Lock()
	a.storeKeys = keys
	a.publish()
	a.mu.Unlock()
	first := !a.loaded
	a.version, a.loaded = v, true
	if first {
		return nil // NewAuthenticator: OnKeyChange may not be ready yet
	}
	a.pending = true
	return a.recordChanges(ctx)
}

// recordChanges hands the changes pending in the store to OnKeyChange,
// oldest first, and tells the store which were recorded. Called with
// refreshMu held.
func (a *Authenticator) recordChanges(ctx context.Context) error {
	if a.onKeyChange == nil || !a.pending {
		return nil
	}
	changes, err := a.store.PendingChanges(ctx)
	if err != nil {
		return err
	}
	done := int64(-1)
	var recordErr error
	for _, c := range changes {
		if !a.handed[c.Seq] {
			if recordErr = a.onKeyChange(c); recordErr != nil {
				break
			}
			a.handed[c.Seq] = true
		}
		done = c.Seq
	}
	if done >= 0 {
		if err := a.store.AckChanges(ctx, done); err != nil {
			return err // handed keeps them from being recorded twice
		}
		for seq := range a.handed {
			if seq <= done {
				delete(a.handed, seq)
			}
		}
	}
	if recordErr != nil {
		return fmt.Errorf("record key changes: %w", recordErr)
	}
	a.pending = false
	return nil
}

// Authenticate checks a key presented for project and returns its
// description (a copy the caller may keep). A refusal is an [*AuthError]
// that wraps ErrMissing, ErrMalformed, ErrUnknown (also for a
// known id with the wrong secret), ErrRevoked, ErrExpired or
// ErrWrongProject.
//
// It reads memory only. Hashes are compared in constant time, and an
// unknown key id costs the same work as a known one, so the response
// time does not tell whether an id exists.
func (a *Authenticator) Authenticate(presented, project string) (*Key, error) {
	if presented == "" {
		return nil, &AuthError{err: ErrMissing}
	}
	s := a.snap.Load()

	// Configuration keys: compare the hash of the whole key with every one
	// of them, preferring one of the requested project.
	var match *Key
	if len(s.config) > 0 {
		whole := sha256.Sum256([]byte(presented))
		for i := range s.config {
			e := &s.config[i]
			if subtle.ConstantTimeCompare(whole[:], e.hash[:]) == 1 && (match == nil || match.Project != project) {
				match = e.key
			}
		}
	}
	if match != nil {
		k := *match
		// A configuration key need not have the generated form; only one
		// that does has an id (checked first: Parse's error is built
		// with fmt, on every request of such a key).
		if len(presented) == Len && strings.HasPrefix(presented, Prefix) {
			if id, _, err := Parse(presented); err == nil {
				k.ID = id
			}
		}
		return a.check(&k, project)
	}
	id, secret, perr := Parse(presented)
	if perr != nil {
		return nil, &AuthError{err: perr}
	}

	sum := sha256.Sum256([]byte(secret))
	e, known := s.store[id]
	want := &dummyHash
	if known {
		want = &e.hash
	}
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !known {
		return nil, &AuthError{err: ErrUnknown}
	}
	k := *e.key
	return a.check(&k, project)
}

// check refuses a key the caller proved to hold but may not use.
func (a *Authenticator) check(k *Key, project string) (*Key, error) {
	now := a.now()
	switch k.Status(now) {
	case StatusRevoked:
		return nil, &AuthError{KeyID: k.ID, err: ErrRevoked}
	case StatusExpired:
		return nil, &AuthError{KeyID: k.ID, err: ErrExpired, at: k.Expires}
	}
	if k.Project != project {
		return nil, &AuthError{KeyID: k.ID, err: ErrWrongProject}
	}
	return k, nil
}

// RecordUse counts one use of the key with the given id, in memory; Run
// and Flush write the counts to the store. Uses of configuration keys are
// not kept.
func (a *Authenticator) RecordUse(id string) {
	if id == "" {
		return
	}
	now := a.now()
	a.usageMu.Lock()
	defer a.usageMu.Unlock()
	if a.usage == nil {
		a.usage = map[string]Usage{}
	}
	u := a.usage[id]
	u.Calls++
	if now.After(u.LastUsed) {
		u.LastUsed = now
	}
	a.usage[id] = u
}

// Flush writes the usage recorded since the last flush to the store, in
// one transaction; once it returns nil, every use recorded before the
// call is in the store. When the write fails, the usage is kept for the
// next flush.
func (a *Authenticator) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.usageMu.Lock()
	pending := a.usage
	a.usage = nil
	a.usageMu.Unlock()
	if len(pending) == 0 || a.store == nil {
		return nil
	}
	s := a.snap.Load()
	for id := range pending {
		if _, ok := s.store[id]; !ok {
			delete(pending, id) // a configuration key
		}
	}
	err := a.store.AddUsage(ctx, pending)
	if err != nil {
		a.usageMu.Lock()
		if a.usage == nil {
			a.usage = map[string]Usage{}
		}
		for id, p := range pending {
			u := a.usage[id]
			u.Calls += p.Calls
			if p.LastUsed.After(u.LastUsed) {
				u.LastUsed = p.LastUsed
			}
			a.usage[id] = u
		}
		a.usageMu.Unlock()
	}
	return err
}

// Run keeps the authenticator in step with its store until ctx is done:
// it reloads the keys when the store changed (every RefreshInterval, and
// at once when the store says so, as PostgreSQL does) and
// writes recorded usage (every FlushInterval). On its way out it flushes
// once more. Store errors are logged, and the keys in memory stay.
func (a *Authenticator) Run(ctx context.Context) {
	if a.store == nil {
		<-ctx.Done()
		return
	}
	refresh := time.NewTicker(a.refreshEvery)
	defer refresh.Stop()
	flush := time.NewTicker(a.flushEvery)
	defer flush.Stop()
	var refreshFailing, flushFailing bool
	var changed <-chan struct{}
	if n, ok := a.store.(notifier); ok {
		changed = n.Changed()
	}
	for {
		select {
		case <-changed:
			err := a.Refresh(ctx)
			refreshFailing = a.logState(ctx, err, refreshFailing, "cannot reload API keys or record their changes; the loaded keys stay in force and the changes stay pending")
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			defer cancel()
			if err := a.Flush(fctx); err != nil {
				a.log.Error("could not save API key usage on exit", "error", err)
			}
			return
		case <-refresh.C:
			err := a.Refresh(ctx)
			refreshFailing = a.logState(ctx, err, refreshFailing, "cannot reload API keys or record their changes; the loaded keys stay in force and the changes stay pending")
		case <-flush.C:
			err := a.Flush(ctx)
			flushFailing = a.logState(ctx, err, flushFailing, "cannot save API key usage; it is kept for the next try")
		}
	}
}

// logState logs the first of a run of failures and the recovery after it,
// not every failed tick; it returns whether the operation is failing.
func (a *Authenticator) logState(ctx context.Context, err error, failing bool, msg string) bool {
	switch {
	case err != nil && ctx.Err() != nil:
		return failing
	case err != nil && !failing:
		a.log.Error(msg, "error", err)
		return true
	case err == nil && failing:
		a.log.Info("API key store reachable again")
		return false
	}
	return failing
}
