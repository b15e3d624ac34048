package bindings

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
)

// ToolCaller is the gateway's one tool path as the bridge sees it: it calls
// the tool with the gateway-visible name (a [Tool]'s FullName) and the
// arguments as a JSON object, on behalf of the script's caller.
//
// Errors that carry a code keep it in scripts: a [*callerr.Error], or any
// error in the chain with an ErrorCode() string method (see
// [AsCallError]). Their text reaches the script, and through it the agent,
// so it must be meant for users.
type ToolCaller interface {
	CallTool(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error)
}

// AsCallError returns the error a script sees for err, by the rules of
// [Invoke]: a *callerr.Error in the chain is kept with the message of err,
// a code from an ErrorCode() string method in the chain is kept, context
// deadlines and cancellations become "timeout" and "canceled", and
// anything else becomes "internal" with the error's text. A RetryAfter()
// time.Duration method in the chain gives the retry hint when the error
// has none. It returns nil for a nil err.
func AsCallError(err error) *callerr.Error {
	if err == nil {
		return nil
	}
	ce := &callerr.Error{Code: callerr.Internal, Message: err.Error()}
	var known *callerr.Error
	var coded interface{ ErrorCode() string }
	switch {
	case errors.As(err, &known):
		ce.Code, ce.RetryAfter = known.Code, known.RetryAfter
	case errors.As(err, &coded):
		ce.Code = coded.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded):
		ce.Code = callerr.Timeout
	case errors.Is(err, context.Canceled):
		ce.Code = callerr.Canceled
	}
	if ce.Code == "" {
		ce.Code = callerr.Internal
	}
	var retry interface{ RetryAfter() time.Duration }
	if ce.RetryAfter == 0 && errors.As(err, &retry) {
		ce.RetryAfter = retry.RetryAfter()
	}
	if ce.RetryAfter < 0 {
		ce.RetryAfter = 0
	}
	return ce
}

// Bridge returns the host side of a script's tool calls for a sandbox
// (the shape of sandbox.Caller): each call runs through [Invoke] on
// caller, so a script's call goes from the sandbox to the tool path with
// nothing in between.
func Bridge(caller ToolCaller) func(ctx context.Context, name string, argsJSON []byte) ([]byte, error) {
	return func(ctx context.Context, name string, argsJSON []byte) ([]byte, error) {
		return Invoke(ctx, caller, name, argsJSON)
	}
}

// Invoke runs one binding call: it calls the tool name (a FullName) with
// argsJSON (empty or null means {}) through caller and returns the JSON
// text of the value the script receives:
//
//   - the result's structuredContent when present (and not null);
//   - otherwise, when every content block is text, the text of the blocks
//     joined with newlines: the value it encodes when it is JSON, else the
//     text as a string;
//   - otherwise the content array as MCP encodes it (images, audio,
//     resources; [] for no content).
//
// Every error is a [*callerr.Error]: arguments that are not a JSON object fail
// with "invalid_arguments" before caller runs; a result with isError fails
// with "tool_error" and the tool's text; an error from caller is mapped by
// [AsCallError].
func Invoke(ctx context.Context, caller ToolCaller, name string, argsJSON []byte) (valueJSON []byte, err error) {
	args := bytes.TrimSpace(argsJSON)
	if len(args) == 0 || string(args) == "null" {
		args = []byte("{}")
	} else if args[0] != '{' || !json.Valid(args) {
		return nil, &callerr.Error{Code: callerr.InvalidArguments, Message: "arguments must be a JSON object"}
	}
	res, err := caller.CallTool(ctx, name, json.RawMessage(args))
	if err != nil {
		return nil, AsCallError(err)
	}
	if res == nil {
		return nil, &callerr.Error{Code: callerr.Internal, Message: "the tool path returned no result"}
	}
	if res.IsError {
		msg, _ := textOf(res.Content)
		if msg == "" {
			msg = "the tool reported an error without a message"
		}
		return nil, &callerr.Error{Code: callerr.ToolError, Message: msg}
	}
	if v, ok, err := structured(res.StructuredContent); err != nil {
		return nil, &callerr.Error{Code: callerr.Internal, Message: "encoding structuredContent: " + err.Error()}
	} else if ok {
		return v, nil
	}
	if text, ok := textOf(res.Content); ok && len(res.Content) > 0 {
		return textValue(text), nil
	}
	content := res.Content
	if content == nil {
		content = []mcp.Content{}
	}
	v, err := json.Marshal(content)
	if err != nil {
		return nil, &callerr.Error{Code: callerr.Internal, Message: "encoding content: " + err.Error()}
	}
	return v, nil
}

// structured returns the JSON of structuredContent, and whether there is
// one: nil, an empty json.RawMessage and JSON null count as none.
func structured(sc any) ([]byte, bool, error) {
	if sc == nil {
		return nil, false, nil
	}
	v, err := json.Marshal(sc)
	if err != nil {
		return nil, false, err
	}
	if string(v) == "null" {
		return nil, false, nil
	}
	if !utf8.Valid(v) { // only inside strings, where U+FFFD keeps the JSON valid
		v = bytes.ToValidUTF8(v, []byte("\uFFFD"))
	}
	return v, true, nil
}

// textOf returns the text blocks of content joined with newlines, and
// whether every block is text.
func textOf(content []mcp.Content) (string, bool) {
	var texts []string
	all := true
	for _, c := range content {
		if t, ok := c.(*mcp.TextContent); ok && t != nil {
			texts = append(texts, t.Text)
		} else {
			all = false
		}
	}
	return strings.Join(texts, "\n"), all
}

// textValue returns the JSON of a text result: the text itself when it is
// JSON, else the text as a JSON string.
func textValue(text string) []byte {
	if t := strings.TrimSpace(text); t != "" && utf8.ValidString(t) && json.Valid([]byte(t)) {
		var b bytes.Buffer
		if json.Compact(&b, []byte(t)) == nil {
			return b.Bytes()
		}
	}
	return appendQuoted(nil, text)
}
