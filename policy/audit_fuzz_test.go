package policy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/policy"
)

// FuzzReadAudit reads and verifies arbitrary file contents: no panics,
// every complete line is either read or an error, only the last line may
// be torn, and a broken link is reported within the file.
func FuzzReadAudit(f *testing.F) {
	dir := f.TempDir()
	seedPath := filepath.Join(dir, "seed.jsonl")
	a, err := policy.OpenAuditLog(seedPath, nil)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		a.Write(callEvent(i))
	}
	a.Close()
	good, err := os.ReadFile(seedPath)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{
		good,
		good[:len(good)-7],
		append(bytes.Clone(good), "{}\n"...),
		[]byte("null\n"),
		[]byte("\n\n"),
		[]byte(`{"prev":"` + policy.AuditGenesis + `"}` + "\n{\"prev\":\"x\"}\n{"),
		[]byte(`{"time":"not a time","type":"tool.call","prev":"` + policy.AuditGenesis + `"}` + "\n"),
		[]byte(`{"extra":{"a":[1,{"b":null}]},"limitsHit":["x"],"arguments":{"q":1}}` + "\n"),
		{},
		{0, 0, 0},
	} {
		f.Add(s)
	}
	path := filepath.Join(dir, "fuzz.jsonl") // rewritten by each run
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		n := 0
		rep, rerr := policy.ReadAudit(path, func(e *policy.Event) error {
			if e == nil {
				t.Fatal("nil event")
			}
			n++
			return nil
		})
		complete := bytes.Count(data, []byte("\n"))
		wantTorn := len(data) > 0 && data[len(data)-1] != '\n'
		if rep.Lines != n || n > complete || len(rep.Torn) > 1 {
			t.Fatalf("report %+v after %d events of %d complete lines", rep, n, complete)
		}
		if rerr == nil {
			if n != complete || (len(rep.Torn) == 1) != wantTorn {
				t.Fatalf("read %d of %d lines, torn %v, without an error", n, complete, rep.Torn)
			}
			if wantTorn && !strings.HasSuffix(rep.Torn[0], ":"+strconv.Itoa(complete+1)) {
				t.Fatalf("torn %v, want line %d", rep.Torn, complete+1)
			}
		}
		v, verr := policy.VerifyAudit(path)
		if verr != nil {
			t.Fatalf("VerifyAudit: %v", verr)
		}
		if v.OK() && v.Lines != complete {
			t.Fatalf("verified %d of %d lines", v.Lines, complete)
		}
		if !v.OK() && (v.Broken.Line < 1 || v.Broken.Line > complete || v.Lines != v.Broken.Line-1) {
			t.Fatalf("broken link %+v after %d lines", v.Broken, v.Lines)
		}
	})
}
