package e2etest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/mcpclient"
)

const testUpstream = "./internal/testupstream"

func textOf(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// listenURL extracts the URL from testupstream's "LISTENING <url>" line.
func listenURL(t *testing.T, p *Proc) string {
	t.Helper()
	line := p.WaitForLine(t, "LISTENING ", 30*time.Second)
	return strings.TrimPrefix(line, "LISTENING ")
}

// pollUntil polls cond until it holds or timeout passes.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func TestTestUpstreamHTTP(t *testing.T) {
	bin := BuildBinary(t, testUpstream)
	port := FreePort(t)
	p := StartProcess(t, ProcOptions{Path: bin, Args: []string{
		"-transport", "http", "-listen", "127.0.0.1:" + strconv.Itoa(port), "-name", "alpha",
	}})
	url := listenURL(t, p)
	if want := fmt.Sprintf("http://127.0.0.1:%d/mcp", port); url != want {
		t.Fatalf("LISTENING %s, want %s", url, want)
	}
	WaitHTTP(t, url, 10*time.Second)

	ctx := context.Background()
	cs := ConnectHTTP(t, ctx, url, map[string]string{"X-E2e-Probe": "probe-value"}, nil)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "over http"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, res); got != "over http" {
		t.Errorf("echo = %q", got)
	}
	b, _ := json.Marshal(res.StructuredContent)
	if got, want := string(b), `{"server":"alpha","text":"over http"}`; got != want {
		t.Errorf("structuredContent = %s, want %s", got, want)
	}

	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "headers"})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Header
	if err := json.Unmarshal([]byte(textOf(t, res)), &h); err != nil {
		t.Fatal(err)
	}
	if got := h.Get("X-E2e-Probe"); got != "probe-value" {
		t.Errorf("upstream saw X-E2e-Probe = %q; headers: %v", got, h)
	}
}

func TestTestUpstreamSSE(t *testing.T) {
	bin := BuildBinary(t, testUpstream)
	p := StartProcess(t, ProcOptions{Path: bin, Args: []string{"-transport", "sse", "-listen", "127.0.0.1:0"}})
	url := listenURL(t, p)
	if !strings.HasSuffix(url, "/sse") {
		t.Fatalf("LISTENING %s, want a /sse URL", url)
	}
	ctx := context.Background()
	client := mcp.NewClient(&mcp.Implementation{Name: "sse-client", Version: "1"}, nil)
	hc := &http.Client{Transport: &mcpclient.HeaderTransport{Headers: map[string]string{"X-E2e-Probe": "sse"}, Base: http.DefaultTransport}}
	cs, err := client.Connect(ctx, &mcp.SSEClientTransport{Endpoint: url, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "headers"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(textOf(t, res), `"X-E2e-Probe":["sse"]`) {
		t.Errorf("headers over SSE = %s", textOf(t, res))
	}
}

// connectStdio starts cmd as a stdio MCP server through the SDK's
// CommandTransport.
func connectStdio(t *testing.T, cmd *exec.Cmd, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return connectStdioClient(t, mcp.NewClient(&mcp.Implementation{Name: "stdio-client", Version: "1"}, opts), cmd)
}

func connectStdioClient(t *testing.T, client *mcp.Client, cmd *exec.Cmd) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: time.Second}, nil)
	if err != nil {
		t.Fatalf("connecting to %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestTestUpstreamStdioContent(t *testing.T) {
	bin := BuildBinary(t, testUpstream)
	cs := connectStdio(t, exec.Command(bin, "-transport", "stdio"), nil)
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "content"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range res.Content {
		switch c := c.(type) {
		case *mcp.TextContent:
			kinds = append(kinds, "text")
		case *mcp.ImageContent:
			if c.MIMEType == "image/png" && len(c.Data) > 8 && string(c.Data[1:4]) == "PNG" {
				kinds = append(kinds, "image")
			}
		case *mcp.AudioContent:
			if c.MIMEType == "audio/wav" && string(c.Data[:4]) == "RIFF" {
				kinds = append(kinds, "audio")
			}
		case *mcp.EmbeddedResource:
			if c.Resource.URI == "test://static/1" && c.Resource.Text == "static resource 1" {
				kinds = append(kinds, "resource")
			}
		case *mcp.ResourceLink:
			if c.URI == "test://static/2" {
				kinds = append(kinds, "resource_link")
			}
		}
	}
	if want := []string{"text", "image", "audio", "resource", "resource_link"}; !slices.Equal(kinds, want) {
		t.Errorf("content kinds = %v, want %v", kinds, want)
	}
}

func TestServerEverythingStdio(t *testing.T) {
	entry := NPMFile(t, ServerEverythingEntry)
	cs := connectStdio(t, exec.Command(Node(t), entry, "stdio"), nil)
	ctx := context.Background()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if !slices.Contains(names, "echo") {
		t.Fatalf("server-everything tools %v have no echo", names)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "hi from go"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, res); got != "Echo: hi from go" {
		t.Errorf("echo = %q", got)
	}
}

// TestServerFilesystemRoots records how server-filesystem treats the
// client's roots: it asks for them after the handshake; an empty answer
// keeps the directories from its command line, and a non-empty one replaces
// them entirely (even with a directory outside them).
func TestServerFilesystemRoots(t *testing.T) {
	entry := NPMFile(t, ServerFilesystemEntry)
	allowed, other := t.TempDir(), t.TempDir()
	ctx := context.Background()

	// connect starts the server on allowed and connects a go-sdk client with
	// the given roots (the client advertises the roots capability even with
	// none). It returns once the server has asked for the roots and a
	// function listing the server's allowed directories.
	connect := func(roots ...*mcp.Root) func() string {
		var asked atomic.Bool
		client := mcp.NewClient(&mcp.Implementation{Name: "roots-client", Version: "1"}, nil)
		client.AddRoots(roots...)
		client.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
				res, err := next(ctx, method, req)
				if method == "roots/list" {
					asked.Store(true)
				}
				return res, err
			}
		})
		cs := connectStdioClient(t, client, exec.Command(Node(t), entry, allowed))
		pollUntil(t, 10*time.Second, "server-filesystem to ask for roots", asked.Load)
		return func() string {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_allowed_directories"})
			if err != nil {
				t.Fatal(err)
			}
			return textOf(t, res)
		}
	}

	empty := connect()
	withRoot := connect(&mcp.Root{URI: "file://" + other})
	// The server applies the answer asynchronously; poll for the change.
	pollUntil(t, 10*time.Second, "server-filesystem to adopt the client's root", func() bool {
		return strings.Contains(withRoot(), other)
	})
	if got := withRoot(); strings.Contains(got, allowed) {
		t.Errorf("with roots [%s], allowed directories = %q; want the command-line directory replaced", other, got)
	}
	if got := empty(); !strings.Contains(got, allowed) || strings.Contains(got, other) {
		t.Errorf("with empty roots, allowed directories = %q, want only %s", got, allowed)
	}
}

func TestTestUpstreamMisbehaviour(t *testing.T) {
	bin := BuildBinary(t, testUpstream)

	t.Run("fail-start", func(t *testing.T) {
		p := StartProcess(t, ProcOptions{Path: bin, Args: []string{"-fail-start"}})
		code, err := p.Wait(30 * time.Second)
		if err != nil || code != 1 {
			t.Fatalf("exit code %d, err %v; want 1", code, err)
		}
		if !strings.Contains(p.Stderr(), "-fail-start") {
			t.Errorf("stderr = %q", p.Stderr())
		}
	})

	t.Run("crash tool", func(t *testing.T) {
		p := StartProcess(t, ProcOptions{Path: bin, Args: []string{"-transport", "http"}})
		cs := ConnectHTTP(t, context.Background(), listenURL(t, p), nil, nil)
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "crash"}); err == nil {
			t.Error("crash returned a result")
		}
		if code, err := p.Wait(30 * time.Second); err != nil || code != 3 {
			t.Fatalf("exit code %d, err %v; want 3", code, err)
		}
	})

	t.Run("crash-after", func(t *testing.T) {
		p := StartProcess(t, ProcOptions{Path: bin, Args: []string{"-transport", "http", "-crash-after", "2"}})
		cs := ConnectHTTP(t, context.Background(), listenURL(t, p), nil, nil)
		for i := range 3 {
			_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
			if (err == nil) != (i < 2) {
				t.Errorf("call %d: err = %v", i+1, err)
			}
		}
		if code, err := p.Wait(30 * time.Second); err != nil || code != 3 {
			t.Fatalf("exit code %d, err %v; want 3", code, err)
		}
	})

	t.Run("hang", func(t *testing.T) {
		cs := connectStdio(t, exec.Command(bin, "-hang"), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := cs.ListTools(ctx, nil); err == nil {
			t.Error("tools/list answered")
		}
	})

	t.Run("hang-start", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		client := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "1"}, nil)
		cmd := exec.Command(bin, "-hang-start")
		cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: time.Second}, nil)
		if err == nil {
			cs.Close()
			t.Fatal("handshake completed")
		}
		if cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	t.Run("garbage", func(t *testing.T) {
		// Run it under StartProcess with a pipe for stdin to see the junk.
		stdinR, stdinW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdinW.Close()
		p := StartProcess(t, ProcOptions{Path: bin, Args: []string{"-garbage"}, Stdin: stdinR})
		stdinR.Close()
		send := func(msg string) {
			if _, err := stdinW.WriteString(msg + "\n"); err != nil {
				t.Fatal(err)
			}
		}
		send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`)
		p.WaitForLine(t, `"id":1,"result"`, 30*time.Second)
		send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		send(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		p.WaitForLine(t, "garbage: this is not JSON-RPC", 30*time.Second)
		if strings.Contains(p.Stdout(), `"id":2`) {
			t.Errorf("tools/list was answered: %s", p.Stdout())
		}
		if p.Exited() {
			t.Error("-garbage process exited; it should stay alive")
		}
	})

	t.Run("garbage seen by the go-sdk client", func(t *testing.T) {
		cs := connectStdio(t, exec.Command(bin, "-garbage"), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cs.ListTools(ctx, nil)
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("tools/list error = %v, want a decoding error", err)
		}
		if err := cs.Wait(); err == nil {
			t.Error("session still open after garbage")
		}
	})
}

func TestProcessGroupIsKilled(t *testing.T) {
	bin := BuildBinary(t, testUpstream)
	pidfile := filepath.Join(t.TempDir(), "pids")
	p := StartProcess(t, ProcOptions{Path: bin, Args: []string{"-transport", "http", "-pidfile", pidfile, "-spawn-child"}})
	listenURL(t, p) // the pidfile is written before the listener opens
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	if len(lines) != 2 {
		t.Fatalf("pidfile = %q, want two pids", b)
	}
	parent, _ := strconv.Atoi(lines[0])
	child, _ := strconv.Atoi(lines[1])
	if parent != p.Pid() || !ProcessAlive(parent) || !ProcessAlive(child) {
		t.Fatalf("pids %d (want %d) and %d: alive %v %v", parent, p.Pid(), child, ProcessAlive(parent), ProcessAlive(child))
	}
	p.Stop()
	pollUntil(t, 10*time.Second, "the group to die", func() bool {
		return !ProcessAlive(parent) && !ProcessAlive(child)
	})
}

func TestProcessAlive(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if ProcessAlive(cmd.Process.Pid) {
		t.Error("an exited and reaped process is alive")
	}
	if ProcessAlive(0) || ProcessAlive(-1) {
		t.Error("pid <= 0 is alive")
	}
}
