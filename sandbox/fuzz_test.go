package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// FuzzResultJSON sends arbitrary bytes as a tool result into a script that
// returns it: nothing panics, invalid JSON is rejected as a tool error, and
// valid JSON round-trips to an equal value.
func FuzzResultJSON(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `[1,"two",null,true]`, `"\u2028\u0000"`, `{"__proto__":{"x":1}}`, `1e308`, `-0`,
		`{"a":{"a":{"a":[[[]]]}}}`, `not json`, ``, `{"k":"\ud800"}`, "\"\xff\"", `123456789012345678901234567890`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		raw := data
		caller := func(context.Context, string, []byte) ([]byte, error) { return raw, nil }
		res, err := testEngine.Run(context.Background(), &Request{
			Code:    "return await callTool('x')",
			Prelude: testPrelude,
			Caller:  caller,
		}, Limits{})
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		data = bytes.TrimSpace(data) // the sandbox trims; empty means null
		if !json.Valid(data) && len(data) > 0 {
			if res.Error == nil || res.Error.Code != "tool_error" {
				t.Fatalf("invalid JSON %q: got result %s, error %+v", data, res.Result, res.Error)
			}
			return
		}
		if res.Error != nil {
			if res.Error.Limit != "" { // e.g. a deeply nested value hit the stack limit
				return
			}
			t.Fatalf("valid JSON %q failed: %+v", data, res.Error)
		}
		if !json.Valid(res.Result) {
			t.Fatalf("result %q is not JSON", res.Result)
		}
		var in, out any
		if !utf8.Valid(data) || json.Unmarshal(data, &in) != nil || json.Unmarshal(res.Result, &out) != nil {
			return
		}
		if len(data) == 0 {
			in = nil
		}
		if !cmp.Equal(in, out) {
			t.Fatalf("round trip changed the value:\n in %s\nout %s", data, res.Result)
		}
	})
}
