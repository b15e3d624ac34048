package gateway

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sjson "github.com/segmentio/encoding/json"
)

// The stream caller decodes what an upstream answers a call itself, as
// the MCP SDK decodes it, because the SDK's decoding (jsonrpc.DecodeMessage,
// CallToolResult.UnmarshalJSON) goes through a streaming JSON decoder
// that allocates and zeroes a 32 KiB buffer for every message it reads,
// and a call's answer took two of them. Both decode with
// github.com/segmentio/encoding/json, exact key matching and a nesting
// limit; the tests replay one table of messages and results both ways
// (TestDecodeLikeTheSDK).

// maxJSONDepth is the nesting the SDK accepts in a message it decodes.
const maxJSONDepth = 1000

var errJSONDepth = fmt.Errorf("json: exceeded maximum nesting depth of %d", maxJSONDepth)

// sdkFlags is how the SDK's decoder matches keys: exactly.
const sdkFlags = sjson.DontMatchCaseInsensitiveStructFields

// checkDepth reports errJSONDepth when objects and arrays in data nest
// deeper than maxJSONDepth, as the SDK checks before it decodes.
func checkDepth(data []byte) error {
	if !nestsWithin(data, maxJSONDepth) {
		return errJSONDepth
	}
	return nil
}

// nestsWithin reports whether objects and arrays in data, JSON, nest at
// most limit deep.
func nestsWithin(data []byte, limit int) bool {
	if len(data) <= limit {
		return true // each level takes a byte
	}
	depth := 0
	inString, escaped := false, false
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > limit {
				return false
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return true
}

// wireMessage is a JSON-RPC message as the SDK reads it off the wire.
// Method is raw so that a "method" key is seen even when its value is "".
type wireMessage struct {
	Version string          `json:"jsonrpc"`
	ID      any             `json:"id,omitempty"`
	Method  json.RawMessage `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *jsonrpc.Error  `json:"error,omitempty"`
}

// decodeMessage decodes data as jsonrpc.DecodeMessage does. The raw
// parameters and result it returns point into data.
func decodeMessage(data []byte) (jsonrpc.Message, error) {
	if err := checkDepth(data); err != nil {
		return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	var w wireMessage
	if _, err := sjson.Parse(data, &w, sdkFlags|sjson.DontCopyRawMessage); err != nil {
		return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	if w.Version != "2.0" {
		return nil, fmt.Errorf("invalid message version tag %q; expected %q", w.Version, "2.0")
	}
	id, err := jsonrpc.MakeID(w.ID)
	if err != nil {
		return nil, err
	}
	if len(w.Method) > 0 {
		var method string
		if _, err := sjson.Parse(w.Method, &method, sdkFlags); err != nil {
			return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
		return &jsonrpc.Request{Method: method, ID: id, Params: w.Params}, nil
	}
	if !id.IsValid() {
		return nil, errInvalidRequest
	}
	r := &jsonrpc.Response{ID: id, Result: w.Result}
	if w.Error != nil {
		r.Error = w.Error
	}
	return r, nil
}

// errInvalidRequest is the SDK's error for a message that is neither a
// request nor a response.
var errInvalidRequest = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "invalid request"}

// wireToolResult is the common form of a tools/call result: text content,
// structured content, isError and _meta, and nothing else.
type wireToolResult struct {
	Meta              mcp.Meta    `json:"_meta,omitempty"`
	Content           []*wireText `json:"content"`
	StructuredContent any         `json:"structuredContent,omitempty"`
	IsError           bool        `json:"isError,omitempty"`
}

// wireText is a text content block.
type wireText struct {
	Type        string           `json:"type"`
	Text        string           `json:"text,omitempty"`
	Meta        mcp.Meta         `json:"_meta,omitempty"`
	Annotations *mcp.Annotations `json:"annotations,omitempty"`
}

// errNotCommon says that a result is not of the common form.
var errNotCommon = errors.New("not a result of the common form")

// decodeToolResult decodes data, the result of a tools/call, into res as
// CallToolResult.UnmarshalJSON does. A result of the common form
// (wireToolResult, no key it does not know) is decoded here; any other
// (images, resources, the fields of newer protocol versions, unknown
// keys, errors) by the SDK, whose answer is then the one that counts.
func decodeToolResult(data []byte, res *mcp.CallToolResult) error {
	if err := decodeCommonResult(data, res); err == nil {
		return nil
	}
	return res.UnmarshalJSON(data)
}

// decodeCommonResult decodes a result of the common form, or returns an
// error without touching res.
func decodeCommonResult(data []byte, res *mcp.CallToolResult) error {
	if err := checkDepth(data); err != nil {
		return err
	}
	var w wireToolResult
	if _, err := sjson.Parse(data, &w, sdkFlags|sjson.DisallowUnknownFields); err != nil {
		return err
	}
	content := make([]mcp.Content, 0, len(w.Content))
	for _, c := range w.Content {
		if c == nil || c.Type != "text" {
			return errNotCommon
		}
		content = append(content, &mcp.TextContent{Text: c.Text, Meta: c.Meta, Annotations: c.Annotations})
	}
	*res = mcp.CallToolResult{Meta: w.Meta, Content: content, StructuredContent: w.StructuredContent, IsError: w.IsError}
	return nil
}
