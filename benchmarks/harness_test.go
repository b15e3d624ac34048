package benchmarks

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/bench"
	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/mcpclient"
	"github.com/toolgate/toolgate/internal/servertest"
)

// protocolVersion is the MCP protocol version every benchmark client asks
// for: TOOLGATE_BENCH_PROTOCOL, by default 2025-11-25. toolgate speaks
// 2025-11-25 with its upstreams; with that default a direct call and a
// call through a proxy use the same protocol on every hop (the SDK's
// default, 2026-07-28, would make direct calls stateless while gateway
// calls are not). 2026-07-28 measures the gateway's stateless clients.
var protocolVersion = cmp.Or(os.Getenv(protocolEnv), "2025-11-25")

// protocolEnv names the variable that chooses protocolVersion.
const protocolEnv = "TOOLGATE_BENCH_PROTOCOL"

// Calls each session makes before the timed region: many on a new session,
// so connections, the peers' JIT compilers and caches are warm, and a few
// on a session that was warmed by an earlier run.
const (
	warmupNewSession = 300
	warmupOldSession = 20
)

// startupTimeout bounds how long a peer may take to start.
const startupTimeout = 60 * time.Second

// peer is a started process serving MCP over streamable HTTP.
type peer struct {
	url    string
	header map[string]string // sent with every HTTP request (the API key)
	proc   *e2etest.Proc
	// redis is the Redis server of a gateway's rate limits, with
	// TOOLGATE_BENCH_LIMITER=redis; else nil.
	redis *servertest.Redis
}

// process is a process whose CPU time a benchmark reads.
type process interface{ Pid() int }

// target is an MCP endpoint under benchmark and the call made on it.
type target struct {
	url    string
	header map[string]string // sent with every HTTP request (the API key)
	tool   string
	args   map[string]any
	want   string // text the result must contain

	// cpu names processes whose CPU time per call is reported, by the
	// unit of the metric ("proxy-cpu-us/op").
	cpu map[string]process

	// owner is the benchmark whose end closes the sessions.
	owner    testing.TB
	mu       sync.Mutex
	sessions []*mcp.ClientSession
	warmed   int // sessions[:warmed] have made their warm-up calls
}

// connect returns n sessions with the target, opening the missing ones.
// Sessions stay open until the owner ends, so a sub-benchmark that runs
// several times opens them once.
func (tg *target) connect(ctx context.Context, n int) ([]*mcp.ClientSession, error) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for len(tg.sessions) < n {
		cs, err := connectSession(ctx, tg.url, tg.header)
		if err != nil {
			return nil, err
		}
		tg.owner.Cleanup(func() { _ = cs.Close() })
		tg.sessions = append(tg.sessions, cs)
	}
	return tg.sessions[:n], nil
}

// connectSession opens one MCP session over streamable HTTP, sending
// header with every request. Each session has an HTTP transport of its
// own: http.DefaultTransport keeps only two idle connections per host, so
// sixteen workers sharing it would open a new TCP connection for most
// calls and measure that instead.
func connectSession(ctx context.Context, url string, header map[string]string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "toolgate-bench", Version: "1.0.0"}, nil)
	hc := &http.Client{Transport: &mcpclient.HeaderTransport{Base: http.DefaultTransport.(*http.Transport).Clone(), Headers: header}}
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: protocolVersion})
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	return cs, nil
}

// call makes the target's tool call once and checks that it succeeded.
func (tg *target) call(ctx context.Context, cs *mcp.ClientSession, params *mcp.CallToolParams, check bool) error {
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		return fmt.Errorf("calling %s at %s: %w", tg.tool, tg.url, err)
	}
	if res.IsError {
		return fmt.Errorf("calling %s at %s: tool error %q", tg.tool, tg.url, mcpclient.ResultText(res))
	}
	if check && !strings.Contains(mcpclient.ResultText(res), tg.want) {
		return fmt.Errorf("calling %s at %s: result %q does not contain %q", tg.tool, tg.url, mcpclient.ResultText(res), tg.want)
	}
	return nil
}

// benchCalls makes b.N calls of the target's tool, split over workers
// concurrent workers with one session each, and reports the median and
// 99th percentile latency of one call and the calls per second of the
// whole run. Sessions and warm-up calls stay outside the timed region.
func benchCalls(b *testing.B, tg *target, workers int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	sessions, err := tg.connect(ctx, workers)
	if err != nil {
		b.Fatal(err)
	}
	params := &mcp.CallToolParams{Name: tg.tool, Arguments: tg.args}

	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w, cs := range sessions {
		calls := warmupOldSession
		if w >= tg.warmed {
			calls = warmupNewSession
		}
		wg.Go(func() {
			for i := range calls {
				if err := tg.call(ctx, cs, params, i == 0); err != nil {
					errs[w] = fmt.Errorf("warm-up: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	tg.warmed = max(tg.warmed, workers)

	lat := make([][]time.Duration, workers)
	start := make(chan struct{})
	for w, cs := range sessions {
		n := b.N / workers
		if w < b.N%workers {
			n++
		}
		lat[w] = make([]time.Duration, 0, n)
		wg.Go(func() {
			<-start
			for range n {
				t0 := time.Now()
				err := tg.call(ctx, cs, params, false)
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	// CPU times come from /proc; elsewhere they are not reported.
	cpu := tg.cpu
	if runtime.GOOS != "linux" {
		cpu = nil
	}
	cpuBefore := map[string]time.Duration{}
	for unit, p := range cpu {
		cpuBefore[unit] = processCPU(b, p)
	}
	var clientBefore time.Duration
	if runtime.GOOS == "linux" {
		clientBefore = statCPU(b, "/proc/self/stat")
	}
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	b.StopTimer()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	s := summarize(slices.Concat(lat...), elapsed)
	b.ReportMetric(ms(s.p50), "p50-ms")
	b.ReportMetric(ms(s.p99), "p99-ms")
	b.ReportMetric(s.callsPerSec, "calls/s")
	for unit, p := range cpu {
		used := processCPU(b, p) - cpuBefore[unit]
		b.ReportMetric(float64(used.Microseconds())/float64(b.N), unit)
	}
	if runtime.GOOS == "linux" {
		used := statCPU(b, "/proc/self/stat") - clientBefore
		b.ReportMetric(float64(used.Microseconds())/float64(b.N), "client-cpu-us/op")
	}
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// processCPU returns the user plus system CPU time that p (all its
// threads, not its children) has used so far, from /proc/PID/stat. It
// measures what a proxy costs independently of what else the machine
// runs, which wall-clock figures do not; its resolution is 10 ms, so it
// needs runs of a few thousand calls.
func processCPU(b testing.TB, p process) time.Duration {
	b.Helper()
	return statCPU(b, fmt.Sprintf("/proc/%d/stat", p.Pid()))
}

// statCPU returns the user plus system CPU time in a /proc/PID/stat file
// (all threads of the process, not its children).
func statCPU(b testing.TB, path string) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(path)
	if err != nil {
		b.Fatalf("reading the CPU time in %s: %v", path, err)
	}
	// The fields after the command name (which is in parentheses and may
	// hold spaces) start with the state; utime and stime are fields 14
	// and 15 of the whole line.
	i := strings.LastIndexByte(string(stat), ')')
	var f []string
	if i >= 0 {
		f = strings.Fields(string(stat[i+1:]))
	}
	if len(f) < 13 {
		b.Fatalf("cannot parse %s: %q", path, stat)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatalf("cannot parse %s: %v", path, err)
	}
	return time.Duration(utime+stime) * clockTick
}

// summary is what benchCalls reports.
type summary struct {
	p50, p99    time.Duration
	callsPerSec float64
}

// summarize sorts lat in place and computes the summary of a run of
// len(lat) calls that took elapsed, with the percentiles of toolgate bench
// (internal/bench, nearest rank).
func summarize(lat []time.Duration, elapsed time.Duration) summary {
	st := bench.Summarize(lat)
	s := summary{p50: fromMs(st.P50), p99: fromMs(st.P99)}
	if elapsed > 0 {
		s.callsPerSec = float64(len(lat)) / elapsed.Seconds()
	}
	return s
}

func fromMs(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Millisecond))) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startTestUpstream runs the Go test upstream (internal/testupstream, built
// from this module) over streamable HTTP on loopback.
func startTestUpstream(b testing.TB) *peer {
	b.Helper()
	bin := e2etest.BuildBinary(b, "./internal/testupstream")
	p := e2etest.StartProcess(b, e2etest.ProcOptions{
		Path: bin,
		Args: []string{"-transport", "http", "-listen", "127.0.0.1:0", "-name", "bench"},
	})
	return listeningPeer(b, p)
}

// startReleasedUpstream runs the echo server of benchmarks/echoupstream, a
// module of its own built with the go-sdk release its go.mod names, over
// streamable HTTP on loopback.
func startReleasedUpstream(b testing.TB) *peer {
	b.Helper()
	bin := e2etest.BuildModuleBinary(b, "./benchmarks/echoupstream")
	p := e2etest.StartProcess(b, e2etest.ProcOptions{
		Path: bin,
		Args: []string{"-listen", "127.0.0.1:0"},
	})
	return listeningPeer(b, p)
}

// listeningPeer waits for the "LISTENING URL" line of an upstream started
// over HTTP and returns it as a peer.
func listeningPeer(b testing.TB, p *e2etest.Proc) *peer {
	b.Helper()
	line := p.WaitForLine(b, "LISTENING ", startupTimeout)
	_, url, _ := strings.Cut(line, "LISTENING ")
	return &peer{url: strings.TrimSpace(url), proc: p}
}

var listeningLine = regexp.MustCompile(`toolgate listening on (http://[0-9.:\[\]]+)/mcp`)

// startToolgate runs `toolgate serve` on a free loopback port with the
// JSON configuration cfg (the members of an object, without its braces)
// plus an API key, and waits until /readyz says every upstream is ready.
// The peer is the MCP endpoint of the default project with the header
// that authenticates to it. Clients must present a key by default, so the
// benchmarks measure the gateway as it is deployed, key check included.
func startToolgate(b testing.TB, cfg string) *peer {
	b.Helper()
	var secret [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		b.Fatal(err)
	}
	key := "bench-" + hex.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(key))
	limits, redis := benchLimiter(b)
	doc := fmt.Sprintf(`{"apiKeys": [{"name": "bench", "sha256": %q}], %s%s}`, hex.EncodeToString(sum[:]), limits, cfg)
	path := filepath.Join(b.TempDir(), "toolgate.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		b.Fatal(err)
	}
	bin := toolgateBinary(b)
	p := e2etest.StartProcess(b, e2etest.ProcOptions{
		Path: bin,
		Args: append([]string{"serve", "-c", path, "--listen", "127.0.0.1:0"}, toolgateArgs()...),
		Dir:  filepath.Dir(path),
	})
	line := p.WaitForLine(b, "toolgate listening on", startupTimeout)
	m := listeningLine.FindStringSubmatch(line)
	if m == nil {
		b.Fatalf("cannot find the address in %q", line)
	}
	waitReady(b, p, m[1]+"/readyz")
	return &peer{url: m[1] + "/mcp", header: mcpclient.Bearer(key), proc: p, redis: redis}
}

// limiterEnv chooses the rate limiter of the gateways under benchmark:
// unset for none (no rate limit configured: the figures in README.md
// before the Redis limiter), "memory" for rate limits high enough never
// to refuse, per project and per key, kept by the in-memory limiter, and
// "redis" for the same limits kept in a redis-server that the benchmark
// starts (cluster.redis).
const limiterEnv = "TOOLGATE_BENCH_LIMITER"

// benchLimiter returns the configuration members (each followed by a
// comma) that TOOLGATE_BENCH_LIMITER asks for, and the Redis server it
// started.
func benchLimiter(b testing.TB) (string, *servertest.Redis) {
	b.Helper()
	// A million calls a second, with a burst of 100,000: two buckets
	// consulted on every call, none ever empty.
	const limits = `"rateLimit": {"requestsPerMinute": 6e7, "burst": 100000, "perKeyRequestsPerMinute": 6e7, "perKeyBurst": 100000}, `
	switch v := os.Getenv(limiterEnv); v {
	case "":
		return "", nil
	case "memory":
		return limits, nil
	case "redis":
		r := servertest.StartRedis(b)
		return limits + fmt.Sprintf(`"cluster": {"redis": {"url": %q}}, `, r.URL()), r
	default:
		b.Fatalf("%s=%s: want memory, redis or nothing", limiterEnv, v)
		return "", nil
	}
}

// toolgateBinaryEnv names a prebuilt toolgate binary to benchmark instead
// of building one from this tree; running the benchmarks alternately with
// two binaries compares two revisions on the same harness, interleaved.
const toolgateBinaryEnv = "TOOLGATE_BENCH_BINARY"

// toolgateArgsEnv holds extra arguments for `toolgate serve`, separated by
// spaces (for example `--cpuprofile /tmp/gw.pprof`).
const toolgateArgsEnv = "TOOLGATE_BENCH_ARGS"

// toolgateBinary returns the toolgate binary under benchmark: the one
// named by TOOLGATE_BENCH_BINARY, else one built from this tree.
func toolgateBinary(b testing.TB) string {
	b.Helper()
	bin := os.Getenv(toolgateBinaryEnv)
	if bin == "" {
		return e2etest.BuildBinary(b, "./cmd/toolgate")
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		b.Fatalf("%s=%s: not an executable file (%v)", toolgateBinaryEnv, bin, err)
	}
	return bin
}

// toolgateArgs returns the extra serve arguments of TOOLGATE_BENCH_ARGS.
func toolgateArgs() []string { return strings.Fields(os.Getenv(toolgateArgsEnv)) }

// waitReady polls url until it answers 200.
func waitReady(b testing.TB, p *e2etest.Proc, url string) {
	b.Helper()
	pollHTTP(b, p, url, "200", func(code int) bool { return code == http.StatusOK })
}

// waitHTTP polls url until it gives any HTTP answer.
func waitHTTP(b testing.TB, p *e2etest.Proc, url string) {
	b.Helper()
	pollHTTP(b, p, url, "at all", func(int) bool { return true })
}

// pollHTTP sends GET requests to url until ok accepts the status code. It
// fails with the last answer if p exits first or startupTimeout passes; the
// process's cleanup then logs its output.
func pollHTTP(b testing.TB, p *e2etest.Proc, url, what string, ok func(code int) bool) {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(startupTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var last string
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		if p.Exited() {
			b.Fatalf("process %d exited before %s answered %s (last answer: %s)", p.Pid(), url, what, last)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not answer %s within %v; last answer: %s", url, what, startupTimeout, last)
		}
		<-tick.C
	}
}

// jsonString quotes s for a JSON document.
func jsonString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// shellQuote quotes s for a POSIX shell (supergateway runs its --stdio
// command through one).
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func itoa(n int) string { return strconv.Itoa(n) }
