package apikey

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestAuthenticatorRecordsKeyChanges(t *testing.T) {
	ctx := context.Background()
	store, err := OpenStore(ctx, filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Made before any authenticator runs: recorded by the first Refresh.
	_, before, err := store.Create(ctx, "p", "before", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var fail error
	a, err := NewAuthenticator(ctx, store, nil, &AuthOptions{OnKeyChange: func(c Change) error {
		if fail != nil {
			return fail
		}
		got = append(got, c.Type+" "+c.KeyName+" "+c.NewKeyID)
		if c.Time.IsZero() || c.KeyID == "" || c.Project != "p" {
			t.Errorf("change %+v", c)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("NewAuthenticator recorded %v", got)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"key.created before "}) {
		t.Fatalf("first refresh recorded %v", got)
	}
	got = nil
	if err := a.Refresh(ctx); err != nil || len(got) != 0 {
		t.Fatalf("a second refresh recorded %v (%v)", got, err)
	}

	_, created, err := store.Create(ctx, "p", "new", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, succ, err := store.Rotate(ctx, before.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"key.created new ", "key.created before ", "key.rotated before " + succ.ID}
	if !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
	got = nil

	// A change that cannot be recorded stays pending until it can.
	fail = errors.New("audit log full")
	if err := store.Revoke(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(ctx, created.ID); err != nil { // revoking twice is one change
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err == nil {
		t.Error("Refresh hid the failure to record")
	}
	fail = nil
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"key.revoked new "}) {
		t.Errorf("changes after revoke = %v", got)
	}
	if p, err := store.PendingChanges(ctx); err != nil || len(p) != 0 {
		t.Errorf("pending after recording = %v, %v", p, err)
	}
}
