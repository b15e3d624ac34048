package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sse "github.com/tmaxmax/go-sse"
)

// streamCaller calls the tools of a streamable HTTP upstream with a POST
// that the calling goroutine makes and reads itself, on the session the MCP
// SDK opened. The SDK's client would hand the call through five goroutines
// (the transport's writer and reader, the response stream's reader, the
// session's reader, the waiting caller); on a small machine each hand-off
// wakes a thread. What doing without them saves is measured in
// benchmarks/README.md.
//
// Everything other than the call's own response that arrives on its
// stream (progress, log messages, the upstream's sampling, elicitation
// and roots requests) is handled by the handlers the SDK's session would
// call for it (upstreamincoming.go). Failures that make the SDK end a
// session end this one too (see broken).
type streamCaller struct {
	url      *url.URL
	rt       http.RoundTripper // a connPool, or the session's http.Transport (HTTPS, proxies)
	header   http.Header       // of every POST; never modified
	session  *mcp.ClientSession
	handle   mcp.MethodHandler // the session's client's handlers (clientHandler)
	fail     func(error)       // ends the session, for the failures that end the SDK's
	doubt    func(error)       // has the session pinged, for a refusal that may end it
	seq      atomic.Uint64
	ctx      context.Context // ends when the caller is closed
	stop     context.CancelFunc
	requests upstreamRequests
}

// newStreamCaller returns a caller for session, whose client handles
// what its server sends with handle, or nil when the session's protocol
// version is newer than the ones whose HTTP headers and results it knows
// (2026-07-28 added per-request headers and multi round-trip results,
// which only the SDK's own client handles).
func newStreamCaller(endpoint string, transport *http.Transport, headers map[string]string, session *mcp.ClientSession, handle mcp.MethodHandler, fail, doubt func(error)) *streamCaller {
	init := session.InitializeResult()
	u, err := url.Parse(endpoint)
	if init == nil || init.ProtocolVersion > upstreamProtocolVersion || err != nil {
		return nil
	}
	// The calls to a plain-HTTP server go through a connPool, unless the
	// server is reached through a proxy (HTTP_PROXY and the like), which
	// http.Transport handles, as it handles HTTPS.
	var rt http.RoundTripper = transport
	proxied := false
	if transport.Proxy != nil {
		pu, err := transport.Proxy(&http.Request{URL: u})
		proxied = err != nil || pu != nil
	}
	if cp := newConnPool(u); cp != nil && !proxied {
		rt = cp
	}
	// The headers the SDK's client sends with a call of this session.
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	h.Set("Mcp-Protocol-Version", init.ProtocolVersion)
	if sid := session.ID(); sid != "" {
		h.Set("Mcp-Session-Id", sid)
	}
	setHeaders(h, headers)
	ctx, stop := context.WithCancel(context.Background())
	return &streamCaller{url: u, rt: rt, header: h, session: session, handle: handle, fail: fail, doubt: doubt, ctx: ctx, stop: stop}
}

// close cancels the upstream's requests being answered and closes the
// connections of the caller's own pool.
func (c *streamCaller) close() {
	c.stop()
	if cp, ok := c.rt.(*connPool); ok {
		cp.close()
	}
}

// maxEventSize bounds one event of a call's stream, as the SDK's client
// does by default.
const maxEventSize = mcp.DefaultMaxEventSize

// errNoResponse is what a call gets when its stream ends without its
// response; the SDK's client reports the same.
var errNoResponse = errors.New("request terminated without response")

// callTool calls the tool that params names and returns its result, both
// decoded and as the upstream encoded it. A protocol error of the upstream
// is returned as the *jsonrpc.Error it sent.
func (c *streamCaller) callTool(ctx context.Context, params *mcp.CallToolParams) (*mcp.CallToolResult, json.RawMessage, error) {
	if params.Arguments == nil {
		params.Arguments = map[string]any{} // as the SDK: never null
	}
	p, err := json.Marshal(params)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the call: %w", err)
	}
	// String IDs: the SDK numbers its own requests on this session, so
	// the two never collide.
	n := strconv.FormatUint(c.seq.Add(1), 10)
	id, _ := jsonrpc.MakeID(callIDPrefix + n)
	body := make([]byte, 0, len(p)+80)
	body = append(body, `{"jsonrpc":"2.0","id":"`+callIDPrefix...)
	body = append(body, n...)
	body = append(body, `","method":"tools/call","params":`...)
	body = append(body, p...)
	body = append(body, '}')
	// The request runs under a context of its own, which the call's
	// cancels until the response is in: the rest of the stream is read
	// after the call has returned (finish).
	rctx, end := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, end)
	resp, err := c.post(rctx, body)
	var msg *jsonrpc.Response
	if err == nil {
		var rest bool
		msg, rest, err = c.response(ctx, resp, id)
		if stop() && rest {
			go finish(resp.Body, end)
		} else {
			resp.Body.Close()
			end()
		}
	} else {
		stop()
		end()
	}
	if err != nil {
		if ctx.Err() != nil {
			// Cancelled while the request was on its way or the
			// upstream at work: tell it, as the SDK's client does.
			c.cancelled(id, context.Cause(ctx))
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	if msg.Error != nil {
		return nil, nil, msg.Error
	}
	var res mcp.CallToolResult
	if err := decodeToolResult(msg.Result, &res); err != nil {
		return nil, nil, fmt.Errorf("decoding the result: %w", err)
	}
	return &res, msg.Result, nil
}

// callIDPrefix starts the IDs of the calls a streamCaller makes.
const callIDPrefix = "toolgate-"

// post sends body, a JSON-RPC message, with the session's headers. The
// request is built as http.NewRequest would, from the URL and headers
// prepared once per session.
func (c *streamCaller) post(ctx context.Context, body []byte) (*http.Response, error) {
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           c.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        c.header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		GetBody:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
		ContentLength: int64(len(body)),
		Host:          c.url.Host,
	}
	return c.rt.RoundTrip(req.WithContext(ctx))
}

// response reads resp, the answer to the call with id, until that call's
// response, and handles every other message (incoming). It checks the
// answer as the SDK's client does. rest is whether the body holds more of
// the stream, which the caller reads to its end or closes.
func (c *streamCaller) response(ctx context.Context, resp *http.Response, id jsonrpc.ID) (msg *jsonrpc.Response, rest bool, err error) {
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return nil, false, c.refused(resp)
	}
	switch ct := mediaType(resp.Header.Get("Content-Type")); ct {
	case "application/json":
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxEventSize+1))
		if err != nil {
			return nil, false, err
		}
		if len(data) > maxEventSize {
			return nil, false, c.broken(fmt.Errorf("the response is larger than %d bytes", maxEventSize))
		}
		msg, err := decodeMessage(data)
		if err != nil {
			return nil, false, c.broken(fmt.Errorf("decoding the response: %w", err))
		}
		if r, ok := msg.(*jsonrpc.Response); ok && r.ID == id {
			return r, false, nil
		}
		c.incoming(ctx, msg)
		return nil, false, errNoResponse
	case "text/event-stream":
		msg, err := c.stream(ctx, resp.Body, id)
		return msg, err == nil, err
	default:
		return nil, false, fmt.Errorf("unsupported content type %q", ct)
	}
}

// stream reads the events of a call's stream up to the call's response.
func (c *streamCaller) stream(ctx context.Context, body io.Reader, id jsonrpc.ID) (*jsonrpc.Response, error) {
	lastEventID := ""
	for ev, err := range sse.Read(body, &sse.ReadConfig{MaxEventSize: maxEventSize}) {
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, c.broken(fmt.Errorf("reading the event stream: %w", err))
		}
		lastEventID = ev.LastEventID
		// Events without data prime a resumable stream; events of other
		// types are not messages (as in the SDK).
		if ev.Data == "" || (ev.Type != "" && ev.Type != "message") {
			continue
		}
		msg, err := decodeMessage([]byte(ev.Data))
		if err != nil {
			return nil, c.broken(fmt.Errorf("decoding an event: %w", err))
		}
		if r, ok := msg.(*jsonrpc.Response); ok && r.ID == id {
			return r, nil
		}
		c.incoming(ctx, msg)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if lastEventID != "" {
		// The SDK's client would resume such a stream if it retried; the
		// gateway's sessions do not retry (MaxRetries), and a stream they
		// cannot resume ends the session.
		return nil, c.broken(fmt.Errorf("the event stream ended before the response (last event %q)", lastEventID))
	}
	return nil, errNoResponse
}

// finish reads the rest of a call's stream, which its end follows within
// microseconds, so that the HTTP connection can serve another call, then
// ends the request. A stream still open drainGrace later is cut.
func finish(body io.ReadCloser, end context.CancelFunc) {
	t := time.AfterFunc(drainGrace, end)
	_, _ = io.Copy(io.Discard, body)
	t.Stop()
	body.Close()
	end()
}

// refused returns the error for an answer with a status other than 2xx:
// the JSON-RPC error in its body, if any, else the status. A temporary
// answer (502, 503, 504, 429) fails the call only, and 404 for a
// session's ID ends the session (the server has ended it), as in the
// SDK's client. Any other status the SDK's client takes for the end of
// the session; the gateway asks the server first, with a ping (doubt),
// and ends the session only when that fails too: the answer may refuse
// just this one message (over the server's body limit, or a message its
// parser rejects), which one caller can make happen at will, and the
// session is every caller's.
func (c *streamCaller) refused(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if msg, _ := decodeMessage(data); msg != nil {
		if r, ok := msg.(*jsonrpc.Response); ok && r.Error != nil {
			return r.Error
		}
	}
	err := fmt.Errorf("%s", resp.Status)
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusTooManyRequests:
		return err
	case http.StatusNotFound:
		if c.session.ID() != "" {
			return c.broken(fmt.Errorf("the server no longer knows session %s: %w", c.session.ID(), err))
		}
	}
	c.doubt(err)
	return err
}

// broken ends the session for err and returns err.
func (c *streamCaller) broken(err error) error {
	c.fail(err)
	return err
}

// cancelledTimeout bounds the notification that tells the upstream a call
// was cancelled.
const cancelledTimeout = 5 * time.Second

// cancelled tells the upstream that the call with id was cancelled, as the
// SDK's client does.
func (c *streamCaller) cancelled(id jsonrpc.ID, cause error) {
	p, err := json.Marshal(&mcp.CancelledParams{RequestID: id.Raw(), Reason: cause.Error()})
	if err != nil {
		return
	}
	body, err := jsonrpc.EncodeMessage(&jsonrpc.Request{Method: "notifications/cancelled", Params: p})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cancelledTimeout)
	defer cancel()
	resp, err := c.post(ctx, body)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// mediaType is a Content-Type without its parameters ("" when it does not
// parse).
func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}
