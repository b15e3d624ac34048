package bench_test

import (
	"context"
	"fmt"
	"time"

	"github.com/toolgate/toolgate/internal/bench"
)

func ExampleSummarize() {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	s := bench.Summarize(lat)
	fmt.Printf("n=%d p50=%v p90=%v p99=%v max=%v mean=%v\n", s.N, s.P50, s.P90, s.P99, s.Max, s.Mean)
	// Output: n=100 p50=50 p90=90 p99=99 max=100 mean=50.5
}

func ExampleRunExec() {
	// An execution function would call Gateway.ExecuteCode, or execute_code
	// on a running gateway; this one reports a fixed outcome.
	exec := func(context.Context) (bench.Execution, error) {
		return bench.Execution{DurationMs: 1, Detailed: true, StartMs: 0.25, ToolCalls: []bench.ToolCall{{OK: true, Ms: 0.5}}}, nil
	}
	rep, err := bench.RunExec(context.Background(), bench.ExecOptions{
		N: 50, Concurrency: 4,
		Open: func(context.Context) (bench.ExecFunc, func(), error) { return exec, nil, nil },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d executions, %d ok, %d tool calls, start p50 %v ms\n", rep.Executions, rep.Succeeded, rep.ToolCalls.Total, rep.Start.P50)
	// Output: 50 executions, 50 ok, 50 tool calls, start p50 0.25 ms
}
