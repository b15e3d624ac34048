package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/policy/audit"
)

// State shared between replicas lives in stores out of this process: a
// limiter in Redis (cluster.redis), keys, pins and the audit trail in
// PostgreSQL (cluster.postgres). This file is where the gateway hears of
// them: the refusal of a call whose rate limits cannot be checked, their
// health in /readyz and /metrics, and the audit event of an outage.

// sharedLimiter is a limiter kept in a store that may be out of reach.
type sharedLimiter interface {
	// Healthy returns nil while the store answers.
	Healthy() error
	// Failures counts the decisions the store did not answer.
	Failures() int64
}

// StoreStateChanged records that a shared store (named by store: "redis",
// "postgres") stopped answering (err) or answers again (nil): an outage
// is a store.unavailable audit event, which alert rules may watch.
func (g *Gateway) StoreStateChanged(store string, err error) {
	if err == nil {
		return
	}
	_ = g.emit(&audit.Event{Type: audit.EventStoreUnavailable, Server: store, Error: err.Error()})
}

// sharedProblems says, for /readyz, which shared stores do not answer.
// They do not make the gateway unready: every replica shares them, and a
// load balancer that took all replicas out would answer nothing at all,
// where a replica still answers lists and refuses calls with a
// retryable error.
func (g *Gateway) sharedProblems() []string {
	var out []string
	if sl, ok := g.limiter.(sharedLimiter); ok {
		if err := sl.Healthy(); err != nil {
			out = append(out, "rate limits: "+err.Error()+"; tool calls are refused with a retryable error (or admitted unmetered with cluster.redis.failOpen)")
		}
	}
	for _, p := range g.storeProblems {
		if msg := p(); msg != "" {
			out = append(out, msg)
		}
	}
	return out
}

// registerSharedMetrics adds the series of the shared stores.
func (g *Gateway) registerSharedMetrics(reg *prometheus.Registry) {
	sl, ok := g.limiter.(sharedLimiter)
	if !ok {
		return
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "toolgate_ratelimit_store_up",
			Help: "1 while the shared rate-limit store (Redis) answers, 0 otherwise.",
		}, func() float64 {
			if sl.Healthy() != nil {
				return 0
			}
			return 1
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "toolgate_ratelimit_store_failures_total",
			Help: "Rate-limit decisions (and health probes) the shared rate-limit store did not answer.",
		}, func() float64 { return float64(sl.Failures()) }),
	)
}
