package wasm

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	_ "unsafe" // go:linkname

	_ "github.com/fastschema/qjs" // provides qjs.wasm
	"github.com/tetratelabs/wazero"
)

// qjsWasm is the QuickJS build that the sandbox instruments.
//
//go:linkname qjsWasm github.com/fastschema/qjs.wasmBytes
var qjsWasm []byte

// asm assembles a module from its sections (id, contents).
func asm(sections ...[]byte) []byte {
	out := append([]byte(nil), wasmHeader...)
	for _, s := range sections {
		out = append(out, s[0])
		out = appendU32(out, uint32(len(s)-1))
		out = append(out, s[1:]...)
	}
	return out
}

func sec(id byte, items ...[]byte) []byte {
	out := []byte{id}
	out = appendU32(out, uint32(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func code(body ...byte) []byte { return append(appendU32(nil, uint32(len(body))), body...) }

func export(name string, fn byte) []byte {
	return append(append([]byte{byte(len(name))}, name...), 0x00, fn)
}

// loopsModule exports, over the types (i32) -> i32 and () -> ():
//
//	sum(n)   n + (n-1) + ... + 1 in a loop (n+1 loop iterations)
//	fib(n)   by plain recursion, no loop
//	spin()   an endless loop
//	ind(n)   n, counted down by calling itself through a table
//
// and has a global of its own, so the counter is not global 0.
var loopsModule = asm(
	sec(1, []byte{0x60, 0x01, 0x7f, 0x01, 0x7f}, []byte{0x60, 0x00, 0x00}),
	sec(3, []byte{0}, []byte{0}, []byte{1}, []byte{0}),
	sec(4, []byte{0x70, 0x00, 0x01}),
	sec(6, []byte{0x7f, 0x01, 0x41, 0x05, 0x0b}),
	sec(7, export("sum", 0), export("fib", 1), export("spin", 2), export("ind", 3)),
	sec(9, []byte{0x00, 0x41, 0x00, 0x0b, 0x01, 0x03}),
	sec(10,
		code(0x01, 0x01, 0x7f, // one i32 local: acc
			0x02, 0x40, 0x03, 0x40, // block, loop
			0x20, 0x00, 0x45, 0x0d, 0x01, // br_if 1 when n == 0
			0x20, 0x01, 0x20, 0x00, 0x6a, 0x21, 0x01, // acc += n
			0x20, 0x00, 0x41, 0x01, 0x6b, 0x21, 0x00, // n -= 1
			0x0c, 0x00, 0x0b, 0x0b, // br 0, end, end
			0x20, 0x01, 0x0b),
		code(0x00,
			0x20, 0x00, 0x41, 0x02, 0x48, 0x04, 0x7f, // if n < 2
			0x20, 0x00,
			0x05,
			0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x01,
			0x20, 0x00, 0x41, 0x02, 0x6b, 0x10, 0x01,
			0x6a, 0x0b, 0x0b),
		code(0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b),
		code(0x00,
			0x20, 0x00, 0x45, 0x04, 0x7f, 0x41, 0x00, // if n == 0: 0
			0x05,
			0x20, 0x00, 0x41, 0x01, 0x6b, 0x41, 0x00, 0x11, 0x00, 0x00, // else ind(n-1) through table slot 0
			0x41, 0x01, 0x6a, 0x0b, 0x0b),
	),
)

// bareModule has no () -> () type and no global section, so Instrument
// must add both: sum(n) as in loopsModule.
var bareModule = asm(
	sec(1, []byte{0x60, 0x01, 0x7f, 0x01, 0x7f}),
	sec(3, []byte{0}),
	sec(7, export("sum", 0)),
	sec(10, code(0x01, 0x01, 0x7f,
		0x02, 0x40, 0x03, 0x40,
		0x20, 0x00, 0x45, 0x0d, 0x01,
		0x20, 0x01, 0x20, 0x00, 0x6a, 0x21, 0x01,
		0x20, 0x00, 0x41, 0x01, 0x6b, 0x21, 0x00,
		0x0c, 0x00, 0x0b, 0x0b,
		0x20, 0x01, 0x0b)),
)

// run instantiates module with hook on fn and calls export name.
func run(t *testing.T, module []byte, fn uint32, hook func(context.Context), name string, args ...uint64) (uint64, error) {
	t.Helper()
	ctx := context.Background()
	if hook != nil {
		ctx = WithCallHook(ctx, fn, hook)
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod, err := r.Instantiate(ctx, module)
	if err != nil {
		t.Fatal(err)
	}
	out, err := mod.ExportedFunction(name).Call(ctx, args...)
	if err != nil {
		return 0, err
	}
	return out[0], nil
}

func TestInstrumentKeepsResultsAndChecks(t *testing.T) {
	tests := []struct {
		module     []byte
		name       string
		arg        uint64
		want       uint64
		wantChecks int // calls of the check function with an interval of 10
	}{
		{loopsModule, "sum", 1000, 500500, 100}, // 1001 loop iterations
		{loopsModule, "fib", 20, 6765, 2189},    // 21891 calls
		{loopsModule, "ind", 50, 50, 5},         // 51 calls through the table
		{bareModule, "sum", 99, 4950, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := run(t, tc.module, 0, nil, tc.name, tc.arg)
			if err != nil || got != tc.want {
				t.Fatalf("original: %s(%d) = %d, %v; want %d", tc.name, tc.arg, got, err, tc.want)
			}
			inst, err := Instrument(tc.module, &InstrumentOptions{Interval: 10})
			if err != nil {
				t.Fatal(err)
			}
			checks := 0
			got, err = run(t, inst.Module, inst.CheckFunc, func(context.Context) { checks++ }, tc.name, tc.arg)
			if err != nil || got != tc.want {
				t.Fatalf("instrumented: %s(%d) = %d, %v; want %d", tc.name, tc.arg, got, err, tc.want)
			}
			if checks != tc.wantChecks {
				t.Fatalf("check called %d times, want %d", checks, tc.wantChecks)
			}
		})
	}
}

func TestInstrumentCounts(t *testing.T) {
	inst, err := Instrument(loopsModule, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Loops in sum and spin; entries of fib (calls itself) and ind (calls
	// itself through the table).
	if inst.Loops != 2 || inst.Entries != 2 || inst.CheckFunc != 4 {
		t.Fatalf("loops %d, entries %d, check function %d; want 2, 2, 4", inst.Loops, inst.Entries, inst.CheckFunc)
	}
	again, err := Instrument(loopsModule, nil)
	if err != nil || !bytes.Equal(again.Module, inst.Module) {
		t.Fatal("instrumenting the same module twice gave different bytes")
	}
}

// TestInstrumentStopsAnEndlessLoop proves the point of the pass: a hook
// that panics ends a guest that would otherwise never return.
func TestInstrumentStopsAnEndlessLoop(t *testing.T) {
	inst, err := Instrument(loopsModule, &InstrumentOptions{Interval: 1000})
	if err != nil {
		t.Fatal(err)
	}
	checks := 0
	stop := errors.New("stopped by the host")
	_, err = run(t, inst.Module, inst.CheckFunc, func(context.Context) {
		if checks++; checks == 50 {
			panic(stop)
		}
	}, "spin")
	if err == nil || !strings.Contains(err.Error(), stop.Error()) {
		t.Fatalf("spin returned %v, want the hook's panic", err)
	}
}

func TestInstrumentQuickJS(t *testing.T) {
	if len(qjsWasm) == 0 {
		t.Fatal("qjs.wasm is not linked in")
	}
	inst, err := Instrument(qjsWasm, nil)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Loops < 1000 || inst.Entries < 100 {
		t.Fatalf("only %d loops and %d entries instrumented", inst.Loops, inst.Entries)
	}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	if _, err := r.CompileModule(ctx, inst.Module); err != nil {
		t.Fatalf("instrumented interpreter does not validate: %v", err)
	}
}

func TestInstrumentRefuses(t *testing.T) {
	simd := asm(
		sec(1, []byte{0x60, 0x00, 0x00}),
		sec(3, []byte{0}),
		sec(10, code(0x00, 0xfd, 0x0c, 0x00, 0x0b)),
	)
	tests := []struct {
		name   string
		module []byte
		want   string
	}{
		{"empty", nil, "not a WebAssembly"},
		{"text", []byte("(module)"), "not a WebAssembly"},
		{"truncated", loopsModule[:len(loopsModule)-3], "unexpected end"},
		{"simd", simd, "unsupported instruction 0xfd"},
		{"bodies missing", asm(sec(1, []byte{0x60, 0x00, 0x00}), sec(3, []byte{0})), "1 functions declared but 0 bodies"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Instrument(tc.module, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzInstrument checks that the pass never panics and that whatever it
// returns for a module wazero accepts is a module wazero accepts too.
// (Modules the pass refuses are not handed to wazero: its decoder
// allocates what a section's count claims before reading it.)
func FuzzInstrument(f *testing.F) {
	f.Add(loopsModule)
	f.Add(bareModule)
	f.Add(growModule)
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	f.Fuzz(func(t *testing.T, module []byte) {
		inst, err := Instrument(module, &InstrumentOptions{Interval: 3})
		if err != nil || !plausibleCounts(module) {
			return
		}
		if _, err := r.CompileModule(ctx, module); err != nil {
			return
		}
		if _, err := r.CompileModule(ctx, inst.Module); err != nil {
			t.Fatalf("instrumented module does not validate: %v", err)
		}
	})
}

// plausibleCounts reports whether no section of a parsed module claims
// more items than it has bytes, which wazero would allocate up front.
func plausibleCounts(module []byte) bool {
	m, err := parseModule(module)
	if err != nil {
		return false
	}
	for _, s := range m.sections {
		if s.id == secCustom || s.id == secStart || s.id == secDataCnt {
			continue
		}
		r := &reader{b: s.body}
		if n := r.u32(); r.err != nil || int(n) > len(s.body) {
			return false
		}
	}
	return true
}
