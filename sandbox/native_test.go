package sandbox

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds of a stopped execution: how long after its deadline the caller
// may wait for the timeout error on a loaded 2-core machine, and how much
// CPU the process may spend on it after the deadline.
const (
	afterCPUBound = 100 * time.Millisecond
	nativeTimeout = 200 * time.Millisecond
)

// overshootBound is 250 ms when TOOLGATE_TIMING=strict: scripts/test.sh
// runs the timing tests in a step of their own, with nothing else on the
// machine. Beside other packages' tests (go test ./... runs packages in
// parallel) the wall clock also measures their load, and the bound is a
// second: still far below what a script that escaped the checks takes.
var overshootBound = func() time.Duration {
	if os.Getenv("TOOLGATE_TIMING") == "strict" {
		return 250 * time.Millisecond
	}
	return time.Second
}()

// collidingKeys is JavaScript that builds `keys`: 2^bits distinct strings
// with one QuickJS atom hash (h = h*263 + c): each is made of blocks that
// are either "a\u012c" or "b%", whose hashes are equal (97*263 + 300 =
// 98*263 + 37).
func collidingKeys(bits int) string {
	return fmt.Sprintf(`const keys = [''];
for (let i = 0; i < %d; i++) { const n = keys.length; for (let j = 0; j < n; j++) { keys.push(keys[j] + 'b%%'); keys[j] += 'a\u012c'; } }`, bits)
}

// nativeScripts are hostile scripts that spend their time inside native
// built-ins (QuickJS's C code), where the interpreter's own interrupt
// check never runs, grouped by family. Each must end within the bounds.
func nativeScripts() map[string]string {
	scripts := map[string]string{
		// Found first: each ran for seconds to minutes past a 2 s timeout.
		"join of a huge array":                     "return new Array(1e9).join('x').length",
		"indexOf of a huge array":                  "return new Array(1e9).indexOf(1)",
		"includes of a 2^32-1 array":               "return new Array(2**32-1).includes(1)",
		"lastIndexOf of an array-like":             "return Array.prototype.lastIndexOf.call({length: 1e9}, 1)",
		"every of an array-like":                   "return [].every.call({length: 1e9}, () => true)",
		"toString of a huge array":                 "return new Array(1e9).toString()",
		"BigInt toString loop":                     "let x = 3n ** 150000n; x = x * x; for (;;) x.toString(); return 1",
		"JSON.parse of hash-colliding keys":        collidingKeys(15) + "; return Object.keys(JSON.parse('{' + keys.map((k) => JSON.stringify(k) + ':0').join(',') + '}')).length",
		"object literal of hash-colliding keys":    collidingKeys(15) + "; const o = {}; for (const k of keys) o[k] = 1; return Object.keys(o).length",
		"Object.fromEntries of colliding keys":     collidingKeys(15) + "; return Object.keys(Object.fromEntries(keys.map((k) => [k, 1]))).length",
		"BigInt division loop":                     "const a = 7n ** 300000n, b = 3n ** 100000n; let q; for (;;) q = a / b; return 1",
		"BigInt toString base 3":                   "const x = 3n ** 400000n; for (;;) x.toString(3); return 1",
		"BigInt from a long decimal string":        "const s = '7'.repeat(300000); for (;;) BigInt(s); return 1",
		"BigInt.asUintN of a wide width":           "for (;;) BigInt.asUintN(1 << 22, -1n); return 1",
		"String indexOf with a long near-miss":     "const s = 'a'.repeat(1 << 22), p = 'a'.repeat(1 << 12) + 'b'; return s.indexOf(p)",
		"String lastIndexOf with a long near-miss": "const s = 'a'.repeat(1 << 22), p = 'b' + 'a'.repeat(1 << 12); return s.lastIndexOf(p)",
		"String includes with a long near-miss":    "const s = 'a'.repeat(1 << 22), p = 'a'.repeat(1 << 12) + 'b'; return s.includes(p)",
		"String split with a long separator":       "const s = 'a'.repeat(1 << 22), p = 'a'.repeat(1 << 12) + 'b'; for (;;) s.split(p); return 1",
		"String replaceAll loop":                   "const s = 'ab'.repeat(1 << 20); for (;;) s.replaceAll('a', 'cc'); return 1",
		"String localeCompare of long strings":     "const s = 'a'.repeat(1 << 22), t = s + 'b'; for (;;) s.localeCompare(t); return 1",
		"String normalize loop":                    "const s = '\u1e9b\u0323'.repeat(1 << 18); for (;;) s.normalize('NFKD'); return 1",
		"String toUpperCase loop":                  "const s = '\u00df'.repeat(1 << 20); for (;;) s.toUpperCase(); return 1",
		"encodeURIComponent loop":                  "const s = '\u00e9'.repeat(1 << 20); for (;;) encodeURIComponent(s); return 1",
		"Float64Array sort loop":                   "const a = new Float64Array(1 << 21); for (let i = 0; i < a.length; i++) a[i] = (i * 7919) % 1000003; for (;;) a.slice().sort(); return 1",
		"Int32Array sort and reverse loop":         "const a = new Int32Array(1 << 22); for (;;) { a.sort(); a.reverse(); } return 1",
		"Uint8Array indexOf loop":                  "const a = new Uint8Array(1 << 24); for (;;) a.indexOf(1); return 1",
		"catastrophic regexp":                      "return /(a+)+b/.test('a'.repeat(40))",
		"catastrophic alternation":                 "return /(?:a|aa)+$/.test('a'.repeat(100) + 'b')",
		"catastrophic lookbehind":                  "return /(?<=(a+)+)b/.test('a'.repeat(40) + 'c')",
		"regexp replace over a long string":        "const s = 'a'.repeat(1 << 16) + 'c'; return s.replace(/(a|aa)*b/g, 'x').length",
		"JSON.stringify of a huge sparse array":    "return JSON.stringify(new Array(1e8)).length",
		"Array.from a huge array-like":             "return Array.from({length: 1e9}).length",
		"sort of a huge array":                     "const a = []; for (let i = 0; i < 1e6; i++) a.push({i}); for (;;) a.slice().sort((x, y) => y.i - x.i); return 1",
	}
	// Every Array method that walks indices, over array-likes and sparse
	// arrays of huge length.
	methods := map[string]string{
		"join": "','", "toString": "", "toLocaleString": "", "indexOf": "1", "lastIndexOf": "1",
		"includes": "1", "every": "() => true", "some": "() => false", "forEach": "() => {}",
		"map": "(v) => v", "filter": "() => false", "reduce": "(a) => a, 0", "reduceRight": "(a) => a, 0",
		"find": "() => false", "findIndex": "() => false", "findLast": "() => false", "findLastIndex": "() => false",
		"fill": "0", "copyWithin": "0, 1", "reverse": "", "sort": "", "splice": "0", "slice": "0",
		"concat": "", "flat": "", "flatMap": "(v) => v", "toReversed": "", "toSorted": "", "toSpliced": "0, 1",
		"with": "0, 1", "keys().next": "", "entries().next": "",
	}
	receivers := map[string]string{
		"array-like":   "{length: 2 ** 53 - 1}",
		"sparse array": "new Array(2 ** 32 - 1)",
	}
	for m, args := range methods {
		for rn, r := range receivers {
			call := fmt.Sprintf("Array.prototype.%s.call(%s, %s)", m, r, args)
			if strings.Contains(m, "().") {
				base, next, _ := strings.Cut(m, ".")
				call = fmt.Sprintf("Array.prototype.%s.call(%s).%s()", strings.TrimSuffix(base, "()"), r, next)
			}
			scripts[fmt.Sprintf("Array %s of a huge %s", m, rn)] = "for (;;) " + call + "; return 1"
		}
	}
	return scripts
}

// mustTimeOut are the scripts that cannot end otherwise than by the
// timeout: no limit or exception can end them earlier.
var mustTimeOut = []string{
	"join of a huge array", "indexOf of a huge array", "includes of a 2^32-1 array",
	"lastIndexOf of an array-like", "every of an array-like", "BigInt toString loop",
	"JSON.parse of hash-colliding keys", "catastrophic regexp",
}

// TestNativeBuiltinsStopAtTheDeadline runs every native-heavy script with a
// short timeout: each ends (by the timeout, or earlier by another limit or
// an exception) within overshootBound of its deadline, never with a result
// after it, and the process spends less than afterCPUBound of CPU after the
// deadline. A fresh engine without a pool keeps background work out of the
// CPU measure.
func TestNativeBuiltinsStopAtTheDeadline(t *testing.T) {
	e := newQuietEngine(t)
	lim := Limits{Timeout: nativeTimeout, MemoryLimitMB: 64}
	for name, code := range nativeScripts() {
		t.Run(name, func(t *testing.T) {
			checkStopsInTime(t, e, code, lim, overshootBound, mustStop(name))
		})
	}
}

func mustStop(name string) bool {
	for _, n := range mustTimeOut {
		if n == name {
			return true
		}
	}
	return false
}

func newQuietEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine(context.Background(), &EngineOptions{CacheDir: testEngine.opts.cacheDir, PoolSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// checkStopsInTime runs code and checks the bounds above (overshoot the
// wall-clock one); wantTimeout requires the timeout error itself.
func checkStopsInTime(t testing.TB, e *Engine, code string, lim Limits, overshoot time.Duration, wantTimeout bool) {
	t.Helper()
	var mu sync.Mutex
	atDeadline := time.Duration(-1)
	begin := time.Now()
	timer := time.AfterFunc(lim.Timeout, func() {
		c, _ := processCPU()
		mu.Lock()
		atDeadline = c
		mu.Unlock()
	})
	res, err := e.Run(context.Background(), &Request{Code: code}, lim)
	elapsed := time.Since(begin)
	end, measured := processCPU()
	timer.Stop()
	if err != nil {
		t.Fatalf("internal error: %v", err)
	}
	if res.Error == nil {
		// The script finished before the deadline; the host's work after
		// that (output, cleanup) may take a little longer.
		if elapsed >= lim.Timeout+10*time.Millisecond {
			t.Fatalf("answered with a result after the deadline (%v): %.80s", elapsed, res.Result)
		}
		return // finished in time: nothing to stop
	}
	if wantTimeout && res.Error.Limit != LimitTimeout {
		t.Fatalf("want the timeout error, got %+v", res.Error)
	}
	if over := elapsed - lim.Timeout; over > overshoot {
		t.Fatalf("the caller waited %v past the deadline (bound %v)", over, overshoot)
	}
	mu.Lock()
	defer mu.Unlock()
	if atDeadline >= 0 {
		t.Logf("%s after %v: %v past the deadline, %v of CPU after it", res.Error.Name, elapsed, elapsed-lim.Timeout, end-atDeadline)
	} else {
		t.Logf("%s after %v: %.120s", res.Error.Name, elapsed, res.Error.Message)
	}
	if measured && atDeadline >= 0 {
		if after := end - atDeadline; after > afterCPUBound {
			t.Fatalf("the process used %v of CPU after the deadline (bound %v)", after, afterCPUBound)
		}
	}
}

// FuzzNativeBuiltins composes built-in calls over receivers of huge length
// and checks that the execution ends within the bounds whatever the
// composition. go test -fuzz runs a worker per core, each busy with such
// scripts, so the machine is past loaded: the wall-clock bound here is a
// second (a composition that escaped the checks would run for minutes);
// TestNativeBuiltinsStopAtTheDeadline holds the tight one.
func FuzzNativeBuiltins(f *testing.F) {
	receivers := []string{
		"new Array(1e9)", "({length: 2 ** 53 - 1})", "'ab'.repeat(1 << 20)", "(3n ** 100000n)",
		"new Float64Array(1 << 20)", "Array.from({length: 1 << 16}, (_, i) => i)", "({})", "[1, 2, 3]",
	}
	calls := []string{
		".join?.('x')", ".indexOf?.(1)", ".includes?.(1)", ".lastIndexOf?.(1)", ".toString?.()",
		".every?.(() => true)", ".map?.((v) => v)", ".sort?.()", ".reverse?.()", ".slice?.(1)",
		".split?.('')", ".replaceAll?.('a', 'bb')", ".normalize?.('NFD')", ".toUpperCase?.()",
		".fill?.(7)", ".concat?.([1])", ".flat?.()",
	}
	f.Add([]byte{0, 0})
	f.Add([]byte{1, 3, 2, 9})
	f.Add([]byte{3, 4, 4, 4})
	e := newQuietEngine(f)
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) < 2 || len(ops) > 12 {
			return
		}
		var b strings.Builder
		b.WriteString("let v = ")
		b.WriteString(receivers[int(ops[0])%len(receivers)])
		b.WriteString(";\nfor (let i = 0; i < 3; i++) {\n")
		for _, op := range ops[1:] {
			fmt.Fprintf(&b, "  try { v = v%s ?? v; } catch (e) {}\n", calls[int(op)%len(calls)])
		}
		b.WriteString("}\nreturn typeof v")
		checkStopsInTime(t, e, b.String(), Limits{Timeout: 100 * time.Millisecond, MemoryLimitMB: 32}, time.Second, false)
	})
}

// TestLogsSurviveAHardStop: console output written before a script was
// stopped inside a native built-in still reaches the caller.
func TestLogsSurviveAHardStop(t *testing.T) {
	res := run(t, "console.log('before'); return new Array(1e9).indexOf(1)", Limits{Timeout: nativeTimeout})
	wantLimit(LimitTimeout)(t, res)
	if len(res.Logs) != 1 || res.Logs[0].Message != "before" {
		t.Fatalf("logs = %+v, want the line written before the stop", res.Logs)
	}
}
