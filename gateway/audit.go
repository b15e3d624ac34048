package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/policy/apikey"
	"github.com/toolgate/toolgate/policy/audit"
)

// emit records one event: it is appended to the audit log (when there is
// one) and shown to the alert rules. The error says the log could not be
// written.
func (g *Gateway) emit(ev *audit.Event) error {
	var err error
	if g.audit != nil {
		start := time.Now()
		err = g.audit.Write(ev)
		g.metrics.auditSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			g.log.Error("audit log write failed", "type", ev.Type, "error", err)
		}
	}
	if g.alerter != nil {
		g.alerter.Observe(ev.Type, ev.Project, alertFields(ev))
	}
	return err
}

// alertFields are the fields of an event an alert may show.
func alertFields(ev *audit.Event) map[string]any {
	f := make(map[string]any, 7)
	for _, kv := range [...]struct{ k, v string }{
		{"keyId", ev.KeyID}, {"subject", ev.Subject}, {"clientIp", ev.ClientIP}, {"server", ev.Server},
		{"tool", ev.Tool}, {"reason", ev.Reason}, {"error", ev.Error},
	} {
		if kv.v != "" {
			f[kv.k] = kv.v
		}
	}
	return f
}

// auditHealthy says whether tool calls may run: with an audit log that
// cannot be written the gateway refuses them.
func (g *Gateway) auditHealthy() error {
	if g.audit == nil {
		return nil
	}
	if err := g.audit.Healthy(); err != nil {
		return &callerr.Error{Code: callerr.Unavailable, Message: "the audit log cannot be written, so tool calls are refused until it can: " + err.Error()}
	}
	return nil
}

// record is the audit step of the tool path: the metrics and the audit
// event of one call, written before the call is answered (how). wire is
// the result as the caller sends it, when the tool path encoded it.
func (g *Gateway) record(pc *pathCall, how answer, res *mcp.CallToolResult, wire []byte, err error) error {
	var ce *callerr.Error
	if how == answerHTTP && errors.As(err, &ce) {
		// A request refused before the MCP SDK read it: its ratelimit.hit.
		return g.emit(rateLimitEvent(pc.p.name, pc.call.Principal, pc.call.Name, ce))
	}
	d := time.Since(pc.start)
	out := outcome(res, err)
	server, tool, reached := "", "", false
	switch {
	case pc.target.route != nil:
		server, tool = pc.target.route.up.cfg.Name, pc.call.Name
		reached = out != callerr.RateLimited && out != callerr.Unavailable && out != callerr.Overloaded
	case pc.target.meta != "":
		tool = pc.call.Name
	}
	g.metrics.observeCall(pc.p.name, server, tool, out, d, reached)
	return g.emit(callEvent(pc.p.name, pc.target.route, pc.call, pc.execID, res, wire, err, out, d))
}

// callEvent is the audit event of one call on the tool path: r is the
// route of its upstream tool (nil for none), execID the execution it
// belongs to, wire the result as sent when the tool path encoded it.
func callEvent(project string, r *route, call *ToolCall, execID string, res *mcp.CallToolResult, wire []byte, err error, out string, d time.Duration) *audit.Event {
	ev := &audit.Event{
		Type:        audit.EventToolCall,
		Project:     project,
		KeyID:       call.Principal.KeyID,
		Subject:     call.Principal.Subject,
		ClientIP:    call.Principal.ClientIP,
		ExecutionID: execID,
		Tool:        call.Name,
		Decision:    "allow",
		Outcome:     out,
		LatencyMs:   audit.Millis(d),
	}
	if r != nil {
		ev.Server = r.up.cfg.Name
	}
	switch out {
	case callerr.NotFound:
		ev.Type, ev.Decision, ev.Reason = audit.EventToolDenied, "deny", "unknown or filtered tool"
	case callerr.RateLimited:
		ev.Type, ev.Decision = audit.EventRateLimitHit, "deny"
	}
	ev.SetArguments(call.Arguments)
	if res != nil {
		if wire != nil {
			ev.ResultBytes = int64(len(wire))
		} else {
			ev.ResultBytes = jsonSize(res)
		}
		if res.IsError {
			ev.Error = resultText(res)
		}
	}
	// Texts go in whole: the audit log cuts each field to its cap and
	// keeps the full text's length and SHA-256.
	var ce *callerr.Error
	var rpcErr *jsonrpc.Error
	switch {
	case errors.As(err, &ce):
		ev.Error = ce.Message
	case errors.As(err, &rpcErr):
		ev.Error = rpcErr.Message
	case err != nil:
		ev.Error = err.Error()
	}
	return ev
}

// rateLimitEvent is the ratelimit.hit event of a request that rate limits
// refused with ce and that is not recorded as a tool call: a request
// other than tools/call, a tools/call refused at the HTTP layer, a
// script's fetch.
func rateLimitEvent(project string, pr Principal, tool string, ce *callerr.Error) *audit.Event {
	return &audit.Event{Type: audit.EventRateLimitHit, Project: project, KeyID: pr.KeyID, Subject: pr.Subject, ClientIP: pr.ClientIP,
		Tool: tool, Decision: "deny", Outcome: ce.Code, Error: ce.Message}
}

// byteCounter is an io.Writer that only counts.
type byteCounter int64

func (c *byteCounter) Write(b []byte) (int, error) {
	*c += byteCounter(len(b))
	return len(b), nil
}

// jsonSize is the length of v's JSON encoding (as json.Marshal gives it),
// or 0 when v does not encode. It encodes into a counter, so the encoding
// is not kept just to be measured.
func jsonSize(v any) int64 {
	var n byteCounter
	if err := json.NewEncoder(&n).Encode(v); err != nil {
		return 0
	}
	return int64(n) - 1 // Encode ends the value with a newline
}

func resultText(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			return t.Text
		}
	}
	return ""
}

// RecordKeyChange appends a key change that the key store kept (a key
// created, rotated or revoked, by the command line or by this process,
// with or without a gateway running) to the audit log, dated when it was
// made. The error says it could not be written; the store then keeps it
// for the next try.
//
// A change the log already holds is not written again: a crash between
// writing a change and telling the store leaves it in both, so the first
// call of a process looks for the key changes written since (a little
// before) its time, reading the log's newest lines only; the changes it
// writes are remembered.
func (g *Gateway) RecordKeyChange(c apikey.Change) error {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	if g.audit != nil && g.keysInLog == nil {
		found, err := audit.RecordedKeyChanges(g.audit.Path(), c.Time.Add(-keyChangeSkew))
		if err != nil {
			return fmt.Errorf("look for key changes already in the audit log: %w", err)
		}
		g.keysInLog = found
	}
	k := c.Type + " " + c.KeyID
	if g.keysInLog[k] {
		return nil
	}
	if err := g.emit(c.Event()); err != nil {
		return err
	}
	if g.keysInLog != nil {
		g.keysInLog[k] = true
	}
	return nil
}

// keyChangeSkew is how much earlier than a key change lines may be dated
// that were written after it (clock steps, writers racing for the log).
const keyChangeSkew = time.Minute

// auditRetentionProblem says, for /readyz, that the audit log keeps files
// past audit.maxFiles; "" when it does not.
func (g *Gateway) auditRetentionProblem() string {
	if g.audit == nil {
		return ""
	}
	st := g.audit.Retention()
	if st.Over == 0 {
		return ""
	}
	return fmt.Sprintf("audit log: %d rotated %s kept past audit.maxFiles (%d) because younger than audit.retainAtLeast (%s); the oldest was last written at %s: make room on the disk, or raise audit.maxSizeMB or audit.maxFiles",
		st.Over, plural(st.Over, "file", "files"), st.MaxFiles, st.RetainAtLeast, st.Oldest.Format(time.RFC3339))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
