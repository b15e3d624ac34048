package sandbox

import (
	"context"
	"testing"
	"time"
)

// BenchmarkInstanceStart is a fresh interpreter from the engine's template
// (instantiating the module and restoring the memory snapshot), what the
// pool does ahead of time and an execution does itself when the pool is
// empty.
func BenchmarkInstanceStart(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		g, err := newGuest(testEngine.opts)
		if err != nil {
			b.Fatal(err)
		}
		g.close()
	}
}

// BenchmarkPoolAcquire is taking a ready interpreter from a full warm pool,
// what an execution pays when the pool keeps up. Refilling happens
// outside the measured time (acquire-ns/op).
func BenchmarkPoolAcquire(b *testing.B) {
	e, err := NewEngine(context.Background(), &EngineOptions{CacheDir: testEngine.opts.cacheDir, PoolSize: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	var took time.Duration
	for i := 0; i < b.N; i++ {
		deadline := time.Now().Add(10 * time.Second)
		for e.Ready() < 4 {
			if time.Now().After(deadline) {
				b.Fatal("the pool did not refill within 10 s")
			}
			time.Sleep(50 * time.Microsecond)
		}
		start := time.Now()
		g, err := e.take()
		took += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		g.close()
	}
	// The loop's own time is mostly waiting for the refill; report the
	// acquisitions alone.
	b.ReportMetric(float64(took.Nanoseconds())/float64(b.N), "acquire-ns/op")
}

// BenchmarkInterpreterGuard runs two workloads in the engine's interpreter
// with the deadline checks compiled in (instrumented) and in the same
// interpreter, driven the same way, without them (plain): what the guard
// costs compute. fib is bytecode (the interpreter's dispatch loop and
// calls); json is native code (the JSON and string built-ins' loops), as
// the bridge of a binding call runs.
func BenchmarkInterpreterGuard(b *testing.B) {
	workloads := []struct{ name, code, want string }{
		{"fib", "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) }; fib(25)", "75025"},
		{"json", "let n = 0; for (let i = 0; i < 20000; i++) n += JSON.parse(JSON.stringify({i, s: 'x'.repeat(20), a: [1, 2, 3]})).a.length; n", "60000"},
	}
	plain := testEngine.opts
	v, err := newVM(b.TempDir(), false)
	if err != nil {
		b.Fatal(err)
	}
	plain.vm = v
	if plain.tpl, err = newTemplate(plain); err != nil {
		b.Fatal(err)
	}
	for _, w := range workloads {
		for _, mode := range []string{"instrumented", "plain"} {
			opts := testEngine.opts
			if mode == "plain" {
				opts = plain
			}
			b.Run(w.name+"/"+mode, func(b *testing.B) {
				var took time.Duration
				for b.Loop() {
					g, err := newGuest(opts)
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					s, err := g.eval("probe.js", w.code)
					took += time.Since(start)
					g.close()
					if err != nil || s != w.want {
						b.Fatalf("%s = %q, %v", w.name, s, err)
					}
				}
				b.ReportMetric(float64(took.Microseconds())/1000/float64(b.N), "ms/run")
			})
		}
	}
}
