package wasm

import (
	"context"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// WithCallHook returns a context that, when a module is compiled with it,
// makes the guest run hook before every call to the function at index fn
// (in the module's function index space, imports included). Other functions
// are compiled without instrumentation, so a hook on a rarely called
// function costs nothing elsewhere; wazero keys its compilation cache on
// which functions are hooked.
//
// The hook runs on the guest's goroutine, in Go, with the context of the
// outermost call into the guest. Besides letting the host look at its own
// state (a deadline, say), this gives the Go scheduler and garbage collector
// a safe point: compiled guest code cannot be preempted, so a guest that
// never calls out could otherwise hold up a stop-the-world pause, and with
// it every goroutine that might want to stop the guest.
func WithCallHook(ctx context.Context, fn uint32, hook func(ctx context.Context)) context.Context {
	l := callHook(hook)
	return experimental.WithFunctionListenerFactory(ctx, experimental.FunctionListenerFactoryFunc(
		func(def api.FunctionDefinition) experimental.FunctionListener {
			if def.Index() == fn && def.GoFunction() == nil {
				return l
			}
			return nil
		}))
}

type callHook func(ctx context.Context)

func (h callHook) Before(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	h(ctx)
}

func (callHook) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (callHook) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}
