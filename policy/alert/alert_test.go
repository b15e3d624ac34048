package alert_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hookpost "github.com/toolgate/toolgate/internal/webhook"
	"github.com/toolgate/toolgate/policy/alert"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a bytes.Buffer safe for the delivery goroutine's logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// webhook is a real HTTP server that records the alerts posted to it and
// answers with the statuses in plan (then 204).
type webhook struct {
	*httptest.Server
	mu       sync.Mutex
	alerts   []alert.Alert
	attempts int
	plan     []int
	posted   chan struct{} // receives after every successful post
}

func newWebhook(t *testing.T, plan ...int) *webhook {
	t.Helper()
	w := &webhook{plan: plan, posted: make(chan struct{}, 1000)}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		w.attempts++
		status := http.StatusNoContent
		if len(w.plan) > 0 {
			status, w.plan = w.plan[0], w.plan[1:]
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			status = http.StatusBadRequest
		}
		if status < 300 {
			var a alert.Alert
			if err := json.Unmarshal(body, &a); err != nil {
				t.Errorf("webhook body is not an Alert: %v\n%s", err, body)
			}
			w.alerts = append(w.alerts, a)
		}
		w.mu.Unlock()
		rw.WriteHeader(status)
		if status < 300 {
			w.posted <- struct{}{}
		}
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webhook) got() (alerts []alert.Alert, attempts int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]alert.Alert(nil), w.alerts...), w.attempts
}

// waitPosts waits until n alerts have been delivered.
func (w *webhook) waitPosts(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-w.posted:
		case <-deadline:
			alerts, attempts := w.got()
			t.Fatalf("waited for %d alerts; got %d in %d attempts", n, len(alerts), attempts)
		}
	}
}

// httpPoster is a Poster over net/http, the way the code that wires
// the gateway supplies one: 2xx is delivered, 429 and 5xx are retried,
// other answers are rejections.
// httpPoster is the poster the gateway uses.
func httpPoster(client *http.Client) alert.Poster { return hookpost.Poster(client) }

func newTestAlerter(t *testing.T, url string, rules []alert.Rule, clock *fakeClock, opts *alert.Options) (*alert.Alerter, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	o := alert.Options{}
	if opts != nil {
		o = *opts
	}
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Now = clock.Now
	if o.Post == nil {
		o.Post = httpPoster(http.DefaultClient)
	}
	if o.RetryBase == 0 {
		o.RetryBase = time.Millisecond
	}
	a := alert.New(url, rules, &o)
	t.Cleanup(a.Close)
	return a, logs
}

var authRule = alert.Rule{Event: "auth.failure", Threshold: 3, Window: time.Minute}

func TestAlerterFiresOncePerCondition(t *testing.T) {
	wh := newWebhook(t)
	clock := newFakeClock()
	a, logs := newTestAlerter(t, wh.URL, []alert.Rule{authRule}, clock, nil)
	start := clock.Now()

	a.Observe("tool.call", "default", nil) // no rule for it
	for i := range 20 {
		a.Observe("auth.failure", "default", map[string]any{
			"keyId": fmt.Sprintf("key%d", i), "clientIp": "10.0.0.7",
			"authorization": "Bearer secret", "nested": map[string]any{"a": 1},
		})
		clock.Advance(time.Second)
	}
	a.Close() // delivers what is queued
	alerts, attempts := wh.got()
	if attempts != 1 {
		t.Fatalf("%d posts for one condition, want 1", attempts)
	}
	want := alert.Alert{
		Rule:    authRule,
		Count:   3,
		Since:   start,
		At:      start.Add(2 * time.Second),
		Project: "default",
		Sample:  map[string]any{"keyId": "key2", "clientIp": "10.0.0.7"},
		Text:    `toolgate: 3 auth.failure events in project "default" within 1m0s`,
	}
	if diff := cmp.Diff(want, alerts[0]); diff != "" {
		t.Errorf("alert (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), "msg=alert "); n != 1 {
		t.Errorf("alert logged %d times, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "Bearer") {
		t.Errorf("a credential reached the logs:\n%s", logs)
	}
}

func TestAlerterRefiresAfterConditionClears(t *testing.T) {
	wh := newWebhook(t)
	clock := newFakeClock()
	a, _ := newTestAlerter(t, wh.URL, []alert.Rule{authRule}, clock, nil)

	burst := func(n int) {
		for range n {
			a.Observe("auth.failure", "default", nil)
			clock.Advance(time.Second)
		}
	}
	burst(3) // fires
	wh.waitPosts(t, 1)

	// Events that keep the count at the threshold keep the condition.
	// At 60s the first event leaves the window as the next one comes.
	clock.Advance(57 * time.Second)
	burst(3) // at 60s, 61s and 62s

	// The window empties: the next event finds the count below the
	// threshold, which clears the condition; two more make it fire again.
	clock.Advance(2 * time.Minute)
	burst(1)
	burst(2)
	wh.waitPosts(t, 1)
	a.Close()

	alerts, attempts := wh.got()
	if attempts != 2 {
		t.Fatalf("%d posts, want 2 (one per condition)", attempts)
	}
	if !alerts[1].At.After(alerts[0].At) || alerts[1].Count != 3 {
		t.Errorf("second alert = %+v", alerts[1])
	}
}

func TestAlerterSlidingWindow(t *testing.T) {
	clock := newFakeClock()
	a, logs := newTestAlerter(t, "", []alert.Rule{authRule}, clock, nil)
	// Three events spread over more than the window never fire.
	for range 6 {
		a.Observe("auth.failure", "default", nil)
		clock.Advance(31 * time.Second)
	}
	if strings.Contains(logs.String(), "msg=alert") {
		t.Fatalf("fired for events spread over more than the window:\n%s", logs)
	}
	// Without a webhook an alert is only logged.
	a.Observe("auth.failure", "default", nil)
	a.Observe("auth.failure", "default", nil)
	if !strings.Contains(logs.String(), "msg=alert event=auth.failure project=default count=3") {
		t.Fatalf("alert not logged:\n%s", logs)
	}
}

func TestAlerterRetries(t *testing.T) {
	tests := []struct {
		name         string
		plan         []int
		maxRetries   int
		wantAttempts int
		wantAlerts   int
		wantLog      string
	}{
		{"5xx then success", []int{500, 503}, 0, 3, 1, ""},
		{"429 then success", []int{429}, 0, 2, 1, ""},
		{"gives up after MaxRetries", []int{500, 500, 500, 500}, 2, 3, 0, "alert not delivered"},
		{"4xx is not retried", []int{404}, 0, 1, 0, "404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wh := newWebhook(t, tt.plan...)
			clock := newFakeClock()
			a, logs := newTestAlerter(t, wh.URL+"/hook-secret", []alert.Rule{authRule}, clock,
				&alert.Options{MaxRetries: tt.maxRetries})
			for range 3 {
				a.Observe("auth.failure", "p", nil)
			}
			a.Close()
			alerts, attempts := wh.got()
			if attempts != tt.wantAttempts || len(alerts) != tt.wantAlerts {
				t.Errorf("%d attempts and %d alerts, want %d and %d\n%s", attempts, len(alerts), tt.wantAttempts, tt.wantAlerts, logs)
			}
			if tt.wantLog != "" && !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("logs lack %q:\n%s", tt.wantLog, logs)
			}
			if strings.Contains(logs.String(), "hook-secret") {
				t.Errorf("the webhook path reached the logs:\n%s", logs)
			}
		})
	}
}

func TestAlerterRetriesNetworkErrors(t *testing.T) {
	// A listener that is closed: every attempt is a network error.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/hook-secret"
	srv.Close()
	clock := newFakeClock()
	a, logs := newTestAlerter(t, url, []alert.Rule{authRule}, clock, &alert.Options{MaxRetries: 2})
	for range 3 {
		a.Observe("auth.failure", "p", nil)
	}
	a.Close()
	out := logs.String()
	if strings.Count(out, "retrying") != 2 || !strings.Contains(out, "attempts=3") {
		t.Errorf("want two retries and a give-up after 3 attempts:\n%s", out)
	}
	if strings.Contains(out, "hook-secret") {
		t.Errorf("the webhook path reached the logs:\n%s", out)
	}
}

func TestAlerterWithoutPoster(t *testing.T) {
	logs := &syncBuffer{}
	a := alert.New("https://alerts.example.com/hooks/secret-path", []alert.Rule{authRule},
		&alert.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for range 3 {
		a.Observe("auth.failure", "default", nil)
	}
	a.Close()
	out := logs.String()
	if !strings.Contains(out, "nothing posts to it") || !strings.Contains(out, "msg=alert ") {
		t.Errorf("want an error about the missing poster and the alert logged:\n%s", out)
	}
	if strings.Contains(out, "secret-path") {
		t.Errorf("the webhook path reached the logs:\n%s", out)
	}
}

func TestAlerterAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	attempts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		attempts++
		n := attempts
		mu.Unlock()
		if n == 1 { // the first attempt hangs until it is given up
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	defer close(release)
	clock := newFakeClock()
	a, logs := newTestAlerter(t, srv.URL, []alert.Rule{authRule}, clock, &alert.Options{AttemptTimeout: 20 * time.Millisecond})
	for range 3 {
		a.Observe("auth.failure", "p", nil)
	}
	a.Close()
	mu.Lock()
	defer mu.Unlock()
	if attempts != 2 || strings.Contains(logs.String(), "not delivered") {
		t.Errorf("%d attempts, want a timed-out one and a delivered one:\n%s", attempts, logs)
	}
}

func TestAlerterObserveNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	hung := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	clock := newFakeClock()
	a, logs := newTestAlerter(t, srv.URL, []alert.Rule{{Event: "upstream.error", Threshold: 1, Window: time.Minute}}, clock,
		&alert.Options{QueueSize: 2, CloseTimeout: 50 * time.Millisecond})

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			a.Observe("upstream.error", fmt.Sprintf("p%d", i), nil) // 200 alerts
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Observe blocked while the webhook hangs")
	}
	<-hung // the delivery goroutine is stuck in a request
	if !strings.Contains(logs.String(), "alert dropped: the webhook delivery queue is full") {
		t.Errorf("dropped alerts were not logged:\n%s", logs)
	}

	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while the webhook hangs")
	}
	a.Observe("upstream.error", "late", nil) // ignored after Close
}

func TestAlerterPerProject(t *testing.T) {
	wh := newWebhook(t)
	clock := newFakeClock()
	rules := []alert.Rule{authRule, {Event: "auth.failure", Threshold: 5, Window: time.Hour}}
	a, _ := newTestAlerter(t, wh.URL, rules, clock, nil)
	for range 2 {
		a.Observe("auth.failure", "a", nil)
		a.Observe("auth.failure", "b", nil)
	}
	a.Observe("auth.failure", "a", nil) // a reaches 3; b stays at 2
	a.Close()
	alerts, _ := wh.got()
	if len(alerts) != 1 || alerts[0].Project != "a" || alerts[0].Rule != authRule {
		t.Fatalf("alerts = %+v, want one for project a", alerts)
	}
}

func TestDefaultAlertRules(t *testing.T) {
	want := []alert.Rule{
		{Event: "auth.failure", Threshold: 10, Window: time.Minute},
		{Event: "ratelimit.hit", Threshold: 50, Window: time.Minute},
		{Event: "upstream.error", Threshold: 5, Window: 5 * time.Minute},
		{Event: "audit.retention", Threshold: 1, Window: time.Hour},
	}
	if diff := cmp.Diff(want, alert.DefaultRules()); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff(want, alert.RulesFor(nil)); diff != "" {
		t.Errorf("rules for none configured: %s", diff)
	}
	own := []alert.Rule{{Event: "auth.failure", Threshold: 3, Window: time.Minute}}
	if diff := cmp.Diff(append(own, want[3]), alert.RulesFor(own)); diff != "" {
		t.Errorf("rules for one configured: %s", diff)
	}
	own = append(own, alert.Rule{Event: "audit.retention", Threshold: 5, Window: time.Minute})
	if diff := cmp.Diff(own, alert.RulesFor(own)); diff != "" {
		t.Errorf("rules naming audit.retention: %s", diff)
	}
	a := alert.New("", []alert.Rule{{Event: "x", Threshold: 0, Window: time.Second}, {Event: "y", Threshold: 2}}, nil)
	defer a.Close()
	if diff := cmp.Diff([]alert.Rule{{Event: "x", Threshold: 1, Window: time.Second}}, a.Rules()); diff != "" {
		t.Errorf("rules after adjustment: %s", diff)
	}
}

func TestAlertJSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := alert.Alert{Rule: authRule, Count: 3, Since: at, At: at.Add(time.Second), Project: "default", Text: "t"}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"rule":{"event":"auth.failure","threshold":3,"window":"1m0s"},"count":3,"since":"2026-03-01T12:00:00Z","at":"2026-03-01T12:00:01Z","project":"default","text":"t"}`
	if string(b) != want {
		t.Errorf("JSON =\n%s\nwant\n%s", b, want)
	}
	var back alert.Alert
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, back); diff != "" {
		t.Errorf("round trip: %s", diff)
	}
}

func ExampleAlerter() {
	// With no webhook, alerts are only logged.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "since" {
				return slog.Attr{}
			}
			return a
		},
	}))
	a := alert.New("", []alert.Rule{{Event: "auth.failure", Threshold: 2, Window: time.Minute}},
		&alert.Options{Logger: log})
	defer a.Close()
	a.Observe("auth.failure", "default", map[string]any{"clientIp": "192.0.2.1"})
	a.Observe("auth.failure", "default", map[string]any{"clientIp": "192.0.2.1"})
	a.Observe("auth.failure", "default", nil) // the condition lasts: no second alert
	// Output:
	// level=WARN msg=alert event=auth.failure project=default count=2 window=1m0s threshold=2
}
