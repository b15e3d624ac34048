package benchcompare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/internal/e2etest"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestRun runs every task against the real npm servers behind an
// in-process gateway and checks the figures issue #6 sets as targets.
func TestRun(t *testing.T) {
	work := t.TempDir()
	var progress []string
	rep, err := Run(ctxFor(t), Options{
		NPMDir:   e2etest.NPMDir(t),
		WorkDir:  work,
		Progress: func(task, mode string) { progress = append(progress, task+"/"+mode) },
	})
	if err != nil {
		t.Fatal(err)
	}

	var wantProgress []string
	for _, n := range []string{"search-files", "memory-graph", "aggregate-records"} {
		wantProgress = append(wantProgress, n+"/direct", n+"/codemode")
	}
	if diff := cmp.Diff(wantProgress, progress); diff != "" {
		t.Errorf("progress calls (-want +got):\n%s", diff)
	}

	// The answers the generated data implies, written out independently
	// of the generator where they are short.
	lyon := []string{}
	for _, p := range profiles() {
		if p.City == "Lyon" {
			lyon = append(lyon, p.Staff...)
		}
	}
	slices.Sort(lyon)
	if len(lyon) != 18 {
		t.Fatalf("the graph has %d people working in Lyon, want 18 (3 companies of 6)", len(lyon))
	}
	var total float64
	for i := range 20 {
		total += newOrder(i).Total
	}
	want := map[string]func(t *testing.T, answer string){
		"search-files": func(t *testing.T, answer string) {
			got := strings.Split(answer, "\n")
			// Services 0, 3, 6, ... (one in three) carry the term; those
			// at 0, 6, 12 twice.
			if len(got) != 9 {
				t.Errorf("%d matching lines, want 9:\n%s", len(got), answer)
			}
			for _, l := range []string{
				"services/accounts/config.yaml:19: legacy_tls: true   # still needed by old point-of-sale terminals",
				"services/catalog/config.yaml:19: legacy_tls: false  # scheduled for removal",
				"services/accounts/config.yaml:47: legacy_tls: true",
			} {
				if !slices.Contains(got, l) {
					t.Errorf("answer lacks %q:\n%s", l, answer)
				}
			}
			for _, l := range got {
				f, _, _ := strings.Cut(l, ":")
				b, err := os.ReadFile(filepath.Join(work, "tree", filepath.FromSlash(f)))
				if err != nil || !strings.Contains(string(b), "legacy_tls") {
					t.Errorf("answer line %q names a file without the term (%v)", l, err)
				}
			}
		},
		"memory-graph": func(t *testing.T, answer string) {
			if answer != strings.Join(lyon, ", ") {
				t.Errorf("answer %q, want %q", answer, strings.Join(lyon, ", "))
			}
			if strings.Contains(answer, "Fjord") || !strings.Contains(answer, "Adele Arnaud") {
				t.Errorf("answer %q", answer)
			}
		},
		"aggregate-records": func(t *testing.T, answer string) {
			w := fmt.Sprintf("20 records, total %.2f EUR, average %.2f EUR", total, total/20)
			if answer != w {
				t.Errorf("answer %q, want %q", answer, w)
			}
		},
	}

	if len(rep.Tasks) != len(want) {
		t.Fatalf("%d tasks in the report, want %d", len(rep.Tasks), len(want))
	}
	for _, tr := range rep.Tasks {
		t.Run(tr.Name, func(t *testing.T) {
			d, c := tr.Direct, tr.CodeMode
			ratio := float64(c.ContextBytes) / float64(d.ContextBytes)
			t.Logf("direct: %d round trips, %d bytes (~%d tokens), %v", d.RoundTrips, d.ContextBytes, d.ApproxTokens, d.Wall)
			t.Logf("codemode: %d round trips, %d bytes (~%d tokens), %v; bytes ratio %.3f", c.RoundTrips, c.ContextBytes, c.ApproxTokens, c.Wall, ratio)
			if tr.Description == "" {
				t.Error("no description")
			}
			if d.Answer != c.Answer {
				t.Errorf("answers differ:\ndirect   %q\ncodemode %q", d.Answer, c.Answer)
			}
			check, ok := want[tr.Name]
			if !ok {
				t.Fatalf("unexpected task %q", tr.Name)
			}
			check(t, d.Answer)
			if c.RoundTrips != 1 {
				t.Errorf("code mode made %d round trips, want 1", c.RoundTrips)
			}
			if d.RoundTrips < 10 {
				t.Errorf("the direct run made %d round trips, want at least 10", d.RoundTrips)
			}
			if d.ContextBytes <= 0 || c.ContextBytes <= 0 {
				t.Errorf("context bytes direct %d, codemode %d: want both positive", d.ContextBytes, c.ContextBytes)
			}
			if ratio > 0.10 {
				t.Errorf("code mode put %d bytes in the context, %.1f%% of the direct run's %d; want at most 10%%", c.ContextBytes, 100*ratio, d.ContextBytes)
			}
			for _, m := range []Mode{d, c} {
				if want := (m.ContextBytes + 3) / 4; m.ApproxTokens != want {
					t.Errorf("approxTokens %d for %d bytes, want %d", m.ApproxTokens, m.ContextBytes, want)
				}
				if m.Wall <= 0 {
					t.Errorf("wall time %v", m.Wall)
				}
			}
		})
	}

	for k, v := range map[string]string{"treeFiles": "200", "records": "20", "companies": "8", "searchTerm": "legacy_tls", "filesWithTerm": "6", "matchingLines": "9"} {
		if rep.Settings[k] != v {
			t.Errorf("settings[%s] = %q, want %q", k, rep.Settings[k], v)
		}
	}
	for _, k := range []string{"entities", "relations", "contextBytes", "server-filesystem", "server-memory", "node", "treeRoot"} {
		if rep.Settings[k] == "" || rep.Settings[k] == "?" {
			t.Errorf("settings[%s] = %q", k, rep.Settings[k])
		}
	}
	// The tree really holds 200 files.
	n := 0
	err = filepath.WalkDir(filepath.Join(work, "tree"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil || n != 200 {
		t.Errorf("the tree holds %d files (%v), want 200", n, err)
	}

	// The report is what the bench command prints with --json.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"roundTrips"`, `"contextBytes"`, `"approxTokens"`, `"wallNs"`, `"answer"`, `"codeMode"`, `"direct"`, `"settings"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON report lacks %s", field)
		}
	}
}

// TestRunServeWithKey runs one task through a gateway that Options.Serve
// starts behind a proxy requiring a key, so the key must reach it as a
// Bearer header.
func TestRunServeWithKey(t *testing.T) {
	const key = "tg_test_key"
	var served, refused atomic.Int32
	var gotCfg *config.Config
	serve := func(ctx context.Context, cfg *config.Config) (string, string, func(), error) {
		gotCfg = cfg
		endpoint, _, stop, err := serveInProcess(ctx, cfg)
		if err != nil {
			return "", "", nil, err
		}
		u, err := url.Parse(endpoint)
		if err != nil {
			stop()
			return "", "", nil, err
		}
		proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
		proxy.FlushInterval = -1
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+key {
				refused.Add(1)
				http.Error(w, "missing key", http.StatusUnauthorized)
				return
			}
			served.Add(1)
			proxy.ServeHTTP(w, r)
		}))
		return srv.URL + "/mcp", key, func() { srv.Close(); stop() }, nil
	}
	rep, err := Run(ctxFor(t), Options{NPMDir: e2etest.NPMDir(t), WorkDir: t.TempDir(), Tasks: []string{"aggregate-records"}, Serve: serve})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tasks) != 1 || rep.Tasks[0].Name != "aggregate-records" {
		t.Fatalf("tasks %+v, want aggregate-records only", rep.Tasks)
	}
	if served.Load() == 0 || refused.Load() != 0 {
		t.Errorf("%d requests served, %d refused for a missing key", served.Load(), refused.Load())
	}
	if gotCfg == nil || !gotCfg.CodeMode.Enabled || !gotCfg.CodeMode.DirectTools {
		t.Fatalf("Serve got config %+v, want code mode with direct tools", gotCfg)
	}
	servers := gotCfg.Projects[config.DefaultProject].MCPServers
	if len(servers) != 2 || servers["filesystem"] == nil || servers["memory"] == nil {
		t.Errorf("Serve got servers %v, want filesystem and memory", servers)
	} else if servers["memory"].Env["MEMORY_FILE_PATH"] == "" || servers["filesystem"].Transport != config.TransportStdio {
		t.Errorf("servers: memory env %v, filesystem transport %q", servers["memory"].Env, servers["filesystem"].Transport)
	}
}

// TestRunFailures checks that Run fails with an error naming the problem
// when the two ways of a task disagree, when the script fails, when the
// gateway cannot start, and when it does not offer the tools the tasks
// need.
func TestRunFailures(t *testing.T) {
	disagree := *aggregateRecords
	disagree.name = "disagree"
	disagree.script = func(*fixture) string { return `return { count: 19, total: 1, currency: "EUR" };` }
	throws := *aggregateRecords
	throws.name = "throws"
	throws.script = func(*fixture) string { return `await tools.filesystem.read_text_file({ path: "/etc/hostname" });` }
	allTasks = append(allTasks, &disagree, &throws)
	t.Cleanup(func() { allTasks = allTasks[:len(allTasks)-2] })
	oldWait := toolsWait
	toolsWait = 3 * time.Second
	t.Cleanup(func() { toolsWait = oldWait })

	cases := []struct {
		name  string
		task  string
		serve func(context.Context, *config.Config) (string, string, func(), error)
		want  []string
	}{
		{"answers differ", "disagree", nil, []string{"task disagree", "disagree", "19 records, total 1.00 EUR", "20 records"}},
		{"script fails", "throws", nil, []string{"task throws", "codemode run", "the script failed", "/etc/hostname"}},
		{"gateway does not start", "aggregate-records", func(context.Context, *config.Config) (string, string, func(), error) {
			return "", "", nil, errors.New("port in use")
		}, []string{"starting the gateway: port in use"}},
		{"tool filtered out", "aggregate-records", func(ctx context.Context, cfg *config.Config) (string, string, func(), error) {
			cfg.Projects[config.DefaultProject].MCPServers["memory"].DenyToolsGlob = []string{"open_*"}
			return serveInProcess(ctx, cfg)
		}, []string{"does not list memory__open_nodes"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Run(ctxFor(t), Options{NPMDir: e2etest.NPMDir(t), WorkDir: t.TempDir(), Tasks: []string{c.task}, Serve: c.serve})
			if err == nil {
				t.Fatal("Run succeeded")
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestRunBadOptions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-node_modules")
	empty := t.TempDir()
	cases := []struct {
		name string
		opts Options
		want []string
	}{
		{"unknown task", Options{Tasks: []string{"search-files", "grep-the-web"}}, []string{`unknown task "grep-the-web"`, "search-files, memory-graph, aggregate-records"}},
		{"no task", Options{Tasks: []string{}}, []string{"no task selected"}},
		{"task twice", Options{Tasks: []string{"memory-graph", "memory-graph"}}, []string{`"memory-graph" is named twice`}},
		{"missing npm dir", Options{NPMDir: missing}, []string{missing}},
		{"npm dir without the servers", Options{NPMDir: empty}, []string{empty, "server-filesystem"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Run(context.Background(), c.opts)
			if err == nil {
				t.Fatal("Run succeeded")
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	t.Run("npm dir from the environment", func(t *testing.T) {
		t.Setenv("TOOLGATE_NPM_DIR", missing)
		_, err := Run(context.Background(), Options{})
		if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "TOOLGATE_NPM_DIR") {
			t.Errorf("error %v, want one naming $TOOLGATE_NPM_DIR and %s", err, missing)
		}
	})
}

func TestContextBytes(t *testing.T) {
	cases := []struct {
		name string
		res  *mcp.CallToolResult
		want int64
	}{
		{"text", &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello"}, &mcp.TextContent{Text: "!"}}}, 6},
		{"text and structured", &mcp.CallToolResult{
			Content:           []mcp.Content{&mcp.TextContent{Text: "abc"}},
			StructuredContent: map[string]any{"content": "abc"},
		}, 3 + int64(len(`{"content":"abc"}`))},
		{"image", &mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{Data: []byte("x"), MIMEType: "image/png"}}},
			int64(len(`{"type":"image","mimeType":"image/png","data":"eA=="}`))},
		{"empty", &mcp.CallToolResult{}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := contextBytes(c.res)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("contextBytes = %d, want %d", got, c.want)
			}
		})
	}
}

func TestApproxTokens(t *testing.T) {
	for bytes, want := range map[int64]int64{0: 0, 1: 1, 4: 1, 5: 2, 8: 2, 4001: 1001} {
		if got := approxTokens(bytes); got != want {
			t.Errorf("approxTokens(%d) = %d, want %d", bytes, got, want)
		}
	}
}

func TestFixture(t *testing.T) {
	work := t.TempDir()
	fx, err := newFixture(work)
	if err != nil {
		t.Fatal(err)
	}
	if fx.files != 200 || len(fx.records) != 20 || len(fx.profiles) != 8 {
		t.Errorf("fixture: %d files, %d records, %d profiles; want 200, 20, 8", fx.files, len(fx.records), len(fx.profiles))
	}
	names := map[string]bool{}
	for _, p := range fx.profiles {
		for _, e := range p.Entities {
			if names[e.Name] {
				t.Errorf("entity %q recorded twice", e.Name)
			}
			names[e.Name] = true
		}
	}
	if len(names) != 4+8+48 {
		t.Errorf("%d entities, want 60 (4 cities, 8 companies, 48 people)", len(names))
	}
	// Generating again gives the same tree.
	first, _ := os.ReadFile(filepath.Join(fx.root, "services", "accounts", "config.yaml"))
	if _, err := newFixture(work); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(fx.root, "services", "accounts", "config.yaml"))
	if len(first) == 0 || string(first) != string(again) {
		t.Error("the generated tree is not deterministic")
	}
}

// The servers bench compare installs are pinned to the versions the
// end-to-end tests use: every package of the embedded lock file is in
// e2e/npm/package-lock.json with the same version and integrity.
func TestPinnedServersMatchTheTests(t *testing.T) {
	type lock struct {
		Packages map[string]struct {
			Version   string `json:"version"`
			Integrity string `json:"integrity"`
		} `json:"packages"`
	}
	read := func(b []byte) lock {
		var l lock
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	embedded, err := npmProject.ReadFile("npm/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	e2e, err := os.ReadFile(filepath.Join(e2etest.ModuleRoot(t), "e2e", "npm", "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := read(embedded), read(e2e)
	for _, pkg := range []string{"node_modules/@modelcontextprotocol/server-filesystem", "node_modules/@modelcontextprotocol/server-memory"} {
		if _, ok := ours.Packages[pkg]; !ok {
			t.Errorf("the embedded lock file lacks %s", pkg)
		}
	}
	for name, p := range ours.Packages {
		if name == "" {
			continue
		}
		if q, ok := theirs.Packages[name]; !ok || q.Version != p.Version || q.Integrity != p.Integrity {
			t.Errorf("%s: %s in the embedded lock file, %s in e2e/npm (regenerate internal/benchcompare/npm/package-lock.json)", name, p.Version, q.Version)
		}
	}
}

// --npm-dir (and $TOOLGATE_NPM_DIR) take the npm project folder or its
// node_modules; a folder without the servers is named in the error.
func TestNPMDirEitherFolder(t *testing.T) {
	nm := e2etest.NPMDir(t)
	for _, dir := range []string{nm, filepath.Dir(nm)} {
		got, err := findNPMDir(context.Background(), Options{NPMDir: dir})
		if err != nil || got != nm {
			t.Errorf("findNPMDir(%s) = %q, %v; want %s", dir, got, err, nm)
		}
	}
	t.Setenv("TOOLGATE_NPM_DIR", filepath.Dir(nm))
	if got, err := findNPMDir(context.Background(), Options{}); err != nil || got != nm {
		t.Errorf("from $TOOLGATE_NPM_DIR: %q, %v", got, err)
	}
}
