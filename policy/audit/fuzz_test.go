package audit_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy/audit"
)

// FuzzReadAudit reads and verifies arbitrary file contents: no panics,
// every complete line is either read or an error, only the last line may
// be torn, and a broken link is reported within the file.
func FuzzReadAudit(f *testing.F) {
	dir := f.TempDir()
	seedPath := filepath.Join(dir, "seed.jsonl")
	a, err := audit.Open(seedPath, nil)
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
		[]byte(`{"prev":"` + audit.Genesis + `"}` + "\n{\"prev\":\"x\"}\n{"),
		[]byte(`{"time":"not a time","type":"tool.call","prev":"` + audit.Genesis + `"}` + "\n"),
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
		rep, rerr := audit.Read(path, func(e *audit.Event) error {
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
		v, verr := audit.Verify(path)
		if verr != nil {
			t.Fatalf("Verify: %v", verr)
		}
		if v.OK() && v.Lines != complete {
			t.Fatalf("verified %d of %d lines", v.Lines, complete)
		}
		if !v.OK() && (v.Broken.Line < 1 || v.Broken.Line > complete || v.Lines != v.Broken.Line-1) {
			t.Fatalf("broken link %+v after %d lines", v.Broken, v.Lines)
		}
	})
}

// FuzzAuditEventCaps writes events whose names and texts are arbitrary:
// every one is written, within MaxAuditEventBytes, and the log verifies.
func FuzzAuditEventCaps(f *testing.F) {
	for _, s := range []string{"", "plain", strings.Repeat("<\x00\xff\u2028", 400), strings.Repeat("é", 5000)} {
		f.Add(s, s, s, 3)
	}
	path := filepath.Join(f.TempDir(), "audit.jsonl")
	a, err := audit.Open(path, &audit.Options{MaxSizeBytes: 1 << 20, MaxFiles: 2, RetainAtLeast: time.Nanosecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	f.Fuzz(func(t *testing.T, tool, errText, host string, n int) {
		list := make([]string, n&63)
		for i := range list {
			list[i] = tool
		}
		ev := &audit.Event{Type: audit.EventToolDenied, Tool: tool, Server: host, Error: errText, Reason: errText, Host: host,
			KeyName: tool, Method: errText, LimitsHit: list, Changed: list, Extra: map[string]any{"v": errText}}
		before := a.Stats()
		if err := a.Write(ev); err != nil {
			t.Fatalf("Write: %v", err)
		}
		after := a.Stats()
		if after.Rotations == before.Rotations && after.Bytes-before.Bytes > audit.MaxEventBytes {
			t.Fatalf("line of %d bytes", after.Bytes-before.Bytes)
		}
		if rep, err := audit.Verify(path); err != nil || !rep.OK() {
			t.Fatalf("verify: %+v, %v", rep, err)
		}
	})
}
