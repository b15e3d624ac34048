package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// The go-sdk release whose conformance server the suite runs against.
const (
	goSDKModule  = "github.com/modelcontextprotocol/go-sdk"
	goSDKVersion = "v1.8.0"
)

// conformanceSpecs are the protocol versions the pinned suite (0.1.16)
// has server scenarios for; each runs on its own. Its other versions
// (2025-03-26, draft, extension) have none, and it has no 2026-07-28.
var conformanceSpecs = []string{"2025-06-18", "2025-11-25"}

// TestConformanceThroughTheGateway runs the official MCP conformance suite
// (npm @modelcontextprotocol/conformance, server side) against the go-sdk's
// conformance server directly, and against toolgate fronting that server,
// and expects the same result of every check, for every spec version the
// suite offers: a relay adds and refuses nothing (elicitation schemas,
// DNS-rebinding protection and all).
func TestConformanceThroughTheGateway(t *testing.T) {
	server := e2etest.BuildReleasedBinary(t, goSDKModule, goSDKVersion, goSDKModule+"/conformance/everything-server")
	port := e2etest.FreePort(t)
	direct := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	// Stateful: sampling and elicitation need a session.
	e2etest.StartProcess(t, e2etest.ProcOptions{Path: server, Args: []string{"-http", fmt.Sprintf("127.0.0.1:%d", port), "-stateless=false"}})
	e2etest.WaitHTTP(t, direct, 30*time.Second)
	g := startGateway(t, fmt.Sprintf(`{
		"auth": {"required": false},
		"mcpServers": {"everything": {"url": %s, "transport": "http", "prefix": ""}}
	}`, jsonString(direct)))

	for _, spec := range conformanceSpecs {
		t.Run(spec, func(t *testing.T) {
			want, wantTotal := runConformance(t, direct, spec)
			got, gotTotal := runConformance(t, g.URL(), spec)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("checks through the gateway differ from the server's own (-direct +gateway):\n%s", diff)
			}
			if gotTotal != wantTotal {
				t.Errorf("through the gateway %q, directly %q", gotTotal, wantTotal)
			}
			// The suite's DNS-rebinding scenario is one of 2025-11-25.
			rebinding := want["dns-rebinding-protection/localhost-host-rebinding-rejected"]
			if spec == "2025-11-25" && rebinding != "SUCCESS" || len(want) < 20 {
				t.Errorf("the suite ran %d checks directly; the server's own results:\n%v", len(want), want)
			}
			t.Logf("directly: %s; through the gateway: %s", wantTotal, gotTotal)
		})
	}
}

var (
	conformanceTotal = regexp.MustCompile(`Total: \d+ passed, \d+ failed`)
	// resultDir is the folder of one scenario's results:
	// server-SCENARIO-2026-12-07T03-28-59-789Z.
	resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$`)
)

// runConformance runs the suite's scenarios of spec against url and returns the status of
// every check (by scenario and check id) and the suite's total line.
func runConformance(t *testing.T, url, spec string) (map[string]string, string) {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(e2etest.NPMFile(t, e2etest.Node22Binary), e2etest.NPMFile(t, e2etest.ConformanceEntry),
		"server", "--url", url, "--spec-version", spec, "-o", out)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	done := make(chan struct{})
	timer := time.AfterFunc(5*time.Minute, func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
		}
	})
	b, err := cmd.CombinedOutput()
	close(done)
	timer.Stop()
	total := conformanceTotal.FindString(string(b))
	if total == "" {
		t.Fatalf("conformance suite against %s (%v):\n%s", url, err, b)
	}
	results := map[string]string{}
	dirs, _ := os.ReadDir(out)
	for _, d := range dirs {
		m := resultDir.FindStringSubmatch(d.Name())
		if m == nil {
			continue
		}
		scenario := m[1]
		raw, err := os.ReadFile(filepath.Join(out, d.Name(), "checks.json"))
		if err != nil {
			t.Fatal(err)
		}
		var checks []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(raw, &checks); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		for _, c := range checks {
			results[scenario+"/"+c.ID] = c.Status
		}
	}
	if len(results) == 0 {
		t.Fatalf("no results in %s:\n%s", out, b)
	}
	var failed []string
	for k, v := range results {
		if v != "SUCCESS" {
			failed = append(failed, k+" "+v)
		}
	}
	slices.Sort(failed)
	if len(failed) > 0 {
		t.Logf("against %s, not passed: %s", url, strings.Join(failed, ", "))
	}
	return results, total
}
