package sandbox

import (
	"encoding/json"
	"strings"
	"testing"
)

// bridgeNames are the bootstrap's own functions: the host drives them, and
// no script may reach one.
var bridgeNames = []string{"drain", "pump", "again", "seal", "start", "toolCall", "request", "finish", "fail", "hostError", "errorInfo", "makeResponse", "end"}

// TestBridgeUnreachable walks everything a script can reach from the
// global object (own properties, accessors, prototypes) and the functions
// on the stack (through Error.prepareStackTrace's call sites, the way a
// V8-style engine hands them out), and looks for the bridge.
func TestBridgeUnreachable(t *testing.T) {
	walk := `
		const seen = new Set(), names = new Set(), queue = [globalThis];
		while (queue.length) {
			const o = queue.pop();
			if (o === null || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o)) continue;
			seen.add(o);
			if (typeof o === 'function' && o !== Object.seal) names.add(o.name); // Object.seal shares a name
			queue.push(Object.getPrototypeOf(o));
			for (const k of Reflect.ownKeys(o)) {
				let d;
				try { d = Object.getOwnPropertyDescriptor(o, k) } catch (e) { continue }
				if (d) queue.push(d.value, d.get, d.set);
			}
		}
		return {reached: seen.size, names: [...names]};`
	for _, tc := range []struct {
		name string
		req  *Request
	}{
		{"plain", &Request{Code: walk}},
		{"with bindings", &Request{Code: walk, Prelude: testPrelude, Caller: echoCaller}},
		{"with fetch", &Request{Code: walk, Prelude: testPrelude, Fetch: &FetchPolicy{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runReq(t, tc.req, Limits{})
			if res.Error != nil {
				t.Fatal(res.Error)
			}
			var out struct {
				Reached int
				Names   []string
			}
			decode(t, res.Result, &out)
			if out.Reached < 500 {
				t.Fatalf("the walk reached only %d objects", out.Reached)
			}
			for _, n := range out.Names {
				for _, b := range bridgeNames {
					if n == b {
						t.Errorf("a script reaches a function named %q", n)
					}
				}
			}
		})
	}

	t.Run("stack call sites", func(t *testing.T) {
		res := run(t, `
			const found = [];
			const grab = (e, sites) => { for (const s of sites) { try { found.push(s.getFunction()?.name) } catch (x) {} } return '' };
			try { Error.prepareStackTrace = grab } catch (e) { found.push(e.name) }
			new Error('sync').stack;
			await new Promise((r) => setTimeout(() => { new Error('in a timer').stack; r() }, 1));
			try { Error.captureStackTrace({}) } catch (e) {}
			return [found, typeof Error.prepareStackTrace]`, Limits{})
		wantResult(t, res, `[["TypeError"],"undefined"]`)
	})

	t.Run("globals", func(t *testing.T) {
		res := run(t, `return ['__toolgate_bridge' in globalThis, '__toolgate_call' in globalThis, typeof __toolgate_bridge]`, Limits{})
		wantResult(t, res, `[false,false,"undefined"]`)
	})

	t.Run("stack frames of the host's calls", func(t *testing.T) {
		res := run(t, "return new Error('x').stack", Limits{})
		if res.Error != nil || strings.Contains(string(res.Result), "start") {
			t.Fatalf("the agent's stack shows the bootstrap's start: %s %+v", res.Result, res.Error)
		}
	})
}

// TestRandomIsPerExecution: each execution gets its own Math.random seed,
// and a script cannot reseed it.
func TestRandomIsPerExecution(t *testing.T) {
	code := "return [Math.random(), Math.random()]"
	a, b := run(t, code, Limits{}), run(t, code, Limits{})
	if a.Error != nil || b.Error != nil || string(a.Result) == string(b.Result) {
		t.Fatalf("two executions drew %s and %s", a.Result, b.Result)
	}
}

func decode(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decoding %.200s: %v", raw, err)
	}
}
