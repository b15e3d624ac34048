package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/toolgate/toolgate/policy/audit"
)

// Rule fires when Threshold events of type Event happen within
// Window, counted per project.
type Rule struct {
	// Event is an audit event type, such as "auth.failure".
	Event string
	// Threshold is how many events within Window make the rule fire
	// (at least 1).
	Threshold int
	// Window is the length of the sliding window the events are counted in.
	Window time.Duration
}

// alertRuleJSON is the JSON form of a Rule: the window is a Go
// duration string ("1m0s"), as the configuration file writes it.
type alertRuleJSON struct {
	Event     string `json:"event"`
	Threshold int    `json:"threshold"`
	Window    string `json:"window"`
}

// MarshalJSON writes {"event", "threshold", "window"} with the window as
// a duration string.
func (r Rule) MarshalJSON() ([]byte, error) {
	return json.Marshal(alertRuleJSON{r.Event, r.Threshold, r.Window.String()})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (r *Rule) UnmarshalJSON(data []byte) error {
	var j alertRuleJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	w, err := time.ParseDuration(j.Window)
	if err != nil {
		return fmt.Errorf("alert rule window: %w", err)
	}
	*r = Rule{Event: j.Event, Threshold: j.Threshold, Window: w}
	return nil
}

// DefaultRules are the rules used when the configuration lists none:
// 10 authentication failures within a minute, 50 refusals by a rate limit
// within a minute, 5 upstream errors within 5 minutes, and every
// audit.retention event.
func DefaultRules() []Rule {
	return []Rule{
		{Event: "auth.failure", Threshold: 10, Window: time.Minute},
		{Event: "ratelimit.hit", Threshold: 50, Window: time.Minute},
		{Event: "upstream.error", Threshold: 5, Window: 5 * time.Minute},
		retentionRule,
	}
}

// retentionRule raises an alert when the audit log keeps files past its
// limit: they are on disk because they are too young to delete, and the
// disk fills until an operator acts.
var retentionRule = Rule{Event: audit.EventAuditRetention, Threshold: 1, Window: time.Hour}

// RulesFor returns the rules to apply for the configured ones: the
// defaults when there are none; otherwise the configured rules, with the
// default audit.retention rule added unless one of them names that event.
func RulesFor(configured []Rule) []Rule {
	if len(configured) == 0 {
		return DefaultRules()
	}
	if slices.ContainsFunc(configured, func(r Rule) bool { return r.Event == audit.EventAuditRetention }) {
		return slices.Clone(configured)
	}
	return append(slices.Clone(configured), retentionRule)
}

// Alert is what the webhook receives, as one JSON object, when a rule
// fires:
//
//	{"rule": {"event": "auth.failure", "threshold": 10, "window": "1m0s"},
//	 "count": 10, "since": "...", "at": "...", "project": "default",
//	 "sample": {"keyId": "...", "clientIp": "..."},
//	 "text": "toolgate: 10 auth.failure events in project \"default\" within 1m0s"}
//
// The text field makes the body readable as is by chat webhooks (Slack,
// Mattermost) that show a "text" field.
type Alert struct {
	// Rule is the rule that fired.
	Rule Rule `json:"rule"`
	// Count is the number of events within the window when it fired.
	Count int `json:"count"`
	// Since is the time of the first of those events, At that of the last.
	Since time.Time `json:"since"`
	At    time.Time `json:"at"`
	// Project is the project the events belong to.
	Project string `json:"project"`
	// Sample holds a few scalar fields of the last event (strings
	// shortened, nested values and credential-like names left out).
	Sample map[string]any `json:"sample,omitempty"`
	// Text is a one-line summary for people.
	Text string `json:"text"`
}

// Poster delivers the JSON body of one [Alert] to the webhook url
// (an HTTP POST with Content-Type application/json). It returns nil when
// the webhook took the alert. The Alerter retries every other error with
// backoff, except errors that wrap [ErrRejected] (such as a 4xx
// answer other than 429), which a retry would not change.
//
// Package alert does not speak HTTP (it must not know about transports);
// the code that wires the gateway supplies the poster.
type Poster func(ctx context.Context, url string, body []byte) error

// ErrRejected is wrapped by a [Poster]'s error when the webhook
// refused the alert for good: it is not retried.
var ErrRejected = errors.New("webhook rejected the alert")

// Options are the optional settings of an [Alerter]. A nil
// *Options means all defaults.
type Options struct {
	// Post delivers alerts to the webhook. Without it a webhook cannot be
	// reached: alerts are only logged (and New logs an error).
	Post Poster
	// AttemptTimeout bounds one delivery attempt (default 10s).
	AttemptTimeout time.Duration
	// Logger receives every alert (level WARN) and delivery failures;
	// by default slog.Default().
	Logger *slog.Logger
	// Now is the clock events are counted by; by default time.Now.
	Now func() time.Time
	// MaxRetries is how often a delivery is retried after a network
	// error, a 429 or a 5xx answer (default 5; negative means never).
	MaxRetries int
	// RetryBase is the wait before the first retry, doubled for each
	// further retry up to 30s (default 500ms).
	RetryBase time.Duration
	// QueueSize bounds the alerts waiting for delivery (default 64).
	// Alerts that find the queue full are logged and dropped.
	QueueSize int
	// CloseTimeout bounds how long [Alerter.Close] lets queued alerts be
	// delivered before it cancels delivery (default 5s).
	CloseTimeout time.Duration
}

// Defaults of Options.
const (
	defaultAlertMaxRetries = 5
	defaultAlertRetryBase  = 500 * time.Millisecond
	maxAlertRetryWait      = 30 * time.Second
	// retryJitter spreads retries by ±20%, so that alerts failing
	// together do not retry in step.
	retryJitter              = 0.2
	defaultAlertQueueSize    = 64
	defaultAlertCloseTimeout = 5 * time.Second
	defaultAlertAttempt      = 10 * time.Second

	// alertSweepEvery is how often (in Observe calls) windows without events
	// are forgotten.
	alertSweepEvery = 1024
	// maxAlertSampleFields and maxAlertSampleString bound Alert.Sample.
	maxAlertSampleFields = 8
	maxAlertSampleString = 200
)

// Alerter counts audit events against alert rules and, when a rule fires,
// logs an [Alert] and posts it to a webhook. Counting is in memory and
// cheap; delivery runs in a goroutine of its own behind a bounded queue,
// so [Alerter.Observe] never waits for the network.
//
// A rule fires when an event brings the count of its type within the
// window (for one project) to Threshold. It then stays quiet while the
// condition lasts: it fires again only after an event has found fewer
// than Threshold events within the window (itself included), and the
// count has reached Threshold again.
//
// An Alerter is safe for concurrent use. Close it to stop delivery.
type Alerter struct {
	webhook    string
	webhookLog string           // the webhook without path or query, for logs
	rules      map[string][]int // event type -> indexes into ruleList
	ruleList   []Rule
	post       Poster
	attempt    time.Duration
	log        *slog.Logger
	now        func() time.Time
	maxRetries int
	retryBase  time.Duration
	closeWait  time.Duration

	mu       sync.Mutex
	windows  map[windowKey]*alertWindow
	observed int
	closed   bool

	queue     chan Alert
	stop      chan struct{} // closed by Close: drain the queue and return
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // closed when the delivery goroutine returns
	closeOnce sync.Once
}

type windowKey struct {
	rule    int
	project string
}

// alertWindow holds the times of the latest events of one rule and
// project, at most Threshold of them (that is all the rule needs), oldest
// first.
type alertWindow struct {
	times  []time.Time
	firing bool
}

// New returns an Alerter for rules that posts to webhook (an http
// or https URL; "" means alerts are only logged) through opts.Post. Rules
// with a window of zero or less are ignored; a threshold below 1 counts as
// 1. With a webhook it starts the delivery goroutine, which Close stops.
func New(webhook string, rules []Rule, opts *Options) *Alerter {
	var o Options
	if opts != nil {
		o = *opts
	}
	a := &Alerter{
		webhook:    webhook,
		webhookLog: redactWebhook(webhook),
		rules:      map[string][]int{},
		post:       o.Post,
		attempt:    o.AttemptTimeout,
		log:        o.Logger,
		now:        o.Now,
		maxRetries: o.MaxRetries,
		retryBase:  o.RetryBase,
		closeWait:  o.CloseTimeout,
		windows:    map[windowKey]*alertWindow{},
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.attempt <= 0 {
		a.attempt = defaultAlertAttempt
	}
	if a.now == nil {
		a.now = time.Now
	}
	switch {
	case a.maxRetries == 0:
		a.maxRetries = defaultAlertMaxRetries
	case a.maxRetries < 0:
		a.maxRetries = 0
	}
	if a.retryBase <= 0 {
		a.retryBase = defaultAlertRetryBase
	}
	if a.closeWait <= 0 {
		a.closeWait = defaultAlertCloseTimeout
	}
	queueSize := o.QueueSize
	if queueSize <= 0 {
		queueSize = defaultAlertQueueSize
	}
	for _, r := range rules {
		if r.Window <= 0 {
			continue
		}
		r.Threshold = max(r.Threshold, 1)
		a.rules[r.Event] = append(a.rules[r.Event], len(a.ruleList))
		a.ruleList = append(a.ruleList, r)
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	if webhook != "" && a.post == nil {
		a.log.Error("alerts are only logged: a webhook is set but nothing posts to it (Options.Post is nil)", "webhook", a.webhookLog)
		a.webhook = ""
	}
	if a.webhook == "" {
		close(a.done)
		return a
	}
	a.queue = make(chan Alert, queueSize)
	go a.deliverLoop()
	return a
}

// Rules returns the rules the Alerter applies (after New's
// adjustments).
func (a *Alerter) Rules() []Rule { return slices.Clone(a.ruleList) }

// Observe counts one event of type eventType in project. fields are the
// event's fields; a few of them go into the Alert's Sample when this
// event makes a rule fire. Observe never blocks on delivery: an alert
// that finds the delivery queue full is logged and dropped. Events
// observed after Close are ignored.
func (a *Alerter) Observe(eventType, project string, fields map[string]any) {
	idx := a.rules[eventType]
	if len(idx) == 0 {
		return
	}
	now := a.now()
	var fired []Alert
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	for _, i := range idx {
		r := a.ruleList[i]
		k := windowKey{i, project}
		w := a.windows[k]
		if w == nil {
			w = &alertWindow{times: make([]time.Time, 0, min(r.Threshold, 64))}
			a.windows[k] = w
		}
		w.prune(now, r.Window)
		if len(w.times) == r.Threshold {
			w.times = slices.Delete(w.times, 0, 1)
		}
		w.times = append(w.times, now)
		switch n := len(w.times); {
		case n < r.Threshold:
			w.firing = false // the condition has cleared (or never held)
		case !w.firing:
			w.firing = true
			fired = append(fired, Alert{
				Rule:    r,
				Count:   n,
				Since:   w.times[0].UTC(),
				At:      now.UTC(),
				Project: project,
			})
		}
	}
	a.observed++
	if a.observed%alertSweepEvery == 0 {
		a.sweep(now)
	}
	a.mu.Unlock()

	for _, al := range fired {
		al.Sample = alertSample(fields)
		al.Text = fmt.Sprintf("toolgate: %d %s events in project %q within %s", al.Count, al.Rule.Event, al.Project, al.Rule.Window)
		a.log.Warn("alert", "event", al.Rule.Event, "project", al.Project, "count", al.Count,
			"window", al.Rule.Window, "since", al.Since, "threshold", al.Rule.Threshold)
		if a.queue == nil {
			continue
		}
		select {
		case a.queue <- al:
		default:
			a.log.Error("alert dropped: the webhook delivery queue is full", "event", al.Rule.Event,
				"project", al.Project, "webhook", a.webhookLog, "queue", cap(a.queue))
		}
	}
}

// prune forgets the events that are no longer within window before now.
func (w *alertWindow) prune(now time.Time, window time.Duration) {
	cutoff := now.Add(-window)
	i := 0
	for i < len(w.times) && !w.times[i].After(cutoff) {
		i++
	}
	if i > 0 {
		w.times = slices.Delete(w.times, 0, i)
	}
}

// sweep forgets the windows that hold no event any more, so that the map
// does not grow with every project ever seen. a.mu is held.
func (a *Alerter) sweep(now time.Time) {
	for k, w := range a.windows {
		w.prune(now, a.ruleList[k.rule].Window)
		if len(w.times) == 0 {
			delete(a.windows, k)
		}
	}
}

// alertSensitiveField reports field names whose values must not leave the
// gateway in an alert.
func alertSensitiveField(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"secret", "token", "password", "authorization", "cookie", "arguments", "args", "apikey", "api_key"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// alertSample copies a few scalar fields of an event for an Alert.
func alertSample(fields map[string]any) map[string]any {
	if len(fields) == 0 {
		return nil
	}
	out := map[string]any{}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if len(out) == maxAlertSampleFields {
			break
		}
		if alertSensitiveField(k) {
			continue
		}
		switch v := fields[k].(type) {
		case string:
			if len(v) > maxAlertSampleString {
				v = v[:maxAlertSampleString] + "…"
			}
			out[k] = v
		case bool, int, int32, int64, uint, uint32, uint64, float32, float64, time.Duration:
			out[k] = v
		case time.Time:
			out[k] = v.UTC()
		case fmt.Stringer:
			s := v.String()
			if len(s) > maxAlertSampleString {
				s = s[:maxAlertSampleString] + "…"
			}
			out[k] = s
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Close stops delivery. Alerts still queued get up to
// Options.CloseTimeout to be delivered; then delivery in progress
// is cancelled and Close returns. It is safe to call more than once.
func (a *Alerter) Close() {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		close(a.stop)
		t := time.NewTimer(a.closeWait)
		defer t.Stop()
		select {
		case <-a.done:
		case <-t.C:
			a.log.Warn("alert delivery cancelled at shutdown", "webhook", a.webhookLog, "pending", len(a.queue))
		}
		a.cancel()
		<-a.done
	})
}

// deliverLoop posts queued alerts one at a time until Close, then
// delivers what is still queued and returns.
func (a *Alerter) deliverLoop() {
	defer close(a.done)
	for {
		select {
		case al := <-a.queue:
			a.deliver(al)
		case <-a.stop:
			for {
				select {
				case al := <-a.queue:
					if a.ctx.Err() != nil {
						return
					}
					a.deliver(al)
				default:
					return
				}
			}
		case <-a.ctx.Done():
			return
		}
	}
}

// deliver posts one alert, retrying with exponential backoff.
func (a *Alerter) deliver(al Alert) {
	body, err := json.Marshal(al)
	if err != nil {
		a.log.Error("alert not delivered: encode", "event", al.Rule.Event, "project", al.Project, "err", err)
		return
	}
	retry := &backoff.ExponentialBackOff{
		InitialInterval:     a.retryBase,
		RandomizationFactor: retryJitter,
		Multiplier:          2,
		MaxInterval:         maxAlertRetryWait,
	}
	retry.Reset()
	for attempt := 0; ; attempt++ {
		err := a.postOnce(body)
		if err == nil {
			return
		}
		if errors.Is(err, ErrRejected) || attempt >= a.maxRetries || a.ctx.Err() != nil {
			a.log.Error("alert not delivered", "event", al.Rule.Event, "project", al.Project,
				"webhook", a.webhookLog, "attempts", attempt+1, "err", err)
			return
		}
		wait := retry.NextBackOff()
		a.log.Debug("alert delivery failed, retrying", "webhook", a.webhookLog, "attempt", attempt+1, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-a.ctx.Done():
			t.Stop()
			a.log.Error("alert not delivered: shutting down", "event", al.Rule.Event, "project", al.Project,
				"webhook", a.webhookLog, "attempts", attempt+1, "err", err)
			return
		}
	}
}

// postOnce makes one delivery attempt within AttemptTimeout. The error
// never shows the webhook's path or query.
func (a *Alerter) postOnce(body []byte) error {
	ctx, cancel := context.WithTimeout(a.ctx, a.attempt)
	defer cancel()
	err := a.post(ctx, a.webhook, body)
	if err == nil {
		return nil
	}
	if msg := err.Error(); strings.Contains(msg, a.webhook) {
		redacted := errors.New(strings.ReplaceAll(msg, a.webhook, a.webhookLog))
		if errors.Is(err, ErrRejected) {
			return fmt.Errorf("%w: %v", ErrRejected, redacted)
		}
		return redacted
	}
	return err
}

// redactWebhook keeps the scheme and host of a webhook URL: its path and
// query often hold a secret (Slack, Discord).
func redactWebhook(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "(invalid url)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
