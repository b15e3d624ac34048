package apikey_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy/apikey"
)

// clock is a settable clock for expiry tests.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.t.Store(&t) }
func (c *clock) now() time.Time   { return *c.t.Load() }

func newAuth(t testing.TB, s apikey.Backend, cfg []apikey.ConfigKey, opts *apikey.AuthOptions) *apikey.Authenticator {
	t.Helper()
	a, err := apikey.NewAuthenticator(context.Background(), s, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// runAuth runs a.Run until the test ends and waits for it to return.
func runAuth(t *testing.T, a *apikey.Authenticator) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	good, goodKey := mustCreate(t, s, "default", "good", time.Hour)
	revoked, revokedKey := mustCreate(t, s, "default", "revoked", 0)
	if err := s.Revoke(ctx, revokedKey.ID); err != nil {
		t.Fatal(err)
	}
	expiring, expiringKey := mustCreate(t, s, "default", "expiring", time.Minute)
	other, _ := mustCreate(t, s, "team", "other", 0)
	unknown, _, _, _ := apikey.Generate()
	goodID, _, _ := apikey.Parse(good)
	// A known id with somebody else's secret.
	_, unknownSecret, _ := apikey.Parse(unknown)
	forged := "tg_" + goodID + "_" + unknownSecret

	// Configuration keys: one of any shape, one with the tg_ shape, and one
	// listed under two projects.
	const legacy = "legacy-secret-token-0123456789"
	cfgTG, cfgTGID, _, _ := apikey.Generate()
	const shared = "shared-token-abcdefghijklmnopqrstuvwxyz"
	cfg := []apikey.ConfigKey{
		{Name: "legacy", Project: "default", SHA256: strings.ToUpper(apikey.Hash(legacy))},
		{Name: "cfg-tg", Project: "default", SHA256: apikey.Hash(cfgTG)},
		{Name: "shared-a", Project: "a", SHA256: apikey.Hash(shared)},
		{Name: "shared-b", Project: "b", SHA256: apikey.Hash(shared)},
	}
	clk := newClock(goodKey.Created.Add(30 * time.Second))
	a := newAuth(t, s, cfg, &apikey.AuthOptions{Now: clk.now})

	tests := []struct {
		name      string
		presented string
		project   string
		wantID    string // on success
		wantName  string
		wantErr   error
		reason    string
		errHas    string
	}{
		{name: "store key", presented: good, project: "default", wantID: goodKey.ID, wantName: "good"},
		{name: "missing", presented: "", project: "default", wantErr: apikey.ErrMissing, reason: "missing_key"},
		{name: "malformed", presented: "tg_short", project: "default", wantErr: apikey.ErrMalformed, reason: "malformed_key", errHas: "it has 8 characters"},
		{name: "not a key at all", presented: "hunter2", project: "default", wantErr: apikey.ErrMalformed, reason: "malformed_key"},
		{name: "unknown id", presented: unknown, project: "default", wantErr: apikey.ErrUnknown, reason: "unknown_key"},
		{name: "known id, wrong secret", presented: forged, project: "default", wantErr: apikey.ErrUnknown, reason: "unknown_key"},
		{name: "revoked", presented: revoked, project: "default", wantErr: apikey.ErrRevoked, reason: "revoked_key", errHas: revokedKey.ID},
		{name: "wrong project", presented: other, project: "default", wantErr: apikey.ErrWrongProject, reason: "wrong_project"},
		{name: "store key, other project", presented: good, project: "team", wantErr: apikey.ErrWrongProject, reason: "wrong_project", errHas: goodKey.ID},
		{name: "not yet expired", presented: expiring, project: "default", wantID: expiringKey.ID, wantName: "expiring"},
		{name: "config key", presented: legacy, project: "default", wantID: apikey.Hash(legacy)[:12], wantName: "legacy"},
		{name: "config key with tg_ shape", presented: cfgTG, project: "default", wantID: cfgTGID, wantName: "cfg-tg"},
		{name: "config key, other project", presented: legacy, project: "team", wantErr: apikey.ErrWrongProject, reason: "wrong_project"},
		{name: "config key in two projects, a", presented: shared, project: "a", wantID: apikey.Hash(shared)[:12], wantName: "shared-a"},
		{name: "config key in two projects, b", presented: shared, project: "b", wantID: apikey.Hash(shared)[:12], wantName: "shared-b"},
		{name: "config key with a newline", presented: legacy + "\n", project: "default", wantErr: apikey.ErrMalformed, reason: "malformed_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := a.Authenticate(tt.presented, tt.project)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if k.ID != tt.wantID || k.Name != tt.wantName || k.Project != tt.project {
					t.Fatalf("key = %+v, want id %q name %q project %q", k, tt.wantID, tt.wantName, tt.project)
				}
				return
			}
			if k != nil || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Authenticate = %v, %v; want %v", k, err, tt.wantErr)
			}
			var ae *apikey.AuthError
			if !errors.As(err, &ae) || ae.Reason() != tt.reason {
				t.Errorf("error %v: want an AuthError with reason %q", err, tt.reason)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.errHas) {
				t.Errorf("error %q, want it to contain %q", msg, tt.errHas)
			}
			// The message never repeats a secret, nor a key's own project.
			if len(tt.presented) > 20 && strings.Contains(msg, tt.presented[16:]) {
				t.Errorf("error %q repeats the presented secret", msg)
			}
			if strings.Contains(msg, "team") {
				t.Errorf("error %q names a project", msg)
			}
		})
	}

	t.Run("returned key is a copy", func(t *testing.T) {
		k, err := a.Authenticate(good, "default")
		if err != nil {
			t.Fatal(err)
		}
		k.Project = "team"
		if _, err := a.Authenticate(good, "default"); err != nil {
			t.Fatalf("changing a returned key changed the authenticator: %v", err)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		clk.set(expiringKey.Expires.Add(-time.Nanosecond))
		if _, err := a.Authenticate(expiring, "default"); err != nil {
			t.Fatalf("a moment before expiry: %v", err)
		}
		clk.set(expiringKey.Expires)
		_, err := a.Authenticate(expiring, "default")
		if !errors.Is(err, apikey.ErrExpired) || !strings.Contains(err.Error(), expiringKey.Expires.Format(time.RFC3339)) {
			t.Fatalf("at expiry: %v", err)
		}
		// Configuration keys do not expire.
		clk.set(expiringKey.Expires.Add(100 * 365 * 24 * time.Hour))
		if _, err := a.Authenticate(legacy, "default"); err != nil {
			t.Fatalf("config key: %v", err)
		}
	})
}

func TestAuthenticatorRotationOverlap(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	old, oldKey := mustCreate(t, s, "default", "ci", 0)
	clk := newClock(oldKey.Created)
	a := newAuth(t, s, nil, &apikey.AuthOptions{Now: clk.now})
	succ, succKey, err := s.Rotate(ctx, oldKey.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	clk.set(succKey.Created.Add(59 * time.Minute))
	for _, k := range []string{old, succ} {
		if _, err := a.Authenticate(k, "default"); err != nil {
			t.Errorf("during the overlap: %v", err)
		}
	}
	clk.set(succKey.Created.Add(time.Hour))
	if _, err := a.Authenticate(old, "default"); !errors.Is(err, apikey.ErrExpired) {
		t.Errorf("old key after the overlap: %v", err)
	}
	if _, err := a.Authenticate(succ, "default"); err != nil {
		t.Errorf("successor after the overlap: %v", err)
	}
}

func TestNewAuthenticatorErrors(t *testing.T) {
	tests := []struct {
		name string
		key  apikey.ConfigKey
		want string
	}{
		{"short hash", apikey.ConfigKey{Name: "x", Project: "default", SHA256: "abc"}, `config key 0 ("x"): sha256: want 64 hex digits, have 3 characters`},
		{"not hex", apikey.ConfigKey{Name: "x", Project: "default", SHA256: strings.Repeat("g", 64)}, "not a hex string"},
		{"no project", apikey.ConfigKey{Name: "x", SHA256: apikey.Hash("k")}, `config key 0 ("x"): no project`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := apikey.NewAuthenticator(context.Background(), nil, []apikey.ConfigKey{tt.key}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("store error", func(t *testing.T) {
		s, _ := openStore(t)
		s.Close()
		if _, err := apikey.NewAuthenticator(context.Background(), s, nil, nil); err == nil {
			t.Fatal("no error from a closed store")
		}
	})
}

func TestSetConfigKeys(t *testing.T) {
	a := newAuth(t, nil, []apikey.ConfigKey{{Name: "one", Project: "default", SHA256: apikey.Hash("one")}}, nil)
	if _, err := a.Authenticate("one", "default"); err != nil {
		t.Fatal(err)
	}
	// A bad list is refused whole; the old keys stay.
	err := a.SetConfigKeys([]apikey.ConfigKey{{Name: "two", Project: "default", SHA256: apikey.Hash("two")}, {Name: "bad", Project: "default", SHA256: "zz"}})
	if err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("error %v, want one naming the bad key", err)
	}
	if _, err := a.Authenticate("one", "default"); err != nil {
		t.Fatalf("old keys lost after a refused update: %v", err)
	}
	if err := a.SetConfigKeys([]apikey.ConfigKey{{Name: "two", Project: "default", SHA256: apikey.Hash("two")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate("one", "default"); !errors.Is(err, apikey.ErrMalformed) {
		t.Errorf("removed key: %v", err)
	}
	if k, err := a.Authenticate("two", "default"); err != nil || k.Source != apikey.SourceConfig {
		t.Errorf("new key: %v, %v", k, err)
	}
}

// TestRevokeFromAnotherProcess revokes keys through another handle on the
// database and from another process, as `toolgate keys revoke` does beside
// a running gateway.
func TestRevokeFromAnotherProcess(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	p1, k1 := mustCreate(t, s, "default", "one", 0)
	p2, k2 := mustCreate(t, s, "default", "two", 0)
	a := newAuth(t, s, nil, &apikey.AuthOptions{RefreshInterval: 10 * time.Millisecond})
	runAuth(t, a)
	for _, p := range []string{p1, p2} {
		if _, err := a.Authenticate(p, "default"); err != nil {
			t.Fatal(err)
		}
	}
	revoked := func(p string) func() bool {
		return func() bool {
			_, err := a.Authenticate(p, "default")
			return errors.Is(err, apikey.ErrRevoked)
		}
	}

	// Another handle in this process.
	cli := reopen(t, path)
	if err := cli.Revoke(ctx, k1.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revocation through another handle", revoked(p1))

	// Another process.
	inOtherProcess(t, path, "TOOLGATE_TEST_REVOKE="+k2.ID)()
	eventually(t, "the revocation from another process", revoked(p2))

	// New keys show up the same way.
	fresh, _, err := cli.Create(ctx, "default", "new", 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new key to be loaded", func() bool {
		_, err := a.Authenticate(fresh, "default")
		return err == nil
	})
}

func TestUsageBatching(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	plaintext, k := mustCreate(t, s, "default", "ci", 0)
	const legacy = "config-only-key"
	t0 := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	a := newAuth(t, s, []apikey.ConfigKey{{Name: "legacy", Project: "default", SHA256: apikey.Hash(legacy)}},
		&apikey.AuthOptions{Now: clk.now, FlushInterval: time.Hour})

	const n = 250
	for i := range n {
		clk.set(t0.Add(time.Duration(i) * time.Second))
		key, err := a.Authenticate(plaintext, "default")
		if err != nil {
			t.Fatal(err)
		}
		a.RecordUse(key.ID)
	}
	ck, err := a.Authenticate(legacy, "default")
	if err != nil {
		t.Fatal(err)
	}
	a.RecordUse(ck.ID)
	a.RecordUse("") // ignored

	// Nothing is written per call.
	if got := mustGet(t, s, k.ID); got.Calls != 0 || !got.LastUsed.IsZero() {
		t.Fatalf("usage written before a flush: %+v", got)
	}
	// A failed flush keeps the counts for the next one.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Flush(cancelled); err == nil {
		t.Fatal("Flush with a cancelled context succeeded")
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	last := t0.Add((n - 1) * time.Second)
	if got := mustGet(t, s, k.ID); got.Calls != n || !got.LastUsed.Equal(last) {
		t.Fatalf("after Flush: calls %d, last used %v; want %d, %v", got.Calls, got.LastUsed, n, last)
	}
	// A second flush has nothing to add.
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Run flushes on its way out, and the counts survive a restart.
	stop := runAuth(t, a)
	a.RecordUse(k.ID)
	a.RecordUse(k.ID)
	stop()
	s.Close()
	got := mustGet(t, reopen(t, path), k.ID)
	if got.Calls != n+2 {
		t.Errorf("after Run and a reopen: calls %d, want %d", got.Calls, n+2)
	}
}

func TestRunWithoutStore(t *testing.T) {
	a := newAuth(t, nil, nil, nil)
	a.RecordUse("abc")
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	runAuth(t, a)() // returns once cancelled
}

// TestAuthenticateConcurrent is for the race detector: requests, usage,
// reloads and configuration changes all at once.
func TestAuthenticateConcurrent(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	var plaintexts []string
	for i := range 5 {
		p, _ := mustCreate(t, s, "default", fmt.Sprint("k", i), 0)
		plaintexts = append(plaintexts, p)
	}
	a := newAuth(t, s, nil, &apikey.AuthOptions{RefreshInterval: time.Millisecond, FlushInterval: time.Millisecond})
	runAuth(t, a)
	other := reopen(t, path)

	var wg sync.WaitGroup
	var calls atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 300 {
				k, err := a.Authenticate(plaintexts[(w+i)%len(plaintexts)], "default")
				if err != nil {
					t.Error(err)
					return
				}
				a.RecordUse(k.ID)
				calls.Add(1)
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			if _, _, err := other.Create(ctx, "default", fmt.Sprint("late", i), 0); err != nil {
				t.Error(err)
			}
			if err := a.SetConfigKeys([]apikey.ConfigKey{{Name: "c", Project: "default", SHA256: apikey.Hash(fmt.Sprint(i))}}); err != nil {
				t.Error(err)
			}
			if err := a.Flush(ctx); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, k := range keys {
		total += k.Calls
	}
	if total != calls.Load() {
		t.Errorf("store counted %d calls, want %d", total, calls.Load())
	}
}

// BenchmarkAuthenticate measures the hot path with 1000 stored keys and a
// few configuration keys. It never touches the disk.
func BenchmarkAuthenticate(b *testing.B) {
	s, _ := openStore(b)
	var plaintext string
	for i := range 1000 {
		p, _ := mustCreate(b, s, "default", fmt.Sprint("k", i), 0)
		if i == 500 {
			plaintext = p
		}
	}
	var cfg []apikey.ConfigKey
	for i := range 5 {
		cfg = append(cfg, apikey.ConfigKey{Name: fmt.Sprint("c", i), Project: "default", SHA256: apikey.Hash(fmt.Sprint("c", i))})
	}
	a := newAuth(b, s, cfg, nil)
	unknown, _, _, _ := apikey.Generate()
	id, _, _ := apikey.Parse(plaintext)
	_, otherSecret, _ := apikey.Parse(unknown)
	wrongSecret := "tg_" + id + "_" + otherSecret

	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(plaintext, "default"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unknown", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(unknown, "default"); err == nil {
				b.Fatal("accepted")
			}
		}
	})
	// A configuration key written by hand, not in the generated form.
	b.Run("config key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate("c3", "default"); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Compare with "unknown": a known id costs the same as an unknown one.
	b.Run("wrong secret", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Authenticate(wrongSecret, "default"); err == nil {
				b.Fatal("accepted")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k, err := a.Authenticate(plaintext, "default")
				if err != nil {
					b.Fatal(err)
				}
				a.RecordUse(k.ID)
			}
		})
	})
}

func ExampleAuthenticator() {
	// Keys listed in the configuration by hash; a key store would be
	// passed instead of nil.
	a, err := apikey.NewAuthenticator(context.Background(), nil, []apikey.ConfigKey{
		{Name: "ci", Project: "default", SHA256: apikey.Hash("tg_aaaaaaaaaaaa_" + strings.Repeat("a", 52))},
	}, nil)
	if err != nil {
		panic(err)
	}
	k, err := a.Authenticate("tg_aaaaaaaaaaaa_"+strings.Repeat("a", 52), "default")
	fmt.Println(k.ID, k.Name, k.Source, err)
	_, err = a.Authenticate("tg_aaaaaaaaaaaa_"+strings.Repeat("a", 52), "other")
	fmt.Println(err)
	_, err = a.Authenticate("", "default")
	fmt.Println(err)
	// Output:
	// aaaaaaaaaaaa ci config <nil>
	// API key not valid for this project (key aaaaaaaaaaaa)
	// no API key presented
}
