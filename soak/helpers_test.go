//go:build unix

package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The soak test's verdicts rest on these helpers; they are checked here
// on their own, quickly.

func TestFaultWindowsCovering(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	f := newFaultWindows()
	w := f.open("flaky", "kill", at(10))
	f.close(w, at(20))
	f.open("flaky", "hang", at(40)) // still open
	tests := []struct {
		upstream string
		from, to int
		want     string
	}{
		{"flaky", 0, 9, ""},
		{"flaky", 5, 10, "kill"},
		{"flaky", 12, 13, "kill"},
		{"flaky", 20, 25, "kill"},
		{"flaky", 21, 39, ""},
		{"flaky", 100, 101, "hang"},
		{"remote", 12, 13, ""},
	}
	for _, tt := range tests {
		if got := f.covering(tt.upstream, at(tt.from), at(tt.to)); got != tt.want {
			t.Errorf("covering(%s, %d..%d) = %q, want %q", tt.upstream, tt.from, tt.to, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[int]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := pct(ds, p); got != want {
			t.Errorf("pct(1..100 ms, %d) = %v, want %v", p, got, want)
		}
	}
	if got := pct(nil, 50); got != 0 {
		t.Errorf("pct(nil) = %v", got)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("pct sorted its argument in place")
	}
}

func TestWithin(t *testing.T) {
	base := usage{rssKB: 1000, goroutines: 50}
	for _, tt := range []struct {
		u    usage
		want bool
	}{
		{usage{rssKB: 1100, goroutines: 55}, true},
		{usage{rssKB: 900, goroutines: 40}, true},
		{usage{rssKB: 1101, goroutines: 50}, false},
		{usage{rssKB: 1000, goroutines: 56}, false},
	} {
		if got := within(tt.u, base); got != tt.want {
			t.Errorf("within(%v, %v) = %v", tt.u, base, got)
		}
	}
}

func TestParsers(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\ttoolgate\nVmPeak:\t  9000 kB\nVmRSS:\t   73312 kB\nThreads:\t9\n"))
	if err != nil || rss != 73312 {
		t.Errorf("parseVmRSS = %d, %v", rss, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
	ps, ok := parseStat(42, []byte("42 (node (x) y) S 7 42 42 0 -1"))
	if !ok || ps.ppid != 7 || ps.pgid != 42 {
		t.Errorf("parseStat = %+v, %v", ps, ok)
	}
	text := "# HELP go_goroutines x\ngo_goroutines_extra 3\ngo_goroutines 47\n"
	if v, ok := metricValue(text, "go_goroutines"); !ok || v != 47 {
		t.Errorf("metricValue = %v, %v", v, ok)
	}
	ids := argIDs(json.RawMessage(`{"text": "soak-001-000002", "names": ["soak-seed", "other"], "n": 3}`))
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"soak-001-000002", "soak-seed"}) {
		t.Errorf("argIDs = %v", ids)
	}
}

func TestErrClass(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("calling tools/call: %w", &jsonrpc.Error{Code: -32602, Message: `unknown tool "x"`}), "not_found"},
		{fmt.Errorf("calling tools/call: %w", &jsonrpc.Error{Code: -32603, Message: "boom"}), "rpc_error"},
		{errors.New(`sending "tools/call": Unauthorized`), "unauthorized"},
		{fmt.Errorf("calling tools/call: %w", &jsonrpc.Error{Code: -32001, Message: "unauthorized: key expired"}), "unauthorized"},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), "no_answer"},
		{errors.New("connection reset by peer"), "transport"},
	}
	for _, tt := range tests {
		if got := errClass(tt.err); got != tt.want {
			t.Errorf("errClass(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
