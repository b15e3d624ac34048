package apikey_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/apikey"
)

func openPG(t testing.TB, url string) *apikey.PGStore {
	t.Helper()
	s, err := apikey.OpenPGStore(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestExportImport moves every key of one backend into another, as
// `toolgate keys export | toolgate keys import` does: the keys keep their
// ids, secrets, times and usage, and importing again adds nothing.
func TestExportImport(t *testing.T) {
	ctx := context.Background()
	from, _ := openStore(t)
	plain, a := mustCreate(t, from, "default", "a", time.Hour)
	_, b := mustCreate(t, from, "team", "b", 0)
	if _, _, err := from.Rotate(ctx, b.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := from.Revoke(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := from.AddUsage(ctx, map[string]apikey.Usage{b.ID: {Calls: 7, LastUsed: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	recs, err := from.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eachBackend(t, func(t *testing.T, open opener) {
		to, _ := open(t)
		n, err := to.Import(ctx, recs)
		if err != nil || n != len(recs) {
			t.Fatalf("Import = %d, %v; want %d", n, err, len(recs))
		}
		got, err := to.Export(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(recs, got); diff != "" {
			t.Errorf("keys after import (-exported +imported):\n%s", diff)
		}
		if n, err := to.Import(ctx, recs); err != nil || n != 0 {
			t.Errorf("second Import = %d, %v; want 0", n, err)
		}
		// The imported secret still proves the key (revoked here).
		auth := newAuth(t, to, nil, nil)
		if _, err := auth.Authenticate(plain, "default"); err == nil || !errors.Is(err, apikey.ErrRevoked) {
			t.Errorf("imported revoked key: %v, want ErrRevoked", err)
		}
		if pending, _ := to.PendingChanges(ctx); len(pending) != 0 {
			t.Errorf("import recorded %d key changes, want none", len(pending))
		}
	})
	bad := recs[0]
	bad.SecretSHA256 = "zz"
	if _, err := from.Import(ctx, []apikey.Record{bad}); err == nil {
		t.Error("imported a record with a malformed hash")
	}
}

// TestPGNotify: a key revoked through one replica's store stops working on
// another replica at once, by NOTIFY, long before its polling would
// notice.
func TestPGNotify(t *testing.T) {
	url := servertest.Postgres(t)
	cli, replica := openPG(t, url), openPG(t, url)
	plain, k := mustCreate(t, cli, "default", "ci", 0)
	a := newAuth(t, replica, nil, &apikey.AuthOptions{RefreshInterval: time.Hour})
	runAuth(t, a)
	if _, err := a.Authenticate(plain, "default"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cli.Revoke(context.Background(), k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revocation to reach the other replica", func() bool {
		_, err := a.Authenticate(plain, "default")
		return err != nil
	})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the revocation took %v to reach the other replica, want under 2s", d)
	}
}

// TestPGPendingChangesClaimed: two replicas recording key changes
// record each once.
func TestPGPendingChangesClaimed(t *testing.T) {
	ctx := context.Background()
	url := servertest.Postgres(t)
	r1, r2 := openPG(t, url), openPG(t, url)
	mustCreate(t, r1, "default", "a", 0)
	mustCreate(t, r1, "default", "b", 0)
	got1, err := r1.PendingChanges(ctx)
	if err != nil || len(got1) != 2 {
		t.Fatalf("first replica: %d changes, %v; want 2", len(got1), err)
	}
	if got2, err := r2.PendingChanges(ctx); err != nil || len(got2) != 0 {
		t.Fatalf("second replica: %d changes, %v; want none (claimed by the first)", len(got2), err)
	}
	mustCreate(t, r1, "default", "c", 0)
	got2, err := r2.PendingChanges(ctx)
	if err != nil || len(got2) != 1 || got2[0].KeyName != "c" {
		t.Fatalf("second replica after a new change: %+v, %v", got2, err)
	}
	if err := r1.AckChanges(ctx, got2[0].Seq); err != nil {
		t.Fatal(err)
	}
	if again, _ := r2.PendingChanges(ctx); len(again) != 1 {
		t.Errorf("an acknowledgement by the first replica dropped the second's claim")
	}
}
