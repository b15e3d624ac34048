//go:build unix

package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/mcpclient"
)

// seedEntity is created in server-memory before the load starts; reads of
// it must find it.
const seedEntity = "soak-seed"

// Kinds of requests the clients send. Direct calls are named by the tool.
const (
	kSteady     = "steady__echo"     // Go stdio upstream, never faulted
	kEverything = "everything__echo" // server-everything over stdio, never faulted
	kMemory     = "memory__open_nodes"
	kFlaky      = "flaky__echo"  // Go stdio upstream under faults
	kRemote     = "remote__echo" // Go HTTP upstream under faults
	kToggled    = "steady__fail" // shown or hidden by the reloads
	kCode       = "execute_code"
	kHostile    = "execute_code/hostile"
	kConnect    = "connect"
)

// healthy are the direct calls to upstreams that no fault touches; their
// latency is compared between the calm phase and the chaos.
var healthy = map[string]bool{kSteady: true, kEverything: true}

// faulted maps the direct calls to upstreams under faults to the upstream.
var faulted = map[string]string{kMemory: "memory", kFlaky: "flaky", kRemote: "remote"}

type weighted struct {
	kind   string
	weight int
}

var mix = []weighted{
	{kSteady, 24}, {kEverything, 12}, {kMemory, 8}, {kFlaky, 12}, {kRemote, 10},
	{kToggled, 3}, {kCode, 18},
}

// hostilePerMille is the share of requests, during the chaos, that are
// hostile scripts. A third of them (infinite loop, output flood) burn a
// core for the whole Code Mode timeout; at 3 per mille of about 90
// requests a second they take about half of one of the two cores.
const hostilePerMille = 3

// hostileScript is a script from the adversarial suite and the answer it
// must get: an error naming the limit (or, for the promise that never
// settles, saying so).
type hostileScript struct {
	name, code string
	limits     []string // accepted values of error.limit
	message    string   // or a substring of error.message
}

var hostileScripts = []hostileScript{
	{name: "infinite loop", code: "for (;;) {}", limits: []string{"timeout"}},
	{name: "memory bomb", code: "const a = []; for (let i = 0; ; i++) a.push('x'.repeat(1 << 20) + i)", limits: []string{"memoryLimitMB"}},
	{name: "output flood", code: "for (;;) console.log('x'.repeat(1000))", limits: []string{"timeout", "maxOutputBytes"}},
	{name: "call storm", code: "await Promise.all(Array.from({length: 1000}, (_, i) => tools.steady.echo({text: 'soak-storm-' + i})))", limits: []string{"maxToolCalls"}},
	{name: "never-settling promise", code: "await new Promise(() => {})", message: "never settle"},
	{name: "deep recursion", code: "function f(n) { return f(n + 1) + 1 } return f(0)", limits: []string{"maxStackKB"}},
}

// answered is a call the gateway answered, to be found in the audit log.
type answered struct {
	id, tool, keyID string
	ok              bool   // the client saw a successful result
	seen            string // what it saw, when it was not a success
}

// tally collects what the clients saw.
type tally struct {
	mu        sync.Mutex
	total     map[string]int
	right     map[string]int
	excused   map[string]map[string]int // kind -> reason -> count
	wrong     map[string]int
	wrongText []string
	latency   map[string][]time.Duration // phase -> latencies of right answers from healthy upstreams
	calls     []answered
	notFound  map[string]int // keyID|tool -> answers "unknown tool"
	execs     map[string]int // keyID|outcome|limit -> executions
	busy      int
	switches  int // key changes after a rotation
}

func newTally() *tally {
	return &tally{
		total: map[string]int{}, right: map[string]int{}, excused: map[string]map[string]int{},
		wrong: map[string]int{}, latency: map[string][]time.Duration{}, notFound: map[string]int{}, execs: map[string]int{},
	}
}

func (t *tally) verdict(kind string, ok bool, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total[kind]++
	switch {
	case ok && reason == "":
		t.right[kind]++
	case ok:
		if t.excused[kind] == nil {
			t.excused[kind] = map[string]int{}
		}
		t.excused[kind][reason]++
	default:
		t.wrong[kind]++
		if len(t.wrongText) < 40 {
			t.wrongText = append(t.wrongText, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), kind, reason))
		}
	}
}

// sharedTransport carries every client's requests; its pool is large
// enough for all sessions.
var sharedTransport = &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second}

// client is one MCP client with its own API key.
type client struct {
	idx     int
	h       *harness
	rng     *rand.Rand
	tally   *tally
	windows *faultWindows
	phase   *atomic.Value // "warmup", "calm", "chaos"

	mu         sync.Mutex
	key, keyID string
	pendKey    string // a rotated successor not yet in use
	pendID     string
	switchAt   time.Time            // when to start using it
	expires    map[string]time.Time // id of a rotated key -> when it stops working

	cs  *mcp.ClientSession
	seq int
}

func (c *client) currentKeyID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pendID != "" {
		return c.pendID
	}
	return c.keyID
}

// rotated hands the client the successor of its key oldID, which stops
// working after the overlap.
func (c *client) rotated(oldID, key, id string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expires == nil {
		c.expires = map[string]time.Time{}
	}
	c.expires[oldID] = at.Add(rotationOverlap)
	c.pendKey, c.pendID = key, id
	c.switchAt = time.Now().Add(keyPropagation)
}

// keyPropagation is how long a client waits before using a rotated key:
// the gateway sees keys made by the CLI within about 2 s (docs/security.md, "API
// keys"), and the old key keeps working for the overlap meanwhile.
const keyPropagation = 3 * time.Second

func (c *client) connect(ctx context.Context) error {
	c.mu.Lock()
	key := c.key
	c.mu.Unlock()
	cl := mcp.NewClient(&mcp.Implementation{Name: fmt.Sprintf("soak-client-%d", c.idx), Version: "1"}, nil)
	tr := &mcp.StreamableClientTransport{
		Endpoint:   c.h.base + "/mcp",
		HTTPClient: &http.Client{Transport: &mcpclient.HeaderTransport{Headers: mcpclient.Bearer(key), Base: sharedTransport}},
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cs, err := cl.Connect(cctx, tr, nil)
	if err != nil {
		return err
	}
	c.cs = cs
	return nil
}

// switchKey moves to a rotated key: the old session is closed (its key
// still works during the overlap) and a new one opened with the new key.
func (c *client) switchKey() {
	c.mu.Lock()
	if c.pendKey == "" || time.Now().Before(c.switchAt) {
		c.mu.Unlock()
		return
	}
	c.key, c.keyID, c.pendKey, c.pendID = c.pendKey, c.pendID, "", ""
	c.mu.Unlock()
	if c.cs != nil {
		_ = c.cs.Close()
		c.cs = nil
	}
	c.tally.mu.Lock()
	c.tally.switches++
	c.tally.mu.Unlock()
}

// run sends requests until ctx ends, then closes the session.
func (c *client) run(ctx context.Context) {
	defer func() {
		if c.cs != nil {
			_ = c.cs.Close()
		}
	}()
	for ctx.Err() == nil {
		c.switchKey()
		if c.cs == nil {
			if err := c.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.tally.verdict(kConnect, false, err.Error())
				sleepCtx(ctx, time.Second)
				continue
			}
			c.tally.verdict(kConnect, true, "")
		}
		c.once(ctx, c.pick())
		sleepCtx(ctx, time.Duration(100+c.rng.IntN(800))*time.Millisecond) // think time
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (c *client) pick() string {
	if c.phase.Load() == "chaos" && c.rng.IntN(1000) < hostilePerMille {
		return kHostile
	}
	total := 0
	for _, w := range mix {
		total += w.weight
	}
	n := c.rng.IntN(total)
	for _, w := range mix {
		if n < w.weight {
			return w.kind
		}
		n -= w.weight
	}
	return kSteady
}

// once sends one request of kind and judges the answer. The request gets
// its own deadline: a request already sent is answered even when the load
// is stopping.
func (c *client) once(_ context.Context, kind string) {
	c.seq++
	id := fmt.Sprintf("soak-%03d-%06d", c.idx, c.seq)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch kind {
	case kCode:
		c.code(ctx, id)
	case kHostile:
		c.hostile(ctx, hostileScripts[c.rng.IntN(len(hostileScripts))])
	default:
		c.direct(ctx, kind, id)
	}
}

// codeUnauthorized is the JSON-RPC error code of the gateway's 401.
const codeUnauthorized = -32001

// errClass names a failed call: "not_found" and "rpc_error" are JSON-RPC
// errors the gateway answered with; the others are answers missing.
func errClass(err error) string {
	var rpc *jsonrpc.Error
	switch {
	case errors.As(err, &rpc) && (rpc.Code == codeUnauthorized || strings.HasPrefix(rpc.Message, "unauthorized")):
		// The gateway's 401 carries a JSON-RPC error body.
		return "unauthorized"
	case errors.As(err, &rpc) && strings.Contains(rpc.Message, "unknown tool"):
		return "not_found"
	case errors.As(err, &rpc):
		return "rpc_error"
	case strings.Contains(err.Error(), "Unauthorized") || strings.Contains(err.Error(), "401"):
		return "unauthorized"
	case errors.Is(err, context.DeadlineExceeded):
		return "no_answer"
	}
	return "transport"
}

func (c *client) keyIDNow() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keyID
}

// afterUnauthorized judges a 401 to a request sent with keyID: expected
// only when that key was rotated and its overlap has passed; the client
// then reconnects with its newest key.
func (c *client) afterUnauthorized(keyID string) bool {
	c.mu.Lock()
	exp, ok := c.expires[keyID]
	rotated := ok && !time.Now().Before(exp)
	c.mu.Unlock()
	if c.cs != nil {
		_ = c.cs.Close()
		c.cs = nil
	}
	return rotated
}

func (c *client) direct(ctx context.Context, kind, id string) {
	var args map[string]any
	want := id
	switch kind {
	case kEverything:
		args, want = map[string]any{"message": id}, "Echo: "+id
	case kMemory:
		args = map[string]any{"names": []string{seedEntity, id}}
	case kToggled:
		args = map[string]any{"message": id}
	default:
		args = map[string]any{"text": id}
	}
	keyID := c.keyIDNow()
	start := time.Now()
	res, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: kind, Arguments: args})
	end := time.Now()
	class := ""
	if err != nil {
		class = errClass(err)
	}
	// Record what the gateway answered, for the audit check.
	switch {
	case err == nil:
		a := answered{id: id, tool: kind, keyID: keyID, ok: !res.IsError}
		if res.IsError {
			a.seen = describe(res, err)
		}
		c.tally.mu.Lock()
		c.tally.calls = append(c.tally.calls, a)
		c.tally.mu.Unlock()
	case class == "not_found":
		c.tally.mu.Lock()
		c.tally.notFound[keyID+"|"+kind]++
		c.tally.mu.Unlock()
	case class == "rpc_error":
		c.tally.mu.Lock()
		c.tally.calls = append(c.tally.calls, answered{id: id, tool: kind, keyID: keyID, ok: false, seen: describe(res, err)})
		c.tally.mu.Unlock()
	}

	if class == "unauthorized" {
		if c.afterUnauthorized(keyID) {
			c.tally.verdict(kind, true, "old key expired after a rotation")
		} else {
			c.tally.verdict(kind, false, "401 for a key that had not expired: "+err.Error())
		}
		return
	}
	right := err == nil && !res.IsError
	if right {
		text := mcpclient.ResultText(res)
		switch kind {
		case kMemory:
			right = strings.Contains(text, seedEntity)
		case kToggled:
			right = false // fail must fail
		default:
			right = text == want
		}
		if !right {
			c.tally.verdict(kind, false, fmt.Sprintf("wrong answer %.200q to %s", text, id))
			return
		}
	}
	switch {
	case right:
		if healthy[kind] {
			c.tally.mu.Lock()
			ph := c.phase.Load().(string)
			c.tally.latency[ph] = append(c.tally.latency[ph], end.Sub(start))
			c.tally.mu.Unlock()
		}
		c.tally.verdict(kind, true, "")
	case kind == kToggled:
		// Shown: fail answers isError with its message; hidden by a
		// reload: unknown tool.
		switch {
		case err == nil && res.IsError && mcpclient.ResultText(res) == id:
			c.tally.verdict(kind, true, "")
		case class == "not_found":
			c.tally.verdict(kind, true, "hidden by the reloaded filter")
		default:
			c.tally.verdict(kind, false, describe(res, err))
		}
	case faulted[kind] != "":
		if class == "no_answer" || class == "transport" {
			c.tally.verdict(kind, false, "no answer: "+describe(res, err))
			return
		}
		if w := c.windows.covering(faulted[kind], start, end); w != "" {
			c.tally.verdict(kind, true, faulted[kind]+" "+w)
			return
		}
		c.tally.verdict(kind, false, "failed outside any fault: "+describe(res, err))
	default:
		c.tally.verdict(kind, false, describe(res, err))
	}
}

func describe(res *mcp.CallToolResult, err error) string {
	if err != nil {
		return fmt.Sprintf("error (%s): %v", errClass(err), err)
	}
	return fmt.Sprintf("isError result: %.300s", mcpclient.ResultText(res))
}

// execution is execute_code's structuredContent.
type execution struct {
	Result    json.RawMessage `json:"result"`
	ToolCalls []struct {
		Tool string `json:"tool"`
		OK   bool   `json:"ok"`
	} `json:"toolCalls"`
	Truncated bool `json:"truncated"`
	Error     *struct {
		Name    string `json:"name"`
		Message string `json:"message"`
		Limit   string `json:"limit"`
	} `json:"error"`
}

// execute runs code and returns the result and its structuredContent. ok
// is false when the gateway did not run the script (err is then the reason).
func (c *client) execute(ctx context.Context, code string) (res *mcp.CallToolResult, ex execution, err error) {
	res, err = c.cs.CallTool(ctx, &mcp.CallToolParams{Name: "execute_code", Arguments: map[string]any{"code": code}})
	if err != nil {
		return nil, ex, err
	}
	b, _ := json.Marshal(res.StructuredContent)
	if res.StructuredContent == nil || json.Unmarshal(b, &ex) != nil {
		return res, ex, fmt.Errorf("no execution in the answer: %.300s", mcpclient.ResultText(res))
	}
	return res, ex, nil
}

// settled handles the answers to execute_code that are not an execution:
// a refusal because the project's executions are all busy (the gateway's
// declared backpressure), a 401 after a rotation, or a wrong answer.
func (c *client) settled(kind, keyID string, res *mcp.CallToolResult, err error) {
	switch {
	case res != nil && res.IsError && strings.Contains(mcpclient.ResultText(res), "maxConcurrentExecutions"):
		c.tally.mu.Lock()
		c.tally.busy++
		c.tally.mu.Unlock()
		c.tally.verdict(kind, true, "refused: all execution slots busy")
	case err != nil && errClass(err) == "unauthorized":
		if c.afterUnauthorized(keyID) {
			c.tally.verdict(kind, true, "old key expired after a rotation")
		} else {
			c.tally.verdict(kind, false, "401 for a key that had not expired: "+err.Error())
		}
	default:
		c.tally.verdict(kind, false, describe(res, err))
	}
}

func (c *client) recordExec(keyID string, ex execution) {
	outcome, limit := "ok", ""
	if ex.Error != nil {
		outcome = "error"
		if ex.Error.Limit != "" {
			outcome, limit = "limit", ex.Error.Limit
		}
	}
	c.tally.mu.Lock()
	c.tally.execs[keyID+"|"+outcome+"|"+limit]++
	c.tally.mu.Unlock()
}

func (c *client) code(ctx context.Context, id string) {
	code := fmt.Sprintf(`const id = %q;
const [a, b] = await Promise.all([tools.steady.echo({text: id + "-a"}), steady.echo({text: id + "-b"})]);
let f;
try { f = (await tools.flaky.echo({text: id + "-f"})).text; } catch (e) { f = "error:" + (e.code || e.name); }
return {a: a.text, b: b.text, f};`, id)
	keyID := c.keyIDNow()
	start := time.Now()
	res, ex, err := c.execute(ctx, code)
	end := time.Now()
	if err != nil || res.IsError && ex.Error == nil {
		c.settled(kCode, keyID, res, err)
		return
	}
	c.recordExec(keyID, ex)
	var got struct{ A, B, F string }
	if ex.Error != nil || json.Unmarshal(ex.Result, &got) != nil {
		c.tally.verdict(kCode, false, fmt.Sprintf("script failed: %.300s", mcpclient.ResultText(res)))
		return
	}
	if got.A != id+"-a" || got.B != id+"-b" {
		c.tally.verdict(kCode, false, fmt.Sprintf("wrong result %s for %s", ex.Result, id))
		return
	}
	c.tally.mu.Lock()
	c.tally.calls = append(c.tally.calls,
		answered{id: id + "-a", tool: kSteady, keyID: keyID, ok: true},
		answered{id: id + "-b", tool: kSteady, keyID: keyID, ok: true})
	c.tally.mu.Unlock()
	switch {
	case got.F == id+"-f":
		c.tally.mu.Lock()
		c.tally.calls = append(c.tally.calls, answered{id: id + "-f", tool: kFlaky, keyID: keyID, ok: true})
		c.tally.mu.Unlock()
		c.tally.verdict(kCode, true, "")
	case strings.HasPrefix(got.F, "error:"):
		if w := c.windows.covering("flaky", start, end); w != "" {
			c.tally.verdict(kCode, true, "flaky "+w)
		} else {
			c.tally.verdict(kCode, false, fmt.Sprintf("flaky call failed outside any fault: %s", ex.Result))
		}
	default:
		c.tally.verdict(kCode, false, fmt.Sprintf("wrong result %s for %s", ex.Result, id))
	}
}

func (c *client) hostile(ctx context.Context, s hostileScript) {
	kind := kHostile + "/" + s.name
	keyID := c.keyIDNow()
	res, ex, err := c.execute(ctx, s.code)
	if err != nil || ex.Error == nil && res.IsError {
		c.settled(kind, keyID, res, err)
		return
	}
	c.recordExec(keyID, ex)
	switch {
	case !res.IsError || ex.Error == nil:
		c.tally.verdict(kind, false, fmt.Sprintf("hostile script was not stopped: %.300s", mcpclient.ResultText(res)))
	case len(s.limits) > 0 && !slices.Contains(s.limits, ex.Error.Limit):
		c.tally.verdict(kind, false, fmt.Sprintf("ended with limit %q (%s), want one of %v", ex.Error.Limit, ex.Error.Message, s.limits))
	case s.message != "" && !strings.Contains(ex.Error.Message, s.message):
		c.tally.verdict(kind, false, fmt.Sprintf("ended with %q, want a message containing %q", ex.Error.Message, s.message))
	default:
		c.tally.verdict(kind, true, "")
	}
}
