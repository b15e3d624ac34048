package mcpclient

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestHeaderTransport(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Authorization", "Bearer old")
	hc := &http.Client{Transport: &HeaderTransport{Headers: Bearer("k1"), Base: http.DefaultTransport}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Get("Authorization") != "Bearer k1" {
		t.Errorf("Authorization = %q, want the transport's", got.Get("Authorization"))
	}
	if req.Header.Get("Authorization") != "Bearer old" {
		t.Error("the caller's request was modified")
	}
	if Bearer("") != nil {
		t.Error("Bearer(\"\") sends a header")
	}
}

func TestResultText(t *testing.T) {
	res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "a"}, &mcp.ImageContent{MIMEType: "image/png"}, &mcp.TextContent{Text: "b"}}}
	if got := ResultText(res); got != "ab" {
		t.Errorf("ResultText = %q, want %q", got, "ab")
	}
}
