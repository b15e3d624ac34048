//go:build unix

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// settings of one soak run, from the environment:
//
//	SOAK_DURATION  length of the chaos phase; setting it runs the full soak
//	               (`make soak`: 10m, `make test-long`: 2m) with its footprint
//	               and latency verdicts. Unset, the test is a smoke: 20 s of
//	               chaos with 10 clients, the same checks of every answer, the
//	               audit log and the shutdown, no footprint or latency verdict.
//	SOAK_CLIENTS   concurrent clients (default 50, 10 for the smoke)
//	SOAK_SEED      seed of every random choice (default 1 for the smoke, the
//	               clock for the full soak; logged either way)
//	SOAK_REPORT    also write the summary to this file
type settings struct {
	duration, calm, settle time.Duration
	clients                int
	seed                   uint64
	full                   bool // footprint and latency verdicts
}

const (
	fullClients   = 50
	smokeDuration = 20 * time.Second
	smokeClients  = 10
	smokeSeed     = 1
)

func loadSettings(t *testing.T) settings {
	s := settings{duration: smokeDuration, clients: smokeClients, seed: smokeSeed}
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("SOAK_DURATION=%q: want a Go duration of at least 10s (such as 10m)", v)
		}
		s.duration, s.clients, s.seed, s.full = d, fullClients, uint64(time.Now().UnixNano()), true
	}
	if v := os.Getenv("SOAK_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			t.Fatalf("SOAK_CLIENTS=%q: want a number of clients from 1 to 1000", v)
		}
		s.clients = n
	}
	if v := os.Getenv("SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: want an unsigned integer", v)
		}
		s.seed = n
	}
	s.calm = min(max(s.duration/6, 15*time.Second), time.Minute)
	if !s.full {
		s.calm = 3 * time.Second
	}
	// One of the Go runtime's forced collections (every 2 minutes) fits in
	// the settle time, and its scavenger returns freed memory meanwhile.
	s.settle = 3 * time.Minute
	return s
}

// TestSoak drives a real gateway with many clients while faults are
// injected, and checks that it keeps its promises. See the package doc and
// docs/development.md ("Soak and chaos test").
func TestSoak(t *testing.T) {
	set := loadSettings(t)
	mode := "smoke (set SOAK_DURATION for the full soak)"
	if set.full {
		mode = "full"
	}
	t.Logf("soak: %s, seed %d (rerun with SOAK_SEED=%d), %d clients, calm %v, chaos %v", mode, set.seed, set.seed, set.clients, set.calm, set.duration)
	rngFor := func(stream uint64) *rand.Rand { return rand.New(rand.NewPCG(set.seed, stream)) }

	h := newHarness(t)
	h.writeConfig(0)
	if err := h.startRemote(); err != nil {
		t.Fatal(err)
	}
	keys, ids := h.createKeys(set.clients+2, "soak")
	h.startGateway()
	waitReady(t, h, 2*time.Minute)

	scanCtx, stopScan := context.WithCancel(context.Background())
	var scanWG sync.WaitGroup
	scanWG.Go(func() {
		for {
			h.pids.scan()
			select {
			case <-scanCtx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	defer func() { stopScan(); scanWG.Wait() }()

	probeCS := e2etest.ConnectHTTP(t, context.Background(), h.base+"/mcp", map[string]string{"Authorization": "Bearer " + keys[set.clients]}, nil)
	probe := &prober{cs: probeCS}
	if _, err := probeCS.CallTool(context.Background(), &mcp.CallToolParams{Name: "memory__create_entities", Arguments: map[string]any{
		"entities": []map[string]any{{"name": seedEntity, "entityType": "test", "observations": []string{"created before the load"}}},
	}}); err != nil {
		t.Fatalf("creating the seed entity: %v", err)
	}

	windows := newFaultWindows()
	tl := newTally()
	var phase atomic.Value
	phase.Store("warmup")
	clients := make([]*client, set.clients)
	for i := range clients {
		clients[i] = &client{idx: i, h: h, rng: rngFor(uint64(100 + i)), tally: tl, windows: windows, phase: &phase, key: keys[i], keyID: ids[i]}
	}

	// Warm-up: every kind of request once, hostile scripts included, so
	// that first-use costs (compilation, pools) are in the baseline.
	warm := clients[0]
	if err := warm.connect(context.Background()); err != nil {
		t.Fatalf("warm-up client: %v", err)
	}
	for _, w := range mix {
		warm.once(context.Background(), w.kind)
	}
	for _, s := range hostileScripts {
		warm.hostile(context.Background(), s)
	}
	if n := sum(tl.wrong); n > 0 {
		t.Fatalf("wrong answers before any fault:\n%s", strings.Join(tl.wrongText, "\n"))
	}
	_ = warm.cs.Close()
	warm.cs = nil
	baseline := baselineUsage(t, h)
	t.Logf("soak: baseline after warm-up: %v", baseline)

	// Calm phase: the same clients, no faults and no hostile scripts.
	phase.Store("calm")
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var clientsWG sync.WaitGroup
	for _, c := range clients {
		clientsWG.Go(func() { c.run(loadCtx) })
	}
	time.Sleep(set.calm) // the phase lasts this long

	// Chaos.
	phase.Store("chaos")
	chaosStart := time.Now()
	chaosCtx, stopChaos := context.WithCancel(context.Background())
	var chaosWG sync.WaitGroup
	flog := newFaultLog()
	abuse := &abuseStats{sent: map[string]int{}}
	rot := &rotator{h: h, clients: clients, rng: rngFor(3)}
	rel := &reloader{h: h, rng: rngFor(4)}
	injectors := []*injector{
		{h: h, upstream: "flaky", kinds: []string{"kill", "crash", "hang", "slow", "garbage"}, rng: rngFor(5)},
		{h: h, upstream: "remote", kinds: []string{"stop", "crash", "hang", "slow", "garbage"}, rng: rngFor(6)},
		{h: h, upstream: "memory", kinds: []string{"kill"}, rng: rngFor(7)},
	}
	for _, in := range injectors {
		in.windows, in.log, in.probe = windows, flog, probe
		chaosWG.Go(func() { in.run(chaosCtx) })
	}
	chaosWG.Go(func() { (&abuser{h: h, key: keys[set.clients+1], rng: rngFor(8), stats: abuse}).run(chaosCtx) })
	chaosWG.Go(func() { rot.run(chaosCtx) })
	chaosWG.Go(func() { rel.run(chaosCtx) })
	time.Sleep(set.duration) // the phase lasts this long
	stopLoad()
	stopChaos()
	clientsWG.Wait()
	chaosWG.Wait() // the injectors lift their last fault and wait for recovery
	chaosTime := time.Since(chaosStart)
	t.Logf("soak: load stopped after %v of chaos", chaosTime.Round(time.Second))

	// The gateway must serve every upstream again, with the last filter.
	waitReady(t, h, recoveryLimit)
	variant, reloads := rel.current()
	checkToggled(t, probe, variant)

	after, samples := baseline, []string(nil)
	if set.full {
		after, samples = settleUsage(t, h, baseline, set.settle)
	}
	// Diagnostics of a failed footprint check, while the gateway still runs.
	var saved string
	if !within(after, baseline) {
		saved = saveMetrics(h, set.seed)
	}
	if prof, err := h.heapProfile(); err != nil || len(prof) == 0 {
		t.Errorf("the gateway's heap profile, which a failed footprint check saves: %v", err)
	}

	// Shutdown: no upstream process may outlive the gateway.
	h.pids.scan()
	_ = probeCS.Close()
	if err := h.gw.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exitCode, waitErr := h.gw.Wait(60 * time.Second)
	var left []procInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = h.pids.leftovers()
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // poll until the deadline
	}
	h.stopRemote()

	arep, auditErr := checkAudit(h.audit, tl)
	verifyOut, verifyErr := h.cli(context.Background(), "audit", "verify")

	// Report.
	var b strings.Builder
	fmt.Fprintf(&b, "soak summary (seed %d, %d clients, calm %v, chaos %v)\n", set.seed, set.clients, set.calm, chaosTime.Round(time.Second))
	fmt.Fprintf(&b, "requests by kind: total / right / explained by a fault or rotation / wrong\n")
	tl.mu.Lock()
	for _, k := range sortedKeys(tl.total) {
		ex := 0
		var why []string
		for _, r := range sortedKeys(tl.excused[k]) {
			ex += tl.excused[k][r]
			why = append(why, fmt.Sprintf("%s: %d", r, tl.excused[k][r]))
		}
		fmt.Fprintf(&b, "  %-38s %6d %6d %6d %4d  %s\n", k, tl.total[k], tl.right[k], ex, tl.wrong[k], strings.Join(why, ", "))
	}
	calm, chaos := tl.latency["calm"], tl.latency["chaos"]
	fmt.Fprintf(&b, "direct calls to healthy upstreams: calm n=%d p50=%v p99=%v; chaos n=%d p50=%v p99=%v\n",
		len(calm), pct(calm, 50), pct(calm, 99), len(chaos), pct(chaos, 50), pct(chaos, 99))
	fmt.Fprintf(&b, "key rotations %d (clients switched %d times), reloads %d (final variant %d), executions refused as busy %d\n", rot.done, tl.switches, reloads, variant, tl.busy)
	tl.mu.Unlock()
	flog.mu.Lock()
	for _, k := range sortedKeys(flog.count) {
		fmt.Fprintf(&b, "  fault %-16s x%-3d recovery p50=%v max=%v\n", k, flog.count[k], pct(flog.recovery[k], 50), pct(flog.recovery[k], 100))
	}
	flog.mu.Unlock()
	abuse.mu.Lock()
	fmt.Fprintf(&b, "hostile HTTP requests: %v (wrong answers %d)\n", abuse.sent, len(abuse.wrong))
	abuse.mu.Unlock()
	fmt.Fprintf(&b, "audit: %d events, %d tool.call, %d tool.denied, %d code.execution; %d client-seen answers missing; verify: %s\n",
		arep.events, arep.toolCalls, arep.denied, arep.executions, len(arep.missing), strings.TrimSpace(string(verifyOut)))
	fmt.Fprintf(&b, "gateway footprint: baseline %v; after the load %v\n", baseline, after)
	fmt.Fprintf(&b, "upstream processes started by the gateway: %d; left after SIGTERM: %d; gateway exit code %d\n", h.pids.count(), len(left), exitCode)
	summary := b.String()
	t.Log(summary)
	if p := os.Getenv("SOAK_REPORT"); p != "" {
		_ = os.WriteFile(p, []byte(summary), 0o644)
	}

	// Verdicts.
	if n := sum(tl.wrong); n > 0 {
		t.Errorf("%d requests answered wrongly or not at all outside any injected fault; first ones:\n%s", n, strings.Join(tl.wrongText, "\n"))
	}
	if len(abuse.wrong) > 0 {
		t.Errorf("hostile HTTP requests not refused properly (%d); first ones:\n%s", len(abuse.wrong), strings.Join(abuse.wrong[:min(20, len(abuse.wrong))], "\n"))
	}
	if len(flog.problems) > 0 {
		t.Errorf("faults the gateway did not recover from:\n%s", strings.Join(flog.problems, "\n"))
	}
	if len(rot.errs) > 0 {
		t.Errorf("key rotations failed:\n%s", strings.Join(rot.errs, "\n"))
	}
	if rot.done == 0 || reloads == 0 || len(flog.count) == 0 || sumPrefix(tl.total, kHostile) == 0 || sum(abuse.sent) == 0 {
		t.Errorf("the chaos did not happen: %d rotations, %d reloads, faults %v, %d hostile scripts, hostile HTTP %v",
			rot.done, reloads, flog.count, sumPrefix(tl.total, kHostile), abuse.sent)
	}
	if auditErr != nil {
		t.Errorf("reading the audit log: %v", auditErr)
	}
	if len(arep.missing) > 0 {
		t.Errorf("answered requests missing from the audit log:\n%s", strings.Join(arep.missing, "\n"))
	}
	if verifyErr != nil {
		t.Errorf("toolgate audit verify: %v", verifyErr)
	}
	if !within(after, baseline) {
		t.Errorf("the gateway did not come back within 10%% of its baseline after the load (baseline %v); samples:\n%s\n%s",
			baseline, strings.Join(samples, "\n"), saved)
	}
	// A gross breach only. Hostile scripts burn the cores for up to their
	// timeout and the machine is shared, so healthy calls slow down during
	// the chaos, and a median of a few milliseconds moves with any other
	// load: the chaos median must be over ten times the calm one and over
	// 100 ms (a healthy echo then waits for the CPU most of the time).
	if c50, k50 := pct(calm, 50), pct(chaos, 50); set.full && k50 > 10*c50 && k50 > 100*time.Millisecond {
		t.Errorf("p50 latency of healthy direct calls during the chaos (%v) is over 10x the calm one (%v) and over 100ms", k50, c50)
	}
	if waitErr != nil {
		t.Errorf("the gateway did not exit after SIGTERM: %v", waitErr)
	} else if exitCode != 0 {
		t.Errorf("the gateway exited with %d after SIGTERM, want 0", exitCode)
	}
	if len(left) > 0 {
		var lines []string
		for _, p := range left {
			lines = append(lines, fmt.Sprintf("pid %d (group %d): %s", p.pid, p.pgid, p.cmdline))
		}
		t.Errorf("upstream processes left after the gateway exited:\n%s", strings.Join(lines, "\n"))
	}
}

// waitReady polls /readyz until every upstream is ready.
func waitReady(t *testing.T, h *harness, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		states, err := h.readyz()
		all := err == nil && len(states) == 5
		for _, s := range states {
			all = all && s == "ready"
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstreams not all ready after %v: %v %v", limit, states, err)
		}
		time.Sleep(200 * time.Millisecond) // poll until the deadline
	}
}

// checkToggled checks that the last reload's filter is the one in force:
// steady__fail is shown in even variants and hidden in odd ones.
func checkToggled(t *testing.T, probe *prober, variant int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := probe.cs.CallTool(ctx, &mcp.CallToolParams{Name: kToggled, Arguments: map[string]any{"message": "soak-final"}})
		cancel()
		var got string
		switch {
		case err != nil && errClass(err) == "not_found":
			got = "hidden"
		case err == nil && res.IsError:
			got = "shown"
		default:
			got = describe(res, err)
		}
		want := map[bool]string{true: "shown", false: "hidden"}[variant%2 == 0]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("after the last reload (variant %d) steady__fail is %s, want %s", variant, got, want)
			return
		}
		time.Sleep(200 * time.Millisecond) // poll until the deadline
	}
}

// baselineUsage samples the idle gateway three times and keeps the
// median of each figure.
func baselineUsage(t *testing.T, h *harness) usage {
	t.Helper()
	var rss []int64
	var gor []int
	for range 3 {
		time.Sleep(time.Second) // spacing between samples
		u, err := h.sample()
		if err != nil {
			t.Fatalf("sampling the gateway: %v", err)
		}
		rss, gor = append(rss, u.rssKB), append(gor, u.goroutines)
	}
	slices.Sort(rss)
	slices.Sort(gor)
	return usage{at: time.Now(), rssKB: rss[1], goroutines: gor[1]}
}

// within reports whether u is within 10% of base (above it; less is fine).
func within(u, base usage) bool {
	return float64(u.rssKB) <= 1.1*float64(base.rssKB) && float64(u.goroutines) <= 1.1*float64(base.goroutines)
}

// settleUsage samples the gateway every 5 s after the load until a sample
// is within 10% of the baseline or limit passes. It returns the last
// sample and every sample taken.
func settleUsage(t *testing.T, h *harness, base usage, limit time.Duration) (usage, []string) {
	t.Helper()
	var lines []string
	deadline := time.Now().Add(limit)
	for {
		u, err := h.sample()
		if err != nil {
			t.Errorf("sampling the gateway: %v", err)
			return u, lines
		}
		lines = append(lines, u.String())
		if within(u, base) || time.Now().After(deadline) {
			return u, lines
		}
		time.Sleep(5 * time.Second) // the sampling period
	}
}

// saveMetrics keeps the gateway's heap profile and its /metrics (Go memory
// statistics included) for a failed footprint check.
func saveMetrics(h *harness, seed uint64) string {
	var saved []string
	if prof, err := h.heapProfile(); err != nil {
		saved = append(saved, "could not fetch the heap profile: "+err.Error())
	} else {
		p := filepath.Join(os.TempDir(), fmt.Sprintf("toolgate-soak-%d-heap.pprof", seed))
		if err := os.WriteFile(p, prof, 0o644); err != nil {
			saved = append(saved, "could not save the heap profile: "+err.Error())
		} else {
			saved = append(saved, "The gateway's heap profile is saved in "+p+" (go tool pprof -sample_index=inuse_space "+p+").")
		}
	}
	if text, err := h.metricsText(); err != nil {
		saved = append(saved, "could not fetch /metrics: "+err.Error())
	} else {
		p := filepath.Join(os.TempDir(), fmt.Sprintf("toolgate-soak-%d-metrics.txt", seed))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			saved = append(saved, "could not save /metrics: "+err.Error())
		} else {
			saved = append(saved, "Its /metrics (go_memstats_*) is saved in "+p+".")
		}
	}
	return strings.Join(saved, " ")
}

// pct returns the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)].Round(100 * time.Microsecond)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sumPrefix(m map[string]int, prefix string) int {
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}
