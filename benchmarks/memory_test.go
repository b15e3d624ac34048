package benchmarks

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// BenchmarkRSSAfterBurst measures whether a gateway gives memory back once
// a burst of work is over: `toolgate serve` fronting the echo upstream
// with Code Mode on takes 2,000 calls from 20 clients (one in ten a Code
// Mode script making two calls), then idles. It reports the gateway's RSS
// when warm (after a call and a script on each session), at its peak
// during the burst, and after 60 s of idle, and after/warm. Target
// (benchmarks/README.md): back within 20% of warm within 60 s.
//
// Each iteration is a new gateway; -benchtime 1x is one measurement.
func BenchmarkRSSAfterBurst(b *testing.B) {
	const (
		clients = 20
		calls   = 2000
		idle    = 60 * time.Second
	)
	up := startEchoUpstream(b)
	var warmSum, peakSum, afterSum float64
	for i := 0; i < b.N; i++ {
		gw := startToolgate(b, fmt.Sprintf(`"codeMode": {"enabled": true, "directTools": true}, "mcpServers": {"up": {"url": %s, "transport": "http"}}`, jsonString(up.url)))
		sessions := make([]*mcp.ClientSession, clients)
		ctx := context.Background()
		for j := range sessions {
			cs, err := connectSession(ctx, gw.url, gw.header)
			if err != nil {
				b.Fatal(err)
			}
			sessions[j] = cs
		}
		// Warm: a call and a script on each session, as a gateway that has
		// served its first clients.
		burst(b, sessions, clients*2)
		time.Sleep(5 * time.Second) // let the warm-up settle
		warm := rssMiB(b, gw.proc)

		var peak float64
		var mu sync.Mutex
		stop := make(chan struct{})
		var sampler sync.WaitGroup
		sampler.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				r := rssMiB(b, gw.proc)
				mu.Lock()
				peak = max(peak, r)
				mu.Unlock()
			}
		})
		burst(b, sessions, calls)
		close(stop)
		sampler.Wait()
		for _, cs := range sessions {
			_ = cs.Close()
		}
		time.Sleep(idle) // the idle period being measured
		after := rssMiB(b, gw.proc)
		b.Logf("warm %.1f MiB, peak %.1f MiB, after %v idle %.1f MiB (%.2fx warm)", warm, peak, idle, after, after/warm)
		warmSum, peakSum, afterSum = warmSum+warm, peakSum+peak, afterSum+after
		_ = gw.proc.Signal(os.Interrupt)
	}
	n := float64(b.N)
	b.ReportMetric(warmSum/n, "warm-MiB")
	b.ReportMetric(peakSum/n, "peak-MiB")
	b.ReportMetric(afterSum/n, "after-idle-MiB")
	b.ReportMetric(afterSum/warmSum, "after/warm")
}

// burst makes n requests spread over the sessions, one worker each: nine
// in ten direct echo calls, one in ten an execute_code script with two.
func burst(b *testing.B, sessions []*mcp.ClientSession, n int) {
	var next sync.Mutex
	left := n
	var wg sync.WaitGroup
	errs := make(chan error, len(sessions))
	for _, cs := range sessions {
		wg.Go(func() {
			for {
				next.Lock()
				i := left
				left--
				next.Unlock()
				if i <= 0 {
					return
				}
				params := &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": echoText}}
				if i%10 == 0 {
					params = &mcp.CallToolParams{Name: "execute_code", Arguments: map[string]any{
						"code": "const a = await tools.up.echo({text: 'a'}); const b = await tools.up.echo({text: 'b'}); return [a, b]",
					}}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				res, err := cs.CallTool(ctx, params)
				cancel()
				if err == nil && res.IsError {
					err = fmt.Errorf("%s failed: %v", params.Name, res.Content)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// rssMiB is the resident set size of p, from /proc/PID/status.
func rssMiB(b testing.TB, p *e2etest.Proc) float64 {
	b.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		b.Fatalf("reading the RSS: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatalf("parsing %q: %v", line, err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS line")
	return 0
}
