//go:build unix

package soak

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/mcpclient"
)

// faultWindows records, per upstream, the periods during which a fault was
// in force: from the moment it was injected until the gateway served the
// upstream correctly again (plus a grace). A failed call to an upstream is
// explained by a fault only if it overlaps one of these periods.
type faultWindows struct {
	mu sync.Mutex
	m  map[string][]*window
}

type window struct {
	kind       string
	start, end time.Time // end is zero while the window is open
}

func newFaultWindows() *faultWindows { return &faultWindows{m: map[string][]*window{}} }

func (f *faultWindows) open(upstream, kind string, at time.Time) *window {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &window{kind: kind, start: at}
	f.m[upstream] = append(f.m[upstream], w)
	return w
}

func (f *faultWindows) close(w *window, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.end = at
}

// covering returns the kind of a fault window of upstream that overlaps
// [from, to], or "" when none does.
func (f *faultWindows) covering(upstream string, from, to time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.m[upstream] {
		if !w.start.After(to) && (w.end.IsZero() || !w.end.Before(from)) {
			return w.kind
		}
	}
	return ""
}

// faultLog counts injected faults and how long the gateway took to serve
// the upstream again after each one was lifted.
type faultLog struct {
	mu       sync.Mutex
	count    map[string]int             // "upstream/kind" -> faults
	recovery map[string][]time.Duration // "upstream/kind" -> time from lifting the fault to the first right answer
	problems []string                   // faults the gateway did not recover from
}

func newFaultLog() *faultLog {
	return &faultLog{count: map[string]int{}, recovery: map[string][]time.Duration{}}
}

func (l *faultLog) add(name string, rec time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count[name]++
	if err != nil {
		l.problems = append(l.problems, fmt.Sprintf("%s: %v", name, err))
		return
	}
	l.recovery[name] = append(l.recovery[name], rec)
}

// prober checks through the gateway, with a key of its own, that an
// upstream answers correctly.
type prober struct {
	cs  *mcp.ClientSession
	mu  sync.Mutex
	seq int
}

// probe makes one call to upstream and reports whether the answer was
// right.
func (p *prober) probe(ctx context.Context, upstream string) bool {
	p.mu.Lock()
	p.seq++
	id := fmt.Sprintf("probe-%s-%d", upstream, p.seq)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch upstream {
	case "memory":
		res, err := p.cs.CallTool(ctx, &mcp.CallToolParams{Name: "memory__open_nodes", Arguments: map[string]any{"names": []string{seedEntity, id}}})
		return err == nil && !res.IsError && strings.Contains(mcpclient.ResultText(res), seedEntity)
	default:
		res, err := p.cs.CallTool(ctx, &mcp.CallToolParams{Name: upstream + "__echo", Arguments: map[string]any{"text": id}})
		return err == nil && !res.IsError && mcpclient.ResultText(res) == id
	}
}

// waitRecovered polls until upstream answers correctly through the
// gateway, for at most limit.
func (p *prober) waitRecovered(ctx context.Context, upstream string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.probe(ctx, upstream) {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("no right answer from %s through the gateway within %v of lifting the fault", upstream, limit)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// setMode sets a test upstream's fault through its control endpoint.
func setMode(ctx context.Context, url, mode string, delayMs int) error {
	body := fmt.Sprintf(`{"mode": %q}`, mode)
	if delayMs > 0 {
		body = fmt.Sprintf(`{"mode": %q, "delayMs": %d}`, mode, delayMs)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("control %s: %w", mode, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control %s answered %d: %s", mode, resp.StatusCode, b)
	}
	return nil
}

// injector makes one upstream misbehave, one fault at a time, with quiet
// periods between faults, until ctx ends.
type injector struct {
	h        *harness
	upstream string
	kinds    []string
	rng      *rand.Rand
	windows  *faultWindows
	log      *faultLog
	probe    *prober
}

// Pings reach an upstream every 15 s and give up after 10 s, so a ping sent
// during a stall can end the session up to this long after the stall.
const pingLag = 11 * time.Second

// recoveryLimit bounds the wait for an upstream to serve again after a
// fault: the gateway's reconnection backoff reaches 30 s.
const recoveryLimit = 90 * time.Second

func (in *injector) run(ctx context.Context) {
	for {
		quiet := time.Duration(2000+in.rng.IntN(4000)) * time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-time.After(quiet):
		}
		kind := in.kinds[in.rng.IntN(len(in.kinds))]
		hold := time.Duration(2000+in.rng.IntN(4000)) * time.Millisecond
		delay := 500 + in.rng.IntN(4500) // slow: some calls pass, some time out
		in.inject(kind, hold, delay)
	}
}

// inject applies one fault for hold, lifts it, and waits until the
// upstream serves correctly again. Lifting and recovery do not depend on
// the soak's context, so that the gateway is left healthy.
func (in *injector) inject(kind string, hold time.Duration, delayMs int) {
	bg := context.Background()
	name := in.upstream + "/" + kind
	w := in.windows.open(in.upstream, kind, time.Now())
	var err error
	switch kind {
	case "kill":
		err = in.kill()
	case "crash":
		err = setMode(bg, in.ctl(), "crash", 0)
	case "slow":
		err = setMode(bg, in.ctl(), "slow", delayMs)
	case "hang", "garbage":
		err = setMode(bg, in.ctl(), kind, 0)
	case "stop":
		in.h.stopRemote()
	}
	if err != nil {
		in.windows.close(w, time.Now())
		in.log.add(name, 0, fmt.Errorf("injecting: %w", err))
		return
	}
	time.Sleep(hold) // the fault stays in force for hold
	lifted := time.Now()
	switch {
	case in.upstream == "remote" && (kind == "stop" || kind == "crash"):
		in.h.stopRemote()
		if err := in.h.startRemote(); err != nil {
			in.windows.close(w, time.Now())
			in.log.add(name, 0, fmt.Errorf("restarting: %w", err))
			return
		}
	case kind == "slow" || kind == "hang" || kind == "garbage":
		// The process may have been restarted by the gateway meanwhile;
		// a new one starts healthy, and its control endpoint is the same.
		_ = setMode(bg, in.ctl(), "ok", 0)
	}
	if kind == "hang" {
		time.Sleep(pingLag)
	}
	rec, err := in.probe.waitRecovered(bg, in.upstream, recoveryLimit)
	in.log.add(name, time.Since(lifted), err)
	_ = rec
	// A grace for calls that were answered just before the probe.
	time.Sleep(time.Second)
	in.windows.close(w, time.Now())
}

func (in *injector) ctl() string {
	if in.upstream == "remote" {
		return in.h.remoteCtl
	}
	return in.h.flakyCtl
}

// kill sends SIGKILL to the upstream's process (a stdio child of the
// gateway).
func (in *injector) kill() error {
	match := map[string]string{"flaky": "-name flaky", "memory": "server-memory"}[in.upstream]
	pi, ok := in.h.pids.find(match)
	if !ok {
		return fmt.Errorf("no process of %s to kill (it may be restarting)", in.upstream)
	}
	return syscall.Kill(pi.pid, syscall.SIGKILL)
}

// abuseStats counts the hostile HTTP requests sent straight at the gateway.
type abuseStats struct {
	mu    sync.Mutex
	sent  map[string]int
	wrong []string
}

func (a *abuseStats) add(kind string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sent[kind]++
	if err != nil {
		a.wrong = append(a.wrong, kind+": "+err.Error())
	}
}

// abuser sends malformed, oversized, unauthenticated and slow (slowloris)
// requests to the gateway's HTTP port. Each must be refused: a 4xx, or for
// the slow ones the connection closed by the gateway within its limits.
type abuser struct {
	h     *harness
	key   string
	rng   *rand.Rand
	stats *abuseStats
}

var abuseKinds = []string{"malformed-json", "oversized-body", "no-key", "wrong-key", "slow-headers", "slow-body"}

func (a *abuser) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slow := make(chan struct{}, 6) // slow connections open at once
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(100+a.rng.IntN(400)) * time.Millisecond):
		}
		kind := abuseKinds[a.rng.IntN(len(abuseKinds))]
		if strings.HasPrefix(kind, "slow") {
			select {
			case slow <- struct{}{}:
			default:
				continue
			}
			wg.Go(func() {
				defer func() { <-slow }()
				a.stats.add(kind, a.send(kind))
			})
			continue
		}
		a.stats.add(kind, a.send(kind))
	}
}

var abuseClient = &http.Client{Timeout: 30 * time.Second}

func (a *abuser) send(kind string) error {
	url := a.h.base + "/mcp"
	post := func(body io.Reader, key string) error {
		req, _ := http.NewRequest(http.MethodPost, url, body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := abuseClient.Do(req)
		if err != nil {
			return fmt.Errorf("no answer: %v", err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		want := map[string]int{"oversized-body": http.StatusRequestEntityTooLarge, "no-key": http.StatusUnauthorized, "wrong-key": http.StatusUnauthorized}[kind]
		if want != 0 && resp.StatusCode != want {
			return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
		}
		if resp.StatusCode < 400 || resp.StatusCode > 499 {
			return fmt.Errorf("status %d, want a 4xx", resp.StatusCode)
		}
		return nil
	}
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	switch kind {
	case "malformed-json":
		bad := []string{`{"jsonrpc":"2.0","id":1,"method":`, `not json at all`, `[{"jsonrpc":"2.0",,}]`, "\x00\xff\xfe"}
		return post(strings.NewReader(bad[a.rng.IntN(len(bad))]), a.key)
	case "oversized-body":
		return post(strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"`+strings.Repeat("x", maxBodyBytes)+`"}}`), a.key)
	case "no-key":
		return post(strings.NewReader(initialize), "")
	case "wrong-key":
		return post(strings.NewReader(initialize), "tg_000000000000_"+strings.Repeat("a", 43))
	case "slow-headers":
		return a.slowloris(false)
	case "slow-body":
		return a.slowloris(true)
	}
	return fmt.Errorf("unknown abuse %q", kind)
}

// slowloris opens a connection and trickles a request one byte every 300
// ms: the headers (body false) or, after complete headers, the body. The
// gateway must close the connection, or answer with a 4xx, within its read
// limits (plus a margin for a busy machine).
func (a *abuser) slowloris(body bool) error {
	addr := strings.TrimPrefix(a.h.base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %v", err)
	}
	defer conn.Close()
	limit := readHeaderLimit
	payload := "X-Slow: " + strings.Repeat("z", 200) + "\r\n"
	if body {
		limit = readBodyLimit
		head := fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 4000\r\n\r\n", addr, a.key)
		if _, err := conn.Write([]byte(head)); err != nil {
			return fmt.Errorf("writing headers: %v", err)
		}
		payload = `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("y", 4000)
	} else {
		if _, err := conn.Write([]byte("POST /mcp HTTP/1.1\r\nHost: " + addr + "\r\n")); err != nil {
			return fmt.Errorf("writing the request line: %v", err)
		}
	}
	deadline := time.Now().Add(limit + 10*time.Second)
	closed := make(chan string, 1)
	go func() {
		r := bufio.NewReader(conn)
		line, err := r.ReadString('\n')
		if err != nil && line == "" {
			closed <- ""
			return
		}
		closed <- strings.TrimSpace(line)
	}()
	for i := 0; ; i++ {
		select {
		case status := <-closed:
			if status == "" {
				return nil // closed by the gateway
			}
			if f := strings.Fields(status); len(f) >= 2 && len(f[1]) == 3 && f[1][0] == '4' {
				return nil
			}
			return fmt.Errorf("answered %q, want a 4xx or a closed connection", status)
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("connection still open after %v (limit %v)", time.Since(deadline.Add(-limit-10*time.Second)).Round(time.Second), limit)
		}
		if i < len(payload) {
			// A write error means the gateway closed the connection; the
			// reader reports it on the next turn.
			_, _ = conn.Write([]byte{payload[i]})
		}
	}
}

// rotator rotates the key of a random client every few seconds with
// `toolgate keys rotate --overlap 10s` and hands the client its new key.
type rotator struct {
	h       *harness
	clients []*client
	rng     *rand.Rand
	mu      sync.Mutex
	done    int
	errs    []string
}

func (r *rotator) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(2000+r.rng.IntN(4000)) * time.Millisecond):
		}
		c := r.clients[r.rng.IntN(len(r.clients))]
		id := c.currentKeyID()
		at := time.Now() // the old key stops working at most the overlap after this
		key, newID, err := r.h.rotateKey(ctx, id)
		r.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				r.errs = append(r.errs, err.Error())
			}
		} else {
			r.done++
		}
		r.mu.Unlock()
		if err == nil {
			c.rotated(id, key, newID, at)
		}
	}
}

// reloader rewrites the configuration with the other filter variant and
// sends SIGHUP, every 8 to 16 seconds.
type reloader struct {
	h       *harness
	rng     *rand.Rand
	mu      sync.Mutex
	variant int
	count   int
}

func (r *reloader) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(8000+r.rng.IntN(8000)) * time.Millisecond):
		}
		r.mu.Lock()
		r.variant++
		v := r.variant
		r.count++
		r.mu.Unlock()
		r.h.writeConfig(v)
		_ = r.h.gw.Signal(syscall.SIGHUP)
	}
}

func (r *reloader) current() (variant, count int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.variant, r.count
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
