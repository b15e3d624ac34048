package leakcheck

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func blockUntil(c chan struct{}) { <-c }

func TestFind(t *testing.T) {
	ignore := goleak.IgnoreCurrent()

	// A goroutine that ends within the settle time is not a leak.
	done := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond) // winding down, as a closed connection's loop would
		close(done)
	}()
	if err := find(5*time.Second, ignore); err != nil {
		t.Fatalf("a goroutine that ended in time was reported: %v", err)
	}
	<-done

	// One that stays is reported, with its stack.
	stop := make(chan struct{})
	go blockUntil(stop)
	err := find(300*time.Millisecond, ignore)
	close(stop)
	if err == nil || !strings.Contains(err.Error(), "leakcheck.blockUntil") {
		t.Fatalf("a blocked goroutine was not reported: %v", err)
	}
	if err := find(5*time.Second, ignore); err != nil {
		t.Fatalf("after it ended: %v", err)
	}
}

func TestVerifyKeepsFailures(t *testing.T) {
	if got := Verify(3); got != 3 {
		t.Fatalf("Verify(3) = %d, want the tests' own exit code", got)
	}
}
