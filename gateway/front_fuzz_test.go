package gateway

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// FuzzStatelessCheck: checkStateless gives the same answer whether it
// reads a tools/call from what the access layer already decoded (the
// common case) or decodes the body again as the SDK does (decodeMessage,
// which must agree with jsonrpc.DecodeMessage), for any body and headers.
func FuzzStatelessCheck(f *testing.F) {
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"},` + meta + `}}`,
		`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"demo__echo","arguments":{"n":1e400},` + meta + `}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo",` + meta + `},"error":5}`,
		`{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"x",` + meta + `}}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"tools/call","params":{"name":"x",` + meta + `}}`,
		`{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"x",` + meta + `}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":5}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1,{"a":-0.5e-3}]}}`,
	} {
		for _, name := range []string{"demo__echo", "x", ""} {
			f.Add(body, "2026-07-28", "tools/call", name)
		}
		f.Add(body, "2025-11-25", "tools/call", "x")
		f.Add(body, "", "", "")
	}
	f.Fuzz(func(t *testing.T, body, version, method, name string) {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		for k, v := range map[string]string{protocolVersionHeader: version, methodHeader: method, nameHeader: name} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		// The decoding the check falls back on is the SDK's.
		own, err := decodeMessage([]byte(strings.TrimSpace(body)))
		sdk, sdkErr := jsonrpc.DecodeMessage([]byte(strings.TrimSpace(body)))
		if (err == nil) != (sdkErr == nil) || !reflect.DeepEqual(own, sdk) {
			t.Fatalf("body %q: decodeMessage = %#v, %v; the SDK's %#v, %v", body, own, err, sdk, sdkErr)
		}
		msg, _ := peekMessage([]byte(body))
		peeked := checkStateless(r, []byte(body), &msg)
		decoded := checkStateless(r, []byte(body), &rpcMessage{})
		if diff := cmp.Diff(refusalText(decoded), refusalText(peeked)); diff != "" {
			t.Fatalf("body %q: read from the access layer's decoding (+) and decoded again (-) differ:\n%s", body, diff)
		}
	})
}

// refusalText is r as the client reads it.
func refusalText(r *messageRefusal) string {
	if r == nil {
		return "(none)"
	}
	w := httptest.NewRecorder()
	r.write(w)
	return w.Result().Status + " " + w.Body.String()
}

// TestStatelessCheckReadsThePeekedCall: a well-formed tools/call of
// protocol 2026-07-28 is checked from what the access layer decoded, not
// decoded a second time.
func TestStatelessCheckReadsThePeekedCall(t *testing.T) {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"demo__echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	msg, err := peekMessage([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	req, version, peeked := statelessRequest([]byte(body), &msg)
	if !peeked || req == nil || req.Method != "tools/call" || version != "2026-07-28" {
		t.Fatalf("statelessRequest = %+v, %q, peeked %v; want the peeked tools/call of 2026-07-28", req, version, peeked)
	}
}
