package policy

// These tests are in package policy (not policy_test) so that they can count
// and sweep the limiter's buckets; everything else goes through the exported
// API.

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// takeN is Take without a context or an error, which MemoryLimiter never
// returns.
func (l *MemoryLimiter) takeN(bs ...Bucket) (bool, time.Duration) { return l.take(bs) }

// limiterClock is a clock that moves only when told to.
type limiterClock struct {
	mu sync.Mutex
	t  time.Time
}

func newLimiterClock() *limiterClock {
	return &limiterClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *limiterClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *limiterClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestMemoryLimiterEviction(t *testing.T) {
	clock := newLimiterClock()
	l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now, IdleTTL: time.Minute})
	defer l.Close()

	// A bucket may be dropped once it has been full for IdleTTL.
	l.takeN(Bucket{"quick", Rate{PerMinute: 60, Burst: 10}}) // full at 1s
	for range 5 {
		l.takeN(Bucket{"slow", Rate{PerMinute: 1, Burst: 5}}) // full at 5m
	}
	once := Bucket{"refused", Rate{PerMinute: 1, Burst: 1}}
	l.takeN(once) // full at 1m
	if ok, _ := l.takeN(once); ok {
		t.Fatal("second take from a bucket of one succeeded")
	}
	clock.Advance(2 * time.Second)
	l.takeN(Bucket{"later", Rate{PerMinute: 60, Burst: 10}}) // full at 3s

	steps := []struct {
		advance time.Duration
		want    []string // keys still held after the sweep
	}{
		{0, []string{"quick", "slow", "refused", "later"}},
		{28 * time.Second, []string{"quick", "slow", "refused", "later"}}, // 30s
		{31 * time.Second, []string{"slow", "refused", "later"}},          // 61s
		{2 * time.Second, []string{"slow", "refused"}},                    // 63s
		{56 * time.Second, []string{"slow", "refused"}},                   // 119s
		{1 * time.Second, []string{"slow"}},                               // 2m
		{239 * time.Second, []string{"slow"}},                             // 5m59s
		{1 * time.Second, nil},                                            // 6m
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		l.sweep()
		if n := l.len(); n != len(s.want) {
			t.Errorf("step %d: holding %d buckets, want %v", i, n, s.want)
		}
		for _, key := range s.want {
			if !holdsBucket(l, key) {
				t.Errorf("step %d: bucket %q was dropped", i, key)
			}
		}
	}

	// A dropped bucket comes back full.
	for range 10 {
		if ok, _ := l.takeN(Bucket{"quick", Rate{PerMinute: 60, Burst: 10}}); !ok {
			t.Fatal("re-created bucket is not full")
		}
	}
	if ok, _ := l.takeN(Bucket{"quick", Rate{PerMinute: 60, Burst: 10}}); ok {
		t.Fatal("re-created bucket holdsBucket more than its burst")
	}
}

// holdsBucket reports whether l holds a bucket for key.
func holdsBucket(l *MemoryLimiter, key string) bool {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.RLock()
		_, ok := sh.m[key]
		sh.mu.RUnlock()
		if ok {
			return true
		}
	}
	return false
}

// TestMemoryLimiterSweepRace drops a bucket between a Take's lookup and its
// locking of the bucket: the Take must start again on a live bucket, not
// take its token from the dropped one (which would hand out a token twice).
func TestMemoryLimiterSweepRace(t *testing.T) {
	clock := newLimiterClock()
	l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now, IdleTTL: -1})
	l.idleTTL = time.Nanosecond // sweep drops every full or unconfigured bucket
	clock.Advance(time.Hour)
	lookups := 0
	l.afterLookup = func() {
		lookups++
		if lookups == 1 {
			l.sweep()
		}
	}
	once := Bucket{"k", Rate{PerMinute: 1, Burst: 1}}
	if ok, _ := l.takeN(once, Bucket{"other", Rate{PerMinute: 1, Burst: 5}}); !ok {
		t.Fatal("first take refused")
	}
	if lookups != 2 {
		t.Fatalf("Take looked its buckets up %d times, want 2", lookups)
	}
	if ok, _ := l.takeN(once); ok {
		t.Fatal("second take from a bucket of one succeeded: the first took from a dropped bucket")
	}
}

func TestMemoryLimiterBackgroundEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewMemoryLimiter(&MemoryLimiterOptions{IdleTTL: time.Minute})
		defer l.Close()
		l.takeN(Bucket{"k", Rate{PerMinute: 60, Burst: 1}}) // full again in 1s
		time.Sleep(time.Minute + time.Second)               // one sweep, at 1m: full for only 59s
		synctest.Wait()
		if n := l.len(); n != 1 {
			t.Fatalf("after 1m1s: holding %d buckets, want 1", n)
		}
		time.Sleep(time.Minute) // a second sweep, at 2m
		synctest.Wait()
		if n := l.len(); n != 0 {
			t.Fatalf("after 2m1s: holding %d buckets, want 0", n)
		}
	})
}

func TestMemoryLimiterNoEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewMemoryLimiter(&MemoryLimiterOptions{IdleTTL: -1})
		defer l.Close()
		l.takeN(Bucket{"k", Rate{PerMinute: 60, Burst: 1}})
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := l.len(); n != 1 {
			t.Fatalf("holding %d buckets, want 1", n)
		}
	})
}

func TestMemoryLimiterCloseTwice(t *testing.T) {
	l := NewMemoryLimiter(nil)
	l.Close()
	l.Close()
	if ok, _ := l.takeN(Bucket{"k", Rate{PerMinute: 1, Burst: 1}}); !ok {
		t.Fatal("limiter refused after Close")
	}
}

// hammerTake runs workers goroutines, each calling take attempts times, and
// returns how many calls succeeded in all.
func hammerTake(workers, attempts int, take func(worker int) bool) int64 {
	var successes atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range attempts {
				if take(w) {
					successes.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return successes.Load()
}

func TestMemoryLimiterConcurrent(t *testing.T) {
	const workers = 16

	t.Run("sweeping while taking", func(t *testing.T) {
		// The sweeper drops new, not yet configured buckets at once
		// (IdleTTL is a nanosecond); a Take that looked one up must not
		// lose its token to the dropped copy.
		clock := newLimiterClock()
		l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now, IdleTTL: -1})
		l.idleTTL = time.Nanosecond
		clock.Advance(time.Hour)
		stop := make(chan struct{})
		var sweeper sync.WaitGroup
		sweeper.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					l.sweep()
				}
			}
		})
		const keys, burst = 200, 2
		var i [workers]int
		got := hammerTake(workers, keys*3, func(w int) bool {
			i[w]++
			ok, _ := l.takeN(Bucket{fmt.Sprint("k", (i[w]+w*7)%keys), Rate{PerMinute: 1, Burst: burst}})
			return ok
		})
		close(stop)
		sweeper.Wait()
		if want := int64(keys * burst); got != want {
			t.Errorf("%d successes, want %d", got, want)
		}
	})
}

func TestRateUnlimited(t *testing.T) {
	tests := []struct {
		rate Rate
		want bool
	}{
		{Rate{}, true},
		{Rate{Burst: 10}, true},
		{Rate{PerMinute: -1, Burst: 10}, true},
		{Rate{PerMinute: math.NaN()}, true},
		{Rate{PerMinute: math.Inf(1)}, true},
		{Rate{PerMinute: math.Inf(-1)}, true},
		{Rate{PerMinute: 1e-9}, false},
		{Rate{PerMinute: 60, Burst: 10}, false},
	}
	for _, tt := range tests {
		if got := tt.rate.Unlimited(); got != tt.want {
			t.Errorf("%+v.Unlimited() = %v, want %v", tt.rate, got, tt.want)
		}
	}
}

func BenchmarkMemoryLimiterTake(b *testing.B) {
	// Rates that never refuse during a benchmark, so the common path is
	// measured; "refused" measures the other one.
	plenty := Rate{PerMinute: 6e10, Burst: math.MaxInt32}
	benches := []struct {
		name    string
		buckets []Bucket
	}{
		{"unlimited", []Bucket{{"project:default", Rate{}}}},
		{"one bucket", []Bucket{{"project:default", plenty}}},
		{"three buckets", []Bucket{
			{"project:default", plenty},
			{"key:abc123", plenty},
			{"tool:default/github__create_issue", plenty},
		}},
		{"refused", []Bucket{{"project:default", Rate{PerMinute: 1e-3, Burst: 1}}}},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			l := NewMemoryLimiter(nil)
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				l.takeN(bb.buckets...)
			}
		})
	}
	b.Run("parallel/one key", func(b *testing.B) {
		l := NewMemoryLimiter(nil)
		defer l.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.takeN(Bucket{"project:default", plenty})
			}
		})
	})
	b.Run("parallel/many keys", func(b *testing.B) {
		l := NewMemoryLimiter(nil)
		defer l.Close()
		var next atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			key := fmt.Sprint("key:", next.Add(1))
			for pb.Next() {
				l.takeN(Bucket{"project:default", plenty}, Bucket{key, plenty})
			}
		})
	})
}

func ExampleMemoryLimiter() {
	l := NewMemoryLimiter(nil)
	defer l.Close()
	project := Bucket{Key: "project:default", Rate: Rate{PerMinute: 600, Burst: 60}}
	key := Bucket{Key: "key:abc123", Rate: Rate{PerMinute: 2, Burst: 2}}
	for range 3 {
		ok, retryAfter, _ := l.Take(context.Background(), project, key)
		fmt.Println(ok, retryAfter.Round(time.Second))
	}
	// Output:
	// true 0s
	// true 0s
	// false 30s
}
