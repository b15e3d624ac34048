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
	// RawParams are a tools/call's params as sent, when Params holds them.
	RawParams json.RawMessage
	// Calls are the ids (as sent) of the requests in the body that expect
	// an answer (with Batch, those of a batch's requests); callIDs reads
	// them.
	Calls []json.RawMessage
	Batch bool
	// MetaVersion is the protocol version a single request carries in its
	// _meta (protocol 2026-07-28 and later), "" for none.
	MetaVersion string
	// InitParams are the params of an initialize request, as sent.
	InitParams json.RawMessage
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

// rpcSingle is a single JSON-RPC message as the MCP SDK decodes it
// (jsonrpc.DecodeMessage): its result and error are read too, so that a
// message the SDK cannot decode (an "error" that is no error object) is
// one the access layer cannot either.
type rpcSingle struct {
	rpcWire
	Result json.RawMessage `json:"result"`
	Error  *jsonrpc.Error  `json:"error"`
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
	if checkDepth(trimmed) != nil {
		return m, nil // the SDK refuses it (its decoder's nesting limit)
	}
	switch trimmed[0] {
	case '{':
		var w rpcSingle
		shaped, err := parseOne(trimmed, &w)
		if err != nil {
			return m, err
		}
		if !shaped {
			// The SDK cannot decode it either (jsonrpc.DecodeMessage): it
			// refuses the message, which the access layer leaves to it.
			return m, nil
		}
		m.Method = wireMethod(w.Method)
		if len(w.ID) > 0 && m.Method != "" {
			m.Calls = []json.RawMessage{w.ID}
		}
		switch {
		case m.Method == "tools/call" && len(w.Params) > 0 && w.Params[0] == '{':
			if _, err := sdkParse(w.Params, &m.Params); err != nil {
				// Not an object of that shape: the handler refuses it.
				m.Params = mcp.CallToolParamsRaw{}
				m.MetaVersion = requestMetaVersion(w.Params)
			} else {
				m.Version, m.ID, m.RawParams = w.Version, w.ID, w.Params
				m.MetaVersion, _ = m.Params.Meta[metaProtocolVersion].(string)
			}
		case m.Method == "initialize":
			m.InitParams = w.Params
		case m.Method != "":
			m.MetaVersion = requestMetaVersion(w.Params)
		}
		return m, nil
	case '[':
		var batch []rpcWire
		if _, err := parseOne(trimmed, &batch); err != nil {
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

// parseOne decodes the one JSON value b must hold into v. A value of the
// wrong shape (a string where an object must be) is no error: the decoding
// goes on past it, shaped is false, and the handler refuses the message.
func parseOne(b []byte, v any) (shaped bool, err error) {
	rest, err := sdkParse(b, v)
	if err != nil {
		if _, ok := err.(*sjson.UnmarshalTypeError); ok {
			return false, nil
		}
		return false, &peekError{code: codeParseError, msg: "the request body is not JSON: " + err.Error()}
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return false, &peekError{code: codeParseError, msg: "the request body holds more than one JSON value"}
	}
	return true, nil
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
