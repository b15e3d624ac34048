package policy

// These tests are in package policy (not policy_test) so that they can count
// and sweep the limiter's buckets; everything else goes through the exported
// API.

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

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

func TestMemoryLimiterTake(t *testing.T) {
	perSecond3 := Rate{PerMinute: 60, Burst: 3} // a token a second, up to 3
	fast := Rate{PerMinute: 60, Burst: 1}
	slow := Rate{PerMinute: 6, Burst: 1} // a token every 10s

	b := func(key string, r Rate) Bucket { return Bucket{Key: key, Rate: r} }
	type step struct {
		advance time.Duration // moved before the take
		take    []Bucket
		ok      bool
		retry   time.Duration // wanted retryAfter when !ok
	}
	ok := func(bs ...Bucket) step { return step{take: bs, ok: true} }
	refused := func(retry time.Duration, bs ...Bucket) step { return step{take: bs, retry: retry} }
	after := func(d time.Duration, s step) step { s.advance = d; return s }

	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "burst then refusal then refill",
			steps: []step{
				ok(b("k", perSecond3)),
				ok(b("k", perSecond3)),
				ok(b("k", perSecond3)),
				refused(time.Second, b("k", perSecond3)),
				after(400*time.Millisecond, refused(600*time.Millisecond, b("k", perSecond3))),
				after(600*time.Millisecond, ok(b("k", perSecond3))),
				refused(time.Second, b("k", perSecond3)),
				// A long pause refills up to the burst, no further.
				after(time.Hour, ok(b("k", perSecond3))),
				ok(b("k", perSecond3)),
				ok(b("k", perSecond3)),
				refused(time.Second, b("k", perSecond3)),
			},
		},
		{
			name: "buckets are independent",
			steps: []step{
				ok(b("a", fast)),
				refused(time.Second, b("a", fast)),
				ok(b("b", fast)),
			},
		},
		{
			name: "retry after is the slowest bucket's",
			steps: []step{
				ok(b("fast", fast), b("slow", slow)),
				after(time.Second, refused(9*time.Second, b("fast", fast), b("slow", slow))),
				// The refusal took nothing from the fast bucket.
				ok(b("fast", fast)),
				refused(9*time.Second, b("slow", slow), b("fast", fast)),
				after(9*time.Second, ok(b("fast", fast), b("slow", slow))),
			},
		},
		{
			name: "refusal by a later bucket consumes nothing",
			steps: []step{
				ok(b("a", Rate{PerMinute: 1, Burst: 2}), b("z", Rate{PerMinute: 1, Burst: 1})),
				refused(time.Minute, b("a", Rate{PerMinute: 1, Burst: 2}), b("z", Rate{PerMinute: 1, Burst: 1})),
				ok(b("a", Rate{PerMinute: 1, Burst: 2})),
				refused(time.Minute, b("a", Rate{PerMinute: 1, Burst: 2})),
			},
		},
		{
			name: "refusal by an earlier bucket consumes nothing",
			steps: []step{
				ok(b("a", Rate{PerMinute: 1, Burst: 1}), b("z", Rate{PerMinute: 1, Burst: 2})),
				refused(time.Minute, b("z", Rate{PerMinute: 1, Burst: 2}), b("a", Rate{PerMinute: 1, Burst: 1})),
				ok(b("z", Rate{PerMinute: 1, Burst: 2})),
				refused(time.Minute, b("z", Rate{PerMinute: 1, Burst: 2})),
			},
		},
		{
			name: "unlimited buckets are ignored",
			steps: []step{
				ok(b("u", Rate{})),
				ok(b("u", Rate{Burst: 1})),
				ok(b("u", Rate{PerMinute: math.Inf(1), Burst: 1})),
				ok(b("u", Rate{PerMinute: math.NaN(), Burst: 1})),
				ok(b("u", Rate{PerMinute: -5, Burst: 1})),
				ok(),
				ok(b("u", Rate{}), b("k", fast)),
				refused(time.Second, b("u", Rate{}), b("k", fast)),
			},
		},
		{
			name: "burst below one counts as one",
			steps: []step{
				ok(b("k", Rate{PerMinute: 60})),
				refused(time.Second, b("k", Rate{PerMinute: 60})),
				refused(time.Second, b("k", Rate{PerMinute: 60, Burst: -3})),
			},
		},
		{
			name: "a key listed twice is one bucket",
			steps: []step{
				ok(b("k", perSecond3), b("k", perSecond3), b("k", perSecond3)),
				ok(b("k", perSecond3)),
				ok(b("k", perSecond3)),
				refused(time.Second, b("k", perSecond3)),
			},
		},
		{
			name: "rate change keeps tokens, capped at the new burst",
			steps: []step{
				ok(b("k", Rate{PerMinute: 60, Burst: 5})),
				ok(b("k", Rate{PerMinute: 60, Burst: 5})), // 3 left
				ok(b("k", Rate{PerMinute: 60, Burst: 2})), // capped to 2, 1 left
				ok(b("k", Rate{PerMinute: 60, Burst: 2})),
				refused(time.Second, b("k", Rate{PerMinute: 60, Burst: 2})),
				// A faster rate refills faster at once.
				refused(100*time.Millisecond, b("k", Rate{PerMinute: 600, Burst: 2})),
				// A larger burst grants no tokens by itself.
				refused(100*time.Millisecond, b("k", Rate{PerMinute: 600, Burst: 100})),
				after(time.Second, ok(b("k", Rate{PerMinute: 600, Burst: 100}))), // 10 refilled
				// Unlimited while it lasts, then limited again.
				ok(b("k", Rate{})),
				ok(b("k", Rate{})),
				ok(b("k", Rate{PerMinute: 60, Burst: 1})),
				refused(time.Second, b("k", Rate{PerMinute: 60, Burst: 1})),
			},
		},
		{
			name: "retry after is at least a millisecond",
			steps: []step{
				ok(b("k", Rate{PerMinute: 60e6, Burst: 1})), // a token every microsecond
				refused(time.Millisecond, b("k", Rate{PerMinute: 60e6, Burst: 1})),
				after(time.Microsecond, ok(b("k", Rate{PerMinute: 60e6, Burst: 1}))),
			},
		},
		{
			name: "fractional rates round the interval up",
			steps: []step{
				ok(b("k", Rate{PerMinute: 7, Burst: 1})),
				// 60s/7 = 8.571428571428...s, rounded up to the nanosecond.
				refused(8571428572*time.Nanosecond, b("k", Rate{PerMinute: 7, Burst: 1})),
				after(8571428571*time.Nanosecond, refused(time.Millisecond, b("k", Rate{PerMinute: 7, Burst: 1}))),
				after(time.Nanosecond, ok(b("k", Rate{PerMinute: 7, Burst: 1}))),
			},
		},
		{
			name: "many buckets",
			steps: func() []step {
				var all, most []Bucket
				for i := range 12 {
					r := Rate{PerMinute: 60, Burst: 2}
					if i == 11 {
						r.Burst = 1
					}
					all = append(all, b(fmt.Sprint("k", 11-i), r))
				}
				most = all[:11]
				return []step{ok(all...), refused(time.Second, all...), ok(most...), refused(time.Second, most...)}
			}(),
		},
		{
			name: "absurd rates do not overflow",
			steps: []step{
				ok(b("tiny", Rate{PerMinute: 1e-300, Burst: math.MaxInt})),
				ok(b("tiny", Rate{PerMinute: 1e-300, Burst: math.MaxInt})),
				ok(b("huge", Rate{PerMinute: 1e300, Burst: math.MaxInt})),
				ok(b("one", Rate{PerMinute: 1e-300, Burst: 1})),
				refused(time.Duration(maxSpan), b("one", Rate{PerMinute: 1e-300, Burst: 1})),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newLimiterClock()
			l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now})
			defer l.Close()
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				gotOK, gotRetry := l.Take(s.take...)
				wantRetry := s.retry
				if s.ok {
					wantRetry = 0
				}
				if gotOK != s.ok || gotRetry != wantRetry {
					t.Fatalf("step %d: Take(%v) = %v, %v; want %v, %v", i, s.take, gotOK, gotRetry, s.ok, wantRetry)
				}
			}
		})
	}
}

// TestMemoryLimiterRetryAfterIsEnough checks, for many rates, that waiting
// the retryAfter of a refusal is exactly enough.
func TestMemoryLimiterRetryAfterIsEnough(t *testing.T) {
	clock := newLimiterClock()
	l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now, IdleTTL: -1})
	for _, perMinute := range []float64{0.1, 1, 3, 7, 60, 61, 99.9, 600, 1e4, 123456.789} {
		for _, burst := range []int{1, 2, 7} {
			r := Rate{PerMinute: perMinute, Burst: burst}
			key := fmt.Sprint(r)
			for range burst {
				if ok, _ := l.Take(Bucket{key, r}); !ok {
					t.Fatalf("%v: refused within the burst", r)
				}
			}
			for range 5 {
				// Drain what earlier waits refilled.
				var retry time.Duration
				for ok := true; ok; {
					ok, retry = l.Take(Bucket{key, r})
				}
				if retry > time.Millisecond {
					clock.Advance(retry - time.Nanosecond)
					if ok, _ := l.Take(Bucket{key, r}); ok {
						t.Fatalf("%v: admitted a nanosecond before retryAfter %v", r, retry)
					}
					clock.Advance(time.Nanosecond)
				} else {
					clock.Advance(retry)
				}
				if ok, again := l.Take(Bucket{key, r}); !ok {
					t.Fatalf("%v: refused after waiting retryAfter %v (now %v)", r, retry, again)
				}
			}
		}
	}
}

func TestMemoryLimiterEviction(t *testing.T) {
	clock := newLimiterClock()
	l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now, IdleTTL: time.Minute})
	defer l.Close()

	// A bucket may be dropped once it has been full for IdleTTL.
	l.Take(Bucket{"quick", Rate{PerMinute: 60, Burst: 10}}) // full at 1s
	for range 5 {
		l.Take(Bucket{"slow", Rate{PerMinute: 1, Burst: 5}}) // full at 5m
	}
	once := Bucket{"refused", Rate{PerMinute: 1, Burst: 1}}
	l.Take(once) // full at 1m
	if ok, _ := l.Take(once); ok {
		t.Fatal("second take from a bucket of one succeeded")
	}
	clock.Advance(2 * time.Second)
	l.Take(Bucket{"later", Rate{PerMinute: 60, Burst: 10}}) // full at 3s

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
		if ok, _ := l.Take(Bucket{"quick", Rate{PerMinute: 60, Burst: 10}}); !ok {
			t.Fatal("re-created bucket is not full")
		}
	}
	if ok, _ := l.Take(Bucket{"quick", Rate{PerMinute: 60, Burst: 10}}); ok {
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
	if ok, _ := l.Take(once, Bucket{"other", Rate{PerMinute: 1, Burst: 5}}); !ok {
		t.Fatal("first take refused")
	}
	if lookups != 2 {
		t.Fatalf("Take looked its buckets up %d times, want 2", lookups)
	}
	if ok, _ := l.Take(once); ok {
		t.Fatal("second take from a bucket of one succeeded: the first took from a dropped bucket")
	}
}

func TestMemoryLimiterBackgroundEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewMemoryLimiter(&MemoryLimiterOptions{IdleTTL: time.Minute})
		defer l.Close()
		l.Take(Bucket{"k", Rate{PerMinute: 60, Burst: 1}}) // full again in 1s
		time.Sleep(time.Minute + time.Second)              // one sweep, at 1m: full for only 59s
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
		l.Take(Bucket{"k", Rate{PerMinute: 60, Burst: 1}})
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
	if ok, _ := l.Take(Bucket{"k", Rate{PerMinute: 1, Burst: 1}}); !ok {
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
	const workers, attempts = 16, 2000

	t.Run("frozen clock", func(t *testing.T) {
		clock := newLimiterClock()
		l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now})
		defer l.Close()
		r := Rate{PerMinute: 600, Burst: 50}
		got := hammerTake(workers, attempts, func(int) bool {
			ok, _ := l.Take(Bucket{"k", r})
			return ok
		})
		if got != int64(r.Burst) {
			t.Errorf("%d successes, want exactly the burst %d", got, r.Burst)
		}
	})

	t.Run("ticking clock", func(t *testing.T) {
		// Every reading of the clock moves it on by a microsecond.
		start := newLimiterClock().Now()
		var ticks atomic.Int64
		now := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Microsecond) }
		l := NewMemoryLimiter(&MemoryLimiterOptions{Now: now, IdleTTL: -1})
		defer l.Close()
		r := Rate{PerMinute: 60000, Burst: 10} // a token a millisecond
		got := hammerTake(workers, attempts, func(int) bool {
			ok, _ := l.Take(Bucket{"k", r})
			return ok
		})
		elapsed := now().Sub(start)
		limit := int64(r.Burst) + int64(elapsed.Minutes()*r.PerMinute)
		if got > limit || got < int64(r.Burst) {
			t.Errorf("%d successes in %v, want between %d and %d", got, elapsed, r.Burst, limit)
		}
	})

	t.Run("real clock", func(t *testing.T) {
		start := time.Now()
		l := NewMemoryLimiter(nil)
		defer l.Close()
		r := Rate{PerMinute: 600000, Burst: 20} // ten tokens a millisecond
		got := hammerTake(workers, attempts, func(int) bool {
			ok, _ := l.Take(Bucket{"k", r})
			return ok
		})
		elapsed := time.Since(start)
		limit := int64(r.Burst) + int64(elapsed.Minutes()*r.PerMinute)
		if got > limit || got < int64(r.Burst) {
			t.Errorf("%d successes in %v, want between %d and %d", got, elapsed, r.Burst, limit)
		}
	})

	t.Run("overlapping buckets are all or none", func(t *testing.T) {
		// Each worker takes from a shared bucket and its own, listing them
		// in either order. Every own bucket must have lost exactly as many
		// tokens as its worker had successes.
		clock := newLimiterClock()
		l := NewMemoryLimiter(&MemoryLimiterOptions{Now: clock.Now})
		defer l.Close()
		shared := Bucket{"shared", Rate{PerMinute: 1, Burst: 100}}
		own := func(w int) Bucket { return Bucket{fmt.Sprintf("own%02d", w), Rate{PerMinute: 1, Burst: 1000}} }
		perWorker := make([]int, workers)
		got := hammerTake(workers, attempts, func(w int) bool {
			var ok bool
			if w%2 == 0 {
				ok, _ = l.Take(shared, own(w))
			} else {
				ok, _ = l.Take(own(w), shared)
			}
			if ok {
				perWorker[w]++
			}
			return ok
		})
		if got != 100 {
			t.Errorf("%d successes, want 100", got)
		}
		for w := range workers {
			left := 0
			for {
				if ok, _ := l.Take(own(w)); !ok {
					break
				}
				left++
			}
			if left+perWorker[w] != 1000 {
				t.Errorf("worker %d: %d successes, %d tokens left; want a sum of 1000", w, perWorker[w], left)
			}
		}
	})

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
			ok, _ := l.Take(Bucket{fmt.Sprint("k", (i[w]+w*7)%keys), Rate{PerMinute: 1, Burst: burst}})
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
				l.Take(bb.buckets...)
			}
		})
	}
	b.Run("parallel/one key", func(b *testing.B) {
		l := NewMemoryLimiter(nil)
		defer l.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Take(Bucket{"project:default", plenty})
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
				l.Take(Bucket{"project:default", plenty}, Bucket{key, plenty})
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
		ok, retryAfter := l.Take(project, key)
		fmt.Println(ok, retryAfter.Round(time.Second))
	}
	// Output:
	// true 0s
	// true 0s
	// false 30s
}
