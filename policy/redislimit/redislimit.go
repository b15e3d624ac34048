// Package redislimit keeps rate-limit buckets in Redis, so that several
// toolgate replicas share them: together they admit no more than one
// budget plus one burst. It implements [policy.Limiter] with the same
// generic cell rate algorithm (GCRA) as [policy.MemoryLimiter], all or
// none over the buckets of a call, in one Lua script run atomically by
// the Redis server.
//
// It decides on plain bucket names and rates handed to it, and knows
// nothing of MCP, transports or the gateway.
package redislimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/policy"
)

//go:embed take.lua
var takeSource string

var takeScript = redis.NewScript(takeSource)

// Options configure a [Limiter]. A nil *Options means defaults.
type Options struct {
	// Timeout bounds one Take, connecting included (default 250ms).
	Timeout time.Duration
	// FailOpen makes Take admit calls (ok, no error) while Redis cannot
	// be reached; by default Take returns an error that wraps
	// [policy.ErrLimiterUnavailable], and the caller refuses the call.
	FailOpen bool
	// Prefix starts the name of every key the limiter writes (default
	// "toolgate:rl:").
	Prefix string
	// Now, when set, is the clock of every decision, instead of the
	// Redis server's: for tests. Replicas must share one clock, which
	// the server's is.
	Now func() time.Time
	// OnStateChange, when set, is called (without locks held) when Redis
	// stops answering, with the error, and when it answers again, with
	// nil.
	OnStateChange func(err error)
	// Logger receives the state changes (default slog.Default()).
	Logger *slog.Logger
}

// DefaultTimeout is the Timeout of a nil [Options].
const DefaultTimeout = 250 * time.Millisecond

// probeInterval is how often a limiter whose Redis is out of reach
// checks whether it answers again, when no call does.
const probeInterval = time.Second

// clientLog passes the messages of the go-redis client, which would go
// to the process's standard error, to the logger of the newest limiter at
// debug level: while Redis is down the client writes one per call that
// fails to connect, and the limiter already reports the outage once.
var clientLog struct {
	once   sync.Once
	logger atomic.Pointer[slog.Logger]
}

type clientLogger struct{}

func (clientLogger) Printf(ctx context.Context, format string, v ...any) {
	if l := clientLog.logger.Load(); l != nil {
		l.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
	}
}

// Limiter is a [policy.Limiter] whose buckets live in Redis. It is safe
// for concurrent use. Close it when done.
type Limiter struct {
	rdb      *redis.Client
	timeout  time.Duration
	failOpen bool
	prefix   string
	now      func() time.Time
	onChange func(error)
	log      *slog.Logger

	mu     sync.Mutex
	err    error // why the last decision failed; nil while Redis answers
	since  time.Time
	errors int64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ policy.Limiter = (*Limiter)(nil)

// New returns a limiter on the Redis server at url
// (redis://[user:password@]host:port[/db], rediss:// for TLS). It does
// not connect yet: a server that is down makes Take fail, not New.
func New(url string, opts *Options) (*Limiter, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", errors.Unwrap(err))
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Prefix == "" {
		o.Prefix = "toolgate:rl:"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout, ro.PoolTimeout = o.Timeout, o.Timeout, o.Timeout, o.Timeout
	ro.ContextTimeoutEnabled = true
	// One retry, at once: a connection the server closed (a restart) is
	// replaced without failing the call; a server that is down fails it
	// within Timeout.
	ro.MaxRetries, ro.MinRetryBackoff, ro.MaxRetryBackoff = 1, time.Millisecond, 5*time.Millisecond
	ro.DisableIdentity = true // no CLIENT SETINFO: older servers refuse it
	clientLog.logger.Store(o.Logger)
	clientLog.once.Do(func() { redis.SetLogger(clientLogger{}) })
	l := &Limiter{
		rdb:      redis.NewClient(ro),
		timeout:  o.Timeout,
		failOpen: o.FailOpen,
		prefix:   o.Prefix,
		now:      o.Now,
		onChange: o.OnStateChange,
		log:      o.Logger,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go l.probe()
	return l, nil
}

// Close closes the connections to Redis and stops the background probe.
func (l *Limiter) Close() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		err = l.rdb.Close()
	})
	return err
}

// maxSpan caps every span of a bucket, as the in-memory limiter does
// (about 73 years); in microseconds it stays exact in the script's
// double-precision numbers.
const maxSpanMicros = int64(1) << 61 / 1000

// Take implements [policy.Limiter]. The buckets are decided by one script,
// which Redis runs atomically: all or none, with every replica's calls
// in one order. Times are whole microseconds of the Redis server's clock,
// so replicas whose clocks differ still share one timeline.
func (l *Limiter) Take(ctx context.Context, buckets ...policy.Bucket) (bool, time.Duration, error) {
	var keysBuf [8]string
	var argsBuf [1 + 3*8]any
	keys, args := keysBuf[:0], argsBuf[:1]
	for i := range buckets {
		b := &buckets[i]
		if b.Rate.Unlimited() || containsKey(buckets[:i], b.Key) {
			continue
		}
		interval, tau := spans(b.Rate)
		keys = append(keys, l.prefix+b.Key)
		args = append(args, interval, tau, max(b.Rate.Burst, 1))
	}
	if len(keys) == 0 {
		return true, 0, nil
	}
	args[0] = ""
	if l.now != nil {
		args[0] = l.now().UnixMicro()
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	res, err := takeScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected answer %v", res)
	}
	if err != nil {
		l.failed(err)
		if l.failOpen {
			return true, 0, nil
		}
		return false, 0, fmt.Errorf("%w: %v", policy.ErrLimiterUnavailable, err)
	}
	l.answered()
	if res[0] == 1 {
		return true, 0, nil
	}
	return false, max(time.Duration(res[1])*time.Microsecond, time.Millisecond), nil
}

// containsKey reports whether a limited bucket of bs has the key.
func containsKey(bs []policy.Bucket, key string) bool {
	for i := range bs {
		if bs[i].Key == key && !bs[i].Rate.Unlimited() {
			return true
		}
	}
	return false
}

// spans returns a rate's interval between tokens and how far a bucket's
// theoretical arrival time may run ahead of now, in microseconds, as
// the in-memory limiter computes them in nanoseconds: the interval rounded
// up (never admitting more than the rate), both capped.
func spans(r policy.Rate) (interval, tau int64) {
	interval = maxSpanMicros
	if f := math.Ceil(60e6 / r.PerMinute); f < float64(maxSpanMicros) {
		interval = max(int64(f), 1)
	}
	tau = maxSpanMicros
	if b := int64(max(r.Burst, 1) - 1); b < maxSpanMicros/interval {
		tau = b * interval
	}
	return interval, tau
}

// failed records that Redis did not answer.
func (l *Limiter) failed(err error) {
	l.mu.Lock()
	first := l.err == nil
	l.err = err
	l.errors++
	if first {
		l.since = time.Now()
	}
	l.mu.Unlock()
	if first {
		l.log.Error("the rate-limit store (Redis) does not answer", "error", err, "failOpen", l.failOpen)
		if l.onChange != nil {
			l.onChange(err)
		}
	}
}

// answered records that Redis answered.
func (l *Limiter) answered() {
	l.mu.Lock()
	was := l.err
	var down time.Duration
	if was != nil {
		l.err = nil
		down = time.Since(l.since)
	}
	l.mu.Unlock()
	if was != nil {
		l.log.Info("the rate-limit store (Redis) answers again", "down", down.Round(time.Millisecond))
		if l.onChange != nil {
			l.onChange(nil)
		}
	}
}

// Healthy returns nil while Redis answers, else the error of the last
// failed decision (or probe).
func (l *Limiter) Healthy() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return fmt.Errorf("%w: %v", policy.ErrLimiterUnavailable, l.err)
	}
	return nil
}

// Failures is the number of decisions (and probes) that Redis did not
// answer since the limiter was made.
func (l *Limiter) Failures() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errors
}

// FailOpen reports whether calls are admitted while Redis is out of reach.
func (l *Limiter) FailOpen() bool { return l.failOpen }

// probe pings Redis every probeInterval while it is out of reach, so
// that Healthy turns nil again without waiting for a call.
func (l *Limiter) probe() {
	defer close(l.done)
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if l.Healthy() == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		err := l.rdb.Ping(ctx).Err()
		cancel()
		if err != nil {
			l.failed(err)
		} else {
			l.answered()
		}
	}
}
