package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
)

// A call of execute_code or search_tools is a tool call like any other
// for everything but the upstream: it is charged to the caller's rate
// limits, recorded in the audit log as a tool.call event (ratelimit.hit or
// tool.denied when refused) before it is answered, and counted in
// toolgate_tool_calls_total. The event of execute_code carries the
// executionId that links it with the code.execution event and with the
// calls its script made.

// metaCall is the tool call of a request for execute_code or search_tools.
func (p *project) metaCall(req *mcp.CallToolRequest) *ToolCall {
	pr, prepaid := principalFrom(req.Extra, p.name)
	return &ToolCall{Principal: pr, Name: req.Params.Name, Arguments: req.Params.Arguments, Meta: req.Params.Meta, Session: req.Session, prepaid: prepaid}
}

// chargeMetaCall takes the call's rate-limit tokens, unless the HTTP layer
// took them already: like every other tools/call, each one counts against
// the project's and the key's buckets (and a toolLimits entry under its
// name). An execution's inner calls count on top, one each.
func (p *project) chargeMetaCall(ctx context.Context, call *ToolCall) error {
	if call.prepaid == call.Name {
		return nil
	}
	return p.gw.takeTokens(ctx, call.Principal, call.Name)
}

// finishMetaCall records the call (metrics, then the audit event, written
// before the answer) and turns its outcome into the answer a client gets:
// a refusal by a rate limit, or by a full set of execution slots, is the
// retryable JSON-RPC error (-32029, -32030); another refusal is a tool
// error. A call that cannot be recorded is refused, whatever its outcome.
func (p *project) finishMetaCall(call *ToolCall, start time.Time, res *mcp.CallToolResult, err error) (*mcp.CallToolResult, error) {
	d := time.Since(start)
	out := outcome(res, err)
	p.gw.metrics.observeCall(p.name, "", call.Name, out, d, false)
	if aerr := p.gw.emit(callEvent(p.name, nil, call, res, err, out, d)); aerr != nil {
		return errorResult(errNotRecorded(aerr).Message), nil
	}
	var ce *callerr.Error
	if !errors.As(err, &ce) {
		return res, err
	}
	switch ce.Code {
	case callerr.RateLimited:
		return nil, retryableError(codeRateLimited, ce)
	case callerr.Overloaded:
		return nil, retryableError(codeOverloaded, ce) // every execution slot stayed busy
	}
	return errorResult(ce.Message), nil
}
