package sandbox

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/clip"
)

// Run executes req in a fresh interpreter under lim (zero fields take their
// defaults). Script failures, including breached limits, are reported in
// Result.Error; the returned error is only for internal faults. Cancelling
// ctx ends the script as a failure named "AbortError".
func (e *Engine) Run(ctx context.Context, req *Request, lim Limits) (*Result, error) {
	if e.isClosed() {
		return nil, ErrClosed
	}
	if req == nil {
		return nil, errors.New("sandbox: nil request")
	}
	lim = lim.WithDefaults()
	start := time.Now()
	res := &Result{Result: json.RawMessage("null"), Logs: []LogLine{}, ToolCalls: []ToolCallRecord{}}
	defer func() { res.DurationMs = msSince(start) }()

	if len(req.Code) > lim.MaxCodeBytes {
		res.Error = &ScriptError{
			Name:    "RangeError",
			Message: fmt.Sprintf("the code is %d bytes, over the limit of %d", len(req.Code), lim.MaxCodeBytes),
			Limit:   LimitCodeBytes,
		}
		return res, nil
	}
	if line, col, ok := findImport(req.Code); ok {
		res.Error = &ScriptError{
			Name:    "SyntaxError",
			Message: "import() and import.meta are not available in the sandbox",
			Stack:   fmt.Sprintf("    at <anonymous> (agent.js:%d:%d)", line, col),
			Line:    line,
			Column:  col,
		}
		return res, nil
	}

	g, err := e.take()
	if err != nil {
		return nil, fmt.Errorf("sandbox: preparing interpreter: %w", err)
	}
	defer g.close()

	xctx, cancel := context.WithDeadline(ctx, start.Add(lim.Timeout))
	defer cancel()
	x := &execution{
		g:        g,
		cache:    e.preludes,
		req:      req,
		lim:      lim,
		res:      res,
		ctx:      xctx,
		results:  make(chan hostDone, lim.MaxConcurrentToolCalls),
		timers:   map[int64]time.Time{},
		start:    start,
		deadline: start.Add(lim.Timeout),
		refused:  -1,
	}
	g.deadline.Store(x.deadline.UnixNano())
	stop := context.AfterFunc(xctx, g.stopNow)
	x.run()
	stop()
	// Host calls still running belong to a script that is over: cancel
	// them and wait until they have returned, so that whatever they record
	// (the gateway's audit events) is written before Run reports the end.
	cancel()
	x.hosts.Wait()
	x.fitOutput()
	if p := int64(g.mem.Peak()); p > 0 {
		res.PeakMemoryBytes = p
	}
	return res, nil
}

// execution is the state of one Run.
type execution struct {
	g       *guest
	cache   *preludeCache
	req     *Request
	lim     Limits
	res     *Result
	ctx     context.Context
	results chan hostDone
	start   time.Time // when Run began
	// deadline is when the execution times out: no result is reported
	// after it.
	deadline time.Time

	inflight  int
	held      int            // bytes of arguments of queued and running host calls
	refused   int            // index in res.ToolCalls of the record of calls refused past maxToolCalls; -1 for none
	hosts     sync.WaitGroup // goroutines of host calls (perform)
	queue     []hostOp
	ready     []settlement // to deliver on the next pump
	timers    map[int64]time.Time
	calls     int
	fetches   int
	logBytes  int
	limitHit  string
	prefixLen int
}

type hostOp struct {
	kind  byte // 'c' (tool call) or 'f' (fetch)
	id    int64
	name  string
	args  string
	fetch *fetchRequest
	held  int // argument bytes counted in execution.held (a fetch's; a call's are len(args))
}

// settlement is one pump(id, ok, payload) for the bootstrap: payload is the
// result's JSON text, the JSON of a rejection or of a fetch response, or
// empty for a due timer.
type settlement struct {
	id      int64
	ok      bool
	payload string
}

type hostDone struct {
	set    settlement
	record *ToolCallRecord
	held   int // argument bytes the call held
}

// outcome is how the script ended, as the bootstrap reports it.
type outcome struct {
	ok    bool
	value string     // the returned value's JSON, when ok
	err   *errorInfo // when not ok
}

type errorInfo struct {
	Name    string `json:"name"`
	Message string `json:"message"`
	Stack   string `json:"stack"`
	Code    string `json:"code"`
}

var errNeverSettles = errors.New("never settles")

func (x *execution) run() {
	g := x.g
	if err := g.setStackLimit(x.lim.MaxStackKB); err != nil {
		x.internal(err)
		return
	}
	g.mem.SetLimit(uint64(x.lim.MemoryLimitMB) << 20)
	if x.req.Prelude != "" && !x.prelude() {
		return
	}
	x.res.StartMs = msSince(x.start)
	var seed [4]uint32
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	for i := range seed {
		seed[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	if err := g.seal(int32(min(x.lim.MaxOutputBytes, math.MaxInt32)), x.req.Fetch != nil, seed); err != nil {
		x.failEval(err, "")
		return
	}
	const prefix = "(async function () {"
	x.prefixLen = len(prefix)
	out, err := g.startScript("agent.js", prefix+x.req.Code+"\n})")
	for {
		if err != nil {
			x.failEval(err, "")
			return
		}
		end, aerr := x.absorb(out)
		if aerr != nil {
			if x.ctx.Err() != nil || x.g.stop.Load() {
				x.res.Error = x.ctxError()
				return
			}
			x.internal(aerr)
			return
		}
		if end != nil {
			x.complete(end)
			return
		}
		waitStart := time.Now()
		input, werr := x.wait()
		x.res.WaitMs += msSince(waitStart)
		if werr != nil {
			x.failWait(werr)
			return
		}
		out, err = g.pump(input)
	}
}

// prelude brings the interpreter to the state right after evaluating
// Request.Prelude: from the engine's image of that text when it has one,
// else by evaluating it (and keeping the image on success). It reports
// false, with the failure recorded, when the prelude failed.
func (x *execution) prelude() bool {
	g, text := x.g, x.req.Prelude
	img := x.cache.get(text)
	ran := false
	if img == nil {
		// Executions that miss the cache together wait for the first one's
		// image instead of each evaluating the same text.
		var evalErr error
		ch := x.cache.flight.DoChan(text, func() (any, error) {
			ran = true
			x.cache.evaluations.Add(1)
			if _, evalErr = g.eval("prelude.js", text); evalErr != nil {
				return (*preludeImage)(nil), nil
			}
			img := g.captureImage()
			if img != nil {
				x.cache.put(text, img)
			}
			return img, nil
		})
		select {
		case r := <-ch:
			img = r.Val.(*preludeImage)
		case <-x.ctx.Done():
			x.res.Error = x.ctxError()
			return false
		}
		if ran {
			if evalErr != nil {
				x.failEval(evalErr, "prelude: ")
				return false
			}
			return true
		}
	}
	if img != nil && g.applyImage(img) {
		// The image holds the stack limit of the execution that made it.
		if err := g.setStackLimit(x.lim.MaxStackKB); err != nil {
			x.internal(err)
			return false
		}
		return true
	}
	if _, err := g.eval("prelude.js", text); err != nil {
		x.failEval(err, "prelude: ")
		return false
	}
	if img := g.captureImage(); img != nil {
		x.cache.put(text, img)
	}
	return true
}

// absorb takes a drain() report (see the wire format in bootstrap.js):
// logs, new host requests and, once the script ended, its outcome.
func (x *execution) absorb(out string) (*outcome, error) {
	var end *outcome
	bad := func(i int) error {
		return fmt.Errorf("decoding guest report at byte %d: %.40q", i, out[i:])
	}
	for i := 0; i < len(out); {
		at, kind := i, out[i]
		i++
		var ok bool
		switch kind {
		case 'c', 'f':
			var id int64
			var name, args string
			if id, i, ok = readNum(out, i); !ok {
				return nil, bad(at)
			}
			if kind == 'c' {
				if name, i, ok = readText(out, i); !ok {
					return nil, bad(at)
				}
			}
			if args, i, ok = readText(out, i); !ok {
				return nil, bad(at)
			}
			x.request(kind, id, name, args)
		case 't':
			var id, ms int64
			if id, i, ok = readNum(out, i); !ok {
				return nil, bad(at)
			}
			if ms, i, ok = readNum(out, i); !ok {
				return nil, bad(at)
			}
			x.timers[id] = time.Now().Add(time.Duration(ms) * time.Millisecond)
		case 'x':
			var id int64
			if id, i, ok = readNum(out, i); !ok {
				return nil, bad(at)
			}
			delete(x.timers, id)
		case 'l':
			if i >= len(out) {
				return nil, bad(at)
			}
			level, known := logLevels[out[i]]
			if !known {
				return nil, bad(at)
			}
			var text string
			if text, i, ok = readText(out, i+1); !ok {
				return nil, bad(at)
			}
			if strings.Contains(text, "\n    at ") {
				text = x.cleanStack(text)
			}
			x.addLog(level, text)
		case 'T':
			x.res.Truncated = true
		case 'v', 'e':
			var text string
			if text, i, ok = readText(out, i); !ok {
				return nil, bad(at)
			}
			end = &outcome{ok: kind == 'v', value: text}
			if kind == 'e' {
				end.err = &errorInfo{}
				if err := json.Unmarshal([]byte(text), end.err); err != nil {
					return nil, fmt.Errorf("decoding the script's error: %w", err)
				}
			}
		default:
			return nil, bad(at)
		}
	}
	return end, nil
}

var logLevels = map[byte]string{'l': "log", 'i': "info", 'd': "debug", 'w': "warn", 'e': "error"}

// request takes one tool call or fetch the script made. Whatever the host
// keeps of it is bounded: a name longer than MaxToolNameBytes is recorded
// clipped (the Caller, the gateway's tool path, refuses and audits it),
// arguments over MaxArgumentBytes are refused, the arguments of calls
// queued and running together stay within the memory limit, and the calls
// past maxToolCalls share one record.
func (x *execution) request(kind byte, id int64, name, args string) {
	if kind == 'c' {
		x.calls++
		if x.calls > x.lim.MaxToolCalls {
			x.limitHit = LimitToolCalls
			x.ready = append(x.ready, reject(id, callerr.Limit,
				fmt.Sprintf("maxToolCalls exceeded: at most %d tool calls per execution", x.lim.MaxToolCalls)))
			if x.refused < 0 {
				x.refused = len(x.res.ToolCalls)
				x.res.ToolCalls = append(x.res.ToolCalls, ToolCallRecord{Tool: RefusedCallsTool})
			}
			x.res.ToolCalls[x.refused].Count++
			return
		}
		if ok := x.admitArgs(id, len(args), "tool arguments"); !ok {
			x.res.ToolCalls = append(x.res.ToolCalls, ToolCallRecord{Tool: clip.Text(name, MaxToolNameBytes)})
			return
		}
		x.queue = append(x.queue, hostOp{kind: kind, id: id, name: name, args: args})
		return
	}
	if x.req.Fetch == nil {
		x.ready = append(x.ready, reject(id, callerr.Denied, "fetch is not enabled"))
		return
	}
	x.fetches++
	if max := x.req.Fetch.maxRequests(); x.fetches > max {
		x.limitHit = LimitFetchRequests
		x.ready = append(x.ready, reject(id, callerr.Limit,
			fmt.Sprintf("fetch.maxRequests exceeded: at most %d requests per execution", max)))
		return
	}
	if ok := x.admitArgs(id, len(args), "the fetch request"); !ok {
		return
	}
	var fr fetchRequest
	if err := json.Unmarshal([]byte(args), &fr); err != nil {
		x.held -= len(args)
		x.ready = append(x.ready, reject(id, callerr.InvalidArguments, "fetch request: "+err.Error()))
		return
	}
	x.queue = append(x.queue, hostOp{kind: kind, id: id, fetch: &fr, held: len(args)})
}

// admitArgs checks n bytes of arguments against MaxArgumentBytes and the
// bytes already held, and counts them held; a refusal settles request id.
func (x *execution) admitArgs(id int64, n int, what string) bool {
	if n > x.lim.MaxArgumentBytes {
		x.limitHit = LimitArgumentBytes
		x.ready = append(x.ready, reject(id, callerr.Limit,
			fmt.Sprintf("%s take %d bytes, over the limit of %d bytes per call", what, n, x.lim.MaxArgumentBytes)))
		return false
	}
	if room := x.lim.MemoryLimitMB << 20; x.held+n > room {
		x.limitHit = LimitMemory
		x.ready = append(x.ready, reject(id, callerr.Limit,
			fmt.Sprintf("the calls already waiting hold %d bytes of arguments; %d more would pass the memory limit of %d MB", x.held, n, x.lim.MemoryLimitMB)))
		return false
	}
	x.held += n
	return true
}

// reportComplete reports whether out is a whole report: every record
// known and every field there. A report read up to a U+0000 is not.
func reportComplete(out string) bool {
	for i := 0; i < len(out); {
		kind := out[i]
		i++
		var ok bool
		switch kind {
		case 'c':
			if _, i, ok = readNum(out, i); ok {
				if _, i, ok = readText(out, i); ok {
					_, i, ok = readText(out, i)
				}
			}
		case 'f':
			if _, i, ok = readNum(out, i); ok {
				_, i, ok = readText(out, i)
			}
		case 't':
			if _, i, ok = readNum(out, i); ok {
				_, i, ok = readNum(out, i)
			}
		case 'x':
			_, i, ok = readNum(out, i)
		case 'l':
			if ok = i < len(out); ok {
				_, i, ok = readText(out, i+1)
			}
		case 'T':
			ok = true
		case 'v', 'e':
			_, i, ok = readText(out, i)
		}
		if !ok {
			return false
		}
	}
	return true
}

// readNum reads a number field of a guest report at s[i:]: decimal digits
// and ':'. It returns the index after the field.
func readNum(s string, i int) (n int64, next int, ok bool) {
	j := i
	for ; j < len(s) && s[j] >= '0' && s[j] <= '9'; j++ {
		if n > math.MaxInt32 {
			return 0, 0, false
		}
		n = n*10 + int64(s[j]-'0')
	}
	if j == i || j >= len(s) || s[j] != ':' || n > math.MaxInt32 {
		return 0, 0, false
	}
	return n, j + 1, true
}

// readText reads a text field of a guest report at s[i:]: its length in
// UTF-16 code units (a number field), then the text. The guest's strings
// arrive as UTF-8, with any lone surrogate as a 3-byte sequence, so a
// 4-byte sequence is two units and every other sequence one.
func readText(s string, i int) (text string, next int, ok bool) {
	n, i, ok := readNum(s, i)
	if !ok {
		return "", 0, false
	}
	j := i
	for n > 0 && j < len(s) {
		switch b := s[j]; {
		case b < 0x80:
			j++
		case b >= 0xF0:
			j += 4
			n--
		case b >= 0xE0:
			j += 3
		default:
			j += 2
		}
		n--
	}
	if n != 0 || j > len(s) {
		return "", 0, false
	}
	return wellFormed(s[i:j]), j, true
}

// wellFormed replaces each lone UTF-16 surrogate in s, which the
// interpreter's C strings carry as a 3-byte WTF-8 sequence (0xED
// 0xA0-0xBF x), with U+FFFD, as JSON.stringify followed by a JSON decoder
// would: text handed to the host is always valid UTF-8.
func wellFormed(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			if i+2 < len(s) && s[i] == 0xED && s[i+1] >= 0xA0 && s[i+1] <= 0xBF {
				size = 3 // one surrogate, one replacement
			} else {
				size = 1
			}
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return string(b)
}

// wait starts queued host work and blocks until there is something to hand
// to the script: finished host calls, due timers or immediate refusals.
func (x *execution) wait() ([]settlement, error) {
	if x.inline() {
		if err := x.ctx.Err(); err != nil {
			return nil, err
		}
		items := x.ready
		x.ready = nil
		return items, nil
	}
	x.dispatch()
	if len(x.ready) == 0 {
		if x.inflight == 0 && len(x.queue) == 0 && len(x.timers) == 0 {
			return nil, errNeverSettles
		}
		var timerC <-chan time.Time
		if len(x.timers) > 0 {
			next := time.Time{}
			for _, due := range x.timers {
				if next.IsZero() || due.Before(next) {
					next = due
				}
			}
			t := time.NewTimer(time.Until(next))
			defer t.Stop()
			timerC = t.C
		}
		select {
		case d := <-x.results:
			x.collect(d)
		case <-timerC:
		case <-x.ctx.Done():
			return nil, x.ctx.Err()
		}
	}
	for more := true; more; {
		select {
		case d := <-x.results:
			x.collect(d)
		default:
			more = false
		}
	}
	x.dispatch()
	type due struct {
		id int64
		at time.Time
	}
	var dues []due
	now := time.Now()
	for id, at := range x.timers {
		if !at.After(now) {
			dues = append(dues, due{id, at})
			delete(x.timers, id)
		}
	}
	slices.SortFunc(dues, func(a, b due) int { return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.id, b.id)) })
	items := x.ready
	x.ready = nil
	for _, d := range dues {
		items = append(items, settlement{id: d.id, ok: true})
	}
	return items, nil
}

func (x *execution) collect(d hostDone) {
	x.inflight--
	x.held -= d.held
	x.ready = append(x.ready, d.set)
	if d.record != nil {
		x.res.ToolCalls = append(x.res.ToolCalls, *d.record)
	}
}

// inline performs the one tool call the script awaits on this goroutine
// when nothing else can settle first: no other call in flight or queued,
// no timer, nothing ready. The script is idle until that call returns, so
// running it here changes no ordering and saves a goroutine and two
// scheduler handoffs per call. The call gets the execution's context, as
// on its own goroutine, and Run waits for host calls either way.
func (x *execution) inline() bool {
	if len(x.queue) != 1 || x.queue[0].kind != 'c' || x.inflight != 0 || len(x.ready) != 0 || len(x.timers) != 0 {
		return false
	}
	op := x.queue[0]
	x.queue = x.queue[:0]
	x.inflight++
	x.collect(x.callTool(op))
	return true
}

// dispatch starts queued host work up to the concurrency limit.
func (x *execution) dispatch() {
	for len(x.queue) > 0 && x.inflight < x.lim.MaxConcurrentToolCalls {
		op := x.queue[0]
		x.queue = x.queue[1:]
		x.inflight++
		x.hosts.Go(func() { x.perform(op) })
	}
}

// perform runs one host call on its own goroutine. Its reply goes back over
// a channel; once the execution ended nobody reads it and it is dropped, so
// a late reply never touches the interpreter.
func (x *execution) perform(op hostOp) {
	var d hostDone
	switch op.kind {
	case 'c':
		d = x.callTool(op)
	case 'f':
		d = x.doFetch(op)
		d.held = op.held
	}
	select {
	case x.results <- d:
	case <-x.ctx.Done():
	}
}

func (x *execution) callTool(op hostOp) hostDone {
	start := time.Now()
	rec := &ToolCallRecord{Tool: clip.Text(op.name, MaxToolNameBytes)}
	done := func(set settlement) hostDone {
		rec.Ms = msSince(start)
		return hostDone{set: set, record: rec, held: len(op.args)}
	}
	if !json.Valid([]byte(op.args)) {
		return done(reject(op.id, callerr.InvalidArguments, "tool arguments are not valid JSON"))
	}
	if x.req.Caller == nil {
		return done(reject(op.id, callerr.NotFound, fmt.Sprintf("tool %q not found", clip.Text(op.name, MaxToolNameBytes))))
	}
	out, err := safeCall(x.ctx, x.req.Caller, op.name, []byte(op.args))
	if err != nil {
		var ce *callerr.Error
		switch {
		case errors.As(err, &ce):
			return done(rejectWith(op.id, ce))
		case x.ctx.Err() != nil:
			return done(reject(op.id, callerr.Timeout, "the execution ended before the tool answered"))
		default:
			return done(reject(op.id, callerr.ToolError, err.Error()))
		}
	}
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		out = []byte("null")
	}
	if !json.Valid(out) {
		return done(reject(op.id, callerr.ToolError, "the tool returned invalid JSON"))
	}
	if !utf8.Valid(out) { // only inside strings, where U+FFFD keeps the JSON valid
		out = bytes.ToValidUTF8(out, []byte("\uFFFD"))
	}
	rec.OK = true
	return done(settlement{id: op.id, ok: true, payload: string(out)})
}

func safeCall(ctx context.Context, c Caller, name string, args []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("tool call panicked: %v", r)
		}
	}()
	return c(ctx, name, args)
}

func reject(id int64, code, message string) settlement {
	return rejectWith(id, &callerr.Error{Code: code, Message: message})
}

// rejectWith is the settlement that rejects request id with ce, in the
// error's JSON form.
func rejectWith(id int64, ce *callerr.Error) settlement {
	b, _ := json.Marshal(ce)
	return settlement{id: id, payload: string(b)}
}

// logLineCost is what a console line costs the output budget besides its
// text: the JSON of its level and field names.
const logLineCost = 32

// addLog appends one console line within the output budget.
func (x *execution) addLog(level, msg string) {
	if x.res.Truncated && x.logBytes >= x.lim.MaxOutputBytes {
		return
	}
	room := x.lim.MaxOutputBytes - x.logBytes - logLineCost
	if n := clip.JSONLen(msg); n > room {
		msg = clip.JSONPrefix(msg, max(room, 2))
		x.res.Truncated = true
		x.logBytes = x.lim.MaxOutputBytes
		if msg == "" {
			return
		}
	} else {
		x.logBytes += n + logLineCost
	}
	x.res.Logs = append(x.res.Logs, LogLine{Level: level, Message: msg})
}

// complete records the script's outcome. A value that arrives after the
// deadline is not reported: the execution timed out.
func (x *execution) complete(s *outcome) {
	if time.Now().After(x.deadline) {
		x.res.Error = x.ctxError()
		return
	}
	if !s.ok {
		x.res.Error = x.scriptError(s.err)
		return
	}
	v := []byte(s.value)
	if !json.Valid(v) {
		x.res.Error = &ScriptError{Name: "TypeError", Message: "the returned value is not JSON-serialisable"}
		return
	}
	if len(v) > x.lim.MaxOutputBytes {
		x.res.Truncated = true
		x.res.Error = &ScriptError{
			Name:    "RangeError",
			Message: fmt.Sprintf("the returned value is %d bytes, over the output limit of %d", len(v), x.lim.MaxOutputBytes),
			Limit:   LimitOutputBytes,
		}
		return
	}
	x.res.Result = v
}

// Caps of an error's texts in the output, whatever MaxOutputBytes allows.
const (
	maxErrorNameBytes    = 128
	maxErrorMessageBytes = 16 << 10
	maxErrorStackBytes   = 16 << 10
)

// fitOutput bounds what the execution hands back to MaxOutputBytes of JSON
// text, whatever the script did: the result (already within the limit),
// then the error's texts, then the tool-call records (at most half the
// budget; the rest are counted in one last record), then the console lines.
func (x *execution) fitOutput() {
	budget := x.lim.MaxOutputBytes
	res := x.res
	used := len(res.Result)
	room := func() int { return max(budget-used, 0) }
	if e := res.Error; e != nil {
		e.Name = clip.JSONPrefix(e.Name, maxErrorNameBytes)
		e.Code = clip.JSONPrefix(e.Code, maxErrorNameBytes)
		e.Limit = clip.JSONPrefix(e.Limit, maxErrorNameBytes)
		used += clip.JSONLen(e.Name) + clip.JSONLen(e.Code) + clip.JSONLen(e.Limit)
		e.Message = clip.JSONPrefix(e.Message, min(maxErrorMessageBytes, room()/2))
		used += clip.JSONLen(e.Message)
		e.Stack = clip.JSONPrefix(e.Stack, min(maxErrorStackBytes, room()/2))
		used += clip.JSONLen(e.Stack)
	}
	const recordCost = 48 // the JSON of a record besides its tool name
	recBudget := room() / 2
	recUsed := 0
	for i, r := range res.ToolCalls {
		n := clip.JSONLen(r.Tool) + recordCost
		if recUsed+n+recordCost+24 > recBudget {
			rest := 0
			for _, r := range res.ToolCalls[i:] {
				rest += max(r.Count, 1)
			}
			res.ToolCalls = append(res.ToolCalls[:i:i], ToolCallRecord{Tool: fmt.Sprintf("(%d more)", rest), Count: rest})
			res.Truncated = true
			recUsed += recordCost + 24
			break
		}
		recUsed += n
	}
	used += recUsed
	logRoom := room()
	n := 0
	for i, l := range res.Logs {
		c := clip.JSONLen(l.Message) + logLineCost
		if n+c > logRoom {
			res.Truncated = true
			msg := clip.JSONPrefix(l.Message, logRoom-n-logLineCost)
			if msg == "" {
				res.Logs = res.Logs[:i]
			} else {
				res.Logs[i].Message = msg
				res.Logs = res.Logs[:i+1]
			}
			break
		}
		n += c
	}
}

func (x *execution) internal(err error) {
	x.res.Error = &ScriptError{Name: "InternalError", Message: "sandbox fault: " + err.Error()}
}

// failWait reports why waiting ended the script.
func (x *execution) failWait(err error) {
	switch {
	case errors.Is(err, errNeverSettles):
		x.res.Error = &ScriptError{
			Name:    "Error",
			Message: "the script is awaiting a promise that can never settle (no tool call, fetch or timer is pending)",
		}
	default:
		x.res.Error = x.ctxError()
	}
}

// ctxError describes an execution ended by its context.
func (x *execution) ctxError() *ScriptError {
	if err := x.ctx.Err(); err == nil || errors.Is(err, context.DeadlineExceeded) {
		return &ScriptError{
			Name:    "TimeoutError",
			Message: fmt.Sprintf("the script ran longer than the timeout of %s", x.lim.Timeout),
			Limit:   LimitTimeout,
		}
	}
	return &ScriptError{Name: "AbortError", Message: "the execution was cancelled"}
}

// failEval reports an exception or crash that escaped an evaluation.
func (x *execution) failEval(err error, prefix string) {
	var trap *trapError
	if errors.As(err, &trap) {
		se := &ScriptError{Name: "InternalError", Message: trap.Error()}
		switch {
		case x.ctx.Err() != nil || x.g.stop.Load():
			if trap == errHardStop {
				x.recoverLogs()
			}
			se = x.ctxError()
		case x.g.mem.Refusals() > 0:
			se.Message += " after running out of memory"
			se.Limit = LimitMemory
		default:
			se.Message += " (most likely by exhausting its stack)"
			se.Limit = LimitStack
		}
		x.res.Error = se
		return
	}
	text := err.Error()
	first, stack, _ := strings.Cut(text, "\n")
	info := &errorInfo{Name: "Error", Message: first, Stack: stack}
	if name, msg, ok := strings.Cut(first, ": "); ok && !strings.ContainsAny(name, " \t") {
		info.Name, info.Message = name, msg
	}
	if info.Name == "InternalError" && info.Message == "interrupted" && (x.ctx.Err() != nil || x.g.stop.Load()) {
		x.recoverLogs()
		x.res.Error = x.ctxError()
		return
	}
	info.Message = prefix + info.Message
	x.res.Error = x.scriptError(info)
}

// recoverLogs collects console output written since the last pump of a
// script that was interrupted, giving the interpreter a short, guarded
// slot. After a hard stop (a trap inside native code) the interpreter's
// state may be half-updated: whatever it reports then is still only what
// the script could have logged, and a second fault or overrun in this slot
// only loses the lines.
func (x *execution) recoverLogs() {
	x.g.clearInterrupt(time.Now().Add(50 * time.Millisecond))
	out, err := x.g.pump(nil)
	if err != nil {
		return
	}
	_, _ = x.absorb(out)
}

var (
	agentLine1 = regexp.MustCompile(`agent\.js:1:(\d+)`)
	agentFrame = regexp.MustCompile(`agent\.js:(\d+):(\d+)`)
)

// cleanStack drops the sandbox's own frames from a stack trace and makes
// positions on the agent's first line relative to its code.
func (x *execution) cleanStack(stack string) string {
	var keep []string
	for _, line := range strings.Split(stack, "\n") {
		if strings.Contains(line, "toolgate-bootstrap.js") || strings.Contains(line, "pump.js") ||
			strings.Contains(line, "at <eval> (agent.js:1:") || strings.TrimSpace(line) == "" {
			continue
		}
		line = agentLine1.ReplaceAllStringFunc(line, func(m string) string {
			col, _ := strconv.Atoi(m[len("agent.js:1:"):])
			// QuickJS counts columns from 0 on the first line only.
			return "agent.js:1:" + strconv.Itoa(max(col-x.prefixLen+1, 1))
		})
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// scriptError turns a JavaScript error into a ScriptError with positions in
// the agent's own code and the limit it reflects, if any.
func (x *execution) scriptError(info *errorInfo) *ScriptError {
	if info == nil {
		info = &errorInfo{Name: "Error", Message: "unknown error"}
	}
	se := &ScriptError{Name: info.Name, Message: info.Message, Code: info.Code, Stack: x.cleanStack(info.Stack)}
	if m := agentFrame.FindStringSubmatch(se.Stack); m != nil {
		se.Line, _ = strconv.Atoi(m[1])
		if se.Name != "SyntaxError" { // QuickJS's parser columns are not reliable
			se.Column, _ = strconv.Atoi(m[2])
		}
	}
	switch {
	case se.Name == "RangeError" && strings.Contains(se.Message, "call stack"):
		se.Limit = LimitStack
	case x.g.mem.Refusals() > 0:
		se.Limit = LimitMemory
		se.Message += fmt.Sprintf(" (memory limit of %d MB reached)", x.lim.MemoryLimitMB)
	case se.Code == "limit" && x.limitHit != "":
		se.Limit = x.limitHit
	}
	return se
}

// findImport reports the position of a dynamic import() or import.meta in
// code. The sandbox refuses both: module loading would reach the
// interpreter's std and os modules. Eval and the Function constructor are
// disabled, so the agent's source is the only code that could contain one.
// The scan is deliberately conservative: it ignores strings and comments, so
// a string containing "import(" is refused too.
func findImport(code string) (line, col int, ok bool) {
	for i := 0; ; {
		j := strings.Index(code[i:], "import")
		if j < 0 {
			return 0, 0, false
		}
		at := i + j
		i = at + len("import")
		if at > 0 {
			p, _ := utf8.DecodeLastRuneInString(code[:at])
			if isIdentRune(p) {
				continue
			}
			if p == '.' && !(at >= 3 && code[at-3:at] == "...") {
				continue // member access: obj.import(...)
			}
		}
		if r, _ := utf8.DecodeRuneInString(code[i:]); i < len(code) && isIdentRune(r) {
			continue
		}
		k := skipSpaceAndComments(code, i)
		if k < len(code) && (code[k] == '(' || code[k] == '.') {
			line = 1 + strings.Count(code[:at], "\n")
			col = at - strings.LastIndex(code[:at], "\n")
			return line, col, true
		}
	}
}

func isIdentRune(r rune) bool {
	return r == '_' || r == '$' || r == 0x200C || r == 0x200D ||
		unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.In(r, unicode.Mn, unicode.Mc, unicode.Nd, unicode.Pc)
}

func skipSpaceAndComments(s string, i int) int {
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case unicode.IsSpace(r) || r == 0xFEFF || unicode.Is(unicode.Zs, r) || r == 0x2028 || r == 0x2029:
			i += size
		case strings.HasPrefix(s[i:], "//"):
			n := strings.IndexByte(s[i:], '\n')
			if n < 0 {
				return len(s)
			}
			i += n + 1
		case strings.HasPrefix(s[i:], "/*"):
			n := strings.Index(s[i+2:], "*/")
			if n < 0 {
				return len(s)
			}
			i += n + 4
		default:
			return i
		}
	}
	return i
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}
