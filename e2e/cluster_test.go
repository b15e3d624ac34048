package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/e2etest"
	"github.com/toolgate/toolgate/internal/servertest"
	"github.com/toolgate/toolgate/policy/apikey"
)

// stickyFront is the load balancer of the cluster tests: a request
// without an Mcp-Session-Id goes to the next replica (round robin,
// initialize included); one with a session goes to the replica that
// created it, since an MCP session lives in one process.
type stickyFront struct {
	backends []*url.URL
	next     atomic.Int64
	mu       sync.Mutex
	sessions map[string]int
}

func (f *stickyFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	i, ok := f.sessions[r.Header.Get("Mcp-Session-Id")]
	f.mu.Unlock()
	if !ok {
		i = int(f.next.Add(1)-1) % len(f.backends)
	}
	p := httputil.NewSingleHostReverseProxy(f.backends[i])
	p.FlushInterval = -1
	p.ModifyResponse = func(resp *http.Response) error {
		if id := resp.Header.Get("Mcp-Session-Id"); id != "" {
			f.mu.Lock()
			f.sessions[id] = i
			f.mu.Unlock()
		}
		return nil
	}
	p.ServeHTTP(w, r)
}

// TestClusterThreeReplicas runs three `toolgate serve` replicas behind a
// round-robin front, sharing Redis and PostgreSQL: the project's limit
// holds across replicas, a key revoked with the command line is refused
// by every replica within 2 s, and Redis stopped for a while gives
// retryable refusals, then service resumes by itself.
func TestClusterThreeReplicas(t *testing.T) {
	redis := servertest.StartRedis(t)
	pgURL := servertest.Postgres(t)
	up := testUpstream(t)
	bin := e2etest.BuildBinary(t, "./cmd/toolgate")
	ctx := context.Background()

	cfgFor := func(node string) string {
		return writeConfig(t, fmt.Sprintf(`{
			"rateLimit": {"requestsPerMinute": 600, "burst": 10},
			"cluster": {"node": %q, "redis": {"url": %q}, "postgres": {"url": %q}},
			"mcpServers": {"s": {"command": %s, "allowedTools": ["echo"]}}
		}`, node, redis.URL(), pgURL, jsonString(up)))
	}
	var backends []*url.URL
	var cfgs []string
	for i := range 3 {
		path := cfgFor(fmt.Sprint("gw", i+1))
		cfgs = append(cfgs, path)
		proc := e2etest.StartProcess(t, e2etest.ProcOptions{Path: bin, Args: []string{"serve", "-c", path, "--listen", "127.0.0.1:0"}, Dir: filepath.Dir(path)})
		line := proc.WaitForLine(t, "toolgate listening on", 60*time.Second)
		m := listeningLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("cannot find the address in %q", line)
		}
		u, _ := url.Parse(m[1])
		backends = append(backends, u)
	}
	front := httptest.NewServer(&stickyFront{backends: backends, sessions: map[string]int{}})
	defer front.Close()

	keys, err := apikey.OpenPGStore(ctx, pgURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	newSessions := func(t *testing.T) (string, *apikey.Key, []*mcp.ClientSession) {
		plain, k, err := keys.Create(ctx, "default", "e2e", 0)
		if err != nil {
			t.Fatal(err)
		}
		// A new key reaches the replicas by NOTIFY, within moments but not
		// at once (the bound is 2 s): wait until each accepts it.
		for i, b := range backends {
			eventually(t, 2*time.Second, fmt.Sprintf("replica %d to accept a new key", i+1), func() bool {
				req, _ := http.NewRequest(http.MethodGet, b.String()+"/mcp", nil)
				req.Header.Set("Authorization", "Bearer "+plain)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode != http.StatusUnauthorized
			})
		}
		var out []*mcp.ClientSession
		for range 3 { // initialize goes round robin: one session per replica
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			out = append(out, e2etest.ConnectHTTP(t, cctx, front.URL+"/mcp", map[string]string{"Authorization": "Bearer " + plain}, nil))
			cancel()
		}
		return plain, k, out
	}
	call := func(cs *mcp.ClientSession) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "s__echo", Arguments: map[string]any{"text": "hi"}})
		if err == nil && res.IsError {
			err = fmt.Errorf("tool error: %s", text(res))
		}
		return err
	}

	t.Run("limit holds across replicas", func(t *testing.T) {
		_, _, sessions := newSessions(t)
		// The sessions opened above took no tokens; the bucket is full.
		start := time.Now()
		var admitted, limited atomic.Int64
		var wg sync.WaitGroup
		for _, cs := range sessions {
			wg.Go(func() {
				for range 20 {
					switch err := call(cs); {
					case err == nil:
						admitted.Add(1)
					case strings.Contains(err.Error(), "Too Many Requests"): // 429
						limited.Add(1)
					default:
						t.Errorf("call: %v", err)
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		max := 10 + int64(elapsed.Seconds()*10) + 1 // one burst, then 10 a second
		if got := admitted.Load(); got < 10 || got > max {
			t.Errorf("three replicas admitted %d of 60 calls in %v; want between the burst (10) and %d", got, elapsed, max)
		}
		t.Logf("admitted %d, refused %d in %v", admitted.Load(), limited.Load(), elapsed)
	})

	t.Run("revoked key refused everywhere within 2s", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // refill the burst
		_, k, sessions := newSessions(t)
		for _, cs := range sessions {
			if err := call(cs); err != nil {
				t.Fatalf("before the revocation: %v", err)
			}
		}
		cli := e2etest.StartProcess(t, e2etest.ProcOptions{Path: bin, Args: []string{"keys", "revoke", k.ID, "-c", cfgs[0]}, Dir: filepath.Dir(cfgs[0])})
		if code, err := cli.Wait(30 * time.Second); code != 0 || err != nil {
			t.Fatalf("keys revoke: exit %d, %v\n%s", code, err, cli.Stderr())
		}
		revoked := time.Now()
		for i, cs := range sessions {
			for {
				err := call(cs)
				if err != nil && strings.Contains(err.Error(), "401") || err != nil && strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
					break
				}
				if time.Since(revoked) > 2*time.Second {
					t.Fatalf("replica %d still accepts the key %v after the revocation (last: %v)", i+1, time.Since(revoked), err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})

	t.Run("redis stopped then back", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond)
		_, _, sessions := newSessions(t)
		if err := call(sessions[0]); err != nil {
			t.Fatal(err)
		}
		redis.Stop()
		stopped := time.Now()
		for time.Since(stopped) < 10*time.Second {
			for i, cs := range sessions {
				start := time.Now()
				err := call(cs)
				if err == nil {
					t.Fatalf("replica %d admitted a call with Redis down", i+1)
				}
				if !strings.Contains(err.Error(), "Service Unavailable") { // 503, -32030
					t.Fatalf("replica %d: %v; want the retryable overloaded refusal", i+1, err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("a refusal took %v", d)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		redis.Start()
		for i, cs := range sessions {
			eventually(t, 10*time.Second, fmt.Sprintf("replica %d to serve again", i+1), func() bool { return call(cs) == nil })
		}
	})
}
