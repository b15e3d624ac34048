package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// newPreludeTestEngine is an engine of its own, so that a test can look at
// its prelude cache.
func newPreludeTestEngine(t *testing.T) *Engine {
	t.Helper()
	dir := os.Getenv("TOOLGATE_TEST_CACHE")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "toolgate-sandbox-test-cache")
	}
	e, err := NewEngine(context.Background(), &EngineOptions{CacheDir: dir, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func runOn(t *testing.T, e *Engine, req *Request, lim Limits) *Result {
	t.Helper()
	res, err := e.Run(context.Background(), req, lim)
	if err != nil {
		t.Fatalf("Run: internal error: %v", err)
	}
	return res
}

func cachedImages(e *Engine) int {
	n, _ := e.preludes.len()
	return n
}

// statefulPrelude keeps state in a closure, a global lexical binding and a
// global object, and starts a tool call at its top level; every execution
// must see all of it exactly as a fresh evaluation leaves it.
const statefulPrelude = testPrelude + `
let counter = 0;
globalThis.bump = () => ++counter;
globalThis.shared = { list: [] };
const early = callTool("echo", { from: "prelude" });
globalThis.getEarly = () => early;
`

func TestPreludeImageBehavesLikeAFreshEvaluation(t *testing.T) {
	e := newPreludeTestEngine(t)
	code := `
bump(); bump();
shared.list.push(shared.list.length);
globalThis.leak = (globalThis.leak ?? 0) + 1;
Object.prototype.polluted = true;
return { counter: bump(), list: shared.list, leak, early: await getEarly(), typeofCall: typeof __toolgate_call };`
	for i := range 4 {
		res := runOn(t, e, &Request{Code: code, Prelude: statefulPrelude, Caller: echoCaller}, Limits{})
		wantResult(t, res, `{"counter":3,"list":[0],"leak":1,"early":{"from":"prelude"},"typeofCall":"undefined"}`)
		if len(res.ToolCalls) != 1 || res.ToolCalls[0].Tool != "echo" || !res.ToolCalls[0].OK {
			t.Fatalf("run %d: tool calls %+v, want the prelude's one echo call", i, res.ToolCalls)
		}
		if got := cachedImages(e); got != 1 {
			t.Fatalf("run %d: %d cached prelude images, want 1", i, got)
		}
	}
}

func TestChangedPreludeIsPickedUp(t *testing.T) {
	e := newPreludeTestEngine(t)
	prelude := func(v string) string { return testPrelude + "globalThis.version = " + fmt.Sprintf("%q", v) + ";\n" }
	for i, v := range []string{"a", "b", "a", "c", "b", "a"} {
		res := runOn(t, e, &Request{Code: "return version", Prelude: prelude(v), Caller: echoCaller}, Limits{})
		if res.Error != nil || string(res.Result) != fmt.Sprintf("%q", v) {
			t.Fatalf("run %d: result %s, error %+v; want %q", i, res.Result, res.Error, v)
		}
	}
	if got := cachedImages(e); got != 3 {
		t.Fatalf("%d cached prelude images, want one per distinct text (3)", got)
	}
}

func TestFailingPreludeIsReportedEveryTime(t *testing.T) {
	e := newPreludeTestEngine(t)
	tests := []struct {
		name, prelude, wantName, wantMsg string
	}{
		{"syntax error", "const call = __toolgate_call;\nconst = 1;", "SyntaxError", "prelude: "},
		{"throws", "throw new TypeError('bad bindings')", "TypeError", "prelude: bad bindings"},
		{"throws after defining", "globalThis.x = 1; null.f();", "TypeError", "prelude: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 3 {
				res := runOn(t, e, &Request{Code: "return 1", Prelude: tc.prelude}, Limits{})
				if res.Error == nil || res.Error.Name != tc.wantName || !strings.HasPrefix(res.Error.Message, tc.wantMsg) {
					t.Fatalf("run %d: error %+v, want %s starting %q", i, res.Error, tc.wantName, tc.wantMsg)
				}
			}
			if got := cachedImages(e); got != 0 {
				t.Fatalf("%d cached prelude images after failures, want 0", got)
			}
		})
	}
	// The engine still works, and a good prelude after bad ones is cached.
	wantResult(t, runOn(t, e, &Request{Code: "return typeof callTool", Prelude: testPrelude}, Limits{}), `"function"`)
	if got := cachedImages(e); got != 1 {
		t.Fatalf("%d cached prelude images, want 1", got)
	}
}

// The image is taken with the stack limit of the execution that evaluated
// the prelude; each later execution must still get its own.
func TestPreludeImageKeepsEachExecutionsStackLimit(t *testing.T) {
	e := newPreludeTestEngine(t)
	depth := func(kb int) int {
		t.Helper()
		res := runOn(t, e, &Request{
			Code:    "let d = 0; function f(n) { d = n; f(n + 1); } try { f(0) } catch (e) { return e.name === 'RangeError' ? d : -1 }",
			Prelude: testPrelude,
		}, Limits{MaxStackKB: kb})
		var d int
		if _, err := fmt.Sscan(string(res.Result), &d); res.Error != nil || err != nil || d <= 0 {
			t.Fatalf("stack %d KB: result %s, error %+v", kb, res.Result, res.Error)
		}
		return d
	}
	deep := depth(48) // evaluates the prelude and keeps the image
	shallow := depth(8)
	again := depth(48)
	if shallow >= deep || again != deep {
		t.Fatalf("recursion depth with 48 KB %d, then 8 KB %d, then 48 KB %d: want 8 KB shallower and 48 KB equal", deep, shallow, again)
	}
}

// An image larger than an execution's memory limit is not used; that
// execution evaluates the prelude itself, as without the cache.
func TestPreludeImageOverTheMemoryLimit(t *testing.T) {
	e := newPreludeTestEngine(t)
	big := testPrelude + "globalThis.big = new Uint8Array(8 << 20).fill(1);\n"
	wantResult(t, runOn(t, e, &Request{Code: "return big.length", Prelude: big}, Limits{MemoryLimitMB: 64}), fmt.Sprint(8<<20))
	if got := cachedImages(e); got != 1 {
		t.Fatalf("%d cached prelude images, want 1", got)
	}
	res := runOn(t, e, &Request{Code: "return big.length", Prelude: big}, Limits{MemoryLimitMB: 8})
	if res.Error == nil || res.Error.Limit != LimitMemory || !strings.HasPrefix(res.Error.Message, "prelude: ") {
		t.Fatalf("error %+v, want the prelude to run out of memory", res.Error)
	}
	wantResult(t, runOn(t, e, &Request{Code: "return big[5]", Prelude: big}, Limits{MemoryLimitMB: 64}), "1")
}

func TestPreludeCacheIsBounded(t *testing.T) {
	img := func(n int) *preludeImage { return &preludeImage{data: make([]byte, n)} }
	c := newPreludeCache(3, 1000)
	for i := range 10 {
		c.put(fmt.Sprint("p", i), img(10))
	}
	if n, _ := c.len(); n != 3 {
		t.Fatalf("%d entries, want 3", n)
	}
	for i := 7; i < 10; i++ {
		if c.get(fmt.Sprint("p", i)) == nil {
			t.Fatalf("p%d evicted, want the 3 most recent kept", i)
		}
	}
	// Using an entry keeps it: p7 survives, p8 (now the oldest) goes.
	c.get("p7")
	c.put("p10", img(10))
	if c.get("p8") != nil || c.get("p7") == nil {
		t.Fatal("eviction is not least recently used first")
	}
	// The byte bound: big entries push out older ones, one over the bound
	// is not kept at all.
	c.put("big", img(900))
	if n, b := c.len(); b > 1000 || c.get("big") == nil {
		t.Fatalf("%d entries of %d bytes after a 900-byte entry, want at most 1000 bytes with it kept", n, b)
	}
	c.put("huge", img(2000))
	if c.get("huge") != nil {
		t.Fatal("an entry over the byte bound was kept")
	}
	// Replacing an entry does not count it twice.
	c2 := newPreludeCache(3, 1000)
	c2.put("a", img(100))
	c2.put("a", img(200))
	if n, b := c2.len(); n != 1 || b != 201 {
		t.Fatalf("after replacing: %d entries, %d bytes; want 1, 201", n, b)
	}
}

// Through the engine, many distinct preludes leave at most the bound.
func TestEnginePreludeCacheIsBounded(t *testing.T) {
	e := newPreludeTestEngine(t)
	for i := range maxPreludeImages + 4 {
		res := runOn(t, e, &Request{Code: "return n", Prelude: fmt.Sprintf("globalThis.n = %d;", i)}, Limits{})
		wantResult(t, res, fmt.Sprint(i))
	}
	if n, b := e.preludes.len(); n != maxPreludeImages || b > maxPreludeImageBytes {
		t.Fatalf("%d images of %d bytes, want %d within %d bytes", n, b, maxPreludeImages, maxPreludeImageBytes)
	}
}

// A prelude longer than the guest's string buffer moves that buffer; an
// execution started from the image must use the moved one, not the freed
// original (which the interpreter's heap may have reused).
func TestLongPreludeImage(t *testing.T) {
	e := newPreludeTestEngine(t)
	long := testPrelude + "/*" + strings.Repeat("x", scratchSize) + "*/\n" +
		"globalThis.keep = []; for (let i = 0; i < 2000; i++) keep.push({ i, s: 'v' + i });\n"
	for i, n := range []int{scratchSize - 2048, scratchSize - 2048, 3 * scratchSize / 2, scratchSize / 2} {
		code := "const s = '" + strings.Repeat("y", n) + "'; " +
			"const got = await callTool('echo', { n: s.length, ok: keep.every((o, i) => o.i === i && o.s === 'v' + i) }); return [got.n, got.ok]"
		res := runOn(t, e, &Request{Code: code, Prelude: long, Caller: echoCaller}, Limits{})
		if res.Error != nil || string(res.Result) != fmt.Sprintf(`[%d,true]`, n) {
			t.Fatalf("run %d: result %.80s, error %+v", i, res.Result, res.Error)
		}
	}
	if got := cachedImages(e); got != 1 {
		t.Fatalf("%d cached prelude images, want 1", got)
	}
}

// TestConcurrentMissesEvaluateOnce: executions that miss the prelude cache
// together wait for one evaluation of the text.
func TestConcurrentMissesEvaluateOnce(t *testing.T) {
	e, err := NewEngine(context.Background(), &EngineOptions{CacheDir: testEngine.opts.cacheDir, PoolSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	prelude := testPrelude + "\nlet spin = 0; for (let i = 0; i < 2e6; i++) spin += i;\nglobalThis.ready = spin > 0;"
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			res, err := e.Run(context.Background(), &Request{Code: "return ready", Prelude: prelude}, Limits{})
			if err != nil || res.Error != nil || string(res.Result) != "true" {
				t.Errorf("run: %v %+v %s", err, res.Error, res.Result)
			}
		})
	}
	wg.Wait()
	if n := e.preludes.evaluations.Load(); n != 1 {
		t.Fatalf("the prelude was evaluated %d times by 8 concurrent executions, want 1", n)
	}
}
