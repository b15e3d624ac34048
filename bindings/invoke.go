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
)

// ToolCaller is the gateway's one tool path as the bridge sees it: it calls
// the tool with the gateway-visible name (a [Tool]'s FullName) and the
// arguments as a JSON object, on behalf of the script's caller.
//
// Errors that carry a code keep it in scripts: a [*CallError], or any error
// in the chain with an ErrorCode() string method (see [AsCallError]). Their
// text reaches the script, and through it the agent, so it must be meant
// for users.
type ToolCaller interface {
	CallTool(ctx context.Context, name string, args json.RawMessage) (*mcp.CallToolResult, error)
}

// Codes of a [CallError]. Codes from a [ToolCaller]'s errors pass through
// unchanged, so a script may see others.
const (
	// CodeToolError: the tool ran and reported an error (isError); the
	// message is its text.
	CodeToolError = "tool_error"
	// CodeNotFound: no such tool, or one the caller may not see; the two
	// must be indistinguishable.
	CodeNotFound = "not_found"
	// CodeDenied: a refusal whose reason the caller may know (an IP or key
	// rule).
	CodeDenied = "denied"
	// CodeRateLimited: a rate limit refused the call; RetryAfterMs says
	// when to try again, when known.
	CodeRateLimited = "rate_limited"
	// CodeTimeout: the call ran out of time.
	CodeTimeout = "timeout"
	// CodeCanceled: the call was canceled (the script ended or the gateway
	// is stopping).
	CodeCanceled = "canceled"
	// CodeUnavailable: the upstream server cannot be reached.
	CodeUnavailable = "unavailable"
	// CodeInvalidArguments: the arguments are not a JSON object.
	CodeInvalidArguments = "invalid_arguments"
	// CodeInternal: anything else.
	CodeInternal = "internal"
)

// CallError is how a binding call fails. In a script it is the Error a
// binding rejects with: Message is its message, Code its .code and
// RetryAfterMs, when not zero, its .retryAfterMs. Its JSON form
// ({"code","message","retryAfterMs"}) is what the host primitive rejects
// with (see [Prelude]).
type CallError struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs int64  `json:"retryAfterMs,omitempty"`
}

// Error returns the message.
func (e *CallError) Error() string { return e.Message }

// ErrorCode returns the code.
func (e *CallError) ErrorCode() string { return e.Code }

// AsCallError returns the CallError a script sees for err, by the rules of
// [Invoke]: a *CallError in the chain is kept with the message of err, a
// code from an ErrorCode() string method in the chain is kept, context
// deadlines and cancellations become "timeout" and "canceled", and
// anything else becomes "internal" with the error's text. A RetryAfter()
// time.Duration method in the chain fills RetryAfterMs when it is not set.
// It returns nil for a nil err.
func AsCallError(err error) *CallError {
	if err == nil {
		return nil
	}
	ce := &CallError{Code: CodeInternal, Message: err.Error()}
	var known *CallError
	var coded interface{ ErrorCode() string }
	switch {
	case errors.As(err, &known):
		ce.Code, ce.RetryAfterMs = known.Code, known.RetryAfterMs
	case errors.As(err, &coded):
		ce.Code = coded.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded):
		ce.Code = CodeTimeout
	case errors.Is(err, context.Canceled):
		ce.Code = CodeCanceled
	}
	if ce.Code == "" {
		ce.Code = CodeInternal
	}
	var retry interface{ RetryAfter() time.Duration }
	if ce.RetryAfterMs == 0 && errors.As(err, &retry) {
		ce.RetryAfterMs = retry.RetryAfter().Milliseconds()
	}
	if ce.RetryAfterMs < 0 {
		ce.RetryAfterMs = 0
	}
	return ce
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
// Every error is a [*CallError]: arguments that are not a JSON object fail
// with "invalid_arguments" before caller runs; a result with isError fails
// with "tool_error" and the tool's text; an error from caller is mapped by
// [AsCallError].
func Invoke(ctx context.Context, caller ToolCaller, name string, argsJSON []byte) (valueJSON []byte, err error) {
	args := bytes.TrimSpace(argsJSON)
	if len(args) == 0 || string(args) == "null" {
		args = []byte("{}")
	} else if args[0] != '{' || !json.Valid(args) {
		return nil, &CallError{Code: CodeInvalidArguments, Message: "arguments must be a JSON object"}
	}
	res, err := caller.CallTool(ctx, name, json.RawMessage(args))
	if err != nil {
		return nil, AsCallError(err)
	}
	if res == nil {
		return nil, &CallError{Code: CodeInternal, Message: "the tool path returned no result"}
	}
	if res.IsError {
		msg, _ := textOf(res.Content)
		if msg == "" {
			msg = "the tool reported an error without a message"
		}
		return nil, &CallError{Code: CodeToolError, Message: msg}
	}
	if v, ok, err := structured(res.StructuredContent); err != nil {
		return nil, &CallError{Code: CodeInternal, Message: "encoding structuredContent: " + err.Error()}
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
		return nil, &CallError{Code: CodeInternal, Message: "encoding content: " + err.Error()}
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
