package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The audit event types. They are the strings of the configuration's
// list of event types (which alert rules name); a test keeps the two in
// step.
const (
	EventAuthFailure      = "auth.failure"      // a request with a missing, unknown, expired or revoked key
	EventToolCall         = "tool.call"         // a tool call that passed policy, with its outcome
	EventToolDenied       = "tool.denied"       // a tool call refused by policy (filtered, unknown)
	EventRateLimitHit     = "ratelimit.hit"     // a call refused by a rate limit
	EventIPDenied         = "ip.denied"         // a request refused by the IP rules
	EventCodeExecution    = "code.execution"    // one Code Mode script, start to end
	EventCodeFetch        = "code.fetch"        // one fetch made by a Code Mode script
	EventUpstreamError    = "upstream.error"    // an upstream server failed
	EventUpstreamRestart  = "upstream.restart"  // an upstream server was restarted
	EventConfigReload     = "config.reload"     // a configuration reload, applied or refused
	EventKeyCreated       = "key.created"       // an API key was created
	EventKeyRotated       = "key.rotated"       // an API key was replaced by a new one
	EventKeyRevoked       = "key.revoked"       // an API key was revoked
	EventToolsChanged     = "tools.changed"     // an upstream tool's definition changed
	EventAuditRetention   = "audit.retention"   // rotation kept files past MaxFiles, being too young to delete
	EventOriginDenied     = "origin.denied"     // a request refused for its Host or Origin header
	EventStoreUnavailable = "store.unavailable" // a shared store (Redis, PostgreSQL) stopped answering
)

// EventTypes lists every event type, in the configuration's order.
// Do not modify it.
var EventTypes = []string{
	EventAuthFailure, EventToolCall, EventToolDenied, EventRateLimitHit, EventIPDenied,
	EventCodeExecution, EventCodeFetch, EventUpstreamError, EventUpstreamRestart,
	EventConfigReload, EventKeyCreated, EventKeyRotated, EventKeyRevoked, EventToolsChanged,
	EventAuditRetention, EventOriginDenied, EventStoreUnavailable,
}

// IsEventType reports whether s is one of [EventTypes].
func IsEventType(s string) bool { return slices.Contains(EventTypes, s) }

// Event is one audit record: one line of JSON in the log. Time and Type
// are always present, and so is Prev once written; the other fields are
// left out of the line when empty, and each type uses the ones that apply
// to it (see the field comments).
//
// Every field has a size cap, so that an event is written whatever its
// values (a client or a script chooses tool names, hosts and error texts):
// a longer value is cut to its cap and marked with its length
// ("…[N bytes]"), and [Event.Clipped] keeps its full length and SHA-256.
// With the caps, a line without arguments is at most [MaxEventBytes]
// long.
type Event struct {
	// Time is when it happened, written in UTC with nanoseconds
	// (RFC 3339). [Log.Write] fills in the current time when it is
	// zero.
	Time time.Time `json:"time"`
	// Type is one of the Event* constants.
	Type string `json:"type"`

	// Who: the project, the id of the API key (never the key) or the
	// subject of the OAuth access token (its sub claim, never the
	// token), and the client's address.
	Project  string `json:"project,omitempty"`
	KeyID    string `json:"keyId,omitempty"`
	Subject  string `json:"subject,omitempty"`
	ClientIP string `json:"clientIp,omitempty"`
	// ExecutionID links a code.execution event with its code.fetch events
	// and with the tool.call events of the tool calls its script made.
	ExecutionID string `json:"executionId,omitempty"`

	// Server and Tool name an upstream server and the tool's name there
	// (tool.call, tool.denied, ratelimit.hit, upstream.*, tools.changed).
	Server string `json:"server,omitempty"`
	Tool   string `json:"tool,omitempty"`
	// Decision is what policy decided of a call: "allow" or "deny".
	Decision string `json:"decision,omitempty"`
	// Outcome is how it ended: "ok", "error", "timeout", "canceled", or
	// (code.execution) "limit" when a sandbox limit ended the script.
	Outcome string `json:"outcome,omitempty"`
	// Reason says why something was refused (auth.failure, tool.denied,
	// ratelimit.hit, ip.denied, a refused config.reload).
	Reason string `json:"reason,omitempty"`
	// Error is the error text of a failed call, script or upstream.
	Error string `json:"error,omitempty"`

	// LatencyMs is a tool call's duration in milliseconds ([Millis]).
	LatencyMs float64 `json:"latencyMs,omitempty"`
	// ArgsBytes and ArgsSHA256 are the size and the SHA-256 (hex) of a
	// tool call's arguments as received; ResultBytes the size of its
	// result. [Event.SetArguments] fills in the first two.
	ArgsBytes   int64  `json:"argsBytes,omitempty"`
	ResultBytes int64  `json:"resultBytes,omitempty"`
	ArgsSHA256  string `json:"argsSha256,omitempty"`
	// Arguments are the arguments themselves. They are written only by a
	// log opened with [Options.LogArguments], and dropped from a line
	// that would otherwise be longer than [MaxLineBytes].
	Arguments json.RawMessage `json:"arguments,omitempty"`

	// DurationMs, ToolCalls and LimitsHit describe a code.execution: its
	// wall-clock time in milliseconds, the tool calls its script made, and
	// the names of the limits it reached ("timeout", "memory", ...).
	DurationMs float64  `json:"durationMs,omitempty"`
	ToolCalls  int      `json:"toolCalls,omitempty"`
	LimitsHit  []string `json:"limitsHit,omitempty"`

	// Method, Host, Status and Bytes describe a code.fetch: the HTTP
	// method, the host asked for, the response status (absent when no
	// response came) and the size of the body read.
	Method string `json:"method,omitempty"`
	Host   string `json:"host,omitempty"`
	Status int    `json:"status,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`

	// Changed lists the configuration keys a config.reload changed.
	Changed []string `json:"changed,omitempty"`

	// KeyName is the label of the key of a key.* event (KeyID is the key
	// itself); NewKeyID is the successor of a rotated key.
	KeyName  string `json:"keyName,omitempty"`
	NewKeyID string `json:"newKeyId,omitempty"`

	// OldHash and NewHash are the hashes of a tool's definition before and
	// after a tools.changed.
	OldHash string `json:"oldHash,omitempty"`
	NewHash string `json:"newHash,omitempty"`

	// Extra holds anything else worth recording, under "extra". Values
	// that do not encode as JSON, or an Extra longer than its cap, are
	// left out (see Clipped).
	Extra map[string]any `json:"extra,omitempty"`

	// Clipped describes the fields the log cut to their caps, by their
	// JSON names. The log sets it; a value given to [Log.Write] is
	// ignored.
	Clipped map[string]Clipped `json:"clipped,omitempty"`

	// Prev is the hex SHA-256 of the previous line of the log (without its
	// newline), or [Genesis] in the first line of a log. The log sets
	// it; a value given to [Log.Write] is ignored.
	Prev string `json:"prev,omitempty"`
}

// Clipped describes a value cut to its size cap: its length in bytes and
// its SHA-256 (hex) before the cut (of the JSON encoding, for lists and
// extra). Note says why a value was left out rather than cut, when it
// was.
type Clipped struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256,omitempty"`
	Note   string `json:"note,omitempty"`
}

// SetArguments records a tool call's arguments: their size and SHA-256
// always, the arguments themselves for logs that keep them.
func (e *Event) SetArguments(args json.RawMessage) {
	sum := sha256.Sum256(args)
	e.ArgsBytes = int64(len(args))
	e.ArgsSHA256 = hex.EncodeToString(sum[:])
	e.Arguments = args
}

// Millis converts d to the milliseconds of LatencyMs and DurationMs,
// rounded to the microsecond.
func Millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// Genesis is the Prev of the first line of a log: 64 zeros.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxLineBytes bounds one line of the log for readers, which refuse
// longer lines. [Log.Write] writes none longer than
// MaxEventBytes + MaxArgumentsBytes.
const MaxLineBytes = 16 << 20

// MaxEventBytes bounds one line of the log without its arguments,
// newline included, whatever the event's values: each field is cut to its
// cap (see [Event]). A test fills every field to prove the bound.
const MaxEventBytes = 8 << 10

// MaxArgumentsBytes bounds the arguments a log opened with
// [Options.LogArguments] keeps in one line, as encoded; larger
// arguments are left out (their size and SHA-256 stay).
const MaxArgumentsBytes = 64 << 10

// Defaults of [Options].
const (
	DefaultFsyncInterval = 100 * time.Millisecond
	DefaultMaxSizeBytes  = 100 << 20
	DefaultMaxFiles      = 10
	DefaultRetainAtLeast = 7 * 24 * time.Hour
)

// Options configures an [Log]. The zero value (or a nil
// pointer) means defaults.
type Options struct {
	// Fsync is "batch" (the default) or "always". Either way each line is
	// handed to the operating system before Write returns, so a crash of
	// the process loses nothing. With "always" the line also reaches the
	// disk before Write returns, so that a power loss loses nothing
	// either; concurrent writers share their fsyncs. With "batch" a
	// background goroutine fsyncs every FsyncInterval when there were
	// writes.
	Fsync string
	// FsyncInterval is the batch interval (default 100ms).
	FsyncInterval time.Duration
	// MaxSizeBytes rotates the file before a line would take it past this
	// size (default 100 MiB; negative: never). The file is renamed to
	// path.1, path.1 to path.2 and so on.
	MaxSizeBytes int64
	// MaxFiles is how many rotated files are kept (default 10); older
	// ones are removed, unless they are younger than RetainAtLeast.
	MaxFiles int
	// RetainAtLeast is how long a rotated file is kept whatever MaxFiles
	// says (default 7 days), measured from its last line: a burst of
	// events cannot rotate recent evidence away. A rotation that keeps
	// files past MaxFiles for this reason writes an audit.retention event
	// and reports it to OnRetention.
	RetainAtLeast time.Duration
	// OnRetention, when set, is called after each rotation with what the
	// log keeps, without the log's lock held.
	OnRetention func(RetentionStatus)
	// LogArguments keeps tool arguments ([Event.Arguments]) in the log.
	// Without it they are dropped, and only their size and hash remain.
	LogArguments bool
	// Stdout, when set, receives a copy of every line. It is written while
	// the log is locked, to keep the order of the file, so it should not
	// block; its errors go to OnWriteError and do not fail the Write.
	Stdout io.Writer
	// Now returns the current time, for events without one; nil means
	// time.Now.
	Now func() time.Time
	// OnWriteError, when set, is called with the error that makes the log
	// unhealthy (the first failed write after a good one) and with errors
	// no Write returns: background fsyncs, rotation, Stdout. It is called
	// without the log's lock held.
	OnWriteError func(error)
}

// RetentionStatus says how many rotated files an [Log] keeps.
type RetentionStatus struct {
	// Files is the number of rotated files (path.N) present.
	Files int
	// MaxFiles is the number the log keeps when it may ([Options]).
	MaxFiles int
	// Over is the number of files kept past MaxFiles because they are
	// younger than RetainAtLeast; Oldest is when the oldest of them was
	// last written (zero when Over is 0).
	Over   int
	Oldest time.Time
	// RetainAtLeast is the log's setting.
	RetainAtLeast time.Duration
}

// Stats counts what an [Log] did since it was opened.
type Stats struct {
	Lines          int64 // lines written
	Bytes          int64 // bytes written, newlines included
	Syncs          int64 // fsyncs of the file
	Rotations      int64 // files rotated
	FailedWrites   int64 // Writes that failed to write their line, and failed fsyncs
	TruncatedBytes int64 // bytes of torn last lines cut off when (re)opening the file
}

// Log is an append-only audit log in JSON Lines, one [Event] per
// line, each line chained to the one before by its SHA-256 (the "prev"
// field) so that a removed, changed or reordered line breaks the chain
// ([Verify]). The chain runs on across rotated files.
//
// A line is written with one write(2) before [Log.Write] returns.
// A crash of the machine (not of the process) can still leave a torn last
// line: the log truncates it when it opens the file, and continues the
// chain from the last complete line. Readers skip and report it.
//
// The log fails closed: when a line cannot be written, Write returns an
// error, and so do later Writes (each of which first tries to reopen the
// file) until one succeeds; [Log.Healthy] reports the last error.
// The log also notices that its file was removed or replaced, and then
// writes to a new file at the path, continuing the chain.
//
// A Log is safe for concurrent use. One process should write a given
// path at a time.
type Log struct {
	path    string
	fsync   bool // fsync before Write returns
	maxSize int64
	maxKeep int
	retain  time.Duration
	logArgs bool
	stdout  io.Writer
	now     func() time.Time
	onError func(error)
	onKeep  func(RetentionStatus)

	// syncMu serialises fsyncs, which run without mu so that writers
	// carry on meanwhile. Lock order: syncMu, then mu.
	syncMu sync.Mutex

	mu      sync.Mutex
	f       *os.File    // nil after a failure or rotation: the next Write opens the path
	fi      os.FileInfo // of f, to notice that the path now names another file
	gen     uint64      // incremented whenever f changes
	size    int64       // of f
	prev    [64]byte    // hex SHA-256 of the last line
	seq     uint64      // lines written
	durable uint64      // lines up to which no fsync is pending (synced, or lost)
	err     error       // why the last write failed; nil when healthy
	closed  bool
	stats   Stats
	kept    RetentionStatus // as of the last rotation, or of opening

	// lostFrom..lostTo are the lines an fsync failed to make durable.
	lostFrom, lostTo uint64

	stop chan struct{} // closed by Close to stop the batch syncer
	done chan struct{} // closed by the batch syncer when it returns
}

// errAuditClosed is returned by Write after Close.
var errAuditClosed = errors.New("audit log is closed")

// Open opens (creating it, and its folder, when missing) the
// audit log at path, and continues its chain from the last complete line,
// found in the file or, when the file is empty, in path.1. A torn last
// line (one without its newline) is cut off first (see
// [Stats].TruncatedBytes). With a nil opts, defaults apply.
func Open(path string, opts *Options) (*Log, error) {
	if opts == nil {
		opts = &Options{}
	}
	if path == "" {
		return nil, errors.New("open audit log: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	a := &Log{
		path:    abs,
		maxSize: opts.MaxSizeBytes,
		maxKeep: opts.MaxFiles,
		retain:  opts.RetainAtLeast,
		logArgs: opts.LogArguments,
		stdout:  opts.Stdout,
		now:     opts.Now,
		onError: opts.OnWriteError,
		onKeep:  opts.OnRetention,
	}
	switch opts.Fsync {
	case "", "batch":
	case "always":
		a.fsync = true
	default:
		return nil, fmt.Errorf("open audit log: unknown fsync mode %q (want \"batch\" or \"always\")", opts.Fsync)
	}
	interval := opts.FsyncInterval
	switch {
	case interval < 0:
		return nil, fmt.Errorf("open audit log: negative fsync interval %v", interval)
	case interval == 0:
		interval = DefaultFsyncInterval
	}
	if a.maxSize == 0 {
		a.maxSize = DefaultMaxSizeBytes
	}
	switch {
	case a.maxKeep < 0:
		return nil, fmt.Errorf("open audit log: negative number of files to keep (%d)", a.maxKeep)
	case a.maxKeep == 0:
		a.maxKeep = DefaultMaxFiles
	}
	switch {
	case a.retain < 0:
		return nil, fmt.Errorf("open audit log: negative retention %v", a.retain)
	case a.retain == 0:
		a.retain = DefaultRetainAtLeast
	}
	if a.now == nil {
		a.now = time.Now
	}
	copy(a.prev[:], Genesis)
	if err := a.open(true); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if a.kept, err = a.retention(); err != nil {
		a.f.Close()
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if !a.fsync {
		a.stop, a.done = make(chan struct{}), make(chan struct{})
		go a.syncEvery(interval)
	}
	return a, nil
}

// Path returns the absolute path of the log.
func (a *Log) Path() string { return a.path }

// open opens the file at the path and finds where the chain goes on. At
// first open an empty file continues from path.1 (a crash may have come
// between a rotation and the first line of the new file); later, from the
// last line this log wrote. Called with mu held (or before a is shared).
func (a *Log) open(first bool) error {
	if err := os.MkdirAll(filepath.Dir(a.path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(a.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("%s is not a regular file", a.path)
	}
	end, sum, ok, err := lastLine(f, fi.Size())
	if err != nil {
		f.Close()
		return fmt.Errorf("read the end of %s: %w", a.path, err)
	}
	if end < fi.Size() {
		// A torn last line: the chain continues from the complete one
		// before it, so the torn bytes go.
		if err := f.Truncate(end); err != nil {
			f.Close()
			return fmt.Errorf("cut the torn last line of %s: %w", a.path, err)
		}
		a.stats.TruncatedBytes += fi.Size() - end
	}
	switch {
	case ok:
		hex.Encode(a.prev[:], sum[:])
	case first:
		if sum, ok, err := lastLineOf(rotatedName(a.path, 1)); err != nil {
			f.Close()
			return err
		} else if ok {
			hex.Encode(a.prev[:], sum[:])
		}
	}
	a.f, a.fi, a.size = f, fi, end
	a.gen++
	return nil
}

// lastLineOf is lastLine of the file at path; a missing file has no line.
func lastLineOf(path string) (sum [32]byte, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return sum, false, nil
	}
	if err != nil {
		return sum, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return sum, false, err
	}
	_, sum, ok, err = lastLine(f, fi.Size())
	if err != nil {
		return sum, false, fmt.Errorf("read the end of %s: %w", path, err)
	}
	return sum, ok, nil
}

// lastLine finds the last complete line of the size bytes of r: end is
// the offset just past its newline, sum the SHA-256 of the line without
// its newline. With no complete line, end is 0 and ok false.
func lastLine(r io.ReaderAt, size int64) (end int64, sum [32]byte, ok bool, err error) {
	nl, err := lastNewline(r, size)
	if err != nil || nl < 0 {
		return 0, sum, false, err
	}
	start, err := lastNewline(r, nl)
	if err != nil {
		return 0, sum, false, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, start+1, nl-start-1)); err != nil {
		return 0, sum, false, err
	}
	h.Sum(sum[:0])
	return nl + 1, sum, true, nil
}

// lastNewline returns the offset of the last '\n' before offset before in
// r, or -1.
func lastNewline(r io.ReaderAt, before int64) (int64, error) {
	var buf [32 << 10]byte
	for before > 0 {
		n := min(before, int64(len(buf)))
		off := before - n
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return off + int64(i), nil
		}
		before = off
	}
	return -1, nil
}

// rotatedName is the name of the n-th rotated file of the log at path.
func rotatedName(path string, n int) string { return path + "." + strconv.Itoa(n) }

// rotatedFiles lists the rotated files of the log at path (path.1,
// path.2, ...), oldest (highest number) first. Numbers need not follow
// each other.
func rotatedFiles(path string) ([]string, []int, error) {
	dir, base := filepath.Split(path)
	entries, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return nil, nil, err
	}
	var nums []int
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || rest == "" || rest[0] == '0' || strings.Trim(rest, "0123456789") != "" || len(rest) > 9 {
			continue
		}
		n, _ := strconv.Atoi(rest)
		nums = append(nums, n)
	}
	slices.Sort(nums)
	slices.Reverse(nums)
	names := make([]string, len(nums))
	for i, n := range nums {
		names[i] = rotatedName(path, n)
	}
	return names, nums, nil
}

// encoder is a reusable buffer for one line.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	return e
}}

// prevOpen and prevClose are what a line ends with, around the hex of
// prev.
const (
	prevOpen  = `,"prev":"`
	prevClose = "\"}\n"
)

// encode writes ev (with its time and arguments settled, its fields cut
// to their caps) into enc's buffer, without the final "}\n", ready for the
// prev field.
func (a *Log) encode(enc *encoder, ev *Event) error {
	if !IsEventType(ev.Type) {
		return fmt.Errorf("audit event: unknown type %q", ev.Type)
	}
	e := *ev
	e.Prev = ""
	if e.Time.IsZero() {
		e.Time = a.now()
	}
	e.Time = e.Time.UTC()
	capFields(&e, a.now)
	if !a.logArgs || !json.Valid(e.Arguments) {
		e.Arguments = nil
	}
	room := len(prevOpen) + len(Genesis) + len(prevClose)
	for {
		enc.buf.Reset()
		if err := enc.enc.Encode(&e); err != nil {
			return fmt.Errorf("audit event %s: %w", e.Type, err)
		}
		limit := MaxEventBytes
		if e.Arguments != nil {
			limit += MaxArgumentsBytes
		}
		if enc.buf.Len()-2+room <= limit {
			break
		}
		if e.Arguments == nil {
			// The caps make this impossible; a test holds them to it.
			return fmt.Errorf("audit event %s: longer than %d bytes", e.Type, MaxEventBytes)
		}
		e.Arguments = nil
	}
	enc.buf.Truncate(enc.buf.Len() - 2) // "}\n"
	enc.buf.Grow(room)
	return nil
}

// Write appends ev to the log, its fields cut to their caps (see
// [Event]). The line has been written to the file when Write returns nil
// (and, with fsync "always", synced). An error means the event is not
// recorded: either ev is invalid (nil, or of an unknown type) or the log
// cannot be written, which [Log.Healthy] then reports too. ev is not
// modified.
func (a *Log) Write(ev *Event) error {
	if ev == nil {
		return errors.New("audit event: nil")
	}
	enc := encoders.Get().(*encoder)
	defer func() {
		if enc.buf.Cap() <= 64<<10 {
			encoders.Put(enc)
		}
	}()
	if err := a.encode(enc, ev); err != nil {
		return err
	}

	// Has the path been removed, or replaced by another file? Asked
	// before taking the lock, to keep the lock short.
	fi, statErr := os.Stat(a.path)

	a.mu.Lock()
	wasHealthy := a.err == nil
	var closeErr error
	if a.f != nil && wasHealthy && (statErr != nil || !os.SameFile(fi, a.fi)) {
		closeErr = a.closeFile(true)
	}
	seq, err, report, kept := a.writeLocked(&enc.buf, wasHealthy)
	gen := a.gen
	a.mu.Unlock()
	if closeErr != nil && a.onError != nil {
		a.onError(closeErr)
	}
	for _, r := range report {
		a.onError(r)
	}
	if kept != nil && a.onKeep != nil {
		a.onKeep(*kept)
	}
	if err != nil {
		return err
	}
	if a.fsync {
		return a.syncTo(seq, gen)
	}
	return nil
}

// writeLocked writes the line in buf, completed with prev. It returns the
// line's sequence number, or the error that failed the write, the errors
// to pass to OnWriteError, and what the log keeps when it rotated.
// wasHealthy is whether the log was healthy when the Write began. Called
// with mu held.
func (a *Log) writeLocked(buf *bytes.Buffer, wasHealthy bool) (seq uint64, err error, report []error, kept *RetentionStatus) {
	if a.closed {
		return 0, errAuditClosed, nil, nil
	}
	fail := func(err error) (uint64, error, []error, *RetentionStatus) {
		a.stats.FailedWrites++
		a.err = fmt.Errorf("audit log %s cannot be written: %w", a.path, err)
		if wasHealthy && a.onError != nil {
			report = append(report, a.err)
		}
		return 0, a.err, report, kept
	}
	if a.err != nil && a.f != nil {
		a.closeFile(true)
	}
	if a.f == nil {
		if err := a.open(false); err != nil {
			return fail(err)
		}
	}
	size := int64(buf.Len() + len(prevOpen) + len(a.prev) + len(prevClose))
	if a.maxSize > 0 && a.size > 0 && a.size+size > a.maxSize {
		if err := a.rotate(); err != nil {
			if a.onError != nil {
				report = append(report, fmt.Errorf("rotate audit log %s: %w", a.path, err))
			}
		} else {
			k := a.kept
			kept = &k
		}
		if a.f == nil {
			if err := a.open(false); err != nil {
				return fail(err)
			}
		}
		if kept != nil && kept.Over > 0 {
			// The first line of the new file says what the rotation kept.
			line, err := a.appendEventLocked(retentionEvent(*kept, a.now()))
			if err != nil {
				return fail(err)
			}
			report = a.copyLocked(line, report)
		}
	}
	line, err := a.appendLocked(buf)
	if err != nil {
		return fail(err)
	}
	report = a.copyLocked(line, report)
	return a.seq, nil, report, kept
}

// appendEventLocked encodes ev and appends it. The line returned is valid
// until the lock is released. Called with mu held.
func (a *Log) appendEventLocked(ev *Event) ([]byte, error) {
	enc := encoders.Get().(*encoder)
	defer encoders.Put(enc)
	if err := a.encode(enc, ev); err != nil {
		return nil, err
	}
	return a.appendLocked(&enc.buf)
}

// appendLocked completes the line in buf with prev and writes it to the
// open file. It returns the line, which shares buf's memory. Called with
// mu held.
func (a *Log) appendLocked(buf *bytes.Buffer) ([]byte, error) {
	line := append(buf.Bytes(), prevOpen...)
	line = append(line, a.prev[:]...)
	line = append(line, prevClose...)
	n, err := a.f.Write(line)
	if err != nil {
		if n > 0 {
			// Take back the part that was written, lest the next line
			// start in its middle. Should that fail too, opening the file
			// again cuts it.
			a.f.Truncate(a.size)
		}
		a.closeFile(true)
		return nil, err
	}
	a.size += int64(n)
	sum := sha256.Sum256(line[:len(line)-1])
	hex.Encode(a.prev[:], sum[:])
	a.seq++
	a.stats.Lines++
	a.stats.Bytes += int64(n)
	a.err = nil
	return line, nil
}

// copyLocked copies a line to Stdout, when set. Called with mu held.
func (a *Log) copyLocked(line []byte, report []error) []error {
	if a.stdout == nil {
		return report
	}
	if _, err := a.stdout.Write(line); err != nil && a.onError != nil {
		report = append(report, fmt.Errorf("copy audit event to stdout: %w", err))
	}
	return report
}

// closeFile closes f. With sync, it first fsyncs f, which makes the lines
// written so far durable; a failed fsync makes the log unhealthy and
// marks the lines since the last fsync as lost, so that their Writes (in
// fsync "always" mode) fail. Called with mu held.
func (a *Log) closeFile(sync bool) error {
	if a.f == nil {
		return nil
	}
	var err error
	if sync {
		if err = a.f.Sync(); err == nil {
			a.stats.Syncs++
			a.durable = a.seq
		} else {
			a.lose(err)
		}
	}
	a.f.Close()
	a.f, a.fi = nil, nil
	a.gen++
	return err
}

// lose records that the lines written since the last fsync may not be on
// disk, because fsync failed with err. Called with mu held.
func (a *Log) lose(err error) {
	a.stats.FailedWrites++
	a.err = fmt.Errorf("audit log %s cannot be written: fsync: %w", a.path, err)
	a.lostFrom, a.lostTo = a.durable+1, a.seq
	a.durable = a.seq // nothing more to wait for: the lines are synced or lost
}

// rotate syncs the file, shifts the rotated files up by one, renames the
// file to path.1 and closes it. A file that would go past maxKeep is
// removed once it is older than retain (by its last write); a younger one
// is kept and shifted up too, and a.kept counts it. Until the file itself
// is renamed, an error leaves the log writing to it (a failed fsync
// closes it). Called with mu held.
func (a *Log) rotate() error {
	if err := a.f.Sync(); err != nil {
		a.lose(err)
		a.closeFile(false)
		return err
	}
	a.stats.Syncs++
	names, nums, err := rotatedFiles(a.path)
	if err != nil {
		return err
	}
	now := a.now()
	// names are highest first, so each rename finds its target free.
	for i, n := range nums {
		if n >= a.maxKeep {
			fi, err := os.Stat(names[i])
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err != nil || now.Sub(fi.ModTime()) >= a.retain {
				if err := os.Remove(names[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				continue
			}
		}
		if err := os.Rename(names[i], rotatedName(a.path, n+1)); err != nil {
			return err
		}
	}
	if err := os.Rename(a.path, rotatedName(a.path, 1)); err != nil {
		return err
	}
	a.stats.Rotations++
	a.durable = a.seq // synced above, and nothing written since
	a.closeFile(false)
	if d, derr := os.Open(filepath.Dir(a.path)); derr == nil {
		d.Sync() // best effort: make the renames durable
		d.Close()
	}
	if kept, err := a.retention(); err == nil {
		a.kept = kept
	}
	return nil
}

// retention lists the rotated files and says how many are past maxKeep.
func (a *Log) retention() (RetentionStatus, error) {
	st := RetentionStatus{MaxFiles: a.maxKeep, RetainAtLeast: a.retain}
	names, nums, err := rotatedFiles(a.path)
	if err != nil {
		return st, err
	}
	st.Files = len(names)
	for i, n := range nums { // highest (oldest) first
		if n <= a.maxKeep {
			break
		}
		st.Over++
		if st.Oldest.IsZero() {
			if fi, err := os.Stat(names[i]); err == nil {
				st.Oldest = fi.ModTime().UTC()
			}
		}
	}
	return st, nil
}

// Retention says how many rotated files the log keeps, as of its last
// rotation (or of opening, before the first).
func (a *Log) Retention() RetentionStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.kept
}

// retentionEvent is the audit.retention event of a rotation that kept
// files past MaxFiles.
func retentionEvent(st RetentionStatus, now time.Time) *Event {
	return &Event{
		Type: EventAuditRetention,
		Time: now,
		Reason: fmt.Sprintf("%d rotated %s kept past the limit of %d: none is older than %s",
			st.Over, plural(st.Over, "file", "files"), st.MaxFiles, st.RetainAtLeast),
		Extra: map[string]any{"files": st.Files, "maxFiles": st.MaxFiles, "over": st.Over, "oldest": st.Oldest.Format(time.RFC3339)},
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// syncTo returns once line seq, written to the file of generation gen,
// is on disk, fsyncing the file unless another fsync took it there.
// Concurrent callers share fsyncs.
func (a *Log) syncTo(seq, gen uint64) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if a.lostFrom <= seq && seq <= a.lostTo {
		err := a.err
		a.mu.Unlock()
		if err == nil {
			err = fmt.Errorf("audit log %s: an fsync failed", a.path)
		}
		return err
	}
	if a.durable >= seq {
		a.mu.Unlock()
		return nil
	}
	if a.f == nil || a.gen != gen {
		// Its file was closed without an fsync: cannot happen, since
		// closeFile(false) only follows a sync or a lose.
		a.mu.Unlock()
		return fmt.Errorf("audit log %s: file closed before fsync", a.path)
	}
	f, upto := a.f, a.seq
	a.mu.Unlock()

	err := f.Sync()
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil:
		a.stats.Syncs++
		a.durable = max(a.durable, upto)
		return nil
	case a.gen != gen:
		// Closed meanwhile (rotation, Close): by then closeFile or rotate
		// has synced it, or recorded the loss.
		if a.lostFrom <= seq && seq <= a.lostTo {
			return a.err
		}
		return nil
	default:
		a.lose(err)
		a.closeFile(false)
		return a.err
	}
}

// Sync fsyncs every line written so far.
func (a *Log) Sync() error {
	a.mu.Lock()
	seq, gen := a.seq, a.gen
	a.mu.Unlock()
	return a.syncTo(seq, gen)
}

// syncEvery is the batch syncer: every interval, it fsyncs the lines
// written since the last fsync.
func (a *Log) syncEvery(interval time.Duration) {
	defer close(a.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		a.mu.Lock()
		seq, gen, pending := a.seq, a.gen, a.seq > a.durable && a.f != nil
		wasHealthy := a.err == nil
		a.mu.Unlock()
		if !pending {
			continue
		}
		if err := a.syncTo(seq, gen); err != nil && wasHealthy && a.onError != nil {
			a.onError(err)
		}
	}
}

// Healthy returns nil when the log is writable as far as it knows: when
// the last Write wrote its line. Otherwise it returns the error of that
// Write (or of a failed fsync since). A gateway refuses calls while its
// audit log is unhealthy.
func (a *Log) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errAuditClosed
	}
	return a.err
}

// Stats returns the log's counters.
func (a *Log) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// Close fsyncs and closes the file. Later Writes fail.
func (a *Log) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	if a.stop != nil {
		close(a.stop)
		<-a.done
	}
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.closeFile(true); err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}
