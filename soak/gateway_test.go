//go:build unix

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/policy/apikey"
)

// Timeouts of the soak configuration. The chaos upstreams get a short call
// deadline so that a stalled one costs a client little, yet well above
// the latency tail of a busy 2-core machine (healthy calls reach a p99 of
// about 2 s there); Code Mode's timeout leaves room for one such call
// inside a script.
const (
	chaosCallTimeout = 3 * time.Second
	codeTimeout      = 6 * time.Second
	readHeaderLimit  = 2 * time.Second
	readBodyLimit    = 5 * time.Second
	maxBodyBytes     = 1 << 20
	rotationOverlap  = 10 * time.Second
)

// harness is the system under test: the gateway process, its upstreams and
// what the test knows about them.
type harness struct {
	t       *testing.T
	bin     string // toolgate
	up      string // testupstream
	dir     string
	cfgPath string
	audit   string
	memFile string

	gw    *e2etest.Proc
	base  string // http://127.0.0.1:PORT
	debug string // serve --debug-listen address: Go's profiles

	flakyCtl   string // control endpoint of the stdio upstream "flaky"
	remoteAddr string // listen address of the HTTP upstream "remote"
	remoteCtl  string // its control endpoint
	remoteMu   sync.Mutex
	remote     *e2etest.Proc

	pids *pidTracker
}

// variant chooses the filter of the server "steady": even variants show
// steady__fail, odd ones hide it. Reloads switch between them.
func (h *harness) config(variant int) string {
	steadyTools := `["echo", "fail"]`
	if variant%2 == 1 {
		steadyTools = `["echo"]`
	}
	return fmt.Sprintf(`{
	"dataDir": %[1]s,
	"audit": {"path": %[2]s, "logArguments": true},
	"callTimeout": "20s",
	"limits": {"maxRequestBodyBytes": %[3]d, "readHeaderTimeout": %[4]q, "readTimeout": %[5]q},
	"codeMode": {
		"enabled": true, "directTools": true, "timeout": %[6]d, "memoryLimitMB": 16,
		"maxToolCalls": 20, "maxOutputBytes": 65536, "maxConcurrentExecutions": 32
	},
	"mcpServers": {
		"steady": {"command": %[7]s, "args": ["-name", "steady"], "allowedTools": %[8]s},
		"everything": {"command": %[9]s, "args": [%[10]s, "stdio"], "allowedTools": ["echo"]},
		"memory": {"command": %[9]s, "args": [%[11]s], "env": {"MEMORY_FILE_PATH": %[12]s}, "allowedTools": ["open_nodes", "create_entities"]},
		"flaky": {"command": %[7]s, "args": ["-name", "flaky", "-control", %[13]s], "allowedTools": ["echo"], "denyResourcesGlob": ["*"], "timeout": %[14]q},
		"remote": {"url": %[15]s, "allowedTools": ["echo"], "denyResourcesGlob": ["*"], "timeout": %[14]q}
	}
}
`, js(h.dir), js(h.audit), maxBodyBytes, readHeaderLimit.String(), readBodyLimit.String(), codeTimeout.Milliseconds(),
		js(h.up), steadyTools, js(node(h.t)), js(e2etest.NPMFile(h.t, e2etest.ServerEverythingEntry)),
		js(e2etest.NPMFile(h.t, e2etest.ServerMemoryEntry)), js(h.memFile), js(strings.TrimPrefix(strings.TrimSuffix(h.flakyCtl, "/control"), "http://")),
		chaosCallTimeout.String(), js("http://"+h.remoteAddr+"/mcp"))
}

func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func node(t *testing.T) string { return e2etest.Node(t) }

// writeConfig writes the configuration of variant to the config file.
func (h *harness) writeConfig(variant int) {
	h.t.Helper()
	tmp := h.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(h.config(variant)), 0o600); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, h.cfgPath); err != nil {
		h.t.Fatal(err)
	}
}

func newHarness(t *testing.T) *harness {
	h := &harness{
		t:   t,
		bin: e2etest.BuildBinary(t, "./cmd/toolgate"),
		up:  e2etest.BuildBinary(t, "./internal/testupstream"),
		dir: t.TempDir(),
	}
	h.cfgPath = filepath.Join(h.dir, "toolgate.json")
	h.audit = filepath.Join(h.dir, "audit.jsonl")
	h.memFile = filepath.Join(h.dir, "memory.jsonl")
	h.flakyCtl = fmt.Sprintf("http://127.0.0.1:%d/control", e2etest.FreePort(t))
	h.remoteAddr = fmt.Sprintf("127.0.0.1:%d", e2etest.FreePort(t))
	h.debug = fmt.Sprintf("127.0.0.1:%d", e2etest.FreePort(t))
	h.remoteCtl = fmt.Sprintf("http://127.0.0.1:%d/control", e2etest.FreePort(t))
	return h
}

// startRemote starts the HTTP upstream "remote" on its fixed address. It
// may run on any goroutine: it reports failure instead of failing the test.
func (h *harness) startRemote() error {
	p := e2etest.StartProcess(h.t, e2etest.ProcOptions{
		Path: h.up,
		Args: []string{"-transport", "http", "-listen", h.remoteAddr, "-name", "remote",
			"-control", strings.TrimSuffix(strings.TrimPrefix(h.remoteCtl, "http://"), "/control")},
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Stdout(), "LISTENING") {
		if p.Exited() || time.Now().After(deadline) {
			p.Stop()
			return fmt.Errorf("the HTTP upstream did not start listening on %s: %s", h.remoteAddr, p.Stderr())
		}
		time.Sleep(20 * time.Millisecond) // poll until the deadline
	}
	h.remoteMu.Lock()
	h.remote = p
	h.remoteMu.Unlock()
	return nil
}

// stopRemote kills the HTTP upstream "remote" (SIGKILL, no goodbye).
func (h *harness) stopRemote() {
	h.remoteMu.Lock()
	p := h.remote
	h.remote = nil
	h.remoteMu.Unlock()
	if p != nil {
		_ = p.SignalGroup(syscall.SIGKILL)
		_, _ = p.Wait(10 * time.Second)
	}
}

var listeningLine = regexp.MustCompile(`toolgate listening on (https?://[0-9.:\[\]]+)/mcp`)

// startGateway starts `toolgate serve` on a free port.
func (h *harness) startGateway() {
	h.t.Helper()
	h.gw = e2etest.StartProcess(h.t, e2etest.ProcOptions{
		Path: h.bin,
		Args: []string{"serve", "-c", h.cfgPath, "--listen", "127.0.0.1:0", "--log-level", "warn", "--debug-listen", h.debug},
		Dir:  h.dir,
	})
	line := h.gw.WaitForLine(h.t, "toolgate listening on", 120*time.Second)
	m := listeningLine.FindStringSubmatch(line)
	if m == nil {
		h.t.Fatalf("cannot find the address in %q", line)
	}
	h.base = m[1]
	h.pids = newPIDTracker(h.gw.Pid())
}

// createKeys creates n API keys of the default project in the gateway's key
// store and returns them with their ids.
func (h *harness) createKeys(n int, name string) (keys, ids []string) {
	h.t.Helper()
	ctx := context.Background()
	store, err := apikey.OpenStore(ctx, filepath.Join(h.dir, "toolgate.db"))
	if err != nil {
		h.t.Fatalf("opening the key store: %v", err)
	}
	defer store.Close()
	for i := range n {
		plain, k, err := store.Create(ctx, "default", fmt.Sprintf("%s-%d", name, i), 0)
		if err != nil {
			h.t.Fatal(err)
		}
		keys, ids = append(keys, plain), append(ids, k.ID)
	}
	return keys, ids
}

// cli runs a toolgate subcommand against the soak configuration.
func (h *harness) cli(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.bin, append(args, "-c", h.cfgPath)...)
	cmd.Dir = h.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("toolgate %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// rotateKey runs `toolgate keys rotate ID --overlap 10s --json` and returns
// the new key and its id.
func (h *harness) rotateKey(ctx context.Context, id string) (key, newID string, err error) {
	out, err := h.cli(ctx, "keys", "rotate", id, "--overlap", rotationOverlap.String(), "--json")
	if err != nil {
		return "", "", err
	}
	var v struct {
		Key string `json:"key"`
		ID  string `json:"id"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Key == "" || v.ID == "" {
		return "", "", fmt.Errorf("keys rotate --json printed %q: %v", out, err)
	}
	return v.Key, v.ID, nil
}

// readyz returns the state of every upstream of the default project.
func (h *harness) readyz() (map[string]string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(h.base + "/readyz")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct {
		Projects map[string]struct {
			Upstreams map[string]struct {
				State string `json:"state"`
			} `json:"upstreams"`
		} `json:"projects"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, err
	}
	states := map[string]string{}
	for name, u := range v.Projects["default"].Upstreams {
		states[name] = u.State
	}
	return states, nil
}

// metricsText fetches /metrics.
func (h *harness) metricsText() (string, error) {
	b, err := h.get(h.base + "/metrics")
	return string(b), err
}

// heapProfile fetches the gateway's heap profile from its debug listener.
func (h *harness) heapProfile() ([]byte, error) {
	return h.get("http://" + h.debug + "/debug/pprof/heap")
}

func (h *harness) get(url string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	return b, err
}

// metricValue returns the value of an unlabelled series in Prometheus
// text.
func metricValue(text, name string) (float64, bool) {
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// usage is one sample of the gateway's footprint.
type usage struct {
	at         time.Time
	rssKB      int64
	goroutines int
}

func (u usage) String() string {
	return fmt.Sprintf("%s rss=%.1fMiB goroutines=%d", u.at.Format("15:04:05"), float64(u.rssKB)/1024, u.goroutines)
}

// sample reads the gateway's RSS (VmRSS of /proc/PID/status) and its
// goroutine count (go_goroutines of /metrics).
func (h *harness) sample() (usage, error) {
	u := usage{at: time.Now()}
	var err error
	if u.rssKB, err = rssKB(h.gw.Pid()); err != nil {
		return u, err
	}
	text, err := h.metricsText()
	if err != nil {
		return u, err
	}
	g, ok := metricValue(text, "go_goroutines")
	if !ok {
		return u, fmt.Errorf("/metrics has no go_goroutines")
	}
	u.goroutines = int(g)
	return u, nil
}

// rssKB reads VmRSS from /proc/PID/status.
func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no VmRSS line in /proc status")
}

// pidTracker remembers every child process of the gateway (its stdio
// upstreams) and their process groups, so that the test can check that none
// is left after shutdown.
type pidTracker struct {
	parent int
	mu     sync.Mutex
	seen   map[int]procInfo // pid -> info
}

type procInfo struct {
	pid, pgid int
	cmdline   string
}

func newPIDTracker(parent int) *pidTracker {
	return &pidTracker{parent: parent, seen: map[int]procInfo{}}
}

// scan records the gateway's current children and returns them.
func (p *pidTracker) scan() []procInfo {
	var cur []procInfo
	for _, pi := range listProcs() {
		if pi.ppid == p.parent {
			cur = append(cur, pi.procInfo)
		}
	}
	p.mu.Lock()
	for _, pi := range cur {
		p.seen[pi.pid] = pi
	}
	p.mu.Unlock()
	return cur
}

// find returns the live child whose command line contains substr.
func (p *pidTracker) find(substr string) (procInfo, bool) {
	for _, pi := range p.scan() {
		if strings.Contains(pi.cmdline, substr) {
			return pi, true
		}
	}
	return procInfo{}, false
}

// leftovers returns the live processes that are one of the recorded
// children or in one of their process groups.
func (p *pidTracker) leftovers() []procInfo {
	p.mu.Lock()
	pgids := map[int]bool{}
	pids := map[int]bool{}
	for _, pi := range p.seen {
		pgids[pi.pgid] = true
		pids[pi.pid] = true
	}
	p.mu.Unlock()
	var left []procInfo
	for _, pi := range listProcs() {
		if (pids[pi.pid] || pgids[pi.pgid]) && e2etest.ProcessAlive(pi.pid) {
			left = append(left, pi.procInfo)
		}
	}
	return left
}

// count returns how many distinct children were seen.
func (p *pidTracker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen)
}

type procStat struct {
	procInfo
	ppid int
}

// listProcs reads pid, parent, process group and command line of every
// process in /proc.
func listProcs() []procStat {
	entries, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		ps, ok := parseStat(pid, b)
		if !ok {
			continue
		}
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		ps.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
		out = append(out, ps)
	}
	return out
}

// parseStat reads the parent pid and process group from /proc/PID/stat:
// "pid (comm) state ppid pgrp ...", where comm may hold spaces and
// parentheses.
func parseStat(pid int, b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{procInfo: procInfo{pid: pid, pgid: pgid}, ppid: ppid}, true
}
