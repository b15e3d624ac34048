package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestServeRejectsNegativeGrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "toolgate.json")
	if err := os.WriteFile(path, []byte(`{"mcpServers": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main([]string{"serve", "-c", path, "--shutdown-grace", "-1s"}, strings.NewReader(""), &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "--shutdown-grace: negative duration") {
		t.Errorf("exit %d, stderr %q; want a usage error naming --shutdown-grace", code, errb.String())
	}
}

// serve --stdio closes its session only once the answers of the calls it
// read are written.
func TestAnsweringTransportWaitsForAnswers(t *testing.T) {
	ctx := context.Background()
	release, started := make(chan struct{}), make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	srv := mcp.NewServer(&mcp.Implementation{Name: "s", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "wait"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		close(started)
		<-release
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	ct, st := mcp.NewInMemoryTransports()
	at := &answeringTransport{Transport: st}
	ss, err := srv.Connect(ctx, at, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	defer releaseOnce() // first of the deferred calls: a failing test must not leave the call hanging

	result := make(chan string, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "wait"})
		if err != nil {
			result <- err.Error()
			return
		}
		result <- res.Content[0].(*mcp.TextContent).Text
	}()
	pending := func() int {
		at.mu.Lock()
		defer at.mu.Unlock()
		return at.pending
	}
	// The call is running; the answer to initialize may still be on its
	// way out (the client can read it before the server's Write returns).
	<-started
	deadline := time.Now().Add(10 * time.Second)
	for pending() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the call was never read (pending %d)", pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
	at.waitAnswered(10 * time.Millisecond) // gives up: the call is unanswered
	if n := pending(); n != 1 {
		t.Fatalf("pending = %d while the call runs, want 1", n)
	}
	releaseOnce()
	at.waitAnswered(time.Minute)
	if n := pending(); n != 0 {
		t.Fatalf("waitAnswered returned with %d requests unanswered", n)
	}
	if got := <-result; got != "done" {
		t.Errorf("call = %q", got)
	}
}

// The demo's key is kept in the user's configuration folder and read back;
// a file that holds no key is replaced; a folder that cannot hold it gives
// a key for this run, with the reason.
func TestDemoKeyKept(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	first, err := loadDemoKey()
	if err != nil || !first.created || first.path != filepath.Join(dir, "toolgate", "demo", "key") {
		t.Fatalf("first: %+v, %v", first, err)
	}
	again, err := loadDemoKey()
	if err != nil || again.key != first.key || again.created {
		t.Errorf("again: %+v, %v; want the key %s", again, err, first.key)
	}
	if err := os.WriteFile(first.path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if replaced, err := loadDemoKey(); err != nil || replaced.key == first.key || !replaced.created {
		t.Errorf("over a file without a key: %+v, %v", replaced, err)
	}

	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", blocked) // a file where the folder would be
	if k, err := loadDemoKey(); err != nil || k.key == "" || k.path != "" || !strings.Contains(k.why, "cannot be") {
		t.Errorf("without a usable folder: %+v, %v", k, err)
	}
}
