package sandbox

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname

	_ "github.com/fastschema/qjs" // provides qjs.wasm
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	wsp1 "github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/toolgate/toolgate/wasm"
)

//go:embed bootstrap.js
var bootstrapJS string

// Layout of the QuickJS-NG 0.10.1 build embedded in github.com/fastschema/qjs
// v0.0.6 (qjs.wasm), read from its disassembly. The sandbox relies on them to
// reach two QuickJS features qjs does not expose:
//
//   - the interrupt handler. QuickJS calls rt->interrupt_handler every 10,000
//     bytecode steps and every 10,000 regexp backtracking steps; when it
//     returns non-zero the running script gets an uncatchable
//     "InternalError: interrupted". The build's function table already holds
//     the CLI's SIGINT handler, `return (os_pending_signals >> SIGINT) & 1`,
//     so the sandbox installs that one and, to stop a script between two
//     bytecode steps, sets the SIGINT bit of os_pending_signals with an
//     atomic write into linear memory. That is the graceful stop: the
//     interpreter unwinds and the console output since the last report can
//     still be read. It does not reach native built-ins (a join or indexOf
//     over an array-like of huge length, BigInt arithmetic, a JSON.parse of
//     hash-colliding keys), so the module is also instrumented (see
//     loadVM): the hard stop.
//   - the stack limit. JS_SetMaxStackSize is a no-op on WASI (stack_limit
//     stays 0, so deep recursion runs the 64 KiB shadow stack into the data
//     segment), but the check itself is compiled in: writing stack_limit
//     turns deep recursion into a catchable RangeError.
//
// newGuest verifies the layout against the live runtime (stack_size and
// stack_top read back as expected, the handler slots are empty) and NewEngine
// runs a self-test, so a different qjs build fails loudly instead of running
// unguarded.
const (
	qjsModulePath       = "github.com/fastschema/qjs"
	qjsModuleVersion    = "v0.0.6"
	offStackSize        = 120    // JSRuntime.stack_size
	offStackTop         = 124    // JSRuntime.stack_top
	offStackLimit       = 128    // JSRuntime.stack_limit
	offInterruptHandler = 152    // JSRuntime.interrupt_handler
	offInterruptOpaque  = 156    // JSRuntime.interrupt_opaque
	sigintHandlerIndex  = 484    // function table index of the SIGINT interrupt handler
	pendingSignalsAddr  = 99864  // os_pending_signals
	sigintBit           = 1 << 2 // 1 << SIGINT
	shadowStackTop      = 165408 // initial __stack_pointer
	shadowStackSize     = 64 << 10
	stackSafetyMargin   = 8 << 10 // room for native frames below the last check
	layoutProbeStack    = 40 << 10
)

// maxStackBytes is the largest stack limit the build can honour.
const maxStackBytes = shadowStackSize - stackSafetyMargin

// The qjs Go API creates a wazero function handle (with its own stack) for
// every wasm call and wraps every value in Go objects; a binding round trip
// cost about 15-20 such calls. The sandbox therefore drives the same qjs.wasm
// directly: one wazero runtime and compiled module per process, exported
// functions looked up once per instance and called with a reusable stack,
// and strings passed through a scratch buffer in linear memory.
//
// Creating an interpreter (JS_NewRuntime, JS_NewContext and the bootstrap)
// costs milliseconds, so each engine does it once, in a template instance,
// and keeps a snapshot of the template's linear memory. Every guest is then
// a fresh module instance whose memory is a copy of that snapshot: nothing a
// script did in another guest can be seen, and a guest still never runs
// code twice. QuickJS keeps no state outside linear memory that differs
// between instances (its mutable wasm global, the shadow stack pointer, is
// back at its initial value between calls). Two pieces of state would be
// shared by every copy, so the bootstrap replaces them per execution (see
// seal): the Math.random seed and the performance.now origin.

// qjsWasm is the QuickJS build embedded in qjs (qjs.wasm); checkQJSVersion
// and the layout checks make sure it is the one described above.
//
//go:linkname qjsWasm github.com/fastschema/qjs.wasmBytes
var qjsWasm []byte

// Exports of qjs.wasm the sandbox calls.
const (
	fnNewQJS = iota
	fnGetContext
	fnMalloc
	fnFree
	fnEval
	fnCall
	fnNewString
	fnFreeValue
	fnToCString
	fnFreeCString
	fnGetException
	fnGetPropertyStr
	fnGetPropertyUint32
	fnCompile
	numFns
)

var fnNames = [numFns]string{
	"New_QJS", "QJS_GetContext", "malloc", "free", "QJS_Eval", "QJS_Call", "QJS_NewString",
	"QJS_FreeValue", "QJS_ToCString", "JS_FreeCString", "JS_GetException", "JS_GetPropertyStr",
	"QJS_GetPropertyUint32", "QJS_Compile2",
}

// JSValue encoding of the wasm32 build (NaN boxing): the tag is the high 32
// bits; tags from jsTagFirst to -1 are reference counted.
const (
	jsTagFirst     = -9
	jsTagObject    = -1
	jsTagUndefined = 3
	jsTagException = 6
	jsUndefined    = uint64(jsTagUndefined) << 32
	evalFlags      = 1 << 3 // JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_STRICT, as qjs evaluates
	scratchSize    = 64 << 10
	snapshotPage   = 4 << 10
	maxArgs        = 6 // arguments of the widest bootstrap call (seal)
)

func jsTag(v uint64) int32 { return int32(v >> 32) }

// fileNames are the script names the host evaluates under; the template
// stores them in linear memory so that every guest has them.
var fileNames = []string{"toolgate-bootstrap.js", "prelude.js", "agent.js", "pump.js", "selftest.js", "selftest2.js", "probe.js", "stack"}

// vm is the process-wide wazero runtime with qjs.wasm compiled into it.
type vm struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
}

var (
	vmMu     sync.Mutex
	sharedVM *vm
)

// loadVM compiles qjs.wasm (or loads it from the compilation cache in
// cacheDir) once per process, instrumented so that the guest calls
// checkInterrupt at least every checkInterval loop iterations or entries
// of recursive functions, native built-ins included (wasm.Instrument).
func loadVM(cacheDir string) (*vm, error) {
	vmMu.Lock()
	defer vmMu.Unlock()
	if sharedVM != nil {
		return sharedVM, nil
	}
	v, err := newVM(cacheDir, true)
	if err != nil {
		return nil, err
	}
	sharedVM = v
	return v, nil
}

// newVM compiles qjs.wasm into a runtime of its own; without instrument
// (for benchmarks only) nothing can stop a guest that does not yield.
func newVM(cacheDir string, instrument bool) (*vm, error) {
	if len(qjsWasm) == 0 {
		return nil, errors.New("qjs.wasm is not linked in")
	}
	module := qjsWasm
	ctx := context.Background()
	if instrument {
		inst, err := wasm.Instrument(qjsWasm, &wasm.InstrumentOptions{Interval: checkInterval})
		if err != nil {
			return nil, fmt.Errorf("instrumenting the interpreter: %w", err)
		}
		module = inst.Module
		ctx = wasm.WithCallHook(ctx, inst.CheckFunc, checkInterrupt)
	}
	cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		return nil, fmt.Errorf("opening compilation cache: %w", err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
	if _, err := wsp1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiating WASI: %w", err)
	}
	// The build imports qjs's Go function proxy; the sandbox registers no Go
	// functions, so nothing can reach it.
	if _, err := rt.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func(_ context.Context, _ api.Module, _ uint32, _ uint64, _ uint32, _ uint32) uint64 {
			panic("sandbox: unexpected call to jsFunctionProxy")
		}).Export("jsFunctionProxy").Instantiate(ctx); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiating host module: %w", err)
	}
	compiled, err := rt.CompileModule(ctx, module)
	if err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("compiling interpreter: %w", err)
	}
	return &vm{rt: rt, compiled: compiled}, nil
}

// template is an engine's bootstrapped interpreter, kept as a snapshot of
// its linear memory, and where things are in it.
type template struct {
	jsrt, jsctx uint32 // JSRuntime and JSContext pointers
	stackTop    uint32
	pump, drain uint64 // the bootstrap's functions (JSValues)
	again       uint64
	seal, start uint64
	opts        uint32 // QJSEvalOptions scratch struct
	argv        uint32 // JSValue[maxArgs] scratch
	scratch     uint32 // malloc'd string buffer of scratchCap bytes
	scratchCap  uint32
	names       map[string]uint32 // NUL-terminated fileNames
	idle        [2]uint32         // bytecode of an empty script: address, length

	size  uint64     // linear memory size
	image []byte     // linear memory contents
	runs  [][2]int64 // byte ranges where image differs from a fresh instance
}

// guest is one interpreter: a qjs.wasm instance with its own linear memory,
// restored from the engine's template. It is used by one goroutine at a
// time and never reused after it ran a script.
type guest struct {
	mod   api.Module
	mem   *wasm.Memory
	ctx   context.Context // carries the guest to checkInterrupt
	tpl   *template
	fns   [numFns]api.Function
	stack [8]uint64

	jsctx      uint32
	stackTop   uint32
	scratch    uint32
	scratchCap uint32

	stop     atomic.Bool  // set to end the running script
	stopAt   atomic.Int64 // unix nanoseconds of the first stop request; 0 for none
	deadline atomic.Int64 // unix nanoseconds; 0 for none
	// stopChecks counts the interrupt checks since the stop (guest
	// goroutine only).
	stopChecks int

	mu     sync.Mutex
	closed bool
}

type guestKey struct{}

// checkInterval is how many loop iterations or recursive calls the guest
// runs between two calls of checkInterrupt. A stopped script first gets
// the graceful stop (see checkInterrupt); it is trapped once hardStopGrace
// has passed and it has run hardStopChecks more intervals without
// stopping: counting the guest's own progress as well as the clock keeps a
// guest that the machine did not schedule from being trapped the moment it
// runs again, when the graceful stop was a few steps away.
// benchmarks/README.md shows what the checks cost.
const (
	checkInterval  = 10000
	hardStopGrace  = 20 * time.Millisecond
	hardStopChecks = 8
)

// errHardStop is the panic that traps a guest that did not stop in time.
var errHardStop = &trapError{msg: "wasm error: stopped in native code at the deadline"}

// checkInterrupt runs on the guest's goroutine every checkInterval steps of
// the instrumented interpreter, wherever it is. Once the execution is
// cancelled or past its deadline it raises QuickJS's interrupt, the
// graceful stop: the interpreter throws at its next bytecode step and the
// console output since the last report can still be read. If the guest
// still runs after the grace (inside a native built-in), it panics: wazero
// unwinds the guest and the call returns a trap. The instance is never
// used again, so stopping it in the middle of native code is safe.
//
// Doing the check here, rather than only from a timer goroutine, matters:
// compiled wasm cannot be preempted, so this is also the Go scheduler's and
// garbage collector's safe point, and on a busy machine a timer goroutine
// may not get a processor while a collection waits for this one.
func checkInterrupt(ctx context.Context) {
	g, ok := ctx.Value(guestKey{}).(*guest)
	if !ok {
		return
	}
	now := time.Now().UnixNano()
	if !g.stop.Load() {
		if d := g.deadline.Load(); d == 0 || now <= d {
			return
		}
		g.stop.Store(true)
	}
	g.interrupt()
	g.stopChecks++
	at := g.stopAt.Load()
	if at == 0 {
		g.stopAt.CompareAndSwap(0, now)
		return
	}
	if now-at > int64(hardStopGrace) && g.stopChecks > hardStopChecks {
		panic(errHardStop)
	}
}

// checkQJSVersion fails when the binary was built with a qjs other than the
// one whose layout is described above. Builds without module information
// (rare) rely on the layout checks and the self-test alone.
func checkQJSVersion() error {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	for _, dep := range info.Deps {
		if dep.Path == qjsModulePath {
			if dep.Replace != nil {
				dep = dep.Replace
			}
			if dep.Version != qjsModuleVersion && dep.Version != "(devel)" {
				return fmt.Errorf("sandbox supports %s %s, binary has %s", qjsModulePath, qjsModuleVersion, dep.Version)
			}
		}
	}
	return nil
}

// guestOptions are the per-engine settings every guest is created with.
type guestOptions struct {
	cacheDir       string
	fsRoot         string // a host path that does not exist
	memoryCeiling  uint64
	initialStackKB int

	vm     *vm
	modCfg wazero.ModuleConfig
	tpl    *template // nil until the engine built it
}

// prepare loads the interpreter and builds the template.
func (o *guestOptions) prepare() error {
	v, err := loadVM(o.cacheDir)
	if err != nil {
		return err
	}
	o.vm = v
	o.modCfg = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithFSConfig(wazero.NewFSConfig().WithDirMount(o.fsRoot, "/")).
		WithStdout(io.Discard).
		WithStderr(io.Discard)
	tpl, err := newTemplate(*o)
	if err != nil {
		return err
	}
	o.tpl = tpl
	return nil
}

// instantiate creates a module instance for g with its own memory.
func instantiate(opts guestOptions) (*guest, error) {
	g := &guest{mem: wasm.NewMemory(opts.memoryCeiling)}
	g.ctx = context.WithValue(context.Background(), guestKey{}, g)
	mod, err := opts.vm.rt.InstantiateModule(wasm.WithMemory(g.ctx, g.mem), opts.vm.compiled, opts.modCfg)
	if err != nil {
		g.mem.Free()
		return nil, fmt.Errorf("creating interpreter: %w", err)
	}
	g.mod = mod
	return g, nil
}

// newTemplate creates and bootstraps an interpreter, checks the layout and
// snapshots its memory.
func newTemplate(opts guestOptions) (tpl *template, err error) {
	g, err := instantiate(opts)
	if err != nil {
		return nil, err
	}
	defer g.close()
	defer recoverTrap(&err)
	m := g.mod.Memory()
	fresh, _ := m.Read(0, m.Size())
	fresh = bytes.Clone(fresh)

	qjsrt := uint32(g.call(fnNewQJS, 0, layoutProbeStack, 0, 0))
	tpl = &template{names: map[string]uint32{}}
	g.tpl = tpl
	tpl.jsrt = g.u32(qjsrt)
	tpl.jsctx = uint32(g.call(fnGetContext, uint64(qjsrt)))
	g.jsctx = tpl.jsctx
	read := func(o uint32) uint32 {
		v, _ := g.mem.AtomicLoad32(tpl.jsrt + o)
		return v
	}
	if got := read(offStackSize); got != layoutProbeStack {
		return nil, fmt.Errorf("unexpected QuickJS layout: stack_size reads %d, want %d", got, layoutProbeStack)
	}
	tpl.stackTop = read(offStackTop)
	g.stackTop = tpl.stackTop
	if tpl.stackTop > shadowStackTop || tpl.stackTop < shadowStackTop-1024 {
		return nil, fmt.Errorf("unexpected QuickJS layout: stack_top reads %d", tpl.stackTop)
	}
	if read(offInterruptHandler) != 0 || read(offInterruptOpaque) != 0 || read(offStackLimit) != 0 {
		return nil, errors.New("unexpected QuickJS layout: interrupt handler or stack limit already set")
	}
	if v, ok := g.mem.AtomicLoad32(pendingSignalsAddr); !ok || v != 0 {
		return nil, errors.New("unexpected QuickJS layout: os_pending_signals is not clear")
	}
	if err := g.mem.Store32(tpl.jsrt+offInterruptHandler, sigintHandlerIndex); err != nil {
		return nil, err
	}
	if err := g.setStackLimit(opts.initialStackKB); err != nil {
		return nil, err
	}
	for _, name := range fileNames {
		p := g.malloc(len(name) + 1)
		g.writeCString(p, name)
		tpl.names[name] = p
	}
	tpl.opts = g.malloc(24)
	tpl.argv = g.malloc(8 * maxArgs)
	tpl.scratch = g.malloc(scratchSize)
	tpl.scratchCap = scratchSize
	g.scratch, g.scratchCap = tpl.scratch, tpl.scratchCap

	// An empty script, compiled once: evaluating it runs the pending jobs
	// without parsing anything.
	o := tpl.opts
	g.put32(o, g.cString(" "))
	g.put32(o+4, 0)
	g.put32(o+8, 0)
	g.put32(o+12, g.name("pump.js"))
	g.put32(o+16, uint32(evalFlags|1<<5)) // JS_EVAL_FLAG_COMPILE_ONLY
	packed := uint32(g.call(fnCompile, uint64(tpl.jsctx), uint64(o)))
	if packed == 0 {
		return nil, fmt.Errorf("compiling the job loop: %w", g.exception())
	}
	pv, _ := m.ReadUint64Le(packed)
	tpl.idle = [2]uint32{uint32(pv >> 32), uint32(pv)}

	v := g.evalRaw("toolgate-bootstrap.js", bootstrapJS)
	if jsTag(v) == jsTagException {
		return nil, fmt.Errorf("evaluating bootstrap: %w", g.exception())
	}
	if jsTag(v) != jsTagObject {
		return nil, fmt.Errorf("unexpected QuickJS layout: bootstrap returned tag %d", jsTag(v))
	}
	tpl.drain = g.call(fnGetPropertyUint32, uint64(tpl.jsctx), v, 0)
	tpl.pump = g.call(fnGetPropertyUint32, uint64(tpl.jsctx), v, 1)
	tpl.again = g.call(fnGetPropertyUint32, uint64(tpl.jsctx), v, 2)
	tpl.seal = g.call(fnGetPropertyUint32, uint64(tpl.jsctx), v, 3)
	tpl.start = g.call(fnGetPropertyUint32, uint64(tpl.jsctx), v, 4)
	g.freeValue(v)
	for _, fn := range []uint64{tpl.drain, tpl.pump, tpl.again, tpl.seal, tpl.start} {
		if jsTag(fn) != jsTagObject {
			return nil, errors.New("unexpected QuickJS layout: bootstrap functions missing")
		}
	}
	// Prove the value encoding: the drain function returns a string (the
	// engine's self-test then proves pump's arguments).
	if s, err := g.drainReport(); err != nil || s != "" {
		return nil, fmt.Errorf("unexpected QuickJS layout: drain() returned %q (%v)", s, err)
	}

	tpl.size = uint64(m.Size())
	img, _ := m.Read(0, uint32(tpl.size))
	tpl.image = bytes.Clone(img)
	for off := int64(0); off < int64(tpl.size); off += snapshotPage {
		page := tpl.image[off : off+snapshotPage]
		var was []byte
		if off < int64(len(fresh)) {
			was = fresh[off : off+snapshotPage]
		}
		if (was == nil && isZero(page)) || (was != nil && bytes.Equal(page, was)) {
			continue
		}
		if n := len(tpl.runs); n > 0 && tpl.runs[n-1][1] == off {
			tpl.runs[n-1][1] = off + snapshotPage
		} else {
			tpl.runs = append(tpl.runs, [2]int64{off, off + snapshotPage})
		}
	}
	return tpl, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// newGuest creates an interpreter from the engine's template.
func newGuest(opts guestOptions) (*guest, error) {
	tpl := opts.tpl
	if tpl == nil {
		return nil, errors.New("sandbox: engine has no interpreter template")
	}
	g, err := instantiate(opts)
	if err != nil {
		return nil, err
	}
	g.tpl = tpl
	g.jsctx, g.stackTop = tpl.jsctx, tpl.stackTop
	g.scratch, g.scratchCap = tpl.scratch, tpl.scratchCap
	m := g.mod.Memory()
	if cur := uint64(m.Size()); cur < tpl.size {
		if _, ok := m.Grow(uint32((tpl.size - cur) / wasm.PageSize)); !ok {
			g.close()
			return nil, errors.New("creating interpreter: cannot grow memory to the snapshot's size")
		}
	}
	buf, ok := m.Read(0, uint32(tpl.size))
	if !ok {
		g.close()
		return nil, errors.New("creating interpreter: memory smaller than the snapshot")
	}
	for _, r := range tpl.runs {
		copy(buf[r[0]:r[1]], tpl.image[r[0]:r[1]])
	}
	return g, nil
}

// recoverTrap turns a panic from call (a wasm trap or a host fault) into
// *trapError.
func recoverTrap(err *error) {
	if r := recover(); r != nil {
		if t, ok := r.(*trapError); ok {
			*err = t
			return
		}
		*err = &trapError{msg: fmt.Sprint(r)}
	}
}

// call invokes export f; a trap panics with *trapError.
func (g *guest) call(f int, args ...uint64) uint64 {
	fn := g.fns[f]
	if fn == nil {
		fn = g.mod.ExportedFunction(fnNames[f])
		if fn == nil {
			panic(&trapError{msg: "qjs.wasm does not export " + fnNames[f]})
		}
		g.fns[f] = fn
	}
	st := g.stack[:]
	copy(st, args)
	if err := fn.CallWithStack(g.ctx, st); err != nil {
		if errors.Is(err, errHardStop) {
			panic(errHardStop)
		}
		panic(&trapError{msg: err.Error()})
	}
	return st[0]
}

func (g *guest) u32(addr uint32) uint32 {
	v, ok := g.mod.Memory().ReadUint32Le(addr)
	if !ok {
		panic(&trapError{msg: fmt.Sprintf("wasm error: out of bounds memory access at %#x", addr)})
	}
	return v
}

func (g *guest) put32(addr, v uint32) {
	if !g.mod.Memory().WriteUint32Le(addr, v) {
		panic(&trapError{msg: fmt.Sprintf("wasm error: out of bounds memory access at %#x", addr)})
	}
}

func (g *guest) writeCString(addr uint32, s string) {
	m := g.mod.Memory()
	if !m.WriteString(addr, s) || !m.WriteByte(addr+uint32(len(s)), 0) {
		panic(&trapError{msg: fmt.Sprintf("wasm error: out of bounds memory access at %#x", addr)})
	}
}

func (g *guest) malloc(n int) uint32 {
	p := uint32(g.call(fnMalloc, uint64(n)))
	if p == 0 {
		panic(&trapError{msg: "malloc failed: out of memory"})
	}
	return p
}

func (g *guest) freeValue(v uint64) {
	if t := jsTag(v); t >= jsTagFirst && t < 0 {
		g.call(fnFreeValue, uint64(g.jsctx), v)
	}
}

// cString writes s, NUL-terminated, into the scratch buffer.
func (g *guest) cString(s string) uint32 {
	if n := uint32(len(s)) + 1; n > g.scratchCap {
		size := max(n, 2*g.scratchCap)
		p := g.malloc(int(size))
		g.call(fnFree, uint64(g.scratch))
		g.scratch, g.scratchCap = p, size
	}
	g.writeCString(g.scratch, s)
	return g.scratch
}

func (g *guest) name(file string) uint32 {
	p, ok := g.tpl.names[file]
	if !ok {
		panic(&trapError{msg: "sandbox: unregistered script name " + file})
	}
	return p
}

// evalRaw evaluates src as a strict global script; the interpreter then runs
// every pending job. A thrown exception returns JS_EXCEPTION.
func (g *guest) evalRaw(file, src string) uint64 {
	code := g.cString(src)
	o := g.tpl.opts
	g.put32(o, code)                 // buf
	g.put32(o+4, 0)                  // bytecode_buf
	g.put32(o+8, 0)                  // bytecode_len
	g.put32(o+12, g.name(file))      // filename
	g.put32(o+16, uint32(evalFlags)) // eval_flags
	return g.call(fnEval, uint64(g.jsctx), uint64(o))
}

// runJobs evaluates the precompiled empty script: the interpreter runs
// every pending job.
func (g *guest) runJobs() uint64 {
	o := g.tpl.opts
	g.put32(o, 0)
	g.put32(o+4, g.tpl.idle[0])
	g.put32(o+8, g.tpl.idle[1])
	g.put32(o+12, g.name("pump.js"))
	g.put32(o+16, uint32(evalFlags))
	return g.call(fnEval, uint64(g.jsctx), uint64(o))
}

// toString converts v with JS_ToCString; ok is false when that threw.
func (g *guest) toString(v uint64) (s string, ok bool) {
	p := uint32(g.call(fnToCString, uint64(g.jsctx), v))
	if p == 0 {
		return "", false
	}
	packed, okr := g.mod.Memory().ReadUint64Le(p)
	if !okr {
		panic(&trapError{msg: "wasm error: out of bounds memory access"})
	}
	addr, n := uint32(packed>>32), uint32(packed)
	b, okr := g.mod.Memory().Read(addr, n)
	if !okr {
		panic(&trapError{msg: "wasm error: out of bounds memory access"})
	}
	s = string(b)
	g.call(fnFree, uint64(p))
	g.call(fnFreeCString, uint64(g.jsctx), uint64(addr))
	return s, true
}

// exception takes the pending exception as an error: its string value, then
// a newline and its stack when it has one.
func (g *guest) exception() error {
	e := g.call(fnGetException, uint64(g.jsctx))
	defer g.freeValue(e)
	msg, ok := g.toString(e)
	if !ok {
		g.freeValue(g.call(fnGetException, uint64(g.jsctx)))
		msg = "Error: unprintable exception"
	}
	st := g.call(fnGetPropertyStr, uint64(g.jsctx), e, uint64(g.name("stack")))
	switch jsTag(st) {
	case jsTagUndefined:
	case jsTagException:
		g.freeValue(g.call(fnGetException, uint64(g.jsctx)))
	default:
		if s, ok := g.toString(st); ok {
			msg += "\n" + s
		} else {
			g.freeValue(g.call(fnGetException, uint64(g.jsctx)))
		}
		g.freeValue(st)
	}
	return errors.New(msg)
}

// setStackLimit makes QuickJS throw RangeError once the shadow stack use
// passes kb KiB (clamped to what the build can honour).
func (g *guest) setStackLimit(kb int) error {
	n := kb << 10
	if n <= 0 || n > maxStackBytes {
		n = maxStackBytes
	}
	jsrt := uint32(0)
	if g.tpl != nil {
		jsrt = g.tpl.jsrt
	}
	return g.mem.Store32(jsrt+offStackLimit, g.stackTop-uint32(n))
}

// interrupt asks the running script to stop; it is safe from any goroutine.
// The script ends with an uncatchable "InternalError: interrupted" within
// 10,000 bytecode steps.
func (g *guest) interrupt() {
	g.mem.AtomicOr32(pendingSignalsAddr, sigintBit)
}

// clearInterrupt re-enables running code after an interrupt, until d.
func (g *guest) clearInterrupt(d time.Time) {
	g.deadline.Store(d.UnixNano())
	g.stop.Store(false)
	g.stopAt.Store(0)
	g.stopChecks = 0
	g.mem.Store32(pendingSignalsAddr, 0)
}

// stopNow ends the running script at its next interrupt check.
func (g *guest) stopNow() {
	g.stopAt.CompareAndSwap(0, time.Now().UnixNano())
	g.stop.Store(true)
	g.interrupt()
}

// eval runs src as a global script and returns its value as a string; a
// promise is awaited on the interpreter's own loop. A wasm trap (a crash of
// the interpreter) is returned as *trapError.
func (g *guest) eval(file, src string) (s string, err error) {
	defer recoverTrap(&err)
	return g.stringResult(g.evalRaw(file, src))
}

// stringResult converts v, the result of a call into the interpreter, to a
// Go string and frees it; an exception (as v, or from the conversion)
// becomes the error.
func (g *guest) stringResult(v uint64) (string, error) {
	if jsTag(v) == jsTagException {
		return "", g.exception()
	}
	defer g.freeValue(v)
	s, ok := g.toString(v)
	if !ok {
		return "", g.exception()
	}
	return s, nil
}

// startScript evaluates src, whose value must be the agent's function,
// calls that function, hands what it returned (or threw) to the
// bootstrap's start(), lets the interpreter run every job that made ready
// and returns the drain() report. The host makes the call itself so that
// no bootstrap function is on the stack below the agent's code.
func (g *guest) startScript(file, src string) (s string, err error) {
	defer recoverTrap(&err)
	fn := g.evalRaw(file, src)
	if jsTag(fn) == jsTagException {
		return "", g.exception()
	}
	p := g.call(fnCall, uint64(g.jsctx), fn, jsUndefined, 0, 0)
	g.freeValue(fn)
	ok := uint64(1)
	if jsTag(p) == jsTagException {
		ok, p = 0, g.call(fnGetException, uint64(g.jsctx))
	}
	v := g.callInts(g.tpl.start, ok, p)
	g.freeValue(p)
	if jsTag(v) == jsTagException {
		return "", g.exception()
	}
	g.freeValue(v)
	if v = g.runJobs(); jsTag(v) == jsTagException {
		return "", g.exception()
	}
	g.freeValue(v)
	return g.drainReport()
}

// seal calls the bootstrap's seal(logCap, fetch, seed...) (see
// bootstrap.js): the execution's own settings, before the agent's code.
func (g *guest) seal(logCap int32, fetch bool, seed [4]uint32) (err error) {
	defer recoverTrap(&err)
	f := uint64(0)
	if fetch {
		f = 1
	}
	// JS_TAG_INT is 0: an int32 JSValue is the number itself.
	v := g.callInts(g.tpl.seal, uint64(uint32(logCap)), f,
		uint64(seed[0]), uint64(seed[1]), uint64(seed[2]), uint64(seed[3]))
	if jsTag(v) == jsTagException {
		return g.exception()
	}
	g.freeValue(v)
	return nil
}

// callInts calls fn with args (JSValues, at most maxArgs) and this
// undefined, and returns its result.
func (g *guest) callInts(fn uint64, args ...uint64) uint64 {
	m := g.mod.Memory()
	for i, a := range args {
		if !m.WriteUint64Le(g.tpl.argv+uint32(8*i), a) {
			panic(&trapError{msg: "wasm error: out of bounds memory access"})
		}
	}
	return g.call(fnCall, uint64(g.jsctx), fn, jsUndefined, uint64(len(args)), uint64(g.tpl.argv))
}

// pump hands each settlement to the bootstrap's pump(id, ok, payload),
// runs every job that made ready and returns the drain() report.
func (g *guest) pump(items []settlement) (s string, err error) {
	defer recoverTrap(&err)
	for _, it := range items {
		payload := jsUndefined
		if it.payload != "" {
			payload = g.call(fnNewString, uint64(g.jsctx), uint64(g.cString(it.payload)))
			if jsTag(payload) == jsTagException {
				return "", g.exception()
			}
		}
		ok := uint64(0)
		if it.ok {
			ok = 1
		}
		v := g.callInts(g.tpl.pump, uint64(uint32(it.id)), ok, payload)
		g.freeValue(payload)
		if jsTag(v) == jsTagException {
			return "", g.exception()
		}
		g.freeValue(v)
	}
	v := g.runJobs()
	if jsTag(v) == jsTagException {
		return "", g.exception()
	}
	g.freeValue(v)
	return g.drainReport()
}

// drainReport calls the bootstrap's drain().
func (g *guest) drainReport() (string, error) {
	s, err := g.callString(g.tpl.drain)
	if err != nil || reportComplete(s) {
		return s, err
	}
	// The report was read up to a U+0000: ask for it as a JSON string.
	q, err := g.callString(g.tpl.again)
	if err != nil {
		return "", err
	}
	var whole string
	if err := json.Unmarshal([]byte(q), &whole); err != nil {
		return "", fmt.Errorf("decoding the quoted guest report: %w", err)
	}
	return whole, nil
}

// callString calls a bootstrap function without arguments and returns its
// string result.
func (g *guest) callString(fn uint64) (string, error) {
	return g.stringResult(g.call(fnCall, uint64(g.jsctx), fn, jsUndefined, 0, 0))
}

// trapError is a crash of the interpreter: the instance is unusable.
type trapError struct{ msg string }

func (e *trapError) Error() string {
	msg := e.msg
	if i := strings.Index(msg, "\n"); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.Index(msg, "wasm error: "); i >= 0 {
		msg = msg[i:]
	}
	return "interpreter crashed: " + msg
}

// close discards the instance: its linear memory is unmapped without
// freeing the QuickJS heap object by object.
func (g *guest) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	if g.mod != nil {
		_ = g.mod.Close(context.Background())
	}
	g.mem.Free()
}

// selfTest proves on a fresh guest that the interrupt and the stack limit
// work with this build, before the engine accepts scripts.
func selfTest(opts guestOptions) error {
	g, err := newGuest(opts)
	if err != nil {
		return err
	}
	defer g.close()
	g.deadline.Store(time.Now().Add(100 * time.Millisecond).UnixNano())
	start := time.Now()
	_, err = g.eval("selftest.js", "let i = 0; for (;;) { if (++i > 5e8) break; } 'not interrupted'")
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		return fmt.Errorf("sandbox self-test: interrupt did not stop a loop (err=%v)", err)
	}
	if time.Since(start) > 5*time.Second {
		return errors.New("sandbox self-test: interrupt was too slow")
	}
	g.clearInterrupt(time.Time{})
	g.deadline.Store(0)
	if err := pumpSelfTest(opts); err != nil {
		return err
	}
	s, err := g.eval("selftest2.js", "let d = 0; function f(n) { d = n; return f(n + 1) + 1; } try { f(0) } catch (e) { e.name }")
	if err != nil || s != "RangeError" {
		return fmt.Errorf("sandbox self-test: stack limit did not hold (got %q, err=%v)", s, err)
	}
	return nil
}

// pumpSelfTest proves on a fresh guest that pump's integer and string
// arguments arrive as such: a timer and a tool call settle, in that order.
func pumpSelfTest(opts guestOptions) error {
	g, err := newGuest(opts)
	if err != nil {
		return err
	}
	defer g.close()
	g.deadline.Store(time.Now().Add(5 * time.Second).UnixNano())
	out, err := g.startScript("selftest.js", `(async () => {
  await new Promise((r) => setTimeout(r, 1));
  return [await __toolgate_call("t", "{}"), "\u00e9\ud83d\ude00"];
})`)
	if err != nil || out != "t1:1:" {
		return fmt.Errorf("sandbox self-test: timer request %q (%v)", out, err)
	}
	if out, err = g.pump([]settlement{{id: 1, ok: true}}); err != nil || out != "c2:1:t2:{}" {
		return fmt.Errorf("sandbox self-test: tool call request %q (%v)", out, err)
	}
	if out, err = g.pump([]settlement{{id: 2, ok: true, payload: `{"a":1}`}}); err != nil || out != `v15:[{"a":1},"é😀"]` {
		return fmt.Errorf("sandbox self-test: result %q (%v)", out, err)
	}
	return nil
}
