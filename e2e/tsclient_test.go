package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/toolgate/toolgate/internal/e2etest"
)

// tsClientOutput is what e2e/testdata/tsclient.mjs prints.
type tsClientOutput struct {
	Fatal           string          `json:"fatal"`
	Errors          []string        `json:"errors"`
	Server          map[string]any  `json:"server"`
	ProtocolVersion string          `json:"protocolVersion"`
	Tools           []string        `json:"tools"`
	Echo            json.RawMessage `json:"echo"`
	Content         json.RawMessage `json:"content"`
	Fail            json.RawMessage `json:"fail"`
	Unknown         struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"unknown"`
	Progress struct {
		Result        string `json:"result"`
		Notifications []struct {
			Progress float64 `json:"progress"`
			Total    float64 `json:"total"`
			Message  string  `json:"message"`
		} `json:"notifications"`
	} `json:"progress"`
	Sample string `json:"sample"`
	Elicit string `json:"elicit"`
	Roots  string `json:"roots"`
	Log    *struct {
		Level  string `json:"level"`
		Logger string `json:"logger"`
		Data   any    `json:"data"`
	} `json:"log"`
	Resources []string `json:"resources"`
	Templates []string `json:"templates"`
	Item      struct {
		Contents []struct {
			URI  string `json:"uri"`
			Text string `json:"text"`
		} `json:"contents"`
	} `json:"item"`
	Prompt struct {
		Messages []struct {
			Role    string `json:"role"`
			Content struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"messages"`
	} `json:"prompt"`
	Completion []string `json:"completion"`
}

// runTSClient runs tsclient.mjs with node against url, with the test
// gateway's key in $TOOLGATE_KEY. The script imports
// the SDK by package name, so it runs from a copy placed next to a
// node_modules symlink to the pinned npm packages.
func runTSClient(t *testing.T, url string) *tsClientOutput {
	t.Helper()
	var out tsClientOutput
	runNodeScript(t, "tsclient.mjs", 90*time.Second, []string{"TOOLGATE_KEY=" + keyFor(url)}, &out, url)
	if out.Fatal != "" {
		t.Fatalf("tsclient.mjs failed: %s", out.Fatal)
	}
	return &out
}

// runNodeScript runs testdata/NAME with node, given args and env added to
// the environment, and decodes the JSON it prints on stdout into out. The
// scripts import the SDKs by package name, so each runs from a copy placed
// next to a node_modules symlink to the pinned npm packages. A script
// that fails or prints something else fails the test, with its output.
func runNodeScript(t *testing.T, name string, timeout time.Duration, env []string, out any, args ...string) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), script, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e2etest.NPMDir(t), filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2etest.Node(t), append([]string{filepath.Join(dir, name)}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if jerr := json.Unmarshal(stdout, out); err != nil || jerr != nil {
		t.Fatalf("%s: %v (decoding its output: %v)\nstdout:\n%s\nstderr:\n%s", name, err, jerr, stdout, stderr.String())
	}
}

// TestTypeScriptSDKClient connects the official TypeScript MCP SDK client
// to the gateway over streamable HTTP and checks what it sees against the
// Go SDK client: tool list, results (every content type, structuredContent,
// isError), the unknown-tool error, progress with the SDK's own numeric
// token, sampling, elicitation and roots answered by the TypeScript client,
// logging, resources, prompts and completion.
func TestTypeScriptSDKClient(t *testing.T) {
	g := startGateway(t, fmt.Sprintf(`{
		"mcpServers": {
			"t": {"command": %s, "args": ["-name", "t-up"]},
		},
	}`, jsonString(testUpstream(t))))
	out := runTSClient(t, g.URL())
	cs := connect(t, g.URL(), nil)

	if out.Server["name"] != "toolgate" {
		t.Errorf("server name = %v, want toolgate", out.Server["name"])
	}
	if out.ProtocolVersion == "" {
		t.Errorf("no protocol version negotiated")
	}
	if diff := cmp.Diff(toolNames(t, cs), out.Tools); diff != "" {
		t.Errorf("tools (-Go client +TypeScript client):\n%s", diff)
	}

	// Results arrive as the Go client sees them through the same gateway.
	for _, c := range []struct {
		tool string
		args map[string]any
		got  json.RawMessage
	}{
		{"t__echo", map[string]any{"text": "from the TypeScript SDK"}, out.Echo},
		{"t__content", map[string]any{}, out.Content},
		{"t__fail", map[string]any{"message": "failing for ts"}, out.Fail},
	} {
		var got any
		if err := json.Unmarshal(c.got, &got); err != nil {
			t.Fatalf("%s: %v", c.tool, err)
		}
		want := wire(t, callTool(t, cs, c.tool, c.args))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-Go client +TypeScript client):\n%s", c.tool, diff)
		}
	}
	_, goErr := callCtx(cs, "t__no_such_tool", map[string]any{})
	if re := rpcError(t, goErr); out.Unknown.Code != int(re.Code) || !strings.Contains(out.Unknown.Message, re.Message) {
		t.Errorf("unknown tool: TypeScript client got %d %q, Go client %d %q", out.Unknown.Code, out.Unknown.Message, re.Code, re.Message)
	}

	if out.Progress.Result != "done" {
		t.Errorf("progress result = %q, want done", out.Progress.Result)
	}
	var progress []string
	for _, n := range out.Progress.Notifications {
		progress = append(progress, fmt.Sprintf("%v/%v %s", n.Progress, n.Total, n.Message))
	}
	wantProgress := []string{"1/3 step 1 of 3", "2/3 step 2 of 3", "3/3 step 3 of 3"}
	errs := out.Errors
	if !knownBugs() {
		// Known bug: the gateway relays an upstream's progress on the
		// client's standalone stream and often only after the call's
		// result, so the TypeScript SDK, which accepts progress only while
		// the request is open, drops some of it ("unknown token"). Until
		// that is fixed, check only that what arrives is right.
		wantProgress = wantProgress[:min(len(progress), len(wantProgress))]
		errs = slices.DeleteFunc(slices.Clone(errs), func(e string) bool {
			return strings.HasPrefix(e, "Received a progress notification for an unknown token")
		})
		if n := len(progress); n < 3 {
			t.Logf("known bug: the TypeScript client received %d of 3 progress notifications", n)
		}
	}
	if diff := cmp.Diff(wantProgress, progress, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("progress seen by the TypeScript client (-want +got):\n%s", diff)
	}

	if want := "ts answers pick a number"; out.Sample != want {
		t.Errorf("sample = %q, want %q", out.Sample, want)
	}
	if want := `{"action":"accept","content":{"answer":"ts agrees to continue?"}}`; out.Elicit != want {
		t.Errorf("elicit = %q, want %q", out.Elicit, want)
	}
	if want := `["file:///work/ts-client"]`; out.Roots != want {
		t.Errorf("roots = %q, want %q", out.Roots, want)
	}
	if out.Log == nil {
		t.Errorf("the TypeScript client received no log message")
	} else if out.Log.Level != "notice" || out.Log.Logger != "t-up" {
		t.Errorf("log = %+v, want level notice from logger t-up", *out.Log)
	}

	if diff := cmp.Diff([]string{"test://static/1", "test://static/2"}, out.Resources); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"test://item/{id}"}, out.Templates); diff != "" {
		t.Errorf("templates (-want +got):\n%s", diff)
	}
	if len(out.Item.Contents) != 1 || out.Item.Contents[0].Text != "item 7" {
		t.Errorf("test://item/7 = %+v, want the text \"item 7\"", out.Item)
	}
	if len(out.Prompt.Messages) != 1 || out.Prompt.Messages[0].Content.Text != "Hello, Grace" {
		t.Errorf("prompt t__greet = %+v, want one message \"Hello, Grace\"", out.Prompt)
	}
	if diff := cmp.Diff([]string{"bob-test"}, out.Completion); diff != "" {
		t.Errorf("completion (-want +got):\n%s", diff)
	}
	for _, e := range errs {
		t.Errorf("the TypeScript client reported an error: %s", e)
	}
}
