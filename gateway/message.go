package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sjson "github.com/segmentio/encoding/json"
)

// The access layer reads a POST's JSON-RPC message before the MCP SDK does
// (its method, a tools/call's parameters, the ids of its calls), and must
// read it exactly as the SDK will: with the SDK's JSON decoder and rules,
// refusing what the two could read differently.

// rpcMessage is the part of a JSON-RPC request the access layer reads.
// For a tools/call it holds the parameters, and the version tag and id the
// access layer needs to answer the call itself (fastpath.go).
type rpcMessage struct {
	Method  string
	Version string
	ID      json.RawMessage
	Params  mcp.CallToolParamsRaw
	// Calls are the ids (as sent) of the requests in the body that expect
	// an answer (with Batch, those of a batch's requests); callIDs reads
	// them.
	Calls []json.RawMessage
	Batch bool
}

// peekError is a body the access layer refuses before the MCP handler:
// the handler must never act on a message the access layer read
// differently.
type peekError struct {
	code int
	msg  string
}

func (e *peekError) Error() string { return e.msg }

// rpcWire is the top level of a JSON-RPC message as the MCP SDK decodes it.
type rpcWire struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// sdkParse decodes as the MCP SDK does (its internal/json): with
// github.com/segmentio/encoding/json and exact key matching, so that a key
// in another case ("Method") or a repeated key means the same to both. The
// raw fields point into the body instead of copying it.
func sdkParse(b []byte, v any) (rest []byte, err error) {
	return sjson.Parse(b, v, sjson.DontMatchCaseInsensitiveStructFields|sjson.ZeroCopy)
}

// peekMessage returns the method, tool name and call ids of the message in
// a POST body, as the MCP handler will read them. A body that is not one JSON
// value (the handler's decoder would act on the first value and ignore the
// rest) is a parse error, and a batch that holds an initialize request an
// invalid request (MCP does not allow it, and the session cap is checked
// on a single initialize); both are *peekError. Anything else (an empty
// body, a message of the wrong shape, another batch) is left to the MCP
// handler, with an empty method when the body is no single request.
func peekMessage(body []byte) (rpcMessage, error) {
	var m rpcMessage
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return m, nil
	}
	switch trimmed[0] {
	case '{':
		var w rpcWire
		if err := parseOne(trimmed, &w); err != nil {
			return m, err
		}
		m.Method = wireMethod(w.Method)
		if len(w.ID) > 0 && m.Method != "" {
			m.Calls = []json.RawMessage{w.ID}
		}
		if m.Method == "tools/call" && len(w.Params) > 0 && w.Params[0] == '{' {
			if _, err := sdkParse(w.Params, &m.Params); err != nil {
				// Not an object of that shape: the handler refuses it.
				m.Params = mcp.CallToolParamsRaw{}
			} else {
				m.Version, m.ID = w.Version, w.ID
			}
		}
		return m, nil
	case '[':
		var batch []rpcWire
		if err := parseOne(trimmed, &batch); err != nil {
			return m, err
		}
		m.Batch = true
		for _, w := range batch {
			method := wireMethod(w.Method)
			if method == "initialize" {
				return m, &peekError{code: codeInvalidRequest, msg: "initialize must not be part of a JSON-RPC batch"}
			}
			if len(w.ID) > 0 && method != "" {
				m.Calls = append(m.Calls, w.ID)
			}
		}
		return m, nil
	default:
		if !json.Valid(trimmed) {
			return m, &peekError{code: codeParseError, msg: "the request body is not JSON"}
		}
		return m, nil
	}
}

// callIDs returns the ids of m's calls as the SDK reads them (null and
// other values are no call's).
func (m *rpcMessage) callIDs() []jsonrpc.ID {
	ids := make([]jsonrpc.ID, 0, len(m.Calls))
	for _, raw := range m.Calls {
		if id, ok := requestID(raw); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// wireMethod is the method a raw "method" value names; "" when it is not a
// string (the handler refuses such a message).
func wireMethod(raw json.RawMessage) string {
	var method string
	if len(raw) > 0 && raw[0] == '"' {
		_, _ = sdkParse(raw, &method)
	}
	return method
}

// parseOne decodes the one JSON value b must hold into v.
func parseOne(b []byte, v any) error {
	rest, err := sdkParse(b, v)
	if err != nil {
		if _, ok := err.(*sjson.UnmarshalTypeError); ok {
			return nil // a value of the wrong shape: the handler refuses it
		}
		return &peekError{code: codeParseError, msg: "the request body is not JSON: " + err.Error()}
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return &peekError{code: codeParseError, msg: "the request body holds more than one JSON value"}
	}
	return nil
}

// requestID is the id of a request as the SDK reads it: a string, or a
// number taken as an integer. ok is false for none, null and other types.
func requestID(raw json.RawMessage) (jsonrpc.ID, bool) {
	if len(raw) == 0 {
		return jsonrpc.ID{}, false
	}
	var v any
	if raw[0] == '"' {
		var s string
		if _, err := sdkParse(raw, &s); err != nil {
			return jsonrpc.ID{}, false
		}
		v = s
	} else {
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return jsonrpc.ID{}, false
		}
		v = f
	}
	id, err := jsonrpc.MakeID(v)
	return id, err == nil && id.IsValid()
}

// idText is a request id as JSON, the form notifications/cancelled names it
// in.
func idText(id jsonrpc.ID) string {
	b, _ := json.Marshal(id.Raw())
	return string(b)
}
