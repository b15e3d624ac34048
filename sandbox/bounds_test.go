package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// outputOverhead is what an execution's JSON carries besides what
// MaxOutputBytes bounds: field names, flags and timings.
const outputOverhead = 512

// TestOutputBounded runs scripts that try to make the answer, or what the
// host holds, larger than the limits allow.
func TestOutputBounded(t *testing.T) {
	const outCap = 64 << 10
	tests := []struct {
		name string
		code string
		lim  Limits
	}{
		{"long tool names", "for (let i = 0; i < 10; i++) { try { await callTool('n'.repeat(200000) + i) } catch (e) {} } return 1", Limits{}},
		{"calls past maxToolCalls", "for (let i = 0; i < 3000; i++) { try { await callTool('echo', {i}) } catch (e) {} } return 1", Limits{MaxToolCalls: 20}},
		{"huge error message", "throw new Error('m'.repeat(8 << 20))", Limits{}},
		{"huge error name and code", "const e = new Error('x'); e.name = 'N'.repeat(1 << 20); e.code = 'C'.repeat(1 << 20); throw e", Limits{}},
		{"huge error stack", "const e = new Error('x'); e.stack = 'at '.repeat(3 << 20); throw e", Limits{}},
		{"thrown string", "throw 's'.repeat(8 << 20)", Limits{}},
		{"escaped console lines", "for (let i = 0; i < 100; i++) console.log('\\u0001<&>\"'.repeat(100000)); return 1", Limits{}},
		{"many empty console lines", "for (let i = 0; i < 1e6; i++) console.log(''); return 1", Limits{Timeout: 5 * time.Second}},
		{"result and logs", "console.log('x'.repeat(60000)); return 'y'.repeat(60000)", Limits{}},
		{"records, logs and error together", `
			for (let i = 0; i < 200; i++) { try { await callTool('n'.repeat(5000) + i) } catch (e) {} }
			console.log('\u2028'.repeat(50000));
			throw new Error('\u0000'.repeat(1 << 20))`, Limits{MaxToolCalls: 1000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lim := tc.lim
			lim.MaxOutputBytes = outCap
			res := run(t, tc.code, lim)
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > outCap+outputOverhead {
				t.Fatalf("the execution's JSON is %d bytes, over %d + %d", len(b), outCap, outputOverhead)
			}
			if len(res.ToolCalls) > 1000+2 {
				t.Fatalf("%d tool-call records", len(res.ToolCalls))
			}
		})
	}
}

// TestLongToolNames: a name over MaxToolNameBytes is recorded clipped, with
// its length, whoever refuses it, and echoed clipped when there is no
// Caller.
func TestLongToolNames(t *testing.T) {
	code := `
		const out = [];
		for (let i = 0; i < 10; i++) { try { await callTool('n'.repeat(200000) + i) } catch (e) { out.push(e.code, e.message.length < 200) } }
		return out`
	for _, caller := range []Caller{echoCaller, nil} {
		res := runReq(t, &Request{Prelude: testPrelude, Caller: caller, Code: code}, Limits{})
		if caller == nil {
			wantResult(t, res, "["+strings.Repeat(`"not_found",true,`, 9)+`"not_found",true]`)
		} else if res.Error != nil || strings.Count(string(res.Result), "not_found") != 10 {
			t.Fatalf("got %.200s %+v", res.Result, res.Error)
		}
		if len(res.ToolCalls) != 10 {
			t.Fatalf("%d records, want 10", len(res.ToolCalls))
		}
		for _, r := range res.ToolCalls {
			if len(r.Tool) > MaxToolNameBytes || !strings.Contains(r.Tool, "[200001 bytes]") || r.OK {
				t.Fatalf("record %+v: want the name clipped with its length", r)
			}
		}
	}
}

// TestCallsPastTheLimitShareARecord: each refused call adds nothing the
// host keeps but a count.
func TestCallsPastTheLimitShareARecord(t *testing.T) {
	res := run(t, "let refused = 0; for (let i = 0; i < 3000; i++) { try { await callTool('echo', {i}) } catch (e) { if (e.code === 'limit') refused++ } } return refused", Limits{MaxToolCalls: 20})
	wantResult(t, res, "2980")
	if len(res.ToolCalls) != 21 {
		t.Fatalf("%d records, want 20 calls and one count", len(res.ToolCalls))
	}
	last := res.ToolCalls[20]
	if last.Tool != RefusedCallsTool || last.Count != 2980 || last.OK {
		t.Fatalf("last record %+v, want %q counting 2980", last, RefusedCallsTool)
	}
}

// TestArgumentBytes: a script's call carries at most MaxArgumentBytes of
// arguments, and the arguments the host holds for calls waiting or running
// stay within the memory limit.
func TestArgumentBytes(t *testing.T) {
	t.Run("per call", func(t *testing.T) {
		var reached atomic.Int64
		caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
			reached.Add(1)
			return echoCaller(ctx, name, args)
		}
		for _, lim := range []Limits{{}, {MaxArgumentBytes: 1 << 10}} {
			size := 5 << 20
			if lim.MaxArgumentBytes > 0 {
				size = 2 << 10
			}
			res := runReq(t, &Request{Prelude: testPrelude, Caller: caller,
				Code: fmt.Sprintf("try { await callTool('echo', {s: 'x'.repeat(%d)}) } catch (e) { return [e.code, e.message] }", size)}, lim)
			if res.Error != nil || !strings.Contains(string(res.Result), `"limit"`) || !strings.Contains(string(res.Result), "over the limit") {
				t.Fatalf("got %s %+v", res.Result, res.Error)
			}
		}
		if reached.Load() != 0 {
			t.Fatal("an oversized call reached the caller")
		}
	})
	t.Run("held together", func(t *testing.T) {
		var mu sync.Mutex
		held, peak := 0, 0
		release := make(chan struct{})
		caller := func(ctx context.Context, name string, args []byte) ([]byte, error) {
			if name == "done" {
				close(release)
				return []byte("1"), nil
			}
			mu.Lock()
			held += len(args)
			peak = max(peak, held)
			mu.Unlock()
			select {
			case <-release:
			case <-ctx.Done():
			}
			mu.Lock()
			held -= len(args)
			mu.Unlock()
			return []byte("1"), nil
		}
		res := runReq(t, &Request{Prelude: testPrelude, Caller: caller, Code: `
			const s = 'x'.repeat(3 << 20), calls = [];
			for (let i = 0; i < 40; i++) {
				calls.push(callTool('slow', {s}).then(() => 'ok', (e) => e.code));
				await new Promise((r) => setTimeout(r, 0)); // the host takes each call before the next
			}
			await callTool('done');
			return (await Promise.all(calls)).filter((c) => c === 'limit').length`}, Limits{MemoryLimitMB: 32, MaxConcurrentToolCalls: 100})
		if res.Error != nil {
			t.Fatal(res.Error)
		}
		var refused int
		json.Unmarshal(res.Result, &refused)
		if refused < 29 {
			t.Fatalf("%d of 40 calls of 3 MiB refused with a 32 MB memory limit", refused)
		}
		if peak > 32<<20 {
			t.Fatalf("calls held %d bytes of arguments at once", peak)
		}
	})
}
