package gateway

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/internal/config"
)

// An upstream that fails often says why itself, and not in the protocol: a
// stdio server on its stderr (npm's E404 for a mistyped package, a missing
// module, a refused credential), an HTTP server in the status and body of
// the response that refused the handshake. The MCP SDK's error for both is
// the handshake's (`calling "initialize": EOF`, `Unauthorized`), so toolgate
// keeps what the upstream said, bounded, and shows it with the failure in
// the log and in /readyz.
//
// What is kept is bounded on the upstream's behalf (a server may write
// anything, as much as it likes) and carries none of the secrets the
// configuration gives the server: the values of its env and headers are
// replaced by "[redacted]" before anything is cut, so that a secret the
// server echoes is never shown, not even in part. The headers of a
// response are never kept.

// Bounds of what is kept of an upstream's account of its failure.
const (
	// stderrTailLines and stderrTailLineBytes bound the last lines of a
	// stdio upstream's stderr: npm's answer to a mistyped package takes 8
	// lines, a stack trace ends with the line that matters.
	stderrTailLines     = 10
	stderrTailLineBytes = 512
	// httpExcerptBytes bounds the excerpt of an HTTP upstream's error
	// body; httpPeekBytes is what is read of the body to make it (the
	// rest is left for the MCP SDK): enough past the excerpt that a
	// secret starting inside it is replaced whole.
	httpExcerptBytes = 512
	httpPeekBytes    = 4096
	// stderrDrain is how long the end of a stdio upstream's stderr is
	// waited for once its process group was killed. The pipe ends at
	// once, unless a process that left the group still holds it.
	stderrDrain = time.Second
)

// stderrError is a stdio upstream's failure with the last lines its
// process wrote on stderr. Its text is the failure's alone; the lines go
// beside it, in the log and in /readyz.
type stderrError struct {
	err    error
	stderr []string
}

func (e *stderrError) Error() string { return e.err.Error() }
func (e *stderrError) Unwrap() error { return e.err }

// stderrTail keeps the last lines a stdio upstream wrote on stderr,
// redacted and cut to stderrTailLineBytes each.
type stderrTail struct {
	redact *strings.Replacer // nil for none
	done   chan struct{}     // closed when stderr reached its end

	mu    sync.Mutex
	lines []string
}

func newStderrTail(redact *strings.Replacer) *stderrTail {
	return &stderrTail{redact: redact, done: make(chan struct{})}
}

// redacted returns line without the server's configured secrets.
func (t *stderrTail) redacted(line string) string {
	if t.redact == nil {
		return line
	}
	return t.redact.Replace(line)
}

// add keeps line (redacted already), of which the first bytes were kept of
// a line of n bytes (n > len(line) when the rest was dropped).
func (t *stderrTail) add(line string, n int) {
	line = clipLine(line, n, stderrTailLineBytes)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == stderrTailLines {
		t.lines = slices.Delete(t.lines, 0, 1)
	}
	t.lines = append(t.lines, line)
}

// ended records that stderr reached its end.
func (t *stderrTail) ended() { close(t.done) }

// wait waits for the end of stderr for at most d, and says whether it came.
func (t *stderrTail) wait(d time.Duration) bool {
	select {
	case <-t.done:
		return true
	default:
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.done:
		return true
	case <-timer.C:
		return false
	}
}

// last returns the lines kept, oldest first.
func (t *stderrTail) last() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.lines)
}

// explain returns err with the lines kept, if there are any.
func (t *stderrTail) explain(err error) error {
	if err == nil || t == nil {
		return err
	}
	if lines := t.last(); len(lines) > 0 {
		return &stderrError{err: err, stderr: lines}
	}
	return err
}

// stderrOf returns the stderr lines that came with err.
func stderrOf(err error) []string {
	var se *stderrError
	if errors.As(err, &se) {
		return se.stderr
	}
	return nil
}

// clipLine cuts line, the first bytes of a line of n bytes, to max bytes,
// saying how long the line was when it was cut (as clip.Text does).
func clipLine(line string, n, max int) string {
	if n <= len(line) {
		return clip.Text(line, max)
	}
	tail := "…[" + strconv.Itoa(n) + " bytes]"
	return clip.Prefix(line, max-len(tail)) + tail
}

// httpRefusal is the first response with an error status that an HTTP
// upstream sent during a handshake: its status and the first bytes of
// its body.
type httpRefusal struct {
	redact *strings.Replacer // nil for none

	mu      sync.Mutex
	off     bool   // the handshake is over
	status  string // "401 Unauthorized"
	excerpt string
}

// record keeps the status and the first bytes of the body of resp when it
// is the first error answer of the handshake, and gives the body back
// whole to whoever reads it next. An answer of 405 to a GET is not an
// error: it says that the server opens no event stream of its own.
func (r *httpRefusal) record(req *http.Request, resp *http.Response) {
	if r == nil || resp.StatusCode < 400 || (req.Method == http.MethodGet && resp.StatusCode == http.StatusMethodNotAllowed) ||
		req.Method == http.MethodDelete {
		return
	}
	r.mu.Lock()
	skip := r.off || r.status != ""
	r.mu.Unlock()
	if skip {
		return
	}
	peek, _ := io.ReadAll(io.LimitReader(resp.Body, httpPeekBytes))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(peek), resp.Body), resp.Body}
	excerpt := strings.ToValidUTF8(string(peek), "\uFFFD")
	if r.redact != nil {
		excerpt = r.redact.Replace(excerpt)
	}
	excerpt = strings.Join(strings.Fields(excerpt), " ") // one line
	if len(excerpt) > httpExcerptBytes || len(peek) == httpPeekBytes {
		excerpt = clip.Prefix(excerpt, httpExcerptBytes-len("…")) + "…"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.off && r.status == "" {
		// The status text is Go's: the server's own reason phrase is
		// its to choose, like the body, and adds nothing.
		r.status = strings.TrimSpace(strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
		r.excerpt = excerpt
	}
}

// stop ends the recording: the handshake is over.
func (r *httpRefusal) stop() {
	r.mu.Lock()
	r.off = true
	r.mu.Unlock()
}

// explain returns err with the status and excerpt recorded, if any.
func (r *httpRefusal) explain(err error) error {
	r.mu.Lock()
	status, excerpt := r.status, r.excerpt
	r.mu.Unlock()
	if err == nil || status == "" {
		return err
	}
	said := "; the server answered " + status
	if excerpt != "" {
		said += ": " + excerpt
	}
	return &saidError{err: err, said: said}
}

// saidError is an HTTP upstream's failure followed by what the server
// answered.
type saidError struct {
	err  error
	said string
}

func (e *saidError) Error() string { return e.err.Error() + e.said }
func (e *saidError) Unwrap() error { return e.err }

// redactedMin is the length from which a configured value counts as a
// secret to redact; shorter values ("1", "true", "json") would blank out
// ordinary words.
const redactedMin = 8

// redactor replaces the values of a server's env and headers, and each
// word of them ("Bearer TOKEN" gives TOKEN too), by "[redacted]". It is
// nil when there is nothing to replace.
func redactor(s *config.Server) *strings.Replacer {
	var secrets []string
	add := func(v string) {
		if len(v) >= redactedMin {
			secrets = append(secrets, v)
		}
		if f := strings.Fields(v); len(f) > 1 {
			for _, w := range f {
				if len(w) >= redactedMin {
					secrets = append(secrets, w)
				}
			}
		}
	}
	for _, v := range s.Env {
		add(v)
	}
	for _, v := range s.Headers {
		add(v)
	}
	if len(secrets) == 0 {
		return nil
	}
	// Longest first, so that a whole value is replaced before its words.
	slices.SortFunc(secrets, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	secrets = slices.Compact(secrets)
	pairs := make([]string, 0, 2*len(secrets))
	for _, v := range secrets {
		pairs = append(pairs, v, "[redacted]")
	}
	return strings.NewReplacer(pairs...)
}
