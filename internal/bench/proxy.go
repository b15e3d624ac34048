package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one client session with an MCP endpoint, making the
// benchmark's tool call.
type Session interface {
	// Call makes the call once; a tool error is an error.
	Call(ctx context.Context) error
	Close() error
}

// Target is an endpoint the proxy benchmark calls.
type Target struct {
	Name    string                                     // "direct" or "gateway"
	Connect func(ctx context.Context) (Session, error) // opens one session
}

// ProxyOptions configure RunProxy.
type ProxyOptions struct {
	N       int   // timed calls per target and level
	Levels  []int // concurrency levels: workers, each with a session of its own
	Warmup  int   // untimed calls per new session
	Targets []Target
	// Progress is called after each timed call with the level, the target
	// and the calls done; may be nil.
	Progress func(level int, target string, done, total int)
}

// ProxyReport is the outcome of RunProxy.
type ProxyReport struct {
	Machine  Machine           `json:"machine"`
	Settings map[string]string `json:"settings"`
	Levels   []ProxyLevel      `json:"levels"`
}

// ProxyLevel is one concurrency level.
type ProxyLevel struct {
	Concurrency int                    `json:"concurrency"`
	Targets     map[string]ProxyResult `json:"targets"` // by target name
	// P50Ratio is gateway p50 / direct p50 and ThroughputRatio gateway
	// calls/s / direct calls/s, when both targets ran.
	P50Ratio        *float64 `json:"p50Ratio,omitempty"`
	ThroughputRatio *float64 `json:"throughputRatio,omitempty"`
}

// ProxyResult is one target at one level.
type ProxyResult struct {
	Calls       int     `json:"calls"`
	Errors      int     `json:"errors"`
	LatencyMs   Summary `json:"latencyMs"`
	CallsPerSec float64 `json:"callsPerSec"`
	FirstError  string  `json:"firstError,omitempty"`
}

// RunProxy measures every target at every level, targets interleaved
// within a level so that a change in the machine's load hits both.
// Sessions are opened (and warmed up) before the timed region and reused
// by the following levels.
func RunProxy(ctx context.Context, opts ProxyOptions) (*ProxyReport, error) {
	if opts.N < 1 {
		return nil, fmt.Errorf("-n must be at least 1, got %d", opts.N)
	}
	if len(opts.Levels) == 0 {
		return nil, errors.New("--concurrency names no level")
	}
	for _, c := range opts.Levels {
		if c < 1 {
			return nil, fmt.Errorf("--concurrency: levels must be at least 1, got %d", c)
		}
	}
	sessions := make(map[string][]Session)
	defer func() {
		for _, ss := range sessions {
			for _, s := range ss {
				_ = s.Close()
			}
		}
	}()
	rep := &ProxyReport{}
	for _, level := range opts.Levels {
		pl := ProxyLevel{Concurrency: level, Targets: map[string]ProxyResult{}}
		for _, tg := range opts.Targets {
			for len(sessions[tg.Name]) < level {
				s, err := tg.Connect(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", tg.Name, err)
				}
				sessions[tg.Name] = append(sessions[tg.Name], s)
				for range opts.Warmup {
					if err := s.Call(ctx); err != nil {
						return nil, fmt.Errorf("%s: warm-up call: %w", tg.Name, err)
					}
				}
			}
			var progress func(done int)
			if opts.Progress != nil {
				progress = func(done int) { opts.Progress(level, tg.Name, done, opts.N) }
			}
			res, err := runCalls(ctx, sessions[tg.Name][:level], opts.N, progress)
			if err != nil {
				return nil, err
			}
			pl.Targets[tg.Name] = res
		}
		d, okD := pl.Targets["direct"]
		g, okG := pl.Targets["gateway"]
		if okD && okG && d.LatencyMs.P50 > 0 && d.CallsPerSec > 0 {
			p50, tput := g.LatencyMs.P50/d.LatencyMs.P50, g.CallsPerSec/d.CallsPerSec
			pl.P50Ratio, pl.ThroughputRatio = &p50, &tput
		}
		rep.Levels = append(rep.Levels, pl)
	}
	return rep, nil
}

// runCalls makes n calls over the sessions, one worker per session.
func runCalls(ctx context.Context, sessions []Session, n int, progress func(done int)) (ProxyResult, error) {
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range sessions {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				errs[i] = s.Call(ctx)
				lat[i] = time.Since(t)
				if progress != nil {
					progress(int(done.Add(1)))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return ProxyResult{}, err
	}
	res := ProxyResult{Calls: n, LatencyMs: Summarize(lat), CallsPerSec: float64(n) / elapsed.Seconds()}
	for _, err := range errs {
		if err != nil {
			if res.Errors == 0 {
				res.FirstError = err.Error()
			}
			res.Errors++
		}
	}
	return res, nil
}
