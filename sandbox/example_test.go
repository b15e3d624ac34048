package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/sandbox"
)

func ExampleEngine_Run() {
	ctx := context.Background()
	engine, err := sandbox.NewEngine(ctx, &sandbox.EngineOptions{
		CacheDir: filepath.Join(os.TempDir(), "toolgate-sandbox-test-cache"),
		PoolSize: 1,
	})
	if err != nil {
		panic(err)
	}
	defer engine.Close()

	// The bindings: callTool(name, args) over the host primitive.
	prelude := `
		const call = __toolgate_call;
		globalThis.callTool = (name, args) => call(name, JSON.stringify(args));`
	// The host side of a tool call.
	caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
		if name == "add" {
			return []byte(`{"sum": 5}`), nil
		}
		return nil, &callerr.Error{Code: callerr.NotFound, Message: "no tool " + name}
	}
	res, err := engine.Run(ctx, &sandbox.Request{
		Code: `
			const r = await callTool("add", {a: 2, b: 3});
			console.log("sum is", r.sum);
			try { await callTool("nope", {}) } catch (e) { console.warn(e.code) }
			return {sum: r.sum};`,
		Prelude: prelude,
		Caller:  caller,
	}, sandbox.Limits{})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(res.Result))
	for _, l := range res.Logs {
		fmt.Println(l.Level, l.Message)
	}
	fmt.Println(len(res.ToolCalls), "tool calls, error:", res.Error)
	// Output:
	// {"sum":5}
	// log sum is 5
	// warn not_found
	// 2 tool calls, error: <nil>
}
