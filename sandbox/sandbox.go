// Package sandbox runs one Code Mode script: a JavaScript program, written as
// the body of an async function, in a fresh QuickJS interpreter compiled to
// WebAssembly, with a wall-clock timeout, a memory cap, a stack cap and no
// ambient authority. It owns the limits, console capture, the shape of a
// result, the pool of warm interpreters, the images of evaluated preludes
// (see Request.Prelude) and the fetch gate.
//
// It knows nothing about MCP or HTTP routing: the caller hands it tool
// bindings as JavaScript source (Request.Prelude) and a Caller that performs
// one tool call. The wasm package underneath knows nothing about JavaScript.
//
// # The host primitive for bindings
//
// The prelude runs before the agent's code, in the same interpreter, and sees
// one extra global:
//
//	__toolgate_call(name: string, argsJSON: string): Promise<unknown>
//
// It asks the host to call the tool name with argsJSON (a JSON text; if it is
// not valid JSON the call rejects) and resolves with the tool's result: the
// JSON text the Caller returned, parsed by the interpreter's own JSON.parse
// (captured before any other code ran, so a script cannot replace it). It
// rejects with an Error whose .code is the callerr.Error code ("not_found",
// "rate_limited", "timeout", "tool_error", "limit", ...), whose .tool is
// name and, when the host gave one, with a numeric .retryAfterMs; its
// property errorsCarryCodes (true) says so, for the bindings package. The
// prelude must capture it
// (const call = __toolgate_call) because it is deleted from the global
// object before the agent's code runs. A minimal prelude:
//
//	const call = __toolgate_call;
//	globalThis.callTool = (name, args) => call(name, JSON.stringify(args ?? {}));
//
// # Limits that hold against any script
//
// The interpreter is compiled with a check of the deadline in every loop
// and every recursive call (wasm.Instrument), so the timeout stops a
// script inside QuickJS's native built-ins as well as in its bytecode:
// first gracefully (the interpreter throws an uncatchable error at its next
// bytecode step), and, if it is inside native code, by trapping the
// instance a few milliseconds later. Whatever the host keeps or hands back
// for an execution is bounded by its Limits: tool names (MaxToolNameBytes),
// arguments (MaxArgumentBytes, and the memory limit for all the calls
// waiting at once), tool-call records, console lines and error texts
// (MaxOutputBytes). The bootstrap's own functions, which settle promises,
// fire timers and seed Math.random, are held by the host only.
//
// # What a script sees
//
// console.log/info/warn/error/debug (captured), setTimeout/clearTimeout
// (driven by the host, never outliving the execution), performance.now and
// Date with millisecond resolution, fetch only when Request.Fetch is set, and
// the ECMAScript built-ins. There is no filesystem, no environment, no
// std/os modules (import() is refused), and eval/Function are disabled.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/toolgate/toolgate/wasm"
)

// Caller is the host side of one tool call made by a script: name and JSON
// arguments in, JSON value out. Returning a *callerr.Error rejects the
// script's promise with an Error carrying its code (and, when the error
// has a retry hint, .retryAfterMs); any other error rejects it with code
// "tool_error". ctx is cancelled when the script ends or times out.
type Caller func(ctx context.Context, name string, argsJSON []byte) (resultJSON []byte, err error)

// Limits bound one execution. A zero field takes its default.
type Limits struct {
	Timeout                time.Duration // wall clock, also while awaiting tools; default 10s
	MemoryLimitMB          int           // cap on the interpreter's linear memory; default 64
	MaxStackKB             int           // interpreter stack; default and maximum 56
	MaxToolCalls           int           // per execution; default 100
	MaxConcurrentToolCalls int           // in flight at once, extra calls queue; default 8
	MaxCodeBytes           int           // size of Request.Code; default 256 KiB
	// MaxOutputBytes bounds what an execution hands back: its result, its
	// console lines, its error's texts and its tool-call records, measured
	// as JSON text; default 1 MiB.
	MaxOutputBytes int
	// MaxArgumentBytes bounds the JSON arguments of one tool call and the
	// body of one fetch request, as a gateway bounds a client's request
	// body; default 4 MiB.
	MaxArgumentBytes int
}

// Limit names, as reported in ScriptError.Limit.
const (
	LimitTimeout       = "timeout"
	LimitMemory        = "memoryLimitMB"
	LimitStack         = "maxStackKB"
	LimitToolCalls     = "maxToolCalls"
	LimitCodeBytes     = "maxCodeBytes"
	LimitOutputBytes   = "maxOutputBytes"
	LimitFetchRequests = "fetch.maxRequests"
	LimitArgumentBytes = "maxArgumentBytes"
	defaultTimeout     = 10 * time.Second
	defaultMemoryMB    = 64
	defaultToolCalls   = 100
	defaultConcurrency = 8
	defaultCodeBytes   = 256 << 10
	defaultOutputBytes = 1 << 20
	defaultArgBytes    = 4 << 20
	defaultMaxMemoryMB = 1024
	defaultPoolSize    = 4
	defaultFetchBytes  = 1 << 20
	defaultFetchCount  = 20
	defaultStackKB     = maxStackBytes >> 10
	maxRedirects       = 5
)

// MaxToolNameBytes is the longest tool name: MCP names are 1-128
// characters. A longer name appears in records and messages clipped, with
// its length (the gateway's tool path refuses it as not_found).
const MaxToolNameBytes = 128

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = defaultTimeout
	}
	if l.MemoryLimitMB <= 0 {
		l.MemoryLimitMB = defaultMemoryMB
	}
	if l.MaxStackKB <= 0 || l.MaxStackKB > defaultStackKB {
		l.MaxStackKB = defaultStackKB
	}
	if l.MaxToolCalls <= 0 {
		l.MaxToolCalls = defaultToolCalls
	}
	if l.MaxConcurrentToolCalls <= 0 {
		l.MaxConcurrentToolCalls = defaultConcurrency
	}
	if l.MaxCodeBytes <= 0 {
		l.MaxCodeBytes = defaultCodeBytes
	}
	if l.MaxOutputBytes <= 0 {
		l.MaxOutputBytes = defaultOutputBytes
	}
	if l.MaxArgumentBytes <= 0 {
		l.MaxArgumentBytes = defaultArgBytes
	}
	return l
}

// Request is one script to run.
type Request struct {
	// Code is the agent's code: the body of an async function, so top-level
	// await and return work. Line 1 of Code is line 1 in error stacks.
	Code string
	// Prelude is trusted JavaScript evaluated first, typically the tool
	// bindings; it reaches the host through __toolgate_call (see the package
	// documentation). The engine evaluates a given prelude text once and
	// starts later executions with the same text from the interpreter state
	// it left (a copy, taken before any agent code ran), so a prelude must
	// not depend on when it runs: what its top level reads from Date or
	// performance.now is that of its first successful evaluation. A prelude
	// that fails is evaluated, and fails, in every execution.
	Prelude string
	// Caller performs tool calls; nil rejects every call with "not_found".
	Caller Caller
	// Fetch enables the global fetch under this policy; nil leaves fetch absent.
	Fetch *FetchPolicy
}

// Result is the outcome of one execution. Script failures, including a
// breached limit, are reported in Error; Run's error is for internal faults.
type Result struct {
	Result          json.RawMessage  `json:"result"`          // the returned value as JSON; null for undefined or on error
	Logs            []LogLine        `json:"logs"`            // console output, capped
	ToolCalls       []ToolCallRecord `json:"toolCalls"`       // in the order they finished
	DurationMs      float64          `json:"durationMs"`      // wall clock of the whole execution
	Error           *ScriptError     `json:"error,omitempty"` // set when the script failed
	Truncated       bool             `json:"truncated,omitempty"`
	PeakMemoryBytes int64            `json:"peakMemoryBytes"` // largest linear memory size reached
	// StartMs is the part of DurationMs spent getting an interpreter ready
	// for the agent's code: taking it from the warm pool (or creating one)
	// and evaluating the prelude.
	StartMs float64 `json:"startMs"`
	// WaitMs is the part of DurationMs the script spent idle, awaiting tool
	// calls, fetches or timers.
	WaitMs float64 `json:"waitMs"`
}

// LogLine is one console call.
type LogLine struct {
	Level   string `json:"level"` // log, info, debug, warn or error
	Message string `json:"message"`
}

// ToolCallRecord is one finished tool call, or the calls refused past
// maxToolCalls, all in one record.
type ToolCallRecord struct {
	Tool string  `json:"tool"` // clipped to MaxToolNameBytes, with the full length, when longer
	OK   bool    `json:"ok"`
	Ms   float64 `json:"ms"`
	// Count is set on the one record of the calls refused past
	// maxToolCalls (Tool is RefusedCallsTool): how many there were.
	Count int `json:"count,omitempty"`
}

// RefusedCallsTool is the Tool of the record that counts the calls refused
// past maxToolCalls.
const RefusedCallsTool = "(over maxToolCalls)"

// ScriptError describes why a script failed.
type ScriptError struct {
	Name    string `json:"name"`             // JavaScript error name, e.g. TypeError
	Message string `json:"message"`          //
	Stack   string `json:"stack,omitempty"`  // frames in the agent's code are "agent.js:LINE:COL" with LINE 1 the first line of Request.Code
	Line    int    `json:"line,omitempty"`   // first frame in the agent's code, 1-based; 0 when unknown
	Column  int    `json:"column,omitempty"` //
	Code    string `json:"code,omitempty"`   // the .code of a rejected tool call, when that was the error
	Limit   string `json:"limit,omitempty"`  // the limit that ended the script, one of the Limit* names
}

func (e *ScriptError) Error() string {
	if e.Limit != "" {
		return fmt.Sprintf("%s: %s (limit %s)", e.Name, e.Message, e.Limit)
	}
	return e.Name + ": " + e.Message
}

// EngineOptions configure an Engine; nil means defaults.
type EngineOptions struct {
	// CacheDir holds wazero's compilation cache, so a restarted process does
	// not recompile the interpreter (about 1 s). Empty means
	// os.UserCacheDir()/toolgate/wazero. The cache directory of the first
	// engine in a process is used for the whole process.
	CacheDir string
	// PoolSize is the number of interpreters kept created and bootstrapped
	// ahead of demand; 0 means 4, negative disables the pool.
	PoolSize int
	// MaxMemoryMB is the address space reserved per interpreter and the upper
	// bound of Limits.MemoryLimitMB; default 1024.
	MaxMemoryMB int
	// Logger receives internal faults; nil means slog.Default().
	Logger *slog.Logger
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("sandbox engine is closed")

// Engine runs scripts. It owns the compiled interpreter (through the on-disk
// compilation cache), a pool of warm, never-used interpreters and the
// interpreter state after each recently used prelude. It is safe for
// concurrent use.
type Engine struct {
	opts     guestOptions
	log      *slog.Logger
	preludes *preludeCache // interpreter states after a prelude, by its text
	pool     chan *guest
	wake     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
	closed   sync.Once
}

// NewEngine prepares the compilation cache, compiles (or loads) the
// interpreter, proves the timeout and stack guards work with a self-test and
// starts filling the pool.
func NewEngine(ctx context.Context, opts *EngineOptions) (*Engine, error) {
	if opts == nil {
		opts = &EngineOptions{}
	}
	if err := checkQJSVersion(); err != nil {
		return nil, err
	}
	dir := opts.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "toolgate", "wazero")
	}
	dir, err := wasm.PrepareCacheDir(dir)
	if err != nil {
		return nil, err
	}
	root, err := wasm.MissingDir(dir)
	if err != nil {
		return nil, err
	}
	maxMB := opts.MaxMemoryMB
	if maxMB <= 0 {
		maxMB = defaultMaxMemoryMB
	}
	e := &Engine{
		opts:     guestOptions{cacheDir: dir, fsRoot: root, memoryCeiling: uint64(maxMB) << 20, initialStackKB: defaultStackKB},
		log:      opts.Logger,
		preludes: newPreludeCache(maxPreludeImages, maxPreludeImageBytes),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if buildAllowsLoopback {
		e.log.Warn("sandbox: this binary was built with the toolgate_fetch_loopback tag, for tests: fetch may reach loopback addresses; do not deploy it")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := e.opts.prepare(); err != nil {
		return nil, err
	}
	if err := selfTest(e.opts); err != nil {
		return nil, err
	}
	size := opts.PoolSize
	if size == 0 {
		size = defaultPoolSize
	}
	if size > 0 {
		e.pool = make(chan *guest, size)
		e.wg.Add(1)
		go e.fill()
	}
	return e, nil
}

// fill keeps the pool full until Close.
func (e *Engine) fill() {
	defer e.wg.Done()
	for {
		for len(e.pool) < cap(e.pool) {
			g, err := newGuest(e.opts)
			if err != nil {
				e.log.Error("sandbox: creating pooled interpreter", "err", err)
				break
			}
			select {
			case e.pool <- g:
			case <-e.done:
				g.close()
				return
			}
		}
		select {
		case <-e.wake:
		case <-e.done:
			return
		}
	}
}

// take returns a never-used interpreter, from the pool when one is ready.
func (e *Engine) take() (*guest, error) {
	if e.pool != nil {
		select {
		case g := <-e.pool:
			select {
			case e.wake <- struct{}{}:
			default:
			}
			return g, nil
		default:
			select {
			case e.wake <- struct{}{}:
			default:
			}
		}
	}
	return newGuest(e.opts)
}

// Close stops the pool and discards its interpreters. Executions still
// running finish normally.
func (e *Engine) Close() error {
	e.closed.Do(func() {
		close(e.done)
		e.wg.Wait()
		if e.pool != nil {
			for {
				select {
				case g := <-e.pool:
					g.close()
					continue
				default:
				}
				break
			}
		}
	})
	return nil
}

// Ready reports how many warm interpreters wait in the pool.
func (e *Engine) Ready() int {
	if e.pool == nil {
		return 0
	}
	return len(e.pool)
}

func (e *Engine) isClosed() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}
