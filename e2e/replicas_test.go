package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/policy/apikey"
)

// replicaRounds is how many tool calls each client of
// TestReplicasAnswerAnyRequest makes; every tenth round also lists, reads
// a resource, gets a prompt and runs a script.
const replicaRounds = 200

// TestReplicasAnswerAnyRequest runs three `toolgate serve` replicas that
// share nothing but their configuration and TOOLGATE_SESSION_KEY, behind
// a round-robin front without stickiness: every request of a client lands
// on the next replica. A go-sdk client on protocol 2026-07-28 (no session)
// and the TypeScript SDK's client on 2025-11-25 (a session, which each
// replica rebuilds from its sealed ID) each make their calls, lists,
// resource reads, prompts and Code Mode scripts without one error; a
// change of the tool list reaches the 2026-07-28 client's
// subscriptions/listen stream; a request whose headers disagree with its
// body gets the revision's error (400, HeaderMismatch); and a session key
// taken away from the replicas ends the sessions it sealed on every
// replica. (A revoked API key ending its sessions everywhere is in
// TestClusterThreeReplicas, whose replicas share their keys.)
func TestReplicasAnswerAnyRequest(t *testing.T) {
	checkLeaks(t)
	up := testUpstream(t)
	bin := e2etest.BuildBinary(t, "./cmd/toolgate")
	key, _, _, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	sessionKey := "TOOLGATE_SESSION_KEY=" + rand.Text() + rand.Text()
	var backends []*url.URL
	var bases []string
	var replicas []*replica
	for i := range 3 {
		cfg := writeConfig(t, fmt.Sprintf(`{
			"apiKeys": [{"name": "e2e", "sha256": %q}],
			"codeMode": {"enabled": true, "directTools": true},
			"mcpServers": {"s": {"command": %s}}
		}`, apikey.Hash(key), jsonString(up)))
		r := &replica{owner: t, node: fmt.Sprint("gw", i+1), cfg: cfg, env: []string{sessionKey}}
		r.start(t, bin)
		replicas = append(replicas, r)
		u, _ := url.Parse(r.base)
		backends = append(backends, u)
		bases = append(bases, r.base)
	}
	rr := newRoundRobin(backends)
	front := httptest.NewServer(rr)
	defer front.Close()
	endpoint := front.URL + "/mcp"
	auth := map[string]string{"Authorization": "Bearer " + key}

	t.Run("go-sdk client on 2026-07-28", func(t *testing.T) {
		start := rr.count()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cs := e2etest.ConnectHTTP(t, ctx, endpoint, auth, nil)
		if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
			t.Fatalf("negotiated %s, want 2026-07-28", v)
		}
		counts := map[string]int{}
		step := func(what string, fn func() error) {
			if err := fn(); err != nil {
				t.Errorf("%s: %v", what, err)
				return
			}
			counts[what]++
		}
		for i := range replicaRounds {
			step("call", func() error {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": fmt.Sprint("go ", i)}})
				return wantText(res, err, fmt.Sprint("go ", i))
			})
			if i%10 != 0 {
				continue
			}
			step("tools/list", func() error {
				res, err := cs.ListTools(ctx, nil)
				if err == nil && !hasTool(res.Tools, "s__echo") {
					err = fmt.Errorf("no s__echo in %d tools", len(res.Tools))
				}
				return err
			})
			step("resources/list", func() error {
				res, err := cs.ListResources(ctx, nil)
				if err == nil && len(res.Resources) == 0 {
					err = fmt.Errorf("no resources")
				}
				return err
			})
			step("resources/read", func() error {
				res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: fmt.Sprint("test://item/", i)})
				if err == nil && (len(res.Contents) != 1 || res.Contents[0].Text != fmt.Sprint("item ", i)) {
					err = fmt.Errorf("read %+v", res.Contents)
				}
				return err
			})
			step("prompts/list", func() error {
				res, err := cs.ListPrompts(ctx, nil)
				if err == nil && len(res.Prompts) == 0 {
					err = fmt.Errorf("no prompts")
				}
				return err
			})
			step("prompts/get", func() error {
				res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "s__greet", Arguments: map[string]string{"name": fmt.Sprint("go", i)}})
				if err == nil && (len(res.Messages) != 1 || res.Messages[0].Content.(*mcp.TextContent).Text != fmt.Sprint("Hello, go", i)) {
					err = fmt.Errorf("prompt %+v", res.Messages)
				}
				return err
			})
			step("execute_code", func() error {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "execute_code", Arguments: map[string]any{"code": fmt.Sprintf("return (await tools.s.echo({text: 'script %d'})).text", i)}})
				if err == nil && res.IsError {
					return fmt.Errorf("script failed: %s", text(res))
				}
				b, _ := json.Marshal(res.StructuredContent)
				if err == nil && !strings.Contains(string(b), fmt.Sprintf(`"result":"script %d"`, i)) {
					err = fmt.Errorf("script answered %s", b)
				}
				return err
			})
		}
		if counts["call"] != replicaRounds || counts["execute_code"] != replicaRounds/10 || counts["prompts/get"] != replicaRounds/10 || counts["resources/read"] != replicaRounds/10 {
			t.Errorf("succeeded: %v", counts)
		}
		checkSpread(t, rr.since(start), func(r frontRequest) bool { return r.version == "2026-07-28" })
	})

	t.Run("TypeScript SDK client on 2025-11-25", func(t *testing.T) {
		start := rr.count()
		out := runTSReplicas(t, endpoint, key, replicaRounds)
		if out.ProtocolVersion != "2025-11-25" || out.SessionID == "" {
			t.Fatalf("protocol %q, session %q", out.ProtocolVersion, out.SessionID)
		}
		for _, e := range out.Errors {
			t.Errorf("the TypeScript client: %s", e)
		}
		want := map[string]int{"call": replicaRounds, "tools/list": replicaRounds / 10, "resources/list": replicaRounds / 10, "resources/read": replicaRounds / 10,
			"prompts/list": replicaRounds / 10, "prompts/get": replicaRounds / 10, "execute_code": replicaRounds / 10, "delete": 1}
		for what, n := range want {
			if out.Counts[what] != n {
				t.Errorf("%s succeeded %d times, want %d", what, out.Counts[what], n)
			}
		}
		checkSpread(t, rr.since(start), func(r frontRequest) bool { return r.session == out.SessionID })
		// Each replica that served the session without opening it
		// rebuilt it from its ID.
		rebuilt := 0
		for _, base := range bases {
			if n := metricValue(t, base, `toolgate_sessions_rebuilt_total{project="default"}`); n > 0 {
				rebuilt++
			}
		}
		if rebuilt < 2 {
			t.Errorf("%d replicas rebuilt the session, want 2 at least", rebuilt)
		}
	})

	t.Run("list change through subscriptions/listen", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		changed := make(chan struct{}, 8)
		cs := e2etest.ConnectHTTP(t, ctx, endpoint, auth, &mcp.ClientOptions{
			ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
		})
		// The listen stream stays on one replica, and each replica has an
		// upstream process of its own: add the tool on all three, as one
		// upstream deployed on every replica would change.
		for i := range 3 {
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__add_tool", Arguments: map[string]any{"name": "added"}}); err != nil {
				t.Fatalf("add_tool %d: %v", i, err)
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("no notifications/tools/list_changed on the subscriptions/listen stream")
		}
	})

	t.Run("headers that disagree with the body", func(t *testing.T) {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s__echo","arguments":{"text":"x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
		for _, tc := range []struct{ name, method, tool string }{
			{"Mcp-Method", "tools/list", "s__echo"},
			{"Mcp-Name", "tools/call", "s__fail"},
		} {
			req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
			req.Header.Set("Mcp-Method", tc.method)
			req.Header.Set("Mcp-Name", tc.tool)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var msg struct {
				ID    int `json:"id"`
				Error struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			_ = json.Unmarshal(b, &msg)
			if resp.StatusCode != http.StatusBadRequest || msg.Error.Code != -32020 || msg.ID != 1 || !strings.Contains(msg.Error.Message, tc.name) {
				t.Errorf("%s: %d %s; want 400 with HeaderMismatch (-32020)", tc.name, resp.StatusCode, b)
			}
		}
	})

	t.Run("a session key taken away ends its sessions everywhere", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs, err := dialMCPVersion(ctx, endpoint, key, "2025-11-25")
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		for i := range 3 { // each call reaches the next replica
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": fmt.Sprint("before ", i)}})
			if err := wantText(res, err, fmt.Sprint("before ", i)); err != nil {
				t.Fatalf("before the new key: %v", err)
			}
		}
		// Every replica restarts with a new session key alone: what the
		// old one sealed opens nowhere.
		newKey := "TOOLGATE_SESSION_KEY=" + rand.Text() + rand.Text()
		for _, r := range replicas {
			r.proc.Stop()
			r.env = []string{newKey}
			r.start(t, bin)
		}
		for _, r := range replicas {
			if code := postSessionCall(t, r.base+"/mcp", key, cs.ID()); code != http.StatusNotFound {
				t.Errorf("%s answered a call of the old session with %d, want 404", r.node, code)
			}
		}
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": "after"}}); err == nil {
			t.Error("the client's session still works after its session key was taken away")
		}
		// A new session works.
		fresh, err := dialMCPVersion(ctx, endpoint, key, "2025-11-25")
		if err != nil {
			t.Fatal(err)
		}
		defer fresh.Close()
		for i := range 3 {
			res, err := fresh.CallTool(ctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": fmt.Sprint("after ", i)}})
			if err := wantText(res, err, fmt.Sprint("after ", i)); err != nil {
				t.Errorf("a new session: %v", err)
			}
		}
	})
}

func wantText(res *mcp.CallToolResult, err error, want string) error {
	if err != nil {
		return err
	}
	if got := text(res); res.IsError || got != want {
		return fmt.Errorf("got %q (isError %v), want %q", got, res.IsError, want)
	}
	return nil
}

func hasTool(tools []*mcp.Tool, name string) bool {
	for _, t := range tools {
		if t.Name == name {
			return true
		}
	}
	return false
}

// checkSpread checks the requests of one client, those mine selects among
// reqs: each went to the replica after the one the request received before
// it went to, every replica answered some, and none was refused.
func checkSpread(t *testing.T, reqs []frontRequest, mine func(frontRequest) bool) {
	t.Helper()
	per := map[int]int{}
	n := 0
	for i, r := range reqs {
		if r.replica != r.seq%3 {
			t.Errorf("request %d went to replica %d", r.seq, r.replica+1)
		}
		if !mine(r) {
			continue
		}
		n++
		per[r.replica]++
		if r.status >= 400 || r.status == 0 {
			t.Errorf("%s request %d: status %d from replica %d", r.method, i, r.status, r.replica+1)
		}
	}
	if len(per) != 3 {
		t.Errorf("the client's %d requests reached replicas %v, want all three", n, per)
	}
	t.Logf("the client's %d requests, by replica: %v", n, per)
}

// metricValue reads one series of a replica's /metrics (0 when absent).
func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// tsReplicasOutput is what e2e/testdata/tsreplicas.mjs prints.
type tsReplicasOutput struct {
	Fatal           string         `json:"fatal"`
	ProtocolVersion string         `json:"protocolVersion"`
	SessionID       string         `json:"sessionId"`
	Counts          map[string]int `json:"counts"`
	Errors          []string       `json:"errors"`
}

// runTSReplicas runs tsreplicas.mjs with node against url with key.
func runTSReplicas(t *testing.T, url, key string, rounds int) *tsReplicasOutput {
	t.Helper()
	var out tsReplicasOutput
	runNodeScript(t, "tsreplicas.mjs", 3*time.Minute, []string{"TOOLGATE_KEY=" + key}, &out, url, strconv.Itoa(rounds))
	if out.Fatal != "" {
		t.Fatalf("tsreplicas.mjs failed: %s", out.Fatal)
	}
	return &out
}
