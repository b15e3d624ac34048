package gateway

import (
	"reflect"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestDecodeLikeTheSDK decodes one table of JSON-RPC messages with
// decodeMessage and with the SDK's jsonrpc.DecodeMessage, and one table of
// tools/call results with decodeToolResult and CallToolResult.UnmarshalJSON,
// and expects the same values (unexported fields included) or an error
// from both. The results of the common form must be decoded without the
// SDK (common).
func TestDecodeLikeTheSDK(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	messages := []struct{ name, data string }{
		{"response, string id", `{"jsonrpc":"2.0","id":"toolgate-1","result":{"content":[]}}`},
		{"response, number id", `{"jsonrpc":"2.0","id":7,"result":{}}`},
		{"response, fractional id", `{"jsonrpc":"2.0","id":7.5,"result":{}}`},
		{"error response", `{"jsonrpc":"2.0","id":"a","error":{"code":-32042,"message":"refused","data":{"x":[1,2]}}}`},
		{"error and result", `{"jsonrpc":"2.0","id":"a","result":{},"error":{"code":1,"message":"m"}}`},
		{"request", `{"jsonrpc":"2.0","id":3,"method":"roots/list","params":{"_meta":{"k":"v"}}}`},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}`},
		{"notification, null params", `{"jsonrpc":"2.0","method":"notifications/message","params":null}`},
		{"empty method", `{"jsonrpc":"2.0","id":1,"method":""}`},
		{"method not a string", `{"jsonrpc":"2.0","id":1,"method":5}`},
		{"keys in another case", `{"jsonrpc":"2.0","ID":1,"Method":"ping","id":2,"result":{}}`},
		{"repeated key", `{"jsonrpc":"2.0","id":1,"id":"two","result":1}`},
		{"escapes", `{"jsonrpc":"2.0","id":"\u0074g\"\\","result":{"t":"\ud83d\ude00 \n"}}`},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"result":{}} {"more":1}`},
		{"trailing garbage", `{"jsonrpc":"2.0","id":1,"result":{}}xyz`},
		{"leading space", " \n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}"},
		{"no version", `{"id":1,"result":{}}`},
		{"wrong version", `{"jsonrpc":"1.0","id":1,"result":{}}`},
		{"id an object", `{"jsonrpc":"2.0","id":{},"result":{}}`},
		{"id a bool", `{"jsonrpc":"2.0","id":true,"result":{}}`},
		{"response without id", `{"jsonrpc":"2.0","result":{}}`},
		{"response, null id", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`},
		{"error not an object", `{"jsonrpc":"2.0","id":1,"error":"bad"}`},
		{"params not JSON", `{"jsonrpc":"2.0","id":1,"method":"ping","params":}`},
		{"not an object", `[1,2]`},
		{"not JSON", `{not json`},
		{"cut short", `{"jsonrpc":"2.0","id":1,"result":{"a":`},
		{"empty", ``},
		{"only space", "  \n"},
		{"nested as deep as allowed", `{"jsonrpc":"2.0","id":1,"result":` + deep(999) + `}`},
		{"nested too deep", `{"jsonrpc":"2.0","id":1,"result":` + deep(1000) + `}`},
		{"brackets in strings", `{"jsonrpc":"2.0","id":1,"result":"` + strings.Repeat("[", 2000) + `"}`},
	}
	for _, tc := range messages {
		t.Run("message/"+tc.name, func(t *testing.T) {
			got, err := decodeMessage([]byte(tc.data))
			want, wantErr := jsonrpc.DecodeMessage([]byte(tc.data))
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("decodeMessage: %#v, %v; the SDK: %#v, %v", got, err, want, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decodeMessage = %#v, the SDK %#v", got, want)
			}
		})
	}

	results := []struct {
		name   string
		data   string
		common bool // decoded without the SDK
	}{
		{"text", `{"content":[{"type":"text","text":"hello"}]}`, true},
		{"text and structured", `{"content":[{"type":"text","text":"{\"text\":\"hi\"}"}],"structuredContent":{"text":"hi","n":1.5,"big":12345678901234567890,"l":[true,null]}}`, true},
		{"tool error", `{"content":[{"type":"text","text":"it failed"}],"isError":true}`, true},
		{"meta and annotations", `{"_meta":{"a":{"b":1}},"content":[{"type":"text","text":"t","_meta":{"m":"v"},"annotations":{"audience":["user"],"priority":0.5,"lastModified":"2026-01-01T00:00:00Z"}}]}`, true},
		{"several texts", `{"content":[{"type":"text","text":"a"},{"type":"text","text":""},{"type":"text"}]}`, true},
		{"empty content", `{"content":[]}`, true},
		{"no content", `{}`, true},
		{"null content", `{"content":null}`, true},
		{"structured array", `{"content":[],"structuredContent":[1,"a"]}`, true},
		{"structured null", `{"content":[],"structuredContent":null}`, true},
		{"isError false", `{"content":[],"isError":false}`, true},
		{"repeated key", `{"content":[{"type":"text","text":"a"}],"content":[{"type":"text","text":"b"}]}`, true},
		{"trailing data", `{"content":[]} {"x":1}`, true},
		{"image", `{"content":[{"type":"image","data":"aGk=","mimeType":"image/png"}]}`, false},
		{"text then image", `{"content":[{"type":"text","text":"a"},{"type":"image","data":"aGk=","mimeType":"image/png"}]}`, false},
		{"embedded resource", `{"content":[{"type":"resource","resource":{"uri":"file:///a","text":"x"}}]}`, false},
		{"resource link", `{"content":[{"type":"resource_link","uri":"file:///a","name":"a"}]}`, false},
		{"unknown content type", `{"content":[{"type":"video"}]}`, false},
		{"null content block", `{"content":[null]}`, false},
		{"unknown key", `{"content":[],"extra":1}`, false},
		{"unknown key in a block", `{"content":[{"type":"text","text":"a","extra":1}]}`, false},
		{"unknown annotation", `{"content":[{"type":"text","text":"a","annotations":{"x":1}}]}`, false},
		{"keys in another case", `{"Content":[{"type":"text","text":"a"}],"IsError":true}`, false},
		{"resultType", `{"content":[],"resultType":"complete"}`, false},
		{"input requests", `{"content":[],"resultType":"input_required","inputRequests":{},"requestState":"s"}`, false},
		{"content not a list", `{"content":"text"}`, false},
		{"text not a string", `{"content":[{"type":"text","text":5}]}`, false},
		{"not an object", `[]`, false},
		{"not JSON", `{"content":[`, false},
		{"nested too deep", `{"content":[],"structuredContent":` + deep(1000) + `}`, false},
	}
	for _, tc := range results {
		t.Run("result/"+tc.name, func(t *testing.T) {
			var got, want, common mcp.CallToolResult
			err := decodeToolResult([]byte(tc.data), &got)
			wantErr := want.UnmarshalJSON([]byte(tc.data))
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("decodeToolResult: %+v, %v; the SDK: %+v, %v", got, err, want, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decodeToolResult = %#v, the SDK %#v", got, want)
			}
			if isCommon := decodeCommonResult([]byte(tc.data), &common) == nil; isCommon != tc.common {
				t.Errorf("decoded without the SDK: %v, want %v", isCommon, tc.common)
			}
		})
	}
}

// BenchmarkDecodeToolResponse decodes the answer to a tools/call (the
// echo tool's) as the stream caller does and as the SDK does.
func BenchmarkDecodeToolResponse(b *testing.B) {
	data := []byte(`{"jsonrpc":"2.0","id":"toolgate-1","result":{"content":[{"type":"text","text":"hello"}],"structuredContent":{"server":"echo","text":"hello"}}}`)
	b.Run("toolgate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msg, err := decodeMessage(data)
			if err != nil {
				b.Fatal(err)
			}
			var res mcp.CallToolResult
			if err := decodeToolResult(msg.(*jsonrpc.Response).Result, &res); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msg, err := jsonrpc.DecodeMessage(data)
			if err != nil {
				b.Fatal(err)
			}
			var res mcp.CallToolResult
			if err := res.UnmarshalJSON(msg.(*jsonrpc.Response).Result); err != nil {
				b.Fatal(err)
			}
		}
	})
}
