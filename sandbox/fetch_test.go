package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/callerr"
)

func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Seen-Method", r.Method)
			fmt.Fprint(w, `{"hello": "world"}`)
		case "/big":
			fmt.Fprint(w, strings.Repeat("z", 5000))
		case "/redirect":
			http.Redirect(w, r, "/json", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var mu sync.Mutex
	var audit []string
	policy := func() *FetchPolicy {
		return &FetchPolicy{
			MaxResponseBytes: 1000,
			MaxRequests:      3,
			allowLoopback:    true,
			OnRequest: func(method, host string, status int, n int64) {
				mu.Lock()
				defer mu.Unlock()
				audit = append(audit, fmt.Sprintf("%s %s %d %d", method, host, status, n))
			},
		}
	}
	fetchRun := func(t *testing.T, code string, p *FetchPolicy) *Result {
		return runReq(t, &Request{Code: strings.ReplaceAll(code, "SRV", srv.URL), Fetch: p}, Limits{})
	}

	t.Run("json, status and headers", func(t *testing.T) {
		res := fetchRun(t, `const r = await fetch("SRV/json", {method: "post", body: "x"}); return [r.status, r.ok, r.headers.get("x-seen-method"), await r.json()]`, policy())
		wantResult(t, res, `[200, true, "POST", {"hello": "world"}]`)
	})
	t.Run("text and 404", func(t *testing.T) {
		res := fetchRun(t, `const r = await fetch("SRV/nope"); return [r.status, r.ok, (await r.text()).trim()]`, policy())
		wantResult(t, res, `[404, false, "404 page not found"]`)
	})
	t.Run("redirect followed", func(t *testing.T) {
		res := fetchRun(t, `const r = await fetch("SRV/redirect"); return [r.redirected, (await r.json()).hello]`, policy())
		wantResult(t, res, `[true, "world"]`)
	})
	t.Run("response size cap", func(t *testing.T) {
		res := fetchRun(t, `try { await fetch("SRV/big") } catch (e) { return e.code }`, policy())
		wantResult(t, res, `"limit"`)
	})
	t.Run("request count cap", func(t *testing.T) {
		res := fetchRun(t, `const out = []; for (let i = 0; i < 4; i++) { try { await fetch("SRV/json"); out.push("ok") } catch (e) { out.push(e.code) } } return out`, policy())
		wantResult(t, res, `["ok", "ok", "ok", "limit"]`)
	})
	t.Run("allow list", func(t *testing.T) {
		p := policy()
		p.AllowHosts = []string{"*.example.com"}
		res := fetchRun(t, `try { await fetch("SRV/json") } catch (e) { return [e.code, e.message.includes("allowHosts")] }`, p)
		wantResult(t, res, `["denied", true]`)
	})
	t.Run("redirect to metadata refused", func(t *testing.T) {
		res := fetchRun(t, `try { await fetch("SRV/to-metadata"); return "reached" } catch (e) { return e.code }`, policy())
		wantResult(t, res, `"denied"`)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(audit) == 0 || !strings.HasPrefix(audit[0], "POST 127.0.0.1 200 ") {
		t.Fatalf("audit hook: %q", audit)
	}
}

// TestFetchBeforeRequest proves the pre-request hook sees every request
// (once, redirects excluded) after the URL rules and before anything is
// dialled, and that its refusal rejects the fetch with its code and retry
// hint without reaching the server or the audit hook.
func TestFetchBeforeRequest(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/ok", http.StatusFound)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	var mu sync.Mutex
	var checked, audited []string
	policy := func(allowed int) *FetchPolicy {
		return &FetchPolicy{
			allowLoopback: true,
			BeforeRequest: func(_ context.Context, method, host string) error {
				mu.Lock()
				defer mu.Unlock()
				checked = append(checked, method+" "+host)
				switch {
				case len(checked) <= allowed:
					return nil
				case len(checked) == allowed+1:
					return &callerr.Error{Code: callerr.RateLimited, Message: "rate limit exceeded; retry after 250 ms", RetryAfter: 250 * time.Millisecond}
				default:
					return errors.New("no more")
				}
			},
			OnRequest: func(method, host string, status int, _ int64) {
				mu.Lock()
				defer mu.Unlock()
				audited = append(audited, fmt.Sprintf("%s %s %d", method, host, status))
			},
		}
	}
	reset := func() {
		mu.Lock()
		defer mu.Unlock()
		checked, audited = nil, nil
		hits.Store(0)
	}
	code := strings.ReplaceAll(`const out = [];
for (const path of ["/redirect", "/ok", "/ok", "/ok"]) {
  try { const r = await fetch("SRV" + path, {method: "put"}); out.push(r.status); }
  catch (e) { out.push([e.code, typeof e.retryAfterMs === "number" ? e.retryAfterMs : "none", e.message.includes("SRV")]); }
}
return out;`, "SRV", srv.URL)

	reset()
	res := runReq(t, &Request{Code: code, Fetch: policy(2)}, Limits{})
	wantResult(t, res, `[200, 200, ["rate_limited", 250, true], ["denied", "none", true]]`)
	mu.Lock()
	wantChecked := []string{"PUT 127.0.0.1", "PUT 127.0.0.1", "PUT 127.0.0.1", "PUT 127.0.0.1"}
	if d := cmp.Diff(wantChecked, checked); d != "" {
		t.Errorf("BeforeRequest calls (-want +got):\n%s", d)
	}
	// The redirect is followed within its request; refused requests reach
	// neither the server nor OnRequest.
	if d := cmp.Diff([]string{"PUT 127.0.0.1 200", "PUT 127.0.0.1 200"}, audited); d != "" {
		t.Errorf("OnRequest calls (-want +got):\n%s", d)
	}
	mu.Unlock()
	if n := hits.Load(); n != 3 {
		t.Errorf("server saw %d requests, want 3 (a redirect and its target, then one more)", n)
	}

	t.Run("URL rules come first", func(t *testing.T) {
		reset()
		p := policy(10)
		p.AllowHosts = []string{"api.example.com"}
		res := runReq(t, &Request{Code: `try { await fetch("ftp://x/"); } catch (e) { try { await fetch("http://other.example.org/"); } catch (f) { return [e.code, f.code] } }`, Fetch: p}, Limits{})
		wantResult(t, res, `["denied", "denied"]`)
		mu.Lock()
		defer mu.Unlock()
		if len(checked) != 0 {
			t.Errorf("BeforeRequest saw requests the URL rules refuse: %q", checked)
		}
	})
}

// TestFetchSSRF proves that without the test-only loopback knob no
// non-public destination is reachable, however it is spelled.
func TestFetchSSRF(t *testing.T) {
	if buildAllowsLoopback {
		t.Skip("this test binary was built with toolgate_fetch_loopback, which lets fetch reach loopback")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "reached") }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	urls := []string{
		srv.URL,
		"http://localhost:" + port,
		"http://127.1:" + port,
		"http://2130706433:" + port,
		"http://0x7f000001:" + port,
		"http://0177.0.0.1:" + port,
		"http://[::1]:" + port,
		"http://[::ffff:127.0.0.1]:" + port,
		"http://0.0.0.0:" + port,
		"http://169.254.169.254/latest/meta-data/",
		"http://[fd00:ec2::254]/latest/meta-data/",
		"http://10.0.0.1/",
		"http://192.168.1.1/",
		"http://172.16.0.1/",
		"http://100.64.0.1/",
		"http://[fe80::1]/",
		"http://224.0.0.1/",
		"file:///etc/passwd",
		"ftp://example.com/",
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			res := runReq(t, &Request{
				Code:  fmt.Sprintf(`try { const r = await fetch(%q); return "reached " + r.status } catch (e) { return e.code }`, u),
				Fetch: &FetchPolicy{},
			}, Limits{})
			if res.Error != nil {
				t.Fatal(res.Error)
			}
			if got := string(res.Result); strings.Contains(got, "reached") {
				t.Fatalf("fetch %s was not refused: %s", u, got)
			}
		})
	}
}

func TestAddrAllowed(t *testing.T) {
	if buildAllowsLoopback {
		t.Skip("this test binary was built with toolgate_fetch_loopback, which lets fetch reach loopback")
	}
	p := &FetchPolicy{}
	tests := []struct {
		addr string
		want bool
	}{
		{"93.184.216.34", true}, {"2606:2800:220:1:248:1893:25c8:1946", true},
		{"127.0.0.1", false}, {"::1", false}, {"::ffff:127.0.0.1", false}, {"10.1.2.3", false},
		{"172.31.255.255", false}, {"192.168.0.1", false}, {"100.100.100.100", false},
		{"169.254.169.254", false}, {"fd00:ec2::254", false}, {"fc00::1", false}, {"fe80::1", false},
		{"0.0.0.0", false}, {"::", false}, {"224.0.0.251", false}, {"ff02::1", false},
		{"255.255.255.255", false}, {"64:ff9b::7f00:1", false}, {"2002:7f00:1::", false},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			if got := p.addrAllowed(netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Fatalf("addrAllowed(%s) = %v, want %v", tc.addr, got, tc.want)
			}
		})
	}
}
