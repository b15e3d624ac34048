package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
)

// openAudit opens an audit log and closes it when the test ends.
func openAudit(t testing.TB, path string, opts *audit.Options) *audit.Log {
	t.Helper()
	a, err := audit.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// callEvent is the n-th test event: a tool call whose tool is "t<n>".
func callEvent(n int) *audit.Event {
	return &audit.Event{
		Type: audit.EventToolCall, Project: "default", KeyID: "abc123", ClientIP: "127.0.0.1",
		Server: "fs", Tool: "t" + strconv.Itoa(n), Decision: "allow", Outcome: "ok",
		LatencyMs: 1.5, ArgsBytes: 2, ArgsSHA256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
	}
}

// writeEvents writes callEvent(from) to callEvent(from+n-1).
func writeEvents(t testing.TB, a *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := a.Write(callEvent(i)); err != nil {
			t.Fatalf("write event %d: %v", i, err)
		}
	}
}

// readEvents reads the whole log at path.
func readEvents(t testing.TB, path string) ([]*audit.Event, audit.ReadReport) {
	t.Helper()
	var evs []*audit.Event
	rep, err := audit.Read(path, func(e *audit.Event) error {
		evs = append(evs, e)
		return nil
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return evs, rep
}

// toolNumbers returns the n of each event's tool "t<n>".
func toolNumbers(t testing.TB, evs []*audit.Event) []int {
	t.Helper()
	var ns []int
	for _, e := range evs {
		n, err := strconv.Atoi(strings.TrimPrefix(e.Tool, "t"))
		if err != nil {
			t.Fatalf("event with tool %q", e.Tool)
		}
		ns = append(ns, n)
	}
	return ns
}

func seq(from, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = from + i
	}
	return s
}

// mustVerify verifies the log at path and fails unless the chain is whole.
func mustVerify(t testing.TB, path string) audit.VerifyReport {
	t.Helper()
	rep, err := audit.Verify(path)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Broken != nil {
		t.Fatalf("Verify: broken link %s (expected %s, got %s)", rep.Broken, rep.Broken.Expected, rep.Broken.Got)
	}
	return rep
}

func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(string(b), "\n")
}

func writeLines(t testing.TB, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

func hashLine(line string) string {
	sum := sha256.Sum256([]byte(strings.TrimSuffix(line, "\n")))
	return hex.EncodeToString(sum[:])
}

func TestAuditEventTypesMatchConfig(t *testing.T) {
	if diff := cmp.Diff(config.EventTypes, audit.EventTypes); diff != "" {
		t.Errorf("audit.EventTypes differ from config.EventTypes (-config +audit):\n%s", diff)
	}
}

func TestAuditWriteAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "audit.jsonl")
	clock := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	var stdout bytes.Buffer
	a := openAudit(t, path, &audit.Options{Now: func() time.Time { return clock }, Stdout: &stdout})

	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	events := []*audit.Event{
		{Type: audit.EventAuthFailure, ClientIP: "10.0.0.9", Reason: "unknown key"},
		{Type: audit.EventToolCall, Project: "default", KeyID: "k1", ClientIP: "10.0.0.1", ExecutionID: "x1",
			Server: "github", Tool: "create_issue", Decision: "allow", Outcome: "error", Error: "boom",
			LatencyMs: audit.Millis(1500 * time.Microsecond), ResultBytes: 10},
		{Type: audit.EventToolDenied, Project: "default", KeyID: "k1", Server: "fs", Tool: "delete_file", Decision: "deny", Reason: "filtered"},
		{Type: audit.EventRateLimitHit, Project: "default", KeyID: "k1", Reason: "key"},
		{Type: audit.EventIPDenied, ClientIP: "192.0.2.1", Reason: "not in allowedIPs"},
		{Type: audit.EventCodeExecution, Time: at, Project: "default", KeyID: "k1", ExecutionID: "x1",
			DurationMs: 12.5, ToolCalls: 3, LimitsHit: []string{"timeout"}, Outcome: "limit"},
		{Type: audit.EventCodeFetch, ExecutionID: "x1", Method: "GET", Host: "example.com", Status: 200, Bytes: 512},
		{Type: audit.EventUpstreamError, Server: "github", Error: "EOF"},
		{Type: audit.EventUpstreamRestart, Server: "github"},
		{Type: audit.EventConfigReload, Changed: []string{"mcpServers.github", "rateLimit"}},
		{Type: audit.EventConfigReload, Reason: "mcpServers.x.url: missing"},
		{Type: audit.EventKeyCreated, Project: "team", KeyID: "k2", KeyName: "ci"},
		{Type: audit.EventKeyRotated, Project: "team", KeyID: "k2", NewKeyID: "k3", KeyName: "ci"},
		{Type: audit.EventKeyRevoked, Project: "team", KeyID: "k2"},
		{Type: audit.EventToolsChanged, Server: "github", Tool: "create_issue", OldHash: "aa", NewHash: "bb",
			Extra: map[string]any{"quarantined": true}},
	}
	for _, e := range events {
		if err := a.Write(e); err != nil {
			t.Fatalf("write %s: %v", e.Type, err)
		}
	}
	// The lines are in the file as soon as Write returns, before Close.
	got, rep := readEvents(t, path)
	if rep.Lines != len(events) || len(rep.Torn) != 0 || len(rep.Files) != 1 {
		t.Errorf("report = %+v", rep)
	}
	var want []*audit.Event
	for _, e := range events {
		w := *e
		if w.Time.IsZero() {
			w.Time = clock
		}
		w.Time = w.Time.UTC()
		want = append(want, &w)
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(audit.Event{}, "Prev")); diff != "" {
		t.Errorf("events read back (-want +got):\n%s", diff)
	}

	lines := readLines(t, path)
	if !strings.HasPrefix(lines[0], `{"time":"2026-03-01T11:00:00.123456789Z","type":"auth.failure","clientIp":"10.0.0.9","reason":"unknown key","prev":"`+audit.Genesis+`"}`) {
		t.Errorf("first line = %s", lines[0])
	}
	if want := `"executionId":"x1","server":"github","tool":"create_issue","decision":"allow","outcome":"error","error":"boom","latencyMs":1.5,"resultBytes":10,`; !strings.Contains(lines[1], want) {
		t.Errorf("second line = %s, want it to contain %s", lines[1], want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Prev != hashLine(lines[i-1]) {
			t.Errorf("line %d: prev %s, want the hash of line %d", i+1, got[i].Prev, i)
		}
	}
	if stdout.String() != strings.Join(lines, "") {
		t.Errorf("stdout copy differs from the file:\n%s", stdout.String())
	}

	v := mustVerify(t, path)
	if v.Lines != len(events) || v.Start != audit.Genesis || v.Head != hashLine(lines[len(events)-1]) {
		t.Errorf("verify report = %+v", v)
	}
}

func TestAuditWriteChecks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a := openAudit(t, path, nil)
	for _, e := range []*audit.Event{nil, {}, {Type: "tool.cal"}} {
		if err := a.Write(e); err == nil {
			t.Errorf("Write(%+v) = nil, want an error", e)
		}
	}
	if err := a.Healthy(); err != nil {
		t.Errorf("invalid events made the log unhealthy: %v", err)
	}

	// Arguments: kept only by a log opened with LogArguments; the hash
	// and size always.
	e := &audit.Event{Type: audit.EventToolCall, Tool: "read", Prev: "ignored"}
	e.SetArguments(json.RawMessage(`{"path": "/etc/passwd"}`))
	before := *e
	if err := a.Write(e); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&before, e); diff != "" {
		t.Errorf("Write modified the event:\n%s", diff)
	}
	withArgs := filepath.Join(t.TempDir(), "audit.jsonl")
	b := openAudit(t, withArgs, &audit.Options{LogArguments: true})
	if err := b.Write(e); err != nil {
		t.Fatal(err)
	}
	huge := &audit.Event{Type: audit.EventToolCall, Tool: "huge"}
	huge.SetArguments(json.RawMessage(`"` + strings.Repeat("x", audit.MaxLineBytes) + `"`))
	if err := b.Write(huge); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(`{"path": "/etc/passwd"}`))
	for _, c := range []struct {
		path  string
		args  []string
		hash  string
		bytes int64
	}{
		{path, []string{""}, hex.EncodeToString(sum[:]), 23},
		{withArgs, []string{`{"path":"/etc/passwd"}`, ""}, hex.EncodeToString(sum[:]), 23},
	} {
		evs, _ := readEvents(t, c.path)
		for i, e := range evs {
			if string(e.Arguments) != c.args[i] {
				t.Errorf("%s: event %d: arguments %q, want %q", c.path, i, e.Arguments, c.args[i])
			}
		}
		if evs[0].ArgsSHA256 != c.hash || evs[0].ArgsBytes != c.bytes || evs[0].Prev != audit.Genesis {
			t.Errorf("%s: %+v", c.path, evs[0])
		}
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(callEvent(1)); err == nil || a.Healthy() == nil {
		t.Errorf("after Close: Write = %v, Healthy = %v; want errors", err, a.Healthy())
	}
	if _, err := audit.Open(path, &audit.Options{Fsync: "sometimes"}); err == nil {
		t.Error("fsync \"sometimes\" accepted")
	}
}

func TestAuditReopenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	for i := range 3 {
		a, err := audit.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		writeEvents(t, a, 10*i, 10)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if v := mustVerify(t, path); v.Lines != 30 || v.Start != audit.Genesis {
		t.Errorf("verify report = %+v", v)
	}
}

// TestAuditTamper changes a good log in the ways an attacker might, and
// expects Verify to name the line where the chain breaks.
func TestAuditTamper(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	a := openAudit(t, good, nil)
	writeEvents(t, a, 1, 10)
	a.Close()
	orig := readLines(t, good) // 10 lines and a final ""

	tests := []struct {
		name   string
		change func(l []string) []string
		line   int // where the chain breaks; 0: it does not
		start  string
	}{
		{"unchanged", func(l []string) []string { return l }, 0, audit.Genesis},
		{"line 5 removed", func(l []string) []string { return append(l[:4:4], l[5:]...) }, 5, ""},
		{"line 5 edited", func(l []string) []string {
			l[4] = strings.Replace(l[4], `"tool":"t5"`, `"tool":"t6"`, 1)
			return l
		}, 6, ""},
		{"line 5 edited, prev kept valid", func(l []string) []string {
			l[4] = strings.Replace(l[4], `"outcome":"ok"`, `"outcome":"error"`, 1)
			return l
		}, 6, ""},
		{"lines 5 and 6 swapped", func(l []string) []string {
			l[4], l[5] = l[5], l[4]
			return l
		}, 5, ""},
		{"line inserted", func(l []string) []string {
			fake := `{"time":"2026-01-01T00:00:00Z","type":"tool.call","prev":"` + hashLine(l[2]) + `"}` + "\n"
			return append(l[:3:3], append([]string{fake}, l[3:]...)...)
		}, 5, ""},
		{"garbage line", func(l []string) []string {
			l[6] = "not json\n"
			return l
		}, 7, ""},
		{"prev removed", func(l []string) []string {
			l[2] = l[2][:strings.Index(l[2], `,"prev"`)] + "}\n"
			return l
		}, 3, ""},
		{"first line removed", func(l []string) []string { return l[1:] }, 0, hashLine(orig[0])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			lines := tt.change(append([]string(nil), orig...))
			writeLines(t, path, lines)
			rep, err := audit.Verify(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.line == 0 {
				if rep.Broken != nil {
					t.Fatalf("broken link reported: %s", rep.Broken)
				}
				if rep.Start != tt.start {
					t.Errorf("start = %s, want %s", rep.Start, tt.start)
				}
				return
			}
			if rep.Broken == nil {
				t.Fatalf("no broken link reported; want line %d", tt.line)
			}
			b := rep.Broken
			if b.File != path || b.Line != tt.line || rep.Lines != tt.line-1 {
				t.Errorf("broken link at %s:%d after %d good lines; want %s:%d", b.File, b.Line, rep.Lines, path, tt.line)
			}
			if want := hashLine(lines[tt.line-2]); b.Expected != want {
				t.Errorf("expected = %s, want the hash of the line before, %s", b.Expected, want)
			}
			var got struct{ Prev string }
			json.Unmarshal([]byte(lines[tt.line-1]), &got)
			if b.Got != got.Prev || b.Reason == "" {
				t.Errorf("got = %q, reason %q; want %q", b.Got, b.Reason, got.Prev)
			}
		})
	}
}

func TestAuditTornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a := openAudit(t, path, nil)
	writeEvents(t, a, 0, 3)
	a.Close()
	const torn = `{"time":"2026-03-01T10:00:00Z","type":"tool.ca`
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(torn)
	f.Close()

	evs, rep := readEvents(t, path)
	if !cmp.Equal(toolNumbers(t, evs), seq(0, 3)) || !cmp.Equal(rep.Torn, []string{path + ":4"}) {
		t.Errorf("read %v, report %+v", toolNumbers(t, evs), rep)
	}
	v := mustVerify(t, path)
	if v.Lines != 3 || !cmp.Equal(v.Torn, []string{path + ":4"}) {
		t.Errorf("verify report = %+v", v)
	}

	// Opening the log cuts the torn line and continues the chain from
	// the last complete one.
	a = openAudit(t, path, nil)
	if got := a.Stats().TruncatedBytes; got != int64(len(torn)) {
		t.Errorf("TruncatedBytes = %d, want %d", got, len(torn))
	}
	writeEvents(t, a, 3, 2)
	a.Close()
	evs, rep = readEvents(t, path)
	if !cmp.Equal(toolNumbers(t, evs), seq(0, 5)) || len(rep.Torn) != 0 {
		t.Errorf("read %v, report %+v", toolNumbers(t, evs), rep)
	}
	if v := mustVerify(t, path); v.Lines != 5 || len(v.Torn) != 0 {
		t.Errorf("verify report = %+v", v)
	}

	// A file holding only a torn line starts over.
	only := filepath.Join(t.TempDir(), "audit.jsonl")
	os.WriteFile(only, []byte(torn), 0o600)
	if _, rep := readEvents(t, only); rep.Lines != 0 || len(rep.Torn) != 1 {
		t.Errorf("report = %+v", rep)
	}
	a = openAudit(t, only, nil)
	writeEvents(t, a, 0, 1)
	a.Close()
	if v := mustVerify(t, only); v.Lines != 1 || v.Start != audit.Genesis {
		t.Errorf("verify report = %+v", v)
	}
}

func TestAuditMalformedLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a := openAudit(t, path, nil)
	writeEvents(t, a, 0, 3)
	a.Close()
	lines := readLines(t, path)
	lines[1] = "[1]\n"
	writeLines(t, path, lines)
	_, err := audit.Read(path, func(*audit.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("Read = %v, want an error naming %s:2", err, path)
	}

	stop := errors.New("stop")
	n := 0
	if _, err := audit.Read(path, func(*audit.Event) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Read = %v after %d events, want the error of fn after 1", err, n)
	}

	missing := filepath.Join(t.TempDir(), "none", "audit.jsonl")
	if _, err := audit.Read(missing, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of no log = %v, want fs.ErrNotExist", err)
	}
	if _, err := audit.Verify(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Verify of no log = %v, want fs.ErrNotExist", err)
	}
}

func TestAuditRotation(t *testing.T) {
	const maxSize = 2000
	for _, tt := range []struct {
		name     string
		maxFiles int
		retain   time.Duration
		wantAll  bool // every event is still there
		wantKept bool // some files are kept past maxFiles
	}{
		{"all kept", 100, 0, true, false},
		{"oldest dropped", 3, time.Nanosecond, false, false},
		{"young files outlive maxFiles", 3, 0, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			var mu sync.Mutex
			var reported []audit.RetentionStatus
			opts := &audit.Options{MaxSizeBytes: maxSize, MaxFiles: tt.maxFiles, RetainAtLeast: tt.retain,
				OnRetention: func(st audit.RetentionStatus) {
					mu.Lock()
					defer mu.Unlock()
					reported = append(reported, st)
				}}
			a := openAudit(t, path, opts)
			writeEvents(t, a, 0, 60)
			// Reopening continues the chain of the rotated files.
			a.Close()
			a = openAudit(t, path, opts)
			writeEvents(t, a, 60, 20)
			kept := a.Retention()
			a.Close()

			rotations := 0
			for n := 1; ; n++ {
				fi, err := os.Stat(fmt.Sprintf("%s.%d", path, n))
				if err != nil {
					break
				}
				if fi.Size() > maxSize {
					t.Errorf("%s.%d has %d bytes, more than %d", path, n, fi.Size(), maxSize)
				}
				rotations++
			}
			evs, rep := readEvents(t, path)
			var calls []*audit.Event
			retentions := 0
			for _, e := range evs {
				if e.Type == audit.EventAuditRetention {
					retentions++
					continue
				}
				calls = append(calls, e)
			}
			nums := toolNumbers(t, calls)
			v := mustVerify(t, path)
			if len(rep.Files) != rotations+1 || rep.Files[len(rep.Files)-1] != path {
				t.Errorf("files read: %v", rep.Files)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reported) == 0 {
				t.Errorf("OnRetention was not called")
			}
			if tt.wantKept {
				if kept.Over == 0 || kept.Files != rotations || kept.MaxFiles != tt.maxFiles || kept.Oldest.IsZero() || retentions == 0 {
					t.Errorf("retention %+v after %d rotations, %d audit.retention events", kept, rotations, retentions)
				}
				if last := reported[len(reported)-1]; last != kept {
					t.Errorf("OnRetention got %+v, Retention says %+v", last, kept)
				}
			} else if kept.Over != 0 || retentions != 0 {
				t.Errorf("retention %+v, %d audit.retention events; want none kept past maxFiles", kept, retentions)
			}
			if tt.wantAll {
				if rotations < 5 {
					t.Fatalf("%d rotations, want more", rotations)
				}
				if !cmp.Equal(nums, seq(0, 80)) || v.Start != audit.Genesis {
					t.Errorf("read %v; verify start %s", nums, v.Start)
				}
				return
			}
			if rotations != tt.maxFiles {
				t.Errorf("%d rotated files kept, want %d", rotations, tt.maxFiles)
			}
			if len(nums) == 0 || !cmp.Equal(nums, seq(nums[0], 80-nums[0])) || nums[0] == 0 {
				t.Errorf("read %v, want the newest events in order", nums)
			}
			if v.Start == audit.Genesis || v.Lines != len(nums) {
				t.Errorf("verify report = %+v", v)
			}
		})
	}

	// A crash between renaming the file and writing the new one's first
	// line leaves path.1 and no path: the chain continues from path.1.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a := openAudit(t, path, nil)
	writeEvents(t, a, 0, 5)
	a.Close()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	a = openAudit(t, path, nil)
	writeEvents(t, a, 5, 5)
	a.Close()
	if v := mustVerify(t, path); v.Lines != 10 || v.Start != audit.Genesis {
		t.Errorf("verify report = %+v", v)
	}

	// A removed middle file breaks the chain at the first line after it.
	path = filepath.Join(t.TempDir(), "audit.jsonl")
	a = openAudit(t, path, &audit.Options{MaxSizeBytes: maxSize})
	writeEvents(t, a, 0, 60)
	a.Close()
	os.Remove(path + ".2")
	rep, err := audit.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Broken == nil || rep.Broken.File != path+".1" || rep.Broken.Line != 1 {
		t.Errorf("broken link = %+v, want %s.1:1", rep.Broken, path)
	}
}

func TestAuditConcurrentWriters(t *testing.T) {
	for _, mode := range []string{"batch", "always"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			a := openAudit(t, path, &audit.Options{Fsync: mode, MaxSizeBytes: 20000, MaxFiles: 1000, FsyncInterval: time.Millisecond})
			const writers, each = 8, 150
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						if err := a.Write(callEvent(w*each + i)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			evs, _ := readEvents(t, path)
			seen := map[int]bool{}
			for _, n := range toolNumbers(t, evs) {
				if seen[n] {
					t.Errorf("event %d twice", n)
				}
				seen[n] = true
			}
			if len(seen) != writers*each {
				t.Errorf("%d events, want %d", len(seen), writers*each)
			}
			if v := mustVerify(t, path); v.Lines != writers*each {
				t.Errorf("verified %d lines", v.Lines)
			}
		})
	}
}

func TestAuditFsyncModes(t *testing.T) {
	t.Run("always", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		a := openAudit(t, path, &audit.Options{Fsync: "always"})
		for i := range 5 {
			writeEvents(t, a, i, 1)
			if got := a.Stats().Syncs; got != int64(i+1) {
				t.Errorf("after %d writes, %d fsyncs", i+1, got)
			}
		}
	})
	t.Run("batch", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		a := openAudit(t, path, &audit.Options{Fsync: "batch", FsyncInterval: 5 * time.Millisecond})
		writeEvents(t, a, 0, 5)
		// Written (readable) at once, synced by the background goroutine.
		if evs, _ := readEvents(t, path); len(evs) != 5 {
			t.Errorf("%d events readable after Write, want 5", len(evs))
		}
		waitFor(t, "a background fsync", func() bool { return a.Stats().Syncs >= 1 })
		// With nothing written, the goroutine stops syncing.
		n := a.Stats().Syncs
		waitFor(t, "a quiet interval", func() bool { return a.Stats().Syncs == n })
		writeEvents(t, a, 5, 1)
		waitFor(t, "another background fsync", func() bool { return a.Stats().Syncs > n })
		if err := a.Sync(); err != nil {
			t.Error(err)
		}
	})
}

// waitFor polls cond until it holds, for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestAuditUnhealthy makes the log's file impossible to write and
// expects Write and Healthy to fail until it is possible again.
func TestAuditUnhealthy(t *testing.T) {
	tests := []struct {
		name          string
		root          bool // whether the test works as root
		break_, mend_ func(t *testing.T, dir, path string)
	}{
		{
			name: "folder replaced by a file",
			root: true,
			break_: func(t *testing.T, dir, path string) {
				if err := os.RemoveAll(filepath.Dir(path)); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Dir(path), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			mend_: func(t *testing.T, dir, path string) {
				if err := os.Remove(filepath.Dir(path)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "file removed, folder read-only",
			break_: func(t *testing.T, dir, path string) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(filepath.Dir(path), 0o500); err != nil {
					t.Fatal(err)
				}
			},
			mend_: func(t *testing.T, dir, path string) {
				if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.root && os.Geteuid() == 0 {
				t.Skip("permissions do not stop root")
			}
			for _, mode := range []string{"batch", "always"} {
				t.Run(mode, func(t *testing.T) {
					dir := t.TempDir()
					path := filepath.Join(dir, "logs", "audit.jsonl")
					var reported atomic.Int32
					a := openAudit(t, path, &audit.Options{Fsync: mode, OnWriteError: func(error) { reported.Add(1) }})
					writeEvents(t, a, 0, 3)
					if err := a.Healthy(); err != nil {
						t.Fatal(err)
					}

					tt.break_(t, dir, path)
					t.Cleanup(func() { os.Chmod(filepath.Dir(path), 0o700) })
					for i := range 3 {
						err := a.Write(callEvent(3 + i))
						if err == nil {
							t.Fatalf("write %d to a broken log succeeded", i)
						}
						if !strings.Contains(err.Error(), "audit log") {
							t.Errorf("error %q does not say what failed", err)
						}
						if h := a.Healthy(); h == nil {
							t.Errorf("Healthy = nil after a failed write")
						}
					}
					if n := reported.Load(); n != 1 {
						t.Errorf("OnWriteError called %d times, want once", n)
					}

					tt.mend_(t, dir, path)
					writeEvents(t, a, 10, 2)
					if err := a.Healthy(); err != nil {
						t.Errorf("Healthy after recovery: %v", err)
					}
					a.Close()
					// The new file continues the chain of the lost one.
					evs, _ := readEvents(t, path)
					if !cmp.Equal(toolNumbers(t, evs), []int{10, 11}) {
						t.Errorf("new file holds %v", toolNumbers(t, evs))
					}
					if v := mustVerify(t, path); v.Start == audit.Genesis {
						t.Errorf("the new file starts a new chain")
					}
				})
			}
		})
	}

	// A path under a regular file cannot even be opened.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := audit.Open(filepath.Join(file, "audit.jsonl"), nil); err == nil {
		t.Error("Open under a regular file succeeded")
	}
}

// BenchmarkAuditWrite measures one Write of a typical tool.call event.
func BenchmarkAuditWrite(b *testing.B) {
	for _, mode := range []string{"batch", "always"} {
		ev := callEvent(1)
		b.Run(mode, func(b *testing.B) {
			a := openAudit(b, filepath.Join(b.TempDir(), "audit.jsonl"), &audit.Options{Fsync: mode})
			b.ReportAllocs()
			for b.Loop() {
				if err := a.Write(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode+"-parallel", func(b *testing.B) {
			a := openAudit(b, filepath.Join(b.TempDir(), "audit.jsonl"), &audit.Options{Fsync: mode})
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := a.Write(ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "audit")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.jsonl")

	log, err := audit.Open(path, &audit.Options{Fsync: "always"})
	if err != nil {
		panic(err)
	}
	ev := &audit.Event{Type: audit.EventToolCall, Project: "default", KeyID: "k1",
		Server: "filesystem", Tool: "read_file", Decision: "allow", Outcome: "ok"}
	ev.SetArguments([]byte(`{"path":"/safe/a.txt"}`))
	if err := log.Write(ev); err != nil {
		panic(err) // the gateway refuses the call: it cannot be audited
	}
	log.Write(&audit.Event{Type: audit.EventToolDenied, Project: "default", KeyID: "k1",
		Server: "filesystem", Tool: "delete_file", Decision: "deny", Reason: "filtered"})
	log.Close()

	audit.Read(path, func(e *audit.Event) error {
		fmt.Println(e.Type, e.Server+"/"+e.Tool, e.Decision, e.ArgsBytes)
		return nil
	})
	rep, err := audit.Verify(path)
	fmt.Println(rep.OK(), rep.Lines, rep.Start == audit.Genesis, err)
	// Output:
	// tool.call filesystem/read_file allow 22
	// tool.denied filesystem/delete_file deny 0
	// true 2 true <nil>
}

// hostileEvent has every field filled past its cap with text that takes
// the most room in JSON.
func hostileEvent(typ string, n int) *audit.Event {
	big := strings.Repeat("<\x01\xff\u2028", n/8+1)
	list := make([]string, 200)
	for i := range list {
		list[i] = big[:min(len(big), 300)]
	}
	return &audit.Event{
		Time: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), Type: typ,
		Project: big, KeyID: big, Subject: big, ClientIP: big, ExecutionID: big, Server: big, Tool: big,
		Decision: big, Outcome: big, Reason: big, Error: big, LatencyMs: math.NaN(),
		ArgsBytes: math.MaxInt64, ResultBytes: math.MinInt64, ArgsSHA256: big,
		DurationMs: math.Inf(1), ToolCalls: math.MinInt, LimitsHit: list, Method: big, Host: big,
		Status: math.MinInt, Bytes: math.MinInt64, Changed: list, KeyName: big, NewKeyID: big,
		OldHash: big, NewHash: big, Extra: map[string]any{"big": big},
		Clipped: map[string]audit.Clipped{"forged": {Bytes: 1}},
	}
}

// Every event is written, however large or odd its values, within
// MaxAuditEventBytes, and what was cut keeps its length and SHA-256.
func TestAuditEventCaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a := openAudit(t, path, &audit.Options{LogArguments: true})
	const size = 8 << 20
	ev := hostileEvent(audit.EventToolDenied, size)
	ev.Tool = strings.Repeat("up__secret_admin \u2028<", size/20) // valid UTF-8, to compare the prefix
	ev.SetArguments(json.RawMessage(`"` + strings.Repeat("<", audit.MaxArgumentsBytes) + `"`))
	fits := &audit.Event{Type: audit.EventToolCall, Tool: "fits"}
	fits.SetArguments(json.RawMessage(`{"text":"` + strings.Repeat("x", audit.MaxArgumentsBytes-20) + `"}`))
	odd := &audit.Event{Type: audit.EventToolCall, Tool: "odd", Extra: map[string]any{"c": make(chan int)}}
	odd.SetArguments(json.RawMessage(`{not json`))
	// A script's refused call of a made-up tool with an 8.4 MB name: the
	// name is in tool and in the error text.
	name := "up__secret_admin" + strings.Repeat(" ", 8400000)
	refused := &audit.Event{Type: audit.EventToolDenied, Project: "default", KeyID: "abcdefghijkl", ClientIP: "127.0.0.1",
		ExecutionID: "x0123456789abcdef", Tool: name, Decision: "deny", Outcome: "not_found", Reason: "unknown or filtered tool",
		Error: fmt.Sprintf("unknown tool %q", name), LatencyMs: 0.123}
	refused.SetArguments(json.RawMessage(`{}`))
	events := []*audit.Event{ev, fits, odd, hostileEvent(audit.EventCodeExecution, 1<<10), refused}
	for _, e := range events {
		if err := a.Write(e); err != nil {
			t.Fatalf("Write(%.40s): %v", e.Tool, err)
		}
	}
	a.Close()
	lines := readLines(t, path)
	for i, l := range lines[:len(lines)-1] {
		limit := audit.MaxEventBytes
		if i == 1 {
			limit += audit.MaxArgumentsBytes
		}
		if len(l) > limit {
			t.Errorf("line %d has %d bytes, more than %d", i+1, len(l), limit)
		}
		t.Logf("%s (tool %.20q): a line of %d bytes", events[i].Type, events[i].Tool, len(l))
	}
	evs, _ := readEvents(t, path)
	got := evs[0]
	full := ev.Tool
	sum := sha256.Sum256([]byte(full))
	if c := got.Clipped["tool"]; c.Bytes != int64(len(full)) || c.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("clipped tool = %+v, want %d bytes and its SHA-256", c, len(full))
	}
	if want := fmt.Sprintf("…[%d bytes]", len(full)); !strings.HasSuffix(got.Tool, want) || !strings.HasPrefix(full, strings.TrimSuffix(got.Tool, want)) {
		t.Errorf("tool = %.60q…, want a prefix of the name and %q", got.Tool, want)
	}
	for _, name := range []string{"project", "keyId", "subject", "error", "reason", "host", "limitsHit", "changed", "extra"} {
		if _, ok := got.Clipped[name]; !ok {
			t.Errorf("%s not in clipped: %v", name, got.Clipped)
		}
	}
	if _, ok := got.Clipped["forged"]; ok || got.Arguments != nil || got.ArgsSHA256 == "" || got.Time.Year() != time.Now().Year() {
		t.Errorf("event = clipped %v, arguments %.20q, time %v", got.Clipped, got.Arguments, got.Time)
	}
	if len(evs[1].Arguments) == 0 || evs[2].Arguments != nil || evs[2].Extra != nil || evs[2].Clipped["extra"].Note == "" {
		t.Errorf("arguments that fit were dropped, or odd values kept: %.40q %q %v", evs[1].Arguments, evs[2].Arguments, evs[2].Clipped)
	}
	mustVerify(t, path)
}

// A file past MaxFiles is removed once it is older than RetainAtLeast.
func TestAuditRetentionAges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	a := openAudit(t, path, &audit.Options{MaxSizeBytes: 2000, MaxFiles: 2, RetainAtLeast: time.Hour, Now: now})
	writeEvents(t, a, 0, 60)
	if st := a.Retention(); st.Over == 0 || st.Files != st.Over+2 {
		t.Fatalf("retention after a burst = %+v, want files kept past MaxFiles", st)
	}
	clock.Add(int64(2 * time.Hour))
	writeEvents(t, a, 60, 10)
	if st := a.Retention(); st.Over != 0 || st.Files != 2 {
		t.Errorf("retention once the files are old = %+v, want 2 files", st)
	}
	a.Close()
	evs, _ := readEvents(t, path)
	if evs[len(evs)-1].Tool != "t69" {
		t.Errorf("last event %+v", evs[len(evs)-1])
	}
	if v := mustVerify(t, path); v.Start == audit.Genesis {
		t.Errorf("nothing was removed: %+v", v)
	}
}

// RecordedKeyChanges finds the key changes written since a time, across
// rotated files and lines longer than its read size, and no older ones.
func TestRecordedKeyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if got, err := audit.RecordedKeyChanges(path, time.Time{}); err != nil || len(got) != 0 {
		t.Fatalf("a log without files: %v, %v", got, err)
	}
	a := openAudit(t, path, &audit.Options{MaxSizeBytes: 300 << 10, LogArguments: true})
	t0 := time.Now().Add(-time.Hour)
	write := func(e *audit.Event) {
		t.Helper()
		if err := a.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	long := func(n int) *audit.Event {
		e := callEvent(n)
		e.SetArguments(json.RawMessage(`"` + strings.Repeat("a", 60<<10) + `"`))
		return e
	}
	write(&audit.Event{Type: audit.EventKeyCreated, KeyID: "old", Time: t0})
	write(&audit.Event{Type: audit.EventToolCall, Tool: "before", Time: t0.Add(time.Minute)})
	since := t0.Add(30 * time.Minute)
	write(&audit.Event{Type: audit.EventKeyCreated, KeyID: "k1", Time: since.Add(time.Second)})
	for i := range 10 {
		write(long(i)) // several rotations, lines across read chunks
	}
	write(&audit.Event{Type: audit.EventKeyRotated, KeyID: "k1", NewKeyID: "k2", Time: since.Add(2 * time.Second)})
	write(long(10))
	a.Close()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2020-01-01T00:00:00Z","type":"key.rev`) // torn
	f.Close()
	if _, err := os.Stat(path + ".2"); err != nil {
		t.Fatalf("no rotation happened: %v", err)
	}
	got, err := audit.RecordedKeyChanges(path, since)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"key.created k1": true, "key.rotated k1": true}
	if !cmp.Equal(got, want) {
		t.Errorf("since %v: %v, want %v", since, got, want)
	}
	got, err = audit.RecordedKeyChanges(path, time.Time{})
	if err != nil || !got["key.created old"] || len(got) != 3 {
		t.Errorf("since the beginning: %v, %v", got, err)
	}
}
