package gateway

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/policy"
)

// Rate limits are token buckets (policy.Limiter): one per project
// (rateLimit.requestsPerMinute), one per key of the project, or subject of
// an OAuth access token (perKeyRequestsPerMinute), and one per tool with a
// toolLimits entry.
// A tool call takes a token from each bucket that applies, in the tool
// path's rate-limit step (toolpath.go); a request other than tools/call
// that reaches an upstream and a script's fetch request take them too
// (handlers.go, codemode.go).

// buckets are the token buckets one tool call of principal takes.
func (a *access) buckets(pr Principal, tool string) []policy.Bucket {
	rl := a.rates[pr.Project]
	bs := make([]policy.Bucket, 0, 3)
	if rl.RequestsPerMinute > 0 {
		bs = append(bs, policy.Bucket{Key: "p\x00" + pr.Project, Rate: policy.Rate{PerMinute: rl.RequestsPerMinute, Burst: burst(rl.Burst, rl.RequestsPerMinute)}})
	}
	if owner := pr.owner(); rl.PerKeyRequestsPerMinute > 0 && owner != "" {
		bs = append(bs, policy.Bucket{Key: "k\x00" + pr.Project + "\x00" + owner, Rate: policy.Rate{PerMinute: rl.PerKeyRequestsPerMinute, Burst: burst(rl.PerKeyBurst, rl.PerKeyRequestsPerMinute)}})
	}
	if tl, ok := a.toolRates[pr.Project][tool]; ok && tl.RequestsPerMinute > 0 {
		bs = append(bs, policy.Bucket{Key: "t\x00" + pr.Project + "\x00" + tool, Rate: policy.Rate{PerMinute: tl.RequestsPerMinute, Burst: burst(tl.Burst, tl.RequestsPerMinute)}})
	}
	return bs
}

// burst defaults a bucket's size to one second's worth of its rate, at
// least 1.
func burst(b int, perMinute float64) int {
	if b > 0 {
		return b
	}
	return max(1, int(math.Ceil(perMinute/60)))
}

// retryMs is a retry hint in whole milliseconds, rounded up: a client that
// waits exactly that long finds the tokens there (truncating 997.6 ms to
// 997 had it refused once more, "retry after 1 ms").
func retryMs(d time.Duration) int64 { return max(1, int64((d+time.Millisecond-1)/time.Millisecond)) }

// takeTokens charges one tool call to the principal's buckets. When the
// limiter cannot decide (a shared store out of reach), the call is
// refused as overloaded: retryable, like a saturated gateway.
func (g *Gateway) takeTokens(ctx context.Context, pr Principal, tool string) *callerr.Error {
	a := g.accessPolicy()
	bs := a.buckets(pr, tool)
	if len(bs) == 0 {
		return nil
	}
	ok, wait, err := g.limiter.Take(ctx, bs...)
	if err != nil {
		g.log.Warn("rate limits cannot be checked: call refused", "project", pr.Project, "key", pr.KeyID, "subject", pr.Subject, "tool", tool, "error", err)
		return limiterUnavailable(err)
	}
	if !ok {
		g.log.Info("rate limit hit", "project", pr.Project, "key", pr.KeyID, "subject", pr.Subject, "tool", tool, "retryAfter", wait)
		g.metrics.rateLimited.WithLabelValues(pr.Project).Inc()
		return &callerr.Error{Code: callerr.RateLimited, Message: fmt.Sprintf("rate limit exceeded; retry after %d ms", retryMs(wait)), RetryAfter: wait}
	}
	return nil
}

// limiterUnavailable is the refusal of a call whose rate limits could not
// be checked: retryable, like a saturated gateway.
func limiterUnavailable(err error) *callerr.Error {
	return &callerr.Error{Code: callerr.Overloaded, RetryAfter: overloadRetryAfter,
		Message: fmt.Sprintf("rate limits cannot be checked now (the shared rate-limit store does not answer); retry after %d ms", retryMs(overloadRetryAfter))}
}
