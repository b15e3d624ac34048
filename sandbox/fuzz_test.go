package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
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

// FuzzGuestReport feeds arbitrary reports to the host's parser of the
// bootstrap's wire format: it never panics, a report it accepts is one
// reportComplete accepts (so a report cut at a U+0000 is always noticed),
// and it leaves the execution consistent.
func FuzzGuestReport(f *testing.F) {
	for _, s := range []string{
		"", "c1:4:echo7:{\"i\":1}", "f2:2:{}", "t3:10:", "x3:", "ll5:hello", "T", "v4:null",
		"e2:{}", "c1:2:\xf0\x9f\x98\x80{}", "c1:1:\xf0\x9f\x98\x80{}", "c99999999999:1:a2:{}", "q", "l", "lz1:a", "c1:", "c1:5:ab",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, report string) {
		x := &execution{
			req:    &Request{},
			lim:    Limits{}.WithDefaults(),
			res:    &Result{},
			timers: map[int64]time.Time{},
		}
		end, err := x.absorb(report)
		if err != nil {
			return
		}
		if !reportComplete(report) {
			t.Fatalf("absorb accepted %q, which reportComplete calls incomplete", report)
		}
		if end != nil && !end.ok && end.err == nil {
			t.Fatalf("failed outcome without an error for %q", report)
		}
		if got := len(x.queue) + len(x.ready); got > strings.Count(report, "c")+strings.Count(report, "f") {
			t.Fatalf("%d requests from %q", got, report)
		}
	})
}

// FuzzScriptStrings sends arbitrary UTF-16 strings (lone surrogates
// included) from a script to the host as a console line and a tool name:
// the report stays in step, so both arrive and the script's result follows.
func FuzzScriptStrings(f *testing.F) {
	f.Add([]byte{0x41, 0x00, 0x3d, 0xd8, 0x00, 0xde})
	f.Add([]byte{0x00, 0xd8})
	f.Add([]byte{0x3a, 0x00, 0x31, 0x00})
	f.Fuzz(func(t *testing.T, units []byte) {
		if len(units)%2 == 1 {
			units = units[:len(units)-1]
		}
		codes := make([]string, 0, len(units)/2)
		for i := 0; i < len(units); i += 2 {
			codes = append(codes, strconv.Itoa(int(units[i])|int(units[i+1])<<8))
		}
		var got []string
		caller := func(_ context.Context, name string, _ []byte) ([]byte, error) {
			got = append(got, name)
			return []byte(`"ok"`), nil
		}
		res, err := testEngine.Run(context.Background(), &Request{
			Code: "const s = String.fromCharCode(" + strings.Join(codes, ",") + ");\n" +
				"console.log(s); const r = await callTool(s); console.info(s); return [s.length, r]",
			Prelude: testPrelude,
			Caller:  caller,
		}, Limits{})
		if err != nil {
			t.Fatalf("internal error: %v", err)
		}
		if res.Error != nil {
			t.Fatalf("script failed: %+v", res.Error)
		}
		want := fmt.Sprintf(`[%d,"ok"]`, len(codes))
		if string(res.Result) != want || len(res.Logs) != 2 || len(got) != 1 || res.Logs[0].Message != got[0] {
			t.Fatalf("result %s logs %q calls %q, want %s", res.Result, res.Logs, got, want)
		}
	})
}
