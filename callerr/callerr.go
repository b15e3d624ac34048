// Package callerr is the vocabulary of a call that was refused or failed:
// one error type, [Error], and the codes it carries, shared by the
// gateway's tool path (which refuses calls), the bindings (which turn a
// script's call into a tool call and back) and the sandbox (which hands
// a refusal to the script as an Error with a .code).
//
// It is a leaf: it imports nothing of toolgate and no transport, so that
// each of those packages can use it without knowing the others.
package callerr

import (
	"encoding/json"
	"time"
)

// Codes of an [Error]. A script sees the code as the .code of the Error its
// call rejects with, so that it can branch on it.
const (
	// NotFound: no such tool, or one the caller may not see; the two are
	// indistinguishable, so that filters leak nothing.
	NotFound = "not_found"
	// Denied: a refusal whose reason the caller may know (an IP or key
	// rule, the fetch policy).
	Denied = "denied"
	// RateLimited: a rate limit refused the call; RetryAfter says when to
	// try again.
	RateLimited = "rate_limited"
	// Overloaded: the gateway is saturated (limits.maxInFlightCalls,
	// codeMode.maxConcurrentExecutions) or cannot check rate limits now;
	// retryable.
	Overloaded = "overloaded"
	// ShuttingDown: the gateway is draining and takes no new work;
	// retryable elsewhere.
	ShuttingDown = "shutting_down"
	// Timeout: the call ran out of time.
	Timeout = "timeout"
	// Canceled: the call was canceled (the script ended, the client
	// cancelled, or the gateway is stopping).
	Canceled = "canceled"
	// Unavailable: the upstream server cannot be reached, or the call
	// cannot be recorded in the audit log.
	Unavailable = "unavailable"
	// ToolError: the tool ran and reported an error (isError); the message
	// is its text.
	ToolError = "tool_error"
	// InvalidArguments: the arguments are not a JSON object.
	InvalidArguments = "invalid_arguments"
	// Limit: a limit of the script's execution refused the call (too many
	// calls, arguments or responses too large).
	Limit = "limit"
	// FetchError: a script's fetch request failed on the network.
	FetchError = "fetch_error"
	// Internal: anything else.
	Internal = "internal"
)

// Error is a call that was refused or failed. Its message is meant for
// the caller (a client, or a script and the agent that wrote it): it never
// holds internals, and for a tool hidden by a filter it is the same as for
// a tool that does not exist.
type Error struct {
	// Code says what happened: one of the codes above, or a code passed on
	// from elsewhere.
	Code string
	// Message says it in words.
	Message string
	// RetryAfter, when positive, is when a retry may succeed.
	RetryAfter time.Duration
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// RetryAfterMs is RetryAfter in whole milliseconds, rounded up (a caller
// that waits that long finds the call allowed); 0 when there is no hint.
func (e *Error) RetryAfterMs() int64 {
	if e.RetryAfter <= 0 {
		return 0
	}
	return int64((e.RetryAfter + time.Millisecond - 1) / time.Millisecond)
}

// MarshalJSON encodes e as a script receives it:
// {"code","message","retryAfterMs"}, the last only with a hint.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs int64  `json:"retryAfterMs,omitempty"`
	}{e.Code, e.Message, e.RetryAfterMs()})
}
