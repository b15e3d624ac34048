package policy

import (
	"context"
	"errors"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Rate is a token bucket: PerMinute tokens added per minute, up to Burst.
//
// A bucket starts full, so after a quiet period Burst calls may be made at
// once; after that, calls are admitted at PerMinute per minute. The zero Rate
// is unlimited.
type Rate struct {
	// PerMinute is how many tokens are added to the bucket per minute; it
	// may be fractional (0.5 is one call every two minutes). Zero means
	// unlimited: the bucket is ignored. Any other value that is not a
	// positive finite number is treated as unlimited too; configuration
	// validation is expected to reject it before it gets here.
	PerMinute float64
	// Burst is the bucket's capacity: how many calls may be made at once.
	// Values below 1 count as 1, since a bucket that can never hold a token
	// would refuse every call forever.
	Burst int
}

// Unlimited reports whether r puts no limit on calls (PerMinute is not a
// positive finite number).
func (r Rate) Unlimited() bool {
	return !(r.PerMinute > 0) || math.IsInf(r.PerMinute, 1)
}

// Bucket names one bucket and its rate, for example
// {"project:default", r}, {"key:abc123", r} or
// {"tool:default/github__create_issue", r}. Buckets with the same Key are the
// same bucket, whatever their Rate; the Rate of the latest call wins (a
// configuration reload changes a bucket's rate in place).
type Bucket struct {
	// Key names the bucket. Choose keys that cannot collide across kinds,
	// for example by prefixing the kind ("project:", "key:", "tool:").
	Key string
	// Rate is the bucket's rate.
	Rate Rate
}

// Limiter takes tokens from rate-limit buckets. Implementations are safe for
// concurrent use. [MemoryLimiter] keeps buckets in this process; a shared
// store (Redis, say) implements the same interface for several gateways.
type Limiter interface {
	// Take takes one token from every bucket, all or none: a refusal by
	// one bucket consumes no token from any other. It returns true if the
	// tokens were taken; otherwise false and how long until every bucket
	// would have a token (at least a millisecond). Unlimited buckets are
	// ignored, and Take with no limited bucket always succeeds.
	//
	// An error means no decision could be made (a shared store is out of
	// reach); it wraps [ErrLimiterUnavailable], and ok is false.
	Take(ctx context.Context, buckets ...Bucket) (ok bool, retryAfter time.Duration, err error)
}

// ErrLimiterUnavailable is wrapped by the error of a [Limiter] that could
// not decide: its store did not answer.
var ErrLimiterUnavailable = errors.New("rate-limit store unavailable")

var _ Limiter = (*MemoryLimiter)(nil)

// MemoryLimiterOptions configures a [MemoryLimiter]. The zero value (or a nil
// pointer) means defaults.
type MemoryLimiterOptions struct {
	// Now returns the current time; nil means time.Now. Tests inject a
	// clock here.
	Now func() time.Time
	// IdleTTL is how long a bucket must have been full (untouched since it
	// refilled) before it is dropped to free memory. Dropping a full bucket
	// changes nothing a caller can observe, since a new bucket starts full.
	// Zero means 10 minutes; a negative value disables eviction, and with
	// it the background goroutine.
	IdleTTL time.Duration
}

// DefaultIdleTTL is the IdleTTL used when [MemoryLimiterOptions] leaves it zero.
const DefaultIdleTTL = 10 * time.Minute

// limiterShards is the number of independently locked parts of the bucket
// map. Lookups only take a read lock, so shards mostly save the sweeper from
// stalling every caller at once.
const limiterShards = 64

// maxSpan caps every time span of a bucket (the interval between tokens and
// how far ahead of now it may run), so that nanosecond arithmetic on
// absurd rates cannot overflow. It is about 73 years.
const maxSpan = int64(1) << 61

// MemoryLimiter is a [Limiter] that keeps its buckets in memory. It is safe
// for concurrent use; Take does not allocate once its buckets exist, unless
// it is handed more than eight limited buckets at once.
//
// Buckets follow the generic cell rate algorithm (GCRA), which behaves
// exactly like a token bucket but stores one timestamp per bucket and
// computes retry times exactly in whole nanoseconds.
//
// Call [MemoryLimiter.Close] when done with it to stop background eviction.
type MemoryLimiter struct {
	now     func() time.Time
	epoch   time.Time // bucket times are nanoseconds since epoch
	idleTTL time.Duration
	seed    maphash.Seed
	shards  [limiterShards]limiterShard

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	afterLookup func() // a test hook, run by Take between lookup and locking
}

type limiterShard struct {
	mu sync.RWMutex
	m  map[string]*bucketState
	_  [32]byte // keep shards on separate cache lines
}

// bucketState is one bucket. All fields are guarded by mu.
type bucketState struct {
	mu       sync.Mutex
	rate     Rate  // the rate that interval and tau were computed from
	interval int64 // nanoseconds per token
	tau      int64 // (burst-1)*interval: how far tat may run ahead of now
	// tat is the theoretical arrival time: the bucket is full at and after
	// tat, and holds a token whenever now >= tat-tau.
	tat  int64
	dead bool // removed from its shard by the sweeper; look the key up again
}

// NewMemoryLimiter returns an empty in-memory limiter. Unless opts disables
// it, a background goroutine drops idle buckets every IdleTTL until
// [MemoryLimiter.Close] is called.
func NewMemoryLimiter(opts *MemoryLimiterOptions) *MemoryLimiter {
	var o MemoryLimiterOptions
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.IdleTTL == 0 {
		o.IdleTTL = DefaultIdleTTL
	}
	l := &MemoryLimiter{
		now:     o.Now,
		epoch:   o.Now(),
		idleTTL: o.IdleTTL,
		seed:    maphash.MakeSeed(),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*bucketState)
	}
	if l.idleTTL > 0 {
		l.stop = make(chan struct{})
		l.done = make(chan struct{})
		go l.evictLoop()
	}
	return l
}

// Close stops background eviction and waits for it to finish. The limiter
// keeps working afterwards, without eviction. Close may be called more than
// once.
func (l *MemoryLimiter) Close() {
	l.closeOnce.Do(func() {
		if l.stop != nil {
			close(l.stop)
			<-l.done
		}
	})
}

// Take implements [Limiter]; it never fails, and ctx is not used.
// Buckets are locked in key order, so concurrent calls naming overlapping
// buckets cannot deadlock, and a call's decision is made with all its
// buckets held, so it is all or none. A key listed more than once is one
// bucket and gives one token; its first listing's Rate applies.
func (l *MemoryLimiter) Take(_ context.Context, buckets ...Bucket) (bool, time.Duration, error) {
	ok, wait := l.take(buckets)
	return ok, wait, nil
}

func (l *MemoryLimiter) take(buckets []Bucket) (bool, time.Duration) {
	// Indices of the limited buckets, sorted by key, without duplicate
	// keys. Fixed arrays keep the usual handful of buckets off the heap.
	var idxBuf [8]int
	idx := idxBuf[:0]
	for i := range buckets {
		if !buckets[i].Rate.Unlimited() {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return true, 0
	}
	// Insertion sort: stable, and fastest for the few buckets of a call.
	for i := 1; i < len(idx); i++ {
		for j := i; j > 0 && buckets[idx[j]].Key < buckets[idx[j-1]].Key; j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
	n := 1
	for i := 1; i < len(idx); i++ {
		if buckets[idx[i]].Key != buckets[idx[n-1]].Key {
			idx[n] = idx[i]
			n++
		}
	}
	idx = idx[:n]

	var stateBuf [8]*bucketState
	var states []*bucketState
	if len(idx) <= len(stateBuf) {
		states = stateBuf[:len(idx)]
	} else {
		states = make([]*bucketState, len(idx))
	}

lookup:
	for i, j := range idx {
		states[i] = l.bucket(buckets[j].Key)
	}
	if l.afterLookup != nil {
		l.afterLookup()
	}
	for i, s := range states {
		s.mu.Lock()
		if s.dead {
			// Dropped by the sweeper after we looked it up: taking a token
			// from it would be lost. Start again with the live buckets.
			for _, held := range states[:i+1] {
				held.mu.Unlock()
			}
			goto lookup
		}
	}

	now := l.nanos()
	var wait int64
	for i, s := range states {
		if r := buckets[idx[i]].Rate; s.rate != r {
			s.configure(r, now)
		}
		wait = max(wait, s.tat-s.tau-now)
	}
	if wait > 0 {
		for _, s := range states {
			s.mu.Unlock()
		}
		return false, max(time.Duration(wait), time.Millisecond)
	}
	for _, s := range states {
		s.tat = max(s.tat, now) + s.interval
		s.mu.Unlock()
	}
	return true, 0
}

// nanos returns the current time as nanoseconds since l.epoch.
func (l *MemoryLimiter) nanos() int64 {
	return int64(l.now().Sub(l.epoch))
}

// bucket returns the live bucket for key, creating it if need be. A new
// bucket is unconfigured (its rate is the zero Rate) and Take configures it.
func (l *MemoryLimiter) bucket(key string) *bucketState {
	sh := &l.shards[maphash.String(l.seed, key)%limiterShards]
	sh.mu.RLock()
	s := sh.m[key]
	sh.mu.RUnlock()
	if s != nil {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s = sh.m[key]; s == nil {
		s = new(bucketState)
		sh.m[key] = s
	}
	return s
}

// configure sets the bucket's rate to r at time now. A new bucket starts
// full; an existing one keeps the tokens it holds, capped at the new burst,
// so a reload neither refills nor empties the buckets in use.
func (s *bucketState) configure(r Rate, now int64) {
	burst := max(r.Burst, 1)
	// Round the interval up so the limiter never admits more than r.
	interval := maxSpan
	if f := math.Ceil(60e9 / r.PerMinute); f < float64(maxSpan) {
		interval = max(int64(f), 1)
	}
	tau := maxSpan
	if b := int64(burst - 1); b < maxSpan/interval {
		tau = b * interval
	}

	if s.interval == 0 {
		s.tat = now
	} else {
		// Tokens held now: Burst when tat <= now, one less per interval
		// that tat runs ahead of now.
		tokens := float64(s.tau+s.interval-max(s.tat-now, 0)) / float64(s.interval)
		tokens = min(max(tokens, 0), float64(burst))
		debt := math.Ceil((float64(burst) - tokens) * float64(interval))
		s.tat = now + int64(min(debt, float64(tau+interval)))
	}
	s.rate, s.interval, s.tau = r, interval, tau
}

func (l *MemoryLimiter) evictLoop() {
	defer close(l.done)
	t := time.NewTicker(l.idleTTL)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.sweep()
		}
	}
}

// sweep drops every bucket that has been full for at least IdleTTL, and
// buckets that were created but never configured. Buckets in use at the
// moment are skipped.
func (l *MemoryLimiter) sweep() {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		now := l.nanos()
		for key, s := range sh.m {
			if !s.mu.TryLock() {
				continue
			}
			if now-s.tat >= int64(l.idleTTL) {
				s.dead = true
				delete(sh.m, key)
			}
			s.mu.Unlock()
		}
		sh.mu.Unlock()
	}
}

// len returns the number of buckets held, for tests.
func (l *MemoryLimiter) len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
