package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
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
