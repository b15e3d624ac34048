//go:build unix

package audit_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/toolgate/toolgate/policy/audit"
)

// TestAuditCrash kills a process that is writing the log, mid-burst:
// every Write that returned before is in the file, which reads (with at
// most one torn line) and verifies.
func TestAuditCrash(t *testing.T) {
	for _, mode := range []string{"batch", "always"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			cmd := exec.Command(os.Args[0], "-test.run=^TestAuditCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), "TOOLGATE_TEST_AUDIT_CRASH="+path, "TOOLGATE_TEST_AUDIT_FSYNC="+mode)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			acked := map[int]bool{}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
					i, _ := strconv.Atoi(n)
					acked[i] = true
				}
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper: %v, want killed\n%s", err, stderr.String())
			}
			if len(acked) < 100 {
				t.Fatalf("only %d writes acknowledged before the kill", len(acked))
			}
			evs, rep := readEvents(t, path)
			if len(rep.Torn) > 1 {
				t.Errorf("torn lines: %v", rep.Torn)
			}
			inFile := map[int]bool{}
			for _, n := range toolNumbers(t, evs) {
				inFile[n] = true
			}
			for n := range acked {
				if !inFile[n] {
					t.Errorf("acknowledged event %d is not in the file", n)
				}
			}
			mustVerify(t, path)
			t.Logf("%d writes acknowledged, %d lines in the file", len(acked), len(evs))
		})
	}
}

// TestAuditCrashHelper is not a test: it is the process TestAuditCrash
// kills. It writes from several goroutines, reports each Write that
// returned on stdout, and kills itself in the middle.
func TestAuditCrashHelper(t *testing.T) {
	path := os.Getenv("TOOLGATE_TEST_AUDIT_CRASH")
	if path == "" {
		t.Skip("helper process of TestAuditCrash")
	}
	a, err := audit.Open(path, &audit.Options{Fsync: os.Getenv("TOOLGATE_TEST_AUDIT_FSYNC"), MaxSizeBytes: 50000})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 100000
	var total atomic.Int64
	for w := range writers {
		go func() {
			for i := range each {
				n := w*each + i
				if err := a.Write(callEvent(n)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				fmt.Fprintf(os.Stdout, "acked %d\n", n)
				if total.Add(1) == 500 {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
		}()
	}
	select {}
}
