package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Execution is what one run of a script reported. Fields a source cannot
// know stay zero and Detailed is false (a running gateway reports neither
// start time, nor waiting time, nor memory over MCP).
type Execution struct {
	DurationMs      float64    // the execution as the sandbox timed it
	Detailed        bool       // StartMs, WaitMs and PeakMemoryBytes are known
	StartMs         float64    // getting an interpreter ready (pool take, prelude)
	WaitMs          float64    // awaiting tool calls, fetches, timers
	PeakMemoryBytes int64      // largest linear memory of the interpreter
	ToolCalls       []ToolCall // the calls the script made
	ErrorName       string     // the script's error (e.g. TypeError), "" on success
	ErrorMessage    string     //
	ErrorLine       int        // line of the agent's code, 0 when unknown
	Limit           string     // the limit that ended it, if one did
}

// ToolCall is one call a script made.
type ToolCall struct {
	OK bool
	Ms float64
}

// ExecFunc runs the script once. An error means the execution did not
// happen (refused, transport failure); a script that failed is reported in
// the Execution.
type ExecFunc func(ctx context.Context) (Execution, error)

// ExecOptions configure RunExec.
type ExecOptions struct {
	N           int // timed executions
	Concurrency int // workers sharing them
	Warmup      int // untimed executions first, spread over the workers
	// Open returns the function one worker calls for each execution and
	// what to release afterwards; it is called once per worker.
	Open func(ctx context.Context) (ExecFunc, func(), error)
	// Progress is called after each timed execution; may be nil.
	Progress func(done, total int)
	// InProcess says the executions run in this process, so that its CPU
	// time is theirs (CPUPerExecMs is reported only then).
	InProcess bool
}

// ExecReport is the outcome of RunExec. Times are in milliseconds.
type ExecReport struct {
	Machine  Machine           `json:"machine"`
	Settings map[string]string `json:"settings"`

	Executions  int     `json:"executions"`  // timed executions, = n
	Succeeded   int     `json:"succeeded"`   // ended without error
	Failed      int     `json:"failed"`      // script errors, limits hit and refusals
	ElapsedSec  float64 `json:"elapsedSec"`  // wall clock of the timed region
	ExecPerSec  float64 `json:"execPerSec"`  // Executions / ElapsedSec
	Concurrency int     `json:"concurrency"` //

	Wall     Summary  `json:"wallMs"`     // each execution as the caller waited for it
	Duration *Summary `json:"durationMs"` // as the sandbox timed it; nil when no execution ran
	Start    *Summary `json:"startMs,omitempty"`
	Run      *Summary `json:"runMs,omitempty"` // duration minus start
	// StartShare is the part of all execution time spent starting
	// interpreters.
	StartShare *float64 `json:"startShare,omitempty"`
	// CPUPerExecMs is the process CPU time (user plus system, all threads)
	// of the timed region divided by Executions; only in process, where it
	// also counts the gateway and any in-process upstream.
	CPUPerExecMs *float64 `json:"cpuPerExecMs,omitempty"`
	// PeakMemory is the distribution of the largest linear memory per
	// execution, in bytes (in process only).
	PeakMemory *ByteSummary `json:"peakMemoryBytes,omitempty"`

	ToolCalls ToolCallStats `json:"toolCalls"`

	LimitsHit map[string]int `json:"limitsHit"` // by limit name
	Errors    map[string]int `json:"errors"`    // other failures, by error name or refusal

	wall []float64 // sorted wall times, for the chart
}

// ByteSummary describes a distribution of sizes in bytes.
type ByteSummary struct {
	P50  int64 `json:"p50"`
	Max  int64 `json:"max"`
	Mean int64 `json:"mean"`
}

// ToolCallStats describes the tool calls of all timed executions.
type ToolCallStats struct {
	Total        int     `json:"total"`
	Failed       int     `json:"failed"`
	PerExecution float64 `json:"perExecution"`
	CallMs       Summary `json:"callMs"` // each call's duration
	// Share is the part of the execution time scripts spent awaiting tool
	// calls (and fetches and timers); nil when unknown.
	Share *float64 `json:"share,omitempty"`
}

// RunExec runs the warm-up, checks that the script works, then runs
// opts.N executions over opts.Concurrency workers and summarises them. The
// first warm-up execution must succeed or end on a limit; any other failure
// there (a syntax error, a missing tool) is returned as the error, since
// every execution would repeat it.
func RunExec(ctx context.Context, opts ExecOptions) (*ExecReport, error) {
	if opts.N < 1 {
		return nil, fmt.Errorf("-n must be at least 1, got %d", opts.N)
	}
	if opts.Concurrency < 1 {
		return nil, fmt.Errorf("--concurrency must be at least 1, got %d", opts.Concurrency)
	}
	workers := min(opts.Concurrency, opts.N)
	type worker struct {
		exec  ExecFunc
		close func()
	}
	ws := make([]worker, 0, workers)
	defer func() {
		for _, w := range ws {
			if w.close != nil {
				w.close()
			}
		}
	}()
	for range workers {
		f, closeFn, err := opts.Open(ctx)
		if err != nil {
			return nil, err
		}
		ws = append(ws, worker{f, closeFn})
	}

	// The first execution proves the script runs at all.
	first, err := ws[0].exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("the first execution failed: %w", err)
	}
	if first.ErrorName != "" && first.Limit == "" {
		return nil, &ScriptFailure{Name: first.ErrorName, Message: first.ErrorMessage, Line: first.ErrorLine}
	}
	perWorker := (max(opts.Warmup-1, 0) + workers - 1) / workers
	// The first failure of the warm-up stops the other workers.
	warm, warmCtx := errgroup.WithContext(ctx)
	for _, w := range ws {
		warm.Go(func() error {
			for range perWorker {
				if _, err := w.exec(warmCtx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := warm.Wait(); err != nil {
		return nil, fmt.Errorf("warming up: %w", err)
	}
	var wg sync.WaitGroup

	results := make([]Execution, opts.N)
	wall := make([]time.Duration, opts.N)
	failed := make([]error, opts.N)
	var next, done atomic.Int64
	cpu0, cpuOK := processCPU()
	start := time.Now()
	for _, w := range ws {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= opts.N || ctx.Err() != nil {
					return
				}
				t := time.Now()
				results[i], failed[i] = w.exec(ctx)
				wall[i] = time.Since(t)
				if opts.Progress != nil {
					opts.Progress(int(done.Add(1)), opts.N)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := processCPU()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	rep := &ExecReport{Executions: opts.N, Concurrency: workers, ElapsedSec: elapsed.Seconds(),
		LimitsHit: map[string]int{}, Errors: map[string]int{}}
	rep.ExecPerSec = float64(opts.N) / elapsed.Seconds()
	rep.Wall = Summarize(wall)
	rep.wall = make([]float64, len(wall))
	for i, d := range wall {
		rep.wall[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(rep.wall)
	if cpuOK && opts.InProcess {
		v := float64(cpu1-cpu0) / float64(time.Millisecond) / float64(opts.N)
		rep.CPUPerExecMs = &v
	}
	summarizeExecutions(rep, results, failed)
	return rep, nil
}

// summarizeExecutions fills in the figures that come from the executions'
// own reports.
func summarizeExecutions(rep *ExecReport, results []Execution, failed []error) {
	var durations, starts, runs, callMs []float64
	var mem []int64
	var sumDur, sumStart, sumWait float64
	detailed := true
	for i, ex := range results {
		if err := failed[i]; err != nil {
			rep.Failed++
			rep.Errors["refused: "+err.Error()]++
			continue
		}
		switch {
		case ex.Limit != "":
			rep.Failed++
			rep.LimitsHit[ex.Limit]++
		case ex.ErrorName != "":
			rep.Failed++
			rep.Errors[ex.ErrorName]++
		default:
			rep.Succeeded++
		}
		durations = append(durations, ex.DurationMs)
		sumDur += ex.DurationMs
		for _, c := range ex.ToolCalls {
			rep.ToolCalls.Total++
			if !c.OK {
				rep.ToolCalls.Failed++
			}
			callMs = append(callMs, c.Ms)
		}
		if !ex.Detailed {
			detailed = false
			continue
		}
		starts = append(starts, ex.StartMs)
		runs = append(runs, ex.DurationMs-ex.StartMs)
		sumStart += ex.StartMs
		sumWait += ex.WaitMs
		if ex.PeakMemoryBytes > 0 {
			mem = append(mem, ex.PeakMemoryBytes)
		}
	}
	if len(durations) > 0 {
		d := SummarizeFloats(durations)
		rep.Duration = &d
		rep.ToolCalls.PerExecution = float64(rep.ToolCalls.Total) / float64(len(durations))
	}
	rep.ToolCalls.CallMs = SummarizeFloats(callMs)
	if detailed && len(starts) > 0 {
		s, r := SummarizeFloats(starts), SummarizeFloats(runs)
		rep.Start, rep.Run = &s, &r
		if sumDur > 0 {
			share, wait := sumStart/sumDur, sumWait/sumDur
			rep.StartShare, rep.ToolCalls.Share = &share, &wait
		}
	}
	if len(mem) > 0 {
		slices.Sort(mem)
		var sum int64
		for _, m := range mem {
			sum += m
		}
		rep.PeakMemory = &ByteSummary{P50: mem[(len(mem)+1)/2-1], Max: mem[len(mem)-1], Mean: sum / int64(len(mem))}
	}
}

// ScriptFailure is a script that fails on its first run for a reason other
// than a limit, so benchmarking it would measure nothing but the failure.
type ScriptFailure struct {
	Name, Message string
	Line          int // 0 when unknown
}

func (e *ScriptFailure) Error() string {
	at := ""
	if e.Line > 0 {
		at = fmt.Sprintf(" at line %d", e.Line)
	}
	return fmt.Sprintf("the script fails on its first run, so there is nothing to measure: %s: %s%s", e.Name, e.Message, at)
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
