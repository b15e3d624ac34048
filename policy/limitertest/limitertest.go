// Package limitertest is the test table every [policy.Limiter] passes:
// the in-memory limiter and the shared one in Redis run the same cases,
// so that they admit and refuse the same calls with the same retry
// hints.
package limitertest

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy"
)

// Config describes the limiter under test.
type Config struct {
	// New returns an empty limiter that reads the time from now, or from
	// its own clock when now is nil. It stops the limiter when the test
	// ends.
	New func(t *testing.T, now func() time.Time) policy.Limiter
	// Resolution is the step of the limiter's clock: times and retry
	// hints are whole multiples of it. Zero means a nanosecond.
	Resolution time.Duration
	// Attempts is how many calls each of 16 workers makes in the
	// concurrent cases (default 2000).
	Attempts int
}

// Clock is a clock that moves only when told to.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock set to a fixed time, on a whole second.
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// maxSpan is the longest span a limiter keeps (about 73 years).
const maxSpan = int64(1) << 61

// Run runs the table against the limiter of c.
func Run(t *testing.T, c Config) {
	if c.Resolution <= 0 {
		c.Resolution = time.Nanosecond
	}
	if c.Attempts <= 0 {
		c.Attempts = 2000
	}
	t.Run("Take", func(t *testing.T) { testTake(t, c) })
	t.Run("RetryAfterIsEnough", func(t *testing.T) { testRetryAfterIsEnough(t, c) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, c) })
}

// take calls l.Take and fails the test on an error.
func take(t *testing.T, l policy.Limiter, bs ...policy.Bucket) (bool, time.Duration) {
	t.Helper()
	ok, retry, err := l.Take(context.Background(), bs...)
	if err != nil {
		t.Fatalf("Take(%v): %v", bs, err)
	}
	return ok, retry
}

func testTake(t *testing.T, c Config) {
	type Rate = policy.Rate
	type Bucket = policy.Bucket
	res := c.Resolution
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
	// 60s/7 = 8.571428571428...s, rounded up to the clock's step.
	seventh := (time.Minute/7 + res) / res * res
	// The longest wait, in whole steps.
	longest := time.Duration(maxSpan) / res * res

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
				refused(seventh, b("k", Rate{PerMinute: 7, Burst: 1})),
				after(seventh-res, refused(time.Millisecond, b("k", Rate{PerMinute: 7, Burst: 1}))),
				after(res, ok(b("k", Rate{PerMinute: 7, Burst: 1}))),
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
				refused(longest, b("one", Rate{PerMinute: 1e-300, Burst: 1})),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := NewClock()
			l := c.New(t, clock.Now)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				gotOK, gotRetry := take(t, l, s.take...)
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

// testRetryAfterIsEnough checks, for many rates, that waiting the
// retryAfter of a refusal is exactly enough.
func testRetryAfterIsEnough(t *testing.T, c Config) {
	clock := NewClock()
	l := c.New(t, clock.Now)
	for _, perMinute := range []float64{0.1, 1, 3, 7, 60, 61, 99.9, 600, 1e4, 123456.789} {
		for _, burst := range []int{1, 2, 7} {
			r := policy.Rate{PerMinute: perMinute, Burst: burst}
			key := fmt.Sprint(r)
			for range burst {
				if ok, _ := take(t, l, policy.Bucket{Key: key, Rate: r}); !ok {
					t.Fatalf("%v: refused within the burst", r)
				}
			}
			for range 5 {
				// Drain what earlier waits refilled.
				var retry time.Duration
				for ok := true; ok; {
					ok, retry = take(t, l, policy.Bucket{Key: key, Rate: r})
				}
				if retry > time.Millisecond {
					clock.Advance(retry - time.Nanosecond)
					if ok, _ := take(t, l, policy.Bucket{Key: key, Rate: r}); ok {
						t.Fatalf("%v: admitted a nanosecond before retryAfter %v", r, retry)
					}
					clock.Advance(time.Nanosecond)
				} else {
					clock.Advance(retry)
				}
				if ok, again := take(t, l, policy.Bucket{Key: key, Rate: r}); !ok {
					t.Fatalf("%v: refused after waiting retryAfter %v (now %v)", r, retry, again)
				}
			}
		}
	}
}

// hammer runs workers goroutines, each calling try attempts times, and
// returns how many calls succeeded in all.
func hammer(workers, attempts int, try func(worker int) bool) int64 {
	var successes atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range attempts {
				if try(w) {
					successes.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return successes.Load()
}

func testConcurrent(t *testing.T, c Config) {
	const workers = 16
	attempts := c.Attempts
	ctx := context.Background()
	var failed atomic.Int64
	takeOK := func(l policy.Limiter, bs ...policy.Bucket) bool {
		ok, _, err := l.Take(ctx, bs...)
		if err != nil {
			failed.Add(1)
		}
		return ok
	}
	t.Cleanup(func() {
		if n := failed.Load(); n > 0 {
			t.Errorf("%d calls of Take failed", n)
		}
	})

	t.Run("frozen clock", func(t *testing.T) {
		clock := NewClock()
		l := c.New(t, clock.Now)
		r := policy.Rate{PerMinute: 600, Burst: 50}
		got := hammer(workers, attempts, func(int) bool { return takeOK(l, policy.Bucket{Key: "k", Rate: r}) })
		if got != int64(r.Burst) {
			t.Errorf("%d successes, want exactly the burst %d", got, r.Burst)
		}
	})

	t.Run("ticking clock", func(t *testing.T) {
		// Every reading of the clock moves it on by a microsecond.
		start := NewClock().Now()
		var ticks atomic.Int64
		now := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Microsecond) }
		l := c.New(t, now)
		r := policy.Rate{PerMinute: 60000, Burst: 10} // a token a millisecond
		got := hammer(workers, attempts, func(int) bool { return takeOK(l, policy.Bucket{Key: "k", Rate: r}) })
		elapsed := now().Sub(start)
		limit := int64(r.Burst) + int64(elapsed.Minutes()*r.PerMinute)
		if got > limit || got < int64(r.Burst) {
			t.Errorf("%d successes in %v, want between %d and %d", got, elapsed, r.Burst, limit)
		}
	})

	t.Run("real clock", func(t *testing.T) {
		start := time.Now()
		l := c.New(t, nil)
		r := policy.Rate{PerMinute: 600000, Burst: 20} // ten tokens a millisecond
		got := hammer(workers, attempts, func(int) bool { return takeOK(l, policy.Bucket{Key: "k", Rate: r}) })
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
		clock := NewClock()
		l := c.New(t, clock.Now)
		shared := policy.Bucket{Key: "shared", Rate: policy.Rate{PerMinute: 1, Burst: 100}}
		own := func(w int) policy.Bucket {
			return policy.Bucket{Key: fmt.Sprintf("own%02d", w), Rate: policy.Rate{PerMinute: 1, Burst: attempts / 2}}
		}
		perWorker := make([]int, workers)
		got := hammer(workers, attempts, func(w int) bool {
			var ok bool
			if w%2 == 0 {
				ok = takeOK(l, shared, own(w))
			} else {
				ok = takeOK(l, own(w), shared)
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
			for takeOK(l, own(w)) {
				left++
			}
			if left+perWorker[w] != attempts/2 {
				t.Errorf("worker %d: %d successes, %d tokens left; want a sum of %d", w, perWorker[w], left, attempts/2)
			}
		}
	})
}
