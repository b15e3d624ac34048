// Command testupstream is a small MCP server used as an upstream in
// toolgate's end-to-end tests. One binary covers every case; flags choose the
// transport and, for failure tests, how it misbehaves.
//
// Build it once per test run and start it as a stdio upstream or as an HTTP
// server:
//
//	go build -o DIR/testupstream ./internal/testupstream
//	DIR/testupstream -transport stdio -name alpha
//	DIR/testupstream -transport http -listen 127.0.0.1:0   # prints "LISTENING http://127.0.0.1:PORT/mcp"
//	DIR/testupstream -transport sse  -listen 127.0.0.1:0   # prints "LISTENING http://127.0.0.1:PORT/sse"
//
// In the HTTP modes exactly one line is printed to stdout, once the listener
// is open; everything else the program says goes to stderr. In stdio mode
// stdout carries only the protocol.
//
// Tools: echo, headers, slow, stats, progress, log, sample, elicit, roots,
// content, fail, add_tool, remove_tool, touch, crash (see registerTools).
// Resources: test://static/1, test://static/2 and the template
// test://item/{id}. Prompt: greet {name}, with completion of "name".
//
// sample, elicit and roots ask the client through the SDK's multi round-trip
// input requests: a client on protocol 2026-07-28 receives an
// input-required result and retries, an older client receives a real
// sampling/createMessage, elicitation/create or roots/list request (the SDK
// does the translation). Either way the client's handler is called.
//
// Over streamable HTTP one server serves every session, so add_tool and
// touch reach all clients; over SSE each session has a server of its own
// (that is how the headers tool learns the session's headers). The counters
// reported by stats are per process.
//
// Misbehaviour, for failure tests:
//
//	-fail-start      exit 1 at once, with a message on stderr
//	-crash-after N   the first N tool calls succeed, the next exits 3 unanswered
//	-hang            answer initialize (or server/discover), then no request at all
//	-hang-start      answer nothing, not even initialize
//	-garbage         stdio: answer the handshake, then write non-JSON lines in
//	                 reply to every request, never an answer, and stay alive
//	-pidfile PATH    write the pid; with -spawn-child, also start "sleep 600"
//	                 in the same process group and write its pid as line two
//	-protocol-versions 2025-11-25,...   serve only these protocol versions
//	-control ADDR    serve a control endpoint on ADDR (see below)
//
// The same misbehaviours can be switched on and off while the process runs,
// for soak and chaos tests, through the control endpoint (HTTP on its own
// listener, also in stdio mode, so it survives a restart of the process on
// the same address):
//
//	GET  http://ADDR/control                       {"mode": "ok", "delayMs": 0, "pid": 1234}
//	POST http://ADDR/control {"mode": "slow", "delayMs": 500}   every tool call waits delayMs first
//	POST http://ADDR/control {"mode": "hang"}      like -hang, from now on
//	POST http://ADDR/control {"mode": "garbage"}   like -garbage (stdio); over HTTP every POST is answered with a non-JSON body
//	POST http://ADDR/control {"mode": "crash"}     answer, then exit 3
//	POST http://ADDR/control {"mode": "ok"}        behave again
//
//lint:file-ignore SA1019 the test server exercises the deprecated roots, sampling and logging features on purpose.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// config holds the command-line flags.
type config struct {
	transport        string // stdio, http or sse
	listen           string // address for http and sse
	name             string // implementation name, also reported by echo
	protocolVersions string // comma-separated list narrowing the versions served

	crashAfter int    // exit(3) on the tool call that follows the first crashAfter calls
	hang       bool   // answer the handshake, then never answer another request
	hangStart  bool   // never answer the handshake
	garbage    bool   // stdio: answer the handshake, then write junk instead of answers
	failStart  bool   // exit 1 at once with a message on stderr
	pidfile    string // write our pid (and the child's) here
	spawnChild bool   // start "sleep 600" in our process group
	control    string // address of the control endpoint; empty for none
}

func parseFlags(args []string) (*config, error) {
	var cfg config
	fs := flag.NewFlagSet("testupstream", flag.ContinueOnError)
	fs.StringVar(&cfg.transport, "transport", "stdio", "stdio, http (streamable HTTP, served at /mcp) or sse (served at /sse)")
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:0", "listen address for -transport http|sse")
	fs.StringVar(&cfg.name, "name", "testupstream", "implementation name; echo reports it as \"server\"")
	fs.StringVar(&cfg.protocolVersions, "protocol-versions", "", "comma-separated protocol versions to serve (default: all the SDK supports)")
	fs.IntVar(&cfg.crashAfter, "crash-after", 0, "if > 0, the first N tool calls succeed and the next one exits the process with status 3 before answering")
	fs.BoolVar(&cfg.hang, "hang", false, "answer initialize/server/discover, then never answer any other request")
	fs.BoolVar(&cfg.hangStart, "hang-start", false, "never answer initialize or server/discover")
	fs.BoolVar(&cfg.garbage, "garbage", false, "stdio only: answer the handshake, then reply to every request with non-JSON lines on stdout and never with an answer; the process stays alive")
	fs.BoolVar(&cfg.failStart, "fail-start", false, "exit 1 immediately with a message on stderr")
	fs.StringVar(&cfg.pidfile, "pidfile", "", "write the process id to this file (with -spawn-child, the child's pid as a second line)")
	fs.BoolVar(&cfg.spawnChild, "spawn-child", false, "start a child \"sleep 600\" in this process group")
	fs.StringVar(&cfg.control, "control", "", "serve the control endpoint (GET/POST /control) on this address, to change the behaviour at run time")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch cfg.transport {
	case "stdio", "http", "sse":
	default:
		return nil, fmt.Errorf("-transport must be stdio, http or sse, not %q", cfg.transport)
	}
	if cfg.garbage && cfg.transport != "stdio" {
		return nil, errors.New("-garbage works only with -transport stdio")
	}
	return &cfg, nil
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("testupstream: ")
	log.SetOutput(os.Stderr)

	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		log.Printf("%v", err)
		os.Exit(2)
	}
	if cfg.failStart {
		log.Printf("failing at start as asked (-fail-start)")
		os.Exit(1)
	}
	if err := writePidfile(cfg); err != nil {
		log.Printf("%v", err)
		os.Exit(1)
	}
	if err := run(context.Background(), cfg, os.Stdin, os.Stdout); err != nil {
		log.Printf("%v", err)
		os.Exit(1)
	}
}

// writePidfile writes our pid, and with -spawn-child starts the child and
// writes its pid as the second line. The file is written to a temporary name
// and renamed, so a reader never sees half of it.
func writePidfile(cfg *config) error {
	content := strconv.Itoa(os.Getpid()) + "\n"
	if cfg.spawnChild {
		// No Setpgid: the child stays in our process group, so a client that
		// kills the group kills it too. Its stdout and stderr are /dev/null so
		// it does not hold our pipes open.
		child := exec.Command("sleep", "600")
		if err := child.Start(); err != nil {
			return fmt.Errorf("starting child: %w", err)
		}
		go child.Wait() // reap it if it ever exits while we run
		content += strconv.Itoa(child.Process.Pid) + "\n"
	}
	if cfg.pidfile == "" {
		return nil
	}
	tmp := cfg.pidfile + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing pidfile: %w", err)
	}
	if err := os.Rename(tmp, cfg.pidfile); err != nil {
		return fmt.Errorf("writing pidfile: %w", err)
	}
	return nil
}

// run serves MCP on the configured transport until the client goes away
// (stdio) or the process is killed (http, sse).
func run(ctx context.Context, cfg *config, stdin io.ReadCloser, stdout io.Writer) error {
	st := &state{cfg: cfg, exit: os.Exit}
	if cfg.control != "" {
		ln, err := net.Listen("tcp", cfg.control)
		if err != nil {
			return fmt.Errorf("-control: %w", err)
		}
		log.Printf("control endpoint on http://%s/control", ln.Addr())
		mux := http.NewServeMux()
		mux.Handle("/control", st.controlHandler())
		cs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go cs.Serve(ln)
		defer cs.Close()
	}
	switch cfg.transport {
	case "stdio":
		out := &lockedWriter{w: stdout}
		st.stdout = out
		srv := st.newServer(nil)
		return srv.Run(ctx, &mcp.IOTransport{Reader: stdin, Writer: out})

	case "http", "sse":
		ln, err := net.Listen("tcp", cfg.listen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		path := "/mcp"
		if cfg.transport == "http" {
			srv := st.newServer(nil) // one server, one session per client
			mux.Handle(path, st.garbageHTTP(mcp.NewStreamableHTTPHandler(
				func(*http.Request) *mcp.Server { return srv },
				&mcp.StreamableHTTPOptions{PropagateRequestCancellation: true},
			)))
		} else {
			// The SSE transport gives handlers no request headers, so each
			// session gets its own server that remembers the headers of the
			// GET request that opened it; the headers tool reports those.
			path = "/sse"
			mux.Handle(path, mcp.NewSSEHandler(
				func(r *http.Request) *mcp.Server { return st.newServer(r.Header.Clone()) },
				nil,
			))
		}
		if _, err := fmt.Fprintf(stdout, "LISTENING http://%s%s\n", ln.Addr(), path); err != nil {
			return err
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		return hs.Serve(ln)
	}
	return fmt.Errorf("unknown transport %q", cfg.transport)
}

// state is what the whole process shares: flags, counters and, in stdio
// mode, the stdout writer (so -garbage can write between protocol messages).
type state struct {
	cfg    *config
	stdout *lockedWriter

	toolCalls atomic.Int64 // tools/call requests received, except for stats (a multi round-trip retry is a request of its own)
	slowDone  atomic.Int64 // slow calls that slept to the end
	cancelled atomic.Int64 // slow calls whose context was cancelled first

	fault atomic.Pointer[fault] // the misbehaviour set through the control endpoint; nil means none
	exit  func(code int)        // os.Exit, replaced in tests
}

// lockedWriter serialises writes so that junk lines never split a message.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *lockedWriter) Close() error { return nil }

// builtinTools are the tools registered at start; add_tool refuses to
// replace them and remove_tool refuses to remove them.
var builtinTools = []string{
	"echo", "headers", "slow", "stats", "progress", "log", "sample", "elicit",
	"roots", "content", "fail", "add_tool", "remove_tool", "touch", "crash",
}

// newServer builds a server with every tool, resource and prompt.
// sseHeader is the header of the SSE session's GET request (nil otherwise).
func (st *state) newServer(sseHeader http.Header) *mcp.Server {
	opts := &mcp.ServerOptions{
		CompletionHandler:  completeGreet,
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	}
	if v := strings.TrimSpace(st.cfg.protocolVersions); v != "" {
		for p := range strings.SplitSeq(v, ",") {
			opts.SupportedProtocolVersions = append(opts.SupportedProtocolVersions, strings.TrimSpace(p))
		}
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: st.cfg.name, Version: "1.0.0"}, opts)
	srv.AddReceivingMiddleware(st.misbehave)
	st.registerTools(srv, sseHeader)
	registerResources(srv)
	registerPrompts(srv)
	return srv
}

// handshakeMethods are answered even with -hang (and -garbage); with
// -hang-start nothing is answered.
var handshakeMethods = []string{"initialize", "server/discover", "subscriptions/listen"}

// misbehave is the receiving middleware that implements -hang, -hang-start,
// -garbage and -crash-after. Notifications always pass.
func (st *state) misbehave(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if strings.HasPrefix(method, "notifications/") {
			return next(ctx, method, req)
		}
		handshake := slices.Contains(handshakeMethods, method)
		f := st.currentFault()
		switch {
		case st.cfg.hangStart, (st.cfg.hang || f.Mode == modeHang) && !handshake:
			// Never answer. Waiting on ctx lets the goroutine end when the
			// connection closes; a cancelled request needs no answer.
			<-ctx.Done()
			return nil, ctx.Err()
		case (st.cfg.garbage || f.Mode == modeGarbage && st.stdout != nil) && !handshake:
			// A robust client must treat the stream as broken: the request
			// gets non-JSON lines and never a response, and the process
			// stays alive so the client has to kill it.
			fmt.Fprintf(st.stdout, "garbage: this is not JSON-RPC (%s)\n", method)
			fmt.Fprintf(st.stdout, "{\"jsonrpc\": \"2.0\", \"id\": oops\n")
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if method == "tools/call" {
			if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok && p.Name == "stats" {
				return next(ctx, method, req)
			}
			if n := st.toolCalls.Add(1); st.cfg.crashAfter > 0 && n > int64(st.cfg.crashAfter) {
				log.Printf("exiting after %d tool calls (-crash-after)", n-1)
				os.Exit(3)
			}
			if f.Mode == modeSlow {
				t := time.NewTimer(time.Duration(f.DelayMs) * time.Millisecond)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
		return next(ctx, method, req)
	}
}

// Tool argument and result types. The jsonschema tags become the tools'
// input schema descriptions.
type (
	echoIn struct {
		Text string `json:"text" jsonschema:"the text to echo"`
	}
	echoOut struct {
		Text   string `json:"text"`
		Server string `json:"server"`
	}
	slowIn struct {
		MS int `json:"ms" jsonschema:"how long to sleep, in milliseconds"`
	}
	progressIn struct {
		Steps int `json:"steps" jsonschema:"how many progress notifications to send"`
	}
	logIn struct {
		Level   string `json:"level,omitempty" jsonschema:"log level (debug, info, notice, warning, error, ...); default info"`
		Message string `json:"message" jsonschema:"the message to log"`
	}
	sampleIn struct {
		Prompt string `json:"prompt" jsonschema:"the prompt sent to the client's model"`
	}
	elicitIn struct {
		Message string `json:"message" jsonschema:"the message shown to the user"`
	}
	failIn struct {
		Message string `json:"message" jsonschema:"the error text"`
	}
	nameIn struct {
		Name string `json:"name" jsonschema:"tool name"`
	}
	touchIn struct {
		URI string `json:"uri" jsonschema:"resource URI to report as updated"`
	}
	empty struct{}
)

type addToolIn struct {
	Name        string `json:"name" jsonschema:"tool name"`
	Description string `json:"description,omitempty" jsonschema:"description of the new tool"`
}

type environIn struct {
	Names []string `json:"names" jsonschema:"environment variable names to report"`
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func jsonText(v any) *mcp.CallToolResult {
	b, err := json.Marshal(v)
	if err != nil {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}
	}
	return text(string(b))
}

func toolError(s string) *mcp.CallToolResult {
	r := text(s)
	r.IsError = true
	return r
}

func (st *state) registerTools(srv *mcp.Server, sseHeader http.Header) {
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "Returns text unchanged, with structuredContent {text, server}."},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			return text(in.Text), echoOut{Text: in.Text, Server: st.cfg.name}, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "headers", Description: "Returns the HTTP request headers of this call as JSON ({} over stdio; over SSE, the headers of the request that opened the session)."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ empty) (*mcp.CallToolResult, any, error) {
			h := http.Header{}
			switch {
			case req.Extra != nil && req.Extra.Header != nil:
				h = req.Extra.Header
			case sseHeader != nil:
				h = sseHeader
			}
			return jsonText(h), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "slow", Description: "Sleeps ms milliseconds unless cancelled; see stats."},
		func(ctx context.Context, req *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, any, error) {
			t := time.NewTimer(time.Duration(in.MS) * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
				st.slowDone.Add(1)
				return text(fmt.Sprintf("slept %d ms", in.MS)), nil, nil
			case <-ctx.Done():
				st.cancelled.Add(1)
				return nil, nil, ctx.Err()
			}
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "stats", Description: "Returns JSON {calls, cancelled, slowCompleted}: tool calls so far (stats itself excluded), slow calls cancelled, slow calls completed."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ empty) (*mcp.CallToolResult, any, error) {
			return jsonText(map[string]int64{
				"calls":         st.toolCalls.Load(),
				"cancelled":     st.cancelled.Load(),
				"slowCompleted": st.slowDone.Load(),
			}), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "progress", Description: "Sends steps progress notifications (when the request has a progress token), then returns \"done\"."},
		func(ctx context.Context, req *mcp.CallToolRequest, in progressIn) (*mcp.CallToolResult, any, error) {
			if token := req.Params.GetProgressToken(); token != nil {
				for i := 1; i <= in.Steps; i++ {
					err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: token,
						Progress:      float64(i),
						Total:         float64(in.Steps),
						Message:       fmt.Sprintf("step %d of %d", i, in.Steps),
					})
					if err != nil {
						return nil, nil, fmt.Errorf("sending progress: %w", err)
					}
				}
			}
			return text("done"), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "log", Description: "Sends a notifications/message log message (sent only if the client set a log level), then returns \"logged\"."},
		func(ctx context.Context, req *mcp.CallToolRequest, in logIn) (*mcp.CallToolResult, any, error) {
			level := in.Level
			if level == "" {
				level = "info"
			}
			err := req.Session.Log(ctx, &mcp.LoggingMessageParams{
				Level:  mcp.LoggingLevel(level),
				Logger: st.cfg.name,
				Data:   in.Message,
			})
			if err != nil {
				return nil, nil, fmt.Errorf("sending log message: %w", err)
			}
			return text("logged"), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "sample", Description: "Asks the client for sampling/createMessage and returns the text it answered."},
		func(ctx context.Context, req *mcp.CallToolRequest, in sampleIn) (*mcp.CallToolResult, any, error) {
			if resp, ok := req.Params.InputResponses["sample"]; ok {
				return text(samplingText(resp)), nil, nil
			}
			return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{
				"sample": &mcp.CreateMessageParams{
					Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: in.Prompt}}},
					MaxTokens: 100,
				},
			}}, nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "elicit", Description: "Asks the client for elicitation/create (schema {answer: string}) and returns JSON {action, content}."},
		func(ctx context.Context, req *mcp.CallToolRequest, in elicitIn) (*mcp.CallToolResult, any, error) {
			if resp, ok := req.Params.InputResponses["elicit"]; ok {
				er, ok := resp.(*mcp.ElicitResult)
				if !ok {
					return toolError(fmt.Sprintf("unexpected elicitation answer %T", resp)), nil, nil
				}
				return jsonText(map[string]any{"action": er.Action, "content": er.Content}), nil, nil
			}
			return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{
				"elicit": &mcp.ElicitParams{
					Message: in.Message,
					RequestedSchema: &jsonschema.Schema{
						Type:       "object",
						Properties: map[string]*jsonschema.Schema{"answer": {Type: "string"}},
					},
				},
			}}, nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "roots", Description: "Asks the client for roots/list and returns the root URIs as a JSON array."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ empty) (*mcp.CallToolResult, any, error) {
			if resp, ok := req.Params.InputResponses["roots"]; ok {
				lr, ok := resp.(*mcp.ListRootsResult)
				if !ok {
					return toolError(fmt.Sprintf("unexpected roots answer %T", resp)), nil, nil
				}
				uris := []string{}
				for _, r := range lr.Roots {
					uris = append(uris, r.URI)
				}
				return jsonText(uris), nil, nil
			}
			return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{
				"roots": &mcp.ListRootsParams{},
			}}, nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "content", Description: "Returns one result with every content type: text, image, audio, embedded resource, resource link."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ empty) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{
				&mcp.TextContent{Text: "all content types"},
				&mcp.ImageContent{Data: mustBase64(tinyPNG), MIMEType: "image/png"},
				&mcp.AudioContent{Data: mustBase64(tinyWAV), MIMEType: "audio/wav"},
				&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
					URI: "test://static/1", MIMEType: "text/plain", Text: staticText("1"),
				}},
				&mcp.ResourceLink{URI: "test://static/2", Name: "static-2", MIMEType: "text/plain"},
			}}, nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "environ", Description: "Returns JSON {cwd, env}: the working directory and the values of the named environment variables (null when unset)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in environIn) (*mcp.CallToolResult, any, error) {
			wd, _ := os.Getwd()
			env := map[string]any{}
			for _, n := range in.Names {
				if v, ok := os.LookupEnv(n); ok {
					env[n] = v
				} else {
					env[n] = nil
				}
			}
			return jsonText(map[string]any{"cwd": wd, "env": env}), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "fail", Description: "Returns an isError result whose text is message."},
		func(ctx context.Context, req *mcp.CallToolRequest, in failIn) (*mcp.CallToolResult, any, error) {
			return toolError(in.Message), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "add_tool", Description: "Registers (or replaces) a tool named name at runtime (the server then sends notifications/tools/list_changed). The new tool returns \"dynamic tool NAME\"; description, when given, replaces its default description."},
		func(ctx context.Context, req *mcp.CallToolRequest, in addToolIn) (*mcp.CallToolResult, any, error) {
			if in.Name == "" || slices.Contains(builtinTools, in.Name) {
				return toolError(fmt.Sprintf("cannot add tool %q", in.Name)), nil, nil
			}
			name, desc := in.Name, in.Description
			if desc == "" {
				desc = "A tool added at runtime by add_tool."
			}
			srv.AddTool(&mcp.Tool{
				Name:        name,
				Description: desc,
				InputSchema: &jsonschema.Schema{Type: "object"},
			}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				return text("dynamic tool " + name), nil
			})
			return text("added " + name), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "remove_tool", Description: "Removes a tool added with add_tool (the server then sends notifications/tools/list_changed)."},
		func(ctx context.Context, req *mcp.CallToolRequest, in nameIn) (*mcp.CallToolResult, any, error) {
			if slices.Contains(builtinTools, in.Name) {
				return toolError(fmt.Sprintf("cannot remove built-in tool %q", in.Name)), nil, nil
			}
			srv.RemoveTools(in.Name)
			return text("removed " + in.Name), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "touch", Description: "Sends notifications/resources/updated for uri to subscribed clients."},
		func(ctx context.Context, req *mcp.CallToolRequest, in touchIn) (*mcp.CallToolResult, any, error) {
			if err := srv.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: in.URI}); err != nil {
				return nil, nil, fmt.Errorf("notifying update: %w", err)
			}
			return text("touched " + in.URI), nil, nil
		})

	mcp.AddTool(srv, &mcp.Tool{Name: "crash", Description: "Exits the process with status 3 without answering."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ empty) (*mcp.CallToolResult, any, error) {
			log.Printf("crashing as asked (crash tool)")
			os.Exit(3)
			return nil, nil, nil
		})
}

// samplingText extracts the text of a sampling answer. A client on the new
// protocol answers with a CreateMessageWithToolsResult; the SDK's translation
// for older clients also produces one, but accept both forms.
func samplingText(resp mcp.InputResponse) string {
	var contents []mcp.Content
	switch r := resp.(type) {
	case *mcp.CreateMessageWithToolsResult:
		contents = r.Content
	case *mcp.CreateMessageResult:
		contents = []mcp.Content{r.Content}
	}
	for _, c := range contents {
		if tc, ok := c.(*mcp.TextContent); ok {
			return tc.Text
		}
	}
	return "(non-text response)"
}

func staticText(id string) string { return "static resource " + id }

func registerResources(srv *mcp.Server) {
	for _, id := range []string{"1", "2"} {
		srv.AddResource(&mcp.Resource{
			Name:     "static-" + id,
			URI:      "test://static/" + id,
			MIMEType: "text/plain",
		}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{
				URI: req.Params.URI, MIMEType: "text/plain", Text: staticText(id),
			}}}, nil
		})
	}
	srv.AddResourceTemplate(&mcp.ResourceTemplate{
		Name:        "item",
		URITemplate: "test://item/{id}",
		MIMEType:    "text/plain",
	}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		id := strings.TrimPrefix(req.Params.URI, "test://item/")
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{
			URI: req.Params.URI, MIMEType: "text/plain", Text: "item " + id,
		}}}, nil
	})
}

func registerPrompts(srv *mcp.Server) {
	srv.AddPrompt(&mcp.Prompt{
		Name:        "greet",
		Description: "Greets someone by name.",
		Arguments:   []*mcp.PromptArgument{{Name: "name", Description: "who to greet", Required: true}},
	}, func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{
			Description: "A greeting",
			Messages: []*mcp.PromptMessage{{
				Role:    "user",
				Content: &mcp.TextContent{Text: "Hello, " + req.Params.Arguments["name"]},
			}},
		}, nil
	})
}

// greetNames are the completion candidates for greet's name argument
// (invented names).
var greetNames = []string{"alice-test", "albert-test", "bob-test"}

// completeGreet completes the name argument of the greet prompt by prefix;
// everything else completes to nothing.
func completeGreet(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	values := []string{}
	p := req.Params
	if p.Ref != nil && p.Ref.Type == "ref/prompt" && p.Ref.Name == "greet" && p.Argument.Name == "name" {
		for _, n := range greetNames {
			if strings.HasPrefix(n, p.Argument.Value) {
				values = append(values, n)
			}
		}
	}
	return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: values, Total: len(values)}}, nil
}

// A 1x1 PNG and a WAV file with one sample of silence.
const (
	tinyPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
	tinyWAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
)

func mustBase64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
