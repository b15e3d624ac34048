package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestParseFault(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    fault
		wantErr string
	}{
		{name: "ok", body: `{"mode": "ok"}`, want: fault{Mode: modeOK}},
		{name: "slow", body: `{"mode": "slow", "delayMs": 250}`, want: fault{Mode: modeSlow, DelayMs: 250}},
		{name: "hang", body: `{"mode": "hang"}`, want: fault{Mode: modeHang}},
		{name: "garbage", body: `{"mode": "garbage"}`, want: fault{Mode: modeGarbage}},
		{name: "crash", body: `{"mode": "crash"}`, want: fault{Mode: modeCrash}},
		{name: "unknown mode", body: `{"mode": "melt"}`, wantErr: `unknown mode "melt"`},
		{name: "slow without delay", body: `{"mode": "slow"}`, wantErr: "needs delayMs"},
		{name: "delay too long", body: `{"mode": "slow", "delayMs": 3600001}`, wantErr: "needs delayMs"},
		{name: "delay on another mode", body: `{"mode": "hang", "delayMs": 5}`, wantErr: "delayMs is only for mode"},
		{name: "unknown field", body: `{"mode": "ok", "speed": 1}`, wantErr: `unknown field "speed"`},
		{name: "not JSON", body: `slow please`, wantErr: "want {"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFault([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFault(%s) error = %v, want one containing %q", tt.body, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseFault(%s) = %+v, %v; want %+v", tt.body, got, err, tt.want)
			}
		})
	}
}

// controlled starts the server of st in process and returns a client
// session and the control endpoint.
func controlled(t *testing.T, st *state) (*mcp.ClientSession, *httptest.Server) {
	t.Helper()
	cs := inMemory(t, st.newServer(nil), mcp.NewClient(&mcp.Implementation{Name: "control-test", Version: "1"}, nil), nil)
	ctl := httptest.NewServer(st.controlHandler())
	t.Cleanup(ctl.Close)
	return cs, ctl
}

func setMode(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

func TestControlModes(t *testing.T) {
	exited := make(chan int, 1)
	st := &state{cfg: &config{transport: "stdio", name: "ctl"}, exit: func(code int) { exited <- code }}
	cs, ctl := controlled(t, st)
	echo := func(timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
		if err != nil {
			return "", err
		}
		return res.Content[0].(*mcp.TextContent).Text, nil
	}

	if got, err := echo(5 * time.Second); err != nil || got != "hi" {
		t.Fatalf("echo before any fault = %q, %v", got, err)
	}

	if code, v := setMode(t, ctl.URL, `{"mode": "slow", "delayMs": 300}`); code != 200 || v["mode"] != "slow" {
		t.Fatalf("setting slow: %d %v", code, v)
	}
	start := time.Now()
	if got, err := echo(5 * time.Second); err != nil || got != "hi" {
		t.Fatalf("slow echo = %q, %v", got, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("slow echo took %v, want at least the 300 ms delay", d)
	}
	if _, err := echo(100 * time.Millisecond); err == nil {
		t.Error("a slow echo answered within a deadline shorter than the delay")
	}

	setMode(t, ctl.URL, `{"mode": "hang"}`)
	if _, err := echo(300 * time.Millisecond); err == nil {
		t.Error("a hanging server answered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if err := cs.Ping(ctx, nil); err == nil {
		t.Error("a hanging server answered a ping")
	}
	cancel()

	if code, v := setMode(t, ctl.URL, `{"mode": "ok"}`); code != 200 || v["mode"] != "ok" {
		t.Fatalf("setting ok: %d %v", code, v)
	}
	if got, err := echo(5 * time.Second); err != nil || got != "hi" {
		t.Fatalf("echo after ok = %q, %v", got, err)
	}

	if code, _ := setMode(t, ctl.URL, `{"mode": "melt"}`); code != http.StatusBadRequest {
		t.Errorf("unknown mode answered %d, want 400", code)
	}
	resp, err := http.Get(ctl.URL)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if v["mode"] != "ok" || v["pid"] == nil {
		t.Errorf("GET /control after a refused change = %v", v)
	}

	if code, v := setMode(t, ctl.URL, `{"mode": "crash"}`); code != 200 || v["mode"] != "crash" {
		t.Fatalf("crash answered %d %v", code, v)
	}
	select {
	case c := <-exited:
		if c != 3 {
			t.Errorf("crash exited with %d, want 3", c)
		}
	case <-time.After(5 * time.Second):
		t.Error("crash did not exit")
	}
}

func TestGarbageOverHTTP(t *testing.T) {
	st := &state{cfg: &config{transport: "http", name: "ctl"}, exit: func(int) {}}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`)) })
	srv := httptest.NewServer(st.garbageHTTP(ok))
	defer srv.Close()
	post := func() string {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return b.String()
	}
	if got := post(); !json.Valid([]byte(got)) {
		t.Fatalf("before garbage mode: %q", got)
	}
	st.fault.Store(&fault{Mode: modeGarbage})
	if got := post(); json.Valid([]byte(strings.TrimSpace(got))) || !strings.Contains(got, "garbage") {
		t.Fatalf("in garbage mode: %q", got)
	}
}
