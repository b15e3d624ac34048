package redislimit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/limitertest"
	"github.com/toolgate/toolgate/policy/redislimit"
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m)) }

// newLimiter returns a limiter on r, closed when the test ends.
func newLimiter(t *testing.T, r *servertest.Redis, opts *redislimit.Options) *redislimit.Limiter {
	t.Helper()
	l, err := redislimit.New(r.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestTable runs the table the in-memory limiter passes, on a real Redis
// server; each limiter gets keys of its own.
func TestTable(t *testing.T) {
	r := servertest.StartRedis(t)
	var n atomic.Int64
	limitertest.Run(t, limitertest.Config{
		New: func(t *testing.T, now func() time.Time) policy.Limiter {
			return newLimiter(t, r, &redislimit.Options{Now: now, Timeout: 5 * time.Second, Prefix: fmt.Sprintf("t%d:", n.Add(1))})
		},
		Resolution: time.Microsecond,
		Attempts:   300,
	})
}

// TestReplicasShareBuckets takes from one bucket through three limiters
// (three replicas) at once: together they admit the burst, no more.
func TestReplicasShareBuckets(t *testing.T) {
	r := servertest.StartRedis(t)
	var ls []*redislimit.Limiter
	for range 3 {
		ls = append(ls, newLimiter(t, r, &redislimit.Options{Timeout: 5 * time.Second}))
	}
	b := policy.Bucket{Key: "p\x00default", Rate: policy.Rate{PerMinute: 1, Burst: 10}}
	var admitted atomic.Int64
	done := make(chan struct{})
	for i := range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 50 {
				ok, _, err := ls[i].Take(context.Background(), b)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					admitted.Add(1)
				}
			}
		}()
	}
	for range 3 {
		<-done
	}
	if got := admitted.Load(); got != 10 {
		t.Errorf("three replicas admitted %d calls, want the burst of 10", got)
	}
}

// TestUnreachable stops Redis: Take fails fast with an error wrapping
// ErrLimiterUnavailable (or admits, failing open), the limiter reports it,
// and recovers by itself once Redis is back.
func TestUnreachable(t *testing.T) {
	r := servertest.StartRedis(t)
	var changes []error
	changed := make(chan struct{}, 10)
	l := newLimiter(t, r, &redislimit.Options{OnStateChange: func(err error) { changes = append(changes, err); changed <- struct{}{} }})
	open := newLimiter(t, r, &redislimit.Options{FailOpen: true})
	b := policy.Bucket{Key: "k", Rate: policy.Rate{PerMinute: 60, Burst: 100}}
	ctx := context.Background()
	if ok, _, err := l.Take(ctx, b); !ok || err != nil {
		t.Fatalf("Take = %v, %v", ok, err)
	}
	r.Stop()
	start := time.Now()
	ok, _, err := l.Take(ctx, b)
	if ok || !errors.Is(err, policy.ErrLimiterUnavailable) {
		t.Fatalf("with Redis down: Take = %v, %v; want a refusal wrapping ErrLimiterUnavailable", ok, err)
	}
	if d := time.Since(start); d > 2*redislimit.DefaultTimeout+time.Second {
		t.Errorf("the failed Take took %v", d)
	}
	if l.Healthy() == nil || l.Failures() == 0 {
		t.Errorf("Healthy() = nil or no failure counted after a failed Take")
	}
	<-changed
	if ok, _, err := open.Take(ctx, b); !ok || err != nil {
		t.Errorf("failing open: Take = %v, %v; want an admission", ok, err)
	}
	if open.Healthy() == nil {
		t.Errorf("failing open: Healthy() = nil with Redis down")
	}
	r.Start()
	// The probe notices without any call.
	deadline := time.Now().Add(5 * time.Second)
	for l.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatal("still unhealthy 5s after Redis came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	<-changed
	if ok, _, err := l.Take(ctx, b); !ok || err != nil {
		t.Fatalf("after Redis came back: Take = %v, %v", ok, err)
	}
	if len(changes) != 2 || changes[0] == nil || changes[1] != nil {
		t.Errorf("state changes %v, want [error, nil]", changes)
	}
}

func TestNewBadURL(t *testing.T) {
	if _, err := redislimit.New("http://h:1", nil); err == nil {
		t.Fatal("no error for an http URL")
	}
}

// While Redis is down, the limiter logs the outage once, and the Redis
// client's own message of every failed connection goes to the limiter's
// logger at debug level, not to the process's standard error.
func TestUnreachableLogsOnce(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := redislimit.New(fmt.Sprintf("redis://127.0.0.1:%d/0", servertest.FreePort(t)), &redislimit.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := policy.Bucket{Key: "k", Rate: policy.Rate{PerMinute: 60, Burst: 100}}
	for range 3 {
		if ok, _, err := l.Take(context.Background(), b); ok || err == nil {
			t.Fatalf("Take = %v, %v with nothing listening", ok, err)
		}
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if n := strings.Count(out, "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged for one outage:\n%s", n, out)
	}
	if !strings.Contains(out, `level=DEBUG msg="redis client: redis: connection pool: failed to dial`) {
		t.Errorf("the client's messages are not in the limiter's log:\n%s", out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
