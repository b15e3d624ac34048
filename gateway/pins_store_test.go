package gateway

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/servertest"
)

// TestPinStores runs one table against every PinStore: the pins file and
// PostgreSQL. Two handles on one store stand for two processes (two
// replicas, or a replica and the command line).
func TestPinStores(t *testing.T) {
	stores := map[string]func(t *testing.T) (PinStore, PinStore){
		"file": func(t *testing.T) (PinStore, PinStore) {
			path := filepath.Join(t.TempDir(), PinsFile)
			a, err := OpenPinsFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := OpenPinsFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return a, b
		},
		"postgres": func(t *testing.T) (PinStore, PinStore) {
			url := servertest.Postgres(t)
			var out [2]PinStore
			for i := range out {
				s, err := OpenPostgresPins(context.Background(), url)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s.Close)
				out[i] = s
			}
			return out[0], out[1]
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, b := open(t)
			now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
			check := func(s PinStore, key, hash string, want PinResult, wantPinned string) {
				t.Helper()
				got, pinned, err := s.Check(ctx, key, hash, now)
				if err != nil || got != want || pinned != wantPinned {
					t.Fatalf("Check(%s, %s) = %v, %q, %v; want %v, %q", key, hash, got, pinned, err, want, wantPinned)
				}
			}
			check(a, "p/s/t", "h1", PinNew, "")
			b.Refresh(ctx) // the file store rereads a file changed on disk
			check(b, "p/s/t", "h1", PinSame, "h1")
			check(a, "p/s/t", "h2", PinChanged, "h1")
			b.Refresh(ctx)
			check(b, "p/s/t", "h2", PinPending, "h1")
			check(a, "p/s/u", "x", PinNew, "")
			check(a, "p/s/u", "y", PinChanged, "x")
			check(a, "p/s/u", "x", PinSame, "x") // changed back
			b.Refresh(ctx)
			pins, err := b.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(pins.Pins) != 2 || len(pins.Pending) != 1 || pins.Pending["p/s/t"].Hash != "h2" {
				t.Fatalf("Load = %+v", pins)
			}
			if _, err := b.Approve(ctx, []string{"p/s/nope"}, now); err == nil || !strings.Contains(err.Error(), `"p/s/nope"`) {
				t.Errorf("approving an unknown key: %v", err)
			}
			if a.Refresh(ctx) && name == "postgres" {
				t.Errorf("Refresh reported a change before any approval")
			}
			approved, err := b.Approve(ctx, nil, now.Add(time.Hour))
			if err != nil || !slices.Equal(approved, []string{"p/s/t"}) {
				t.Fatalf("Approve(all) = %v, %v", approved, err)
			}
			// The other process sees the approval.
			deadline := time.Now().Add(5 * time.Second)
			for !a.Refresh(ctx) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			check(a, "p/s/t", "h2", PinSame, "h2")
			pins, _ = a.Load(ctx)
			if p := pins.Pins["p/s/t"]; !p.Approved.Equal(now.Add(time.Hour)) || !p.FirstSeen.Equal(now) {
				t.Errorf("approved pin = %+v", p)
			}
		})
	}
}
