package policy

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestAuthenticatorReportsKeyChanges(t *testing.T) {
	ctx := context.Background()
	store, err := OpenKeyStore(ctx, filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, before, err := store.Create(ctx, "p", "before", 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	a, err := NewAuthenticator(ctx, store, nil, &AuthOptions{OnKeyChange: func(change string, k *Key) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, change+" "+k.Name)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("the first load reported %v", got)
	}
	if _, _, err := store.Create(ctx, "p", "new", 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Rotate(ctx, before.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	slices.Sort(got)
	want := []string{"key.created before", "key.created new", "key.rotated before"}
	if !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
	got = nil
	mu.Unlock()
	if err := store.Revoke(ctx, before.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"key.revoked before"}) {
		t.Errorf("changes after revoke = %v", got)
	}
}
