package gateway

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/toolgate/toolgate/sandbox"
)

// metrics are the gateway's Prometheus series. Labels carry only names the
// configuration or an upstream defined (never a name a client sent), so a
// client cannot grow the series without bound.
type metrics struct {
	registry     *prometheus.Registry
	calls        *prometheus.CounterVec
	callSeconds  *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	ipDenied     *prometheus.CounterVec
	originDenied *prometheus.CounterVec
	accessCalls  *prometheus.CounterVec
	refused      *prometheus.CounterVec
	auditSeconds prometheus.Histogram
	executions   *prometheus.CounterVec
	execSeconds  *prometheus.HistogramVec
	execMemory   prometheus.Histogram

	// sessionsRebuilt counts the sessions a replica rebuilt from their
	// sealed ID.
	sessionsRebuilt *prometheus.CounterVec
	// authenticated counts requests by the credential that passed;
	// oauthKeyFetches the fetches of an issuer's keys.
	authenticated   *prometheus.CounterVec
	oauthKeyFetches *prometheus.CounterVec
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_tool_calls_total",
			Help: "Tool calls by project, server, tool and outcome (ok, tool_error, or the code of a refusal); execute_code and search_tools have no server.",
		}, []string{"project", "server", "tool", "outcome"}),
		callSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "toolgate_tool_call_duration_seconds",
			Help:    "Latency of tool calls that reached an upstream.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18), // 0.5 ms to about 65 s
		}, []string{"project", "server", "tool"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_auth_failures_total",
			Help: "Requests refused for a missing or invalid credential (API key or OAuth access token), by reason.",
		}, []string{"project", "reason"}),
		authenticated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_authenticated_requests_total",
			Help: "Requests whose credential was accepted, by kind (api_key, oauth).",
		}, []string{"project", "credential"}),
		oauthKeyFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_oauth_key_fetches_total",
			Help: "Fetches of an OAuth issuer's discovery document and keys, by outcome (ok, error).",
		}, []string{"project", "outcome"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_rate_limit_hits_total",
			Help: "Tool calls refused by a rate limit.",
		}, []string{"project"}),
		ipDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_ip_denied_total",
			Help: "Requests refused by an IP rule.",
		}, []string{"project"}),
		originDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_origin_denied_total",
			Help: "Requests refused for their Host or Origin header (DNS-rebinding protection), by header (host, origin).",
		}, []string{"project", "header"}),
		accessCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_access_layer_calls_total",
			Help: "tools/call requests over HTTP that the access layer answered itself rather than through the MCP SDK's handler.",
		}, []string{"project"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "toolgate_requests_refused_total",
			Help: "New sessions, tool calls and event streams refused with a retryable error: overloaded (limits.maxInFlightCalls) or shutting_down.",
		}, []string{"project", "reason"}),
		auditSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "toolgate_audit_write_duration_seconds",
			Help:    "Time to append one event to the audit log.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
		}),
	}
	m.executions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_code_executions_total",
		Help: "Code Mode executions by outcome (ok, error, limit) and the limit hit.",
	}, []string{"project", "outcome", "limit"})
	m.execSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "toolgate_code_execution_duration_seconds",
		Help:    "Wall time of Code Mode executions.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	}, []string{"project"})
	m.execMemory = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "toolgate_code_execution_peak_memory_bytes",
		Help:    "Peak linear memory of Code Mode executions.",
		Buckets: prometheus.ExponentialBuckets(256<<10, 2, 12),
	})
	m.registry.MustRegister(m.executions, m.execSeconds, m.execMemory)
	m.sessionsRebuilt = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "toolgate_sessions_rebuilt_total",
		Help: "MCP sessions (protocol versions before 2026-07-28) this replica rebuilt from their sealed ID: opened elsewhere, or closed here while idle.",
	}, []string{"project"})
	m.registry.MustRegister(m.sessionsRebuilt)
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "toolgate_tool_calls_in_flight",
		Help: "tools/call requests from clients being handled (capped by limits.maxInFlightCalls).",
	}, func() float64 { return float64(g.life.inFlight()) })
	auditKept := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "toolgate_audit_files_over_limit",
		Help: "Rotated audit log files kept past audit.maxFiles because they are younger than audit.retainAtLeast.",
	}, func() float64 {
		if g.audit == nil {
			return 0
		}
		return float64(g.audit.Retention().Over)
	})
	m.registry.MustRegister(m.authenticated, m.oauthKeyFetches)
	m.registry.MustRegister(m.calls, m.callSeconds, m.authFailures, m.rateLimited, m.ipDenied, m.originDenied, m.accessCalls, m.refused, inFlight, m.auditSeconds, auditKept,
		&upstreamCollector{g: g},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.registerSharedMetrics(m.registry)
	return m
}

// observeCall records one call on the tool path. server and tool are empty
// for calls refused before a tool was found.
func (m *metrics) observeCall(project, server, tool, outcome string, d time.Duration, reached bool) {
	m.calls.WithLabelValues(project, server, tool, outcome).Inc()
	if reached {
		m.callSeconds.WithLabelValues(project, server, tool).Observe(d.Seconds())
	}
}

// Metrics returns the Prometheus handler of the gateway's metrics.
func (g *Gateway) Metrics() http.Handler {
	return promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{})
}

var (
	upDesc       = prometheus.NewDesc("toolgate_upstream_up", "1 when the upstream is ready, 0 otherwise.", []string{"project", "server", "state"}, nil)
	restartsDesc = prometheus.NewDesc("toolgate_upstream_restarts_total", "Reconnections of the upstream since it was configured.", []string{"project", "server"}, nil)
	toolsDesc    = prometheus.NewDesc("toolgate_tools_visible", "Tools a project shows its clients.", []string{"project"}, nil)
)

// upstreamCollector reports upstream health at scrape time.
type upstreamCollector struct{ g *Gateway }

func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- upDesc
	ch <- restartsDesc
	ch <- toolsDesc
}

func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	_, projects := c.g.Status()
	for pname, ps := range projects {
		ch <- prometheus.MustNewConstMetric(toolsDesc, prometheus.GaugeValue, float64(ps.Tools), pname)
		for sname, us := range ps.Upstreams {
			up := 0.0
			if us.State == StateReady {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up, pname, sname, us.State)
			ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, float64(us.Restarts), pname, sname)
		}
	}
}

// observeExecution records one Code Mode execution.
func (m *metrics) observeExecution(project, outcome, limit string, res *sandbox.Result) {
	m.executions.WithLabelValues(project, outcome, limit).Inc()
	m.execSeconds.WithLabelValues(project).Observe(res.DurationMs / 1000)
	m.execMemory.Observe(float64(res.PeakMemoryBytes))
}
