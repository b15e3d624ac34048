package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/audit"
)

func newShipper(t *testing.T, url, node, path string) *audit.Shipper {
	t.Helper()
	s, err := audit.NewShipper(context.Background(), url, node, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func openShared(t *testing.T, url string) *audit.Shared {
	t.Helper()
	sh, err := audit.OpenShared(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.Close)
	return sh
}

// sharedTools reads the Tool of every event of node in the shared trail.
func sharedTools(t *testing.T, sh *audit.Shared, node string) []string {
	t.Helper()
	var out []string
	if _, err := sh.Read(context.Background(), node, time.Time{}, func(_ string, e *audit.Event) error {
		out = append(out, e.Tool)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestShipper writes a local log across rotations, ships it, stops the
// shipper, writes more and ships again with a new shipper (a restarted
// process): every line is in PostgreSQL once, in order, and the chain
// verifies there.
func TestShipper(t *testing.T) {
	ctx := context.Background()
	url := servertest.Postgres(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	log, err := audit.Open(path, &audit.Options{MaxSizeBytes: 2000, MaxFiles: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	write := func(from, to int) {
		for i := from; i < to; i++ {
			if err := log.Write(&audit.Event{Type: audit.EventToolCall, Tool: fmt.Sprint("t", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 30)
	s := newShipper(t, url, "node-a", path)
	if err := s.ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	write(30, 45) // rotates under the shipper
	if err := s.ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// A restart: a new shipper finds the position in the database.
	write(45, 60)
	s2 := newShipper(t, url, "node-a", path)
	if err := s2.ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	sh := openShared(t, url)
	got := sharedTools(t, sh, "node-a")
	if len(got) != 60 {
		t.Fatalf("%d events shipped, want 60", len(got))
	}
	for i, tool := range got {
		if tool != fmt.Sprint("t", i) {
			t.Fatalf("event %d is %s", i, tool)
		}
	}
	reps, err := sh.Verify(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if rep := reps["node-a"]; rep == nil || !rep.OK() || rep.Lines != 60 || rep.Start != audit.Genesis {
		t.Fatalf("verify = %+v", rep)
	}
	if reps, err := sh.Verify(ctx, "node-b"); err != nil || reps["node-b"] == nil || reps["node-b"].Lines != 0 || reps["node-b"].Head != "" {
		t.Errorf("verify of a node without a chain: %+v, %v", reps["node-b"], err)
	}
	local, err := audit.Verify(path)
	if err != nil || local.Head != reps["node-a"].Head {
		t.Errorf("local head %s (%v), shared head %s", local.Head, err, reps["node-a"].Head)
	}

	// The first shipper, behind the second now, refuses to write over it.
	write(60, 61)
	if err := s.ShipOnce(ctx); err == nil {
		t.Error("a shipper whose position is stale shipped")
	}
}

// TestShipperRun ships in the background, and a database outage (a
// wrong URL here: the shipper cannot reach it) is reported.
func TestShipperRun(t *testing.T) {
	url := servertest.Postgres(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	log, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s := newShipper(t, url, "n1", path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	for i := range 10 {
		log.Write(&audit.Event{Type: audit.EventToolCall, Tool: fmt.Sprint("t", i)})
		s.Kick()
	}
	sh := openShared(t, url)
	deadline := time.Now().Add(10 * time.Second)
	for len(sharedTools(t, sh, "n1")) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("lines not shipped within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if s.Healthy() != nil || s.Shipped() != 10 {
		t.Errorf("Healthy() = %v, Shipped() = %d", s.Healthy(), s.Shipped())
	}
}

// writeTools writes one tool.call event per tool to the log at path.
func writeTools(t *testing.T, path string, tools ...string) {
	t.Helper()
	log, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for _, tool := range tools {
		if err := log.Write(&audit.Event{Type: audit.EventToolCall, Tool: tool}); err != nil {
			t.Fatal(err)
		}
	}
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(prefix, i))
	}
	return out
}

// TestShipperLocalLogBehind: the local log lost lines the shared chain
// holds (a machine crash lost writes not yet on disk that the shipper
// had read, or the log was restored from a backup). A restarted shipper
// does not find the chain's head in the local log: it skips the lines
// the chain already holds instead of shipping them again, ships the new
// ones, and the chain shows the fork where they start.
func TestShipperLocalLogBehind(t *testing.T) {
	ctx := context.Background()
	url := servertest.Postgres(t)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	writeTools(t, path, names("t", 0, 10)...)
	if err := newShipper(t, url, "n", path).ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if err := os.WriteFile(path, []byte(strings.Join(lines[:6], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	// Restarted: the shipper finds every local line in the chain.
	s := newShipper(t, url, "n", path)
	if err := s.ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	sh := openShared(t, url)
	if got := sharedTools(t, sh, "n"); !slices.Equal(got, names("t", 0, 10)) || s.Shipped() != 0 {
		t.Fatalf("shared chain holds %v after shipping nothing new (%d shipped)", got, s.Shipped())
	}
	writeTools(t, path, names("n", 0, 3)...) // the local chain goes on from t5
	if err := s.ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	want := append(names("t", 0, 10), names("n", 0, 3)...)
	if got := sharedTools(t, sh, "n"); !slices.Equal(got, want) {
		t.Fatalf("shared chain holds %v, want %v", got, want)
	}
	reps, err := sh.Verify(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if b := reps["n"].Broken; b == nil || b.Line != 11 || !strings.Contains(b.Reason, "prev is not") {
		t.Errorf("verify: %+v, want the fork at line 11", b)
	}
	// Shipping goes on from there as usual, after a restart too.
	writeTools(t, path, "n3")
	if err := newShipper(t, url, "n", path).ShipOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sharedTools(t, sh, "n"); !slices.Equal(got, append(want, "n3")) {
		t.Errorf("shared chain holds %v", got)
	}
}

// TestShipperHeadRotatedAway: lines written while the shipper could not
// ship were rotated away with the head of the chain. The restarted
// shipper ships what the local log kept, once, and the chain shows the
// gap. When the oldest line kept is the one after the head, there is no
// gap at all.
func TestShipperHeadRotatedAway(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		lost int // lines written after the head that rotation removes
	}{
		{"gap", 20},
		{"no gap", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := servertest.Postgres(t)
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			writeTools(t, path, names("t", 0, 3)...)
			if err := newShipper(t, url, "n", path).ShipOnce(ctx); err != nil {
				t.Fatal(err)
			}
			// Rotations, as the log makes them, with one rotated file
			// kept: the one that holds the head goes.
			rotate := func() {
				os.Remove(path + ".1")
				if err := os.Rename(path, path+".1"); err != nil {
					t.Fatal(err)
				}
			}
			rotate()
			if tt.lost > 0 {
				writeTools(t, path, names("l", 0, tt.lost)...)
				rotate()
			}
			writeTools(t, path, names("k", 0, 4)...)
			os.Remove(path + ".1")

			if err := newShipper(t, url, "n", path).ShipOnce(ctx); err != nil {
				t.Fatal(err)
			}
			sh := openShared(t, url)
			if got, want := sharedTools(t, sh, "n"), append(names("t", 0, 3), names("k", 0, 4)...); !slices.Equal(got, want) {
				t.Fatalf("shared chain holds %v, want %v", got, want)
			}
			reps, err := sh.Verify(ctx, "n")
			if err != nil {
				t.Fatal(err)
			}
			if b := reps["n"].Broken; (b != nil) != (tt.lost > 0) || b != nil && b.Line != 4 {
				t.Errorf("verify: %+v", b)
			}
		})
	}
}
