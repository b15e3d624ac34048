//go:build unix

package soak

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/toolgate/toolgate/policy/audit"
)

// auditReport is what the audit log holds compared with what the clients
// saw.
type auditReport struct {
	events, toolCalls, denied, executions int
	missing                               []string // answered calls, denials or executions the log lacks
}

// auditEvent is the part of a tool.call event matched against a client's
// call.
type auditEvent struct {
	tool, keyID string
	ok          bool
}

// argIDs returns the request ids (strings starting with "soak-") found in
// a call's logged arguments.
func argIDs(args json.RawMessage) []string {
	var v any
	if json.Unmarshal(args, &v) != nil {
		return nil
	}
	var ids []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			if strings.HasPrefix(x, "soak-") {
				ids = append(ids, x)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return ids
}

// checkAudit reads the audit log and checks that it holds every call the
// clients saw answered (by the id in its arguments, with the same tool,
// key and success), every "unknown tool" answer (counted per key and tool:
// such calls are logged without arguments) and every execution (counted
// per key, outcome and limit).
func checkAudit(path string, tl *tally) (auditReport, error) {
	var rep auditReport
	byID := map[string][]auditEvent{}
	denied := map[string]int{}
	execs := map[string]int{}
	_, err := audit.Read(path, func(ev *audit.Event) error {
		rep.events++
		switch ev.Type {
		case audit.EventToolCall:
			rep.toolCalls++
			for _, id := range argIDs(ev.Arguments) {
				byID[id] = append(byID[id], auditEvent{tool: ev.Tool, keyID: ev.KeyID, ok: ev.Outcome == "ok"})
			}
		case audit.EventToolDenied:
			rep.denied++
			denied[ev.KeyID+"|"+ev.Tool]++
		case audit.EventCodeExecution:
			rep.executions++
			limit := ""
			if len(ev.LimitsHit) > 0 {
				limit = ev.LimitsHit[0]
			}
			execs[ev.KeyID+"|"+ev.Outcome+"|"+limit]++
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	miss := func(format string, args ...any) {
		if len(rep.missing) < 40 {
			rep.missing = append(rep.missing, fmt.Sprintf(format, args...))
		}
	}
	for _, c := range tl.calls {
		found := false
		for _, ev := range byID[c.id] {
			if ev.tool == c.tool && ev.keyID == c.keyID && ev.ok == c.ok {
				found = true
				break
			}
		}
		if !found {
			miss("call %s to %s with key %s (ok=%v, client saw %s): no matching tool.call event (events with its id: %+v)", c.id, c.tool, c.keyID, c.ok, c.seen, byID[c.id])
		}
	}
	for k, n := range tl.notFound {
		if denied[k] < n {
			miss("key|tool %s: clients saw %d unknown-tool answers, the log has %d tool.denied events", k, n, denied[k])
		}
	}
	for k, n := range tl.execs {
		if execs[k] < n {
			miss("key|outcome|limit %s: clients saw %d executions, the log has %d code.execution events", k, n, execs[k])
		}
	}
	return rep, nil
}
