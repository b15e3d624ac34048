package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

// upstreamProtocolVersion is the protocol version toolgate offers upstream
// servers. Newer versions (2026-07-28) replace server-to-client requests with
// multi round-trip results, which the relay does not carry yet.
const upstreamProtocolVersion = "2025-11-25"

// connection is one live session with an upstream plus what must be torn
// down with it.
type connection struct {
	session *mcp.ClientSession
	group   *processGroup   // nil for remote servers (process_*.go)
	stderr  *stderrTail     // stdio servers: the last lines of stderr
	errPipe *os.File        // stdio servers: the read end of stderr
	pool    *http.Transport // remote servers: the connection pool of this session
	calls   *streamCaller   // streamable HTTP servers: calls tools without the SDK's client
	broken  chan error      // a failure that ends the session, found outside the SDK
	suspect chan error      // a refusal that may mean the session ended: pinged at once
}

// fail ends the session for err (the first failure reported wins).
func (c *connection) fail(err error) {
	select {
	case c.broken <- err:
	default:
	}
}

// doubt has the session pinged at once after err, a refusal that may mean
// the server no longer serves it; the session ends if the ping fails.
func (c *connection) doubt(err error) {
	select {
	case c.suspect <- err:
	default: // a ping is due already
	}
}

// close ends the session, then kills what is left of the process group.
func (c *connection) close() {
	if c == nil {
		return
	}
	if c.session != nil {
		_ = c.session.Close()
	}
	if c.calls != nil {
		c.calls.close()
	}
	if c.pool != nil {
		c.pool.CloseIdleConnections()
	}
	c.group.kill()
	if c.stderr != nil {
		// Read stderr to its end, which the kill brings, so that its last
		// lines are kept; then close it, in case a process that left the
		// group still holds it.
		c.stderr.wait(stderrDrain)
		_ = c.errPipe.Close()
	}
}

// explain returns err, the reason the session ended, with what the
// upstream said about it. Call it after close.
func (c *connection) explain(err error) error {
	if c == nil {
		return err
	}
	return c.stderr.explain(err)
}

// headerTransport adds a server's configured headers to every request and
// never forwards anything from the downstream client.
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
	grace   time.Duration // drainGrace when zero
	refusal *httpRefusal  // records the first error answer of the handshake; nil for none
}

func (t *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	// The request runs under a context of its own that follows the
	// caller's: at once until the response headers arrive, and drainGrace
	// later while the body is read (see lingeringBody).
	parent := r.Context()
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	r = r.Clone(ctx)
	setHeaders(r.Header, t.headers)
	stopNow := context.AfterFunc(parent, func() { cancel(context.Cause(parent)) })
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		stopNow()
		cancel(nil)
		return nil, err
	}
	if !stopNow() {
		// The caller gave up while the headers were on their way: the
		// request is cancelled already, and so is reading its body.
		return resp, nil
	}
	grace := t.grace
	if grace == 0 {
		grace = drainGrace
	}
	stopLater := context.AfterFunc(parent, func() {
		time.AfterFunc(grace, func() { cancel(context.Cause(parent)) })
	})
	resp.Body = &lingeringBody{ReadCloser: resp.Body, release: func() {
		stopLater()
		cancel(nil)
	}}
	t.refusal.record(r, resp)
	return resp, nil
}

// setHeaders sets a server's configured headers in h.
func setHeaders(h http.Header, headers map[string]string) {
	for k, v := range headers {
		h.Set(k, v)
	}
}

// drainGrace is how long the body of an upstream response may still be
// read after the call that made the request has ended.
//
// The MCP SDK reads the event stream of a POST in a goroutine of its own,
// hands the call its response as soon as that event arrives, and then
// reads the stream to its end so that the connection can be reused. The
// call returns meanwhile and its context is cancelled (callRoute's
// deadline); cancelling a request whose body is still being read makes
// net/http close the connection, so the next call had to dial a new one
// (measurably more CPU per call: benchmarks/README.md). With
// the grace, the end of the stream, which follows the response within
// microseconds, is read and the connection goes back to the pool. A
// stream that does not end (a call cancelled while the upstream hangs) is
// cut drainGrace after the cancellation; the SDK has told the upstream
// with notifications/cancelled by then.
const drainGrace = 250 * time.Millisecond

// lingeringBody is a response body whose request's context is released
// when the body is closed.
type lingeringBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *lingeringBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// connect starts or reaches the upstream described by s and completes the
// MCP handshake.
func connect(ctx context.Context, client *mcp.Client, s *config.Server, log *slog.Logger) (*connection, error) {
	opts := &mcp.ClientSessionOptions{ProtocolVersion: upstreamProtocolVersion}
	switch s.Transport {
	case config.TransportStdio:
		return connectStdio(ctx, client, s, opts, log)
	case config.TransportHTTP, config.TransportSSE, "":
		said := &httpRefusal{redact: redactor(s)}
		c, err := connectHTTP(ctx, client, s, opts, said, log)
		said.stop()
		return c, said.explain(err)
	default:
		return nil, fmt.Errorf("unknown transport %q", s.Transport)
	}
}

// connectHTTP reaches a remote upstream; said records the first error
// answer of the handshake.
func connectHTTP(ctx context.Context, client *mcp.Client, s *config.Server, opts *mcp.ClientSessionOptions, said *httpRefusal, log *slog.Logger) (*connection, error) {
	pool := upstreamTransport()
	hc := &http.Client{Transport: &headerTransport{base: pool, headers: s.Headers, refusal: said}}
	if s.Transport == config.TransportSSE {
		cs, err := client.Connect(ctx, &sseTransport{mcp.SSEClientTransport{Endpoint: s.URL, HTTPClient: hc}}, opts)
		return &connection{session: cs, pool: pool}, err
	}
	handle := clientHandler(client)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL, HTTPClient: hc, MaxRetries: -1}, opts)
	if err == nil {
		c := &connection{session: cs, pool: pool, broken: make(chan error, 1), suspect: make(chan error, 1)}
		c.calls = newStreamCaller(s.URL, pool, s.Headers, cs, handle, c.fail, c.doubt)
		return c, nil
	}
	if s.Transport == config.TransportHTTP || ctx.Err() != nil {
		return nil, err
	}
	// Transport not given: an old-style server answers streamable
	// HTTP's POST with an error, so try SSE before giving up.
	cs, sseErr := client.Connect(ctx, &sseTransport{mcp.SSEClientTransport{Endpoint: s.URL, HTTPClient: hc}}, opts)
	if sseErr != nil {
		return nil, fmt.Errorf("streamable HTTP: %w; SSE: %v", err, sseErr)
	}
	log.Info("upstream speaks the SSE transport", "url", s.URL)
	return &connection{session: cs, pool: pool}, nil
}

// sseTransport is the SSE client transport with a stream that outlives the
// handshake's deadline. The SDK's transport reads its event stream from a
// GET request made with Connect's context, so the startup deadline (which
// is cancelled once the catalog is listed) would end the session; here that
// deadline bounds only the opening of the stream, and closing the session
// ends it.
type sseTransport struct {
	mcp.SSEClientTransport
}

func (t *sseTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	conn, err := t.SSEClientTransport.Connect(sctx)
	if !stop() || err != nil {
		cancel()
		if err == nil {
			_ = conn.Close()
			err = ctx.Err()
		}
		return nil, err
	}
	return conn, nil // sctx is never cancelled: conn.Close ends the stream
}

func connectStdio(ctx context.Context, client *mcp.Client, s *config.Server, opts *mcp.ClientSessionOptions, log *slog.Logger) (*connection, error) {
	cmd := exec.Command(s.Command, s.Args...)
	cmd.Dir = s.Cwd
	cmd.Env = upstreamEnv(s.Env)
	inProcessGroup(cmd)
	// A pipe of toolgate's own rather than cmd.StderrPipe, which Wait
	// closes (the MCP SDK waits for the process when the session ends):
	// what the process wrote just before it exited, often the reason
	// why, is read to the end.
	errPipe, errWrite, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = errWrite
	t := &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	conn := &connection{stderr: newStderrTail(redactor(s)), errPipe: errPipe}
	cs, err := client.Connect(ctx, &startHook{CommandTransport: t, cmd: cmd, onStart: func() {
		conn.group = newProcessGroup(cmd, log)
		_ = errWrite.Close() // the process has its own
		go logLines(errPipe, log, conn.stderr)
	}}, opts)
	if err != nil {
		if conn.group == nil { // not started
			_ = errWrite.Close()
			_ = errPipe.Close()
			return nil, err
		}
		conn.close()
		if cmd.Process != nil {
			_ = cmd.Wait()
		}
		return nil, conn.explain(err)
	}
	conn.session = cs
	return conn, nil
}

// startHook runs onStart right after the command has started, before the
// handshake, so that a handshake failure still kills the process group.
type startHook struct {
	*mcp.CommandTransport
	cmd     *exec.Cmd
	onStart func()
}

func (h *startHook) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := h.CommandTransport.Connect(ctx)
	if err == nil && h.cmd.Process != nil {
		h.onStart()
	}
	return c, err
}

// upstreamEnv is the environment of a stdio upstream: the inherited basics
// plus the server's own `env`, which wins.
func upstreamEnv(extra map[string]string) []string {
	var env []string
	for _, k := range inheritedEnv {
		if _, set := extra[k]; set {
			continue
		}
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// stderrLineBytes bounds what the log keeps of one line an upstream writes
// on stderr; the rest of a longer line is read and dropped.
const stderrLineBytes = 4096

// logLines copies an upstream's stderr to the log, one record a line, and
// keeps its last lines in tail, both without the server's configured
// secrets, until the pipe ends. It always reads on, whatever the upstream
// writes: a line longer than stderrLineBytes is logged cut (clip.Text says
// how long it was), since an upstream whose stderr nobody reads blocks on
// its next write.
func logLines(r io.Reader, log *slog.Logger, tail *stderrTail) {
	defer tail.ended()
	br := bufio.NewReaderSize(r, stderrLineBytes)
	var line []byte // what is kept of the line
	n := 0          // its length, dropped bytes included
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if len(line) < stderrLineBytes {
			line = append(line, chunk[:min(len(chunk), stderrLineBytes-len(line))]...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // the line goes on
		}
		if err == nil {
			n-- // the newline
		}
		if text := strings.TrimSpace(string(line)); text != "" {
			text = tail.redacted(text)
			size := len(text)
			if n > len(line) {
				size = n // the line was cut: say how long it was
			}
			log.Debug("upstream stderr", "line", clipLine(text, size, stderrLineBytes))
			tail.add(text, size)
		}
		line, n = line[:0], 0
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				log.Debug("upstream stderr", "error", err)
			}
			return
		}
	}
}

// upstreamTransport is the HTTP transport of one remote upstream: its own
// connection pool, keeping enough idle connections for concurrent calls
// (http.DefaultTransport keeps two per host).
func upstreamTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 128
	t.MaxIdleConnsPerHost = 64
	return t
}
