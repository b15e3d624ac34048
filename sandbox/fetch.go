package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/clip"
)

// FetchPolicy enables the global fetch for one execution and bounds it.
// Requests go out from the host with Go's net/http, only over http and
// https, never through a proxy, and only to public unicast addresses: the
// address actually dialled is checked (also after every redirect), so DNS
// rebinding and numeric host spellings cannot reach loopback, private
// (RFC 1918, fc00::/7), link-local, CGNAT, multicast, unspecified, reserved
// or cloud metadata addresses. The script's remaining time is the deadline.
type FetchPolicy struct {
	// AllowHosts, when not empty, lists the host names a script may fetch,
	// as path.Match globs matched against the lower-case host name:
	// "api.example.com", "*.example.com" (which also matches deeper names).
	AllowHosts []string
	// MaxResponseBytes caps a response body; a larger body rejects the fetch
	// with code "limit". Default 1 MiB.
	MaxResponseBytes int64
	// MaxRequests caps the requests per execution (redirects excluded);
	// more reject with code "limit". Default 20.
	MaxRequests int
	// BeforeRequest, when set, is called once per request (redirects
	// excluded) whose URL passed the scheme and AllowHosts rules, before
	// anything is dialled: the place for rate limits. An error refuses the
	// request: a *callerr.Error rejects the fetch with its code, message and
	// retryAfterMs; any other error rejects it with code "denied". A request
	// it refuses is not reported to OnRequest: BeforeRequest records its own
	// refusals. It may be called concurrently.
	BeforeRequest func(ctx context.Context, method, host string) error
	// OnRequest, when set, is called once per request for auditing, with
	// status 0 when no response arrived. It may be called concurrently.
	OnRequest func(method, host string, status int, bytes int64)

	// allowLoopback lets tests reach an httptest server; it permits only
	// 127.0.0.0/8 and ::1 and cannot be set outside this package.
	allowLoopback bool
}

func (p *FetchPolicy) maxRequests() int {
	if p.MaxRequests > 0 {
		return p.MaxRequests
	}
	return defaultFetchCount
}

func (p *FetchPolicy) maxBytes() int64 {
	if p.MaxResponseBytes > 0 {
		return p.MaxResponseBytes
	}
	return defaultFetchBytes
}

// fetchRequest is a script's fetch as the bootstrap sends it.
type fetchRequest struct {
	URL     string      `json:"url"`
	Method  string      `json:"method"`
	Headers [][2]string `json:"headers"`
	Body    *string     `json:"body"`
}

// fetchResponse is what the bootstrap turns into a Response object.
type fetchResponse struct {
	Status     int         `json:"status"`
	StatusText string      `json:"statusText"`
	URL        string      `json:"url"`
	Redirected bool        `json:"redirected"`
	Headers    [][2]string `json:"headers"`
	Body       string      `json:"body"`
}

// errBlocked marks a request refused by the policy.
var errBlocked = errors.New("blocked by the sandbox fetch policy")

// maxURLInMessage is how much of a URL an error message repeats.
const maxURLInMessage = 256

func (x *execution) doFetch(op hostOp) hostDone {
	p := x.req.Fetch
	fr := op.fetch
	if fr.Method == "" {
		fr.Method = http.MethodGet
	}
	host := ""
	u, err := url.Parse(fr.URL)
	if err != nil {
		err = fmt.Errorf("invalid URL: %w", err)
	} else {
		host = u.Hostname()
		err = p.checkURL(u)
	}
	if err == nil && p.BeforeRequest != nil {
		if err := p.before(x.ctx, fr.Method, host); err != nil {
			var ce *callerr.Error
			if !errors.As(err, &ce) {
				ce = &callerr.Error{Code: callerr.Denied, Message: err.Error()}
			}
			return hostDone{set: rejectWith(op.id, &callerr.Error{Code: ce.Code, Message: "fetch " + clip.Text(fr.URL, maxURLInMessage) + ": " + ce.Message, RetryAfter: ce.RetryAfter})}
		}
	}
	var resp *fetchResponse
	var n int64
	if err == nil {
		resp, n, err = p.do(x.ctx, u, fr)
	}
	status := 0
	if resp != nil {
		status = resp.Status
	}
	if p.OnRequest != nil {
		func() {
			defer func() { _ = recover() }()
			p.OnRequest(fr.Method, host, status, n)
		}()
	}
	if err != nil {
		code := callerr.FetchError
		var le *limitError
		switch {
		case errors.Is(err, errBlocked):
			code = callerr.Denied
		case errors.As(err, &le):
			code = callerr.Limit
		case x.ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
			code = callerr.Timeout
		}
		return hostDone{set: reject(op.id, code, "fetch "+clip.Text(fr.URL, maxURLInMessage)+": "+clip.Text(err.Error(), 4*maxURLInMessage))}
	}
	b, _ := json.Marshal(resp)
	return hostDone{set: settlement{id: op.id, ok: true, payload: string(b)}}
}

// before runs BeforeRequest, turning a panic into a refusal.
func (p *FetchPolicy) before(ctx context.Context, method, host string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fetch check panicked: %v", r)
		}
	}()
	return p.BeforeRequest(ctx, method, host)
}

type limitError struct{ msg string }

func (e *limitError) Error() string { return e.msg }

// do performs one fetch of u (parsed from fr.URL and checked by checkURL)
// under the policy.
func (p *FetchPolicy) do(ctx context.Context, u *url.URL, fr *fetchRequest) (*fetchResponse, int64, error) {
	method := fr.Method
	var body io.Reader
	if fr.Body != nil {
		body = strings.NewReader(*fr.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, 0, err
	}
	for _, h := range fr.Headers {
		req.Header.Add(h[0], h[1])
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "toolgate-sandbox")
	}
	client := p.client()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, errBlocked) {
			return nil, 0, errBlocked
		}
		var le *limitError
		if errors.As(err, &le) {
			return nil, 0, le
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	limit := p.maxBytes()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, int64(len(data)), err
	}
	if int64(len(data)) > limit {
		return &fetchResponse{Status: resp.StatusCode}, int64(len(data)),
			&limitError{fmt.Sprintf("response body exceeds fetch.maxResponseBytes (%d)", limit)}
	}
	out := &fetchResponse{
		Status:     resp.StatusCode,
		StatusText: strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode))),
		URL:        resp.Request.URL.String(),
		Redirected: resp.Request.URL.String() != u.String(),
		Headers:    [][2]string{},
		Body:       string(data),
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			out.Headers = append(out.Headers, [2]string{k, v})
		}
	}
	return out, int64(len(data)), nil
}

// checkURL applies the scheme and host rules to a URL about to be requested.
func (p *FetchPolicy) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q (only http and https)", errBlocked, u.Scheme)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return fmt.Errorf("%w: no host", errBlocked)
	}
	if len(p.AllowHosts) > 0 {
		ok := false
		for _, pat := range p.AllowHosts {
			pat = strings.ToLower(pat)
			if m, _ := path.Match(pat, host); m || pat == host {
				ok = true
				break
			}
			if strings.HasPrefix(pat, "*.") && strings.HasSuffix(host, pat[1:]) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: host %q is not in fetch.allowHosts", errBlocked, host)
		}
	}
	return nil
}

// client builds an HTTP client whose every connection is checked where it
// is made: the dialer's Control hook sees the resolved address.
func (p *FetchPolicy) client() *http.Client {
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: cannot parse dialled address %q", errBlocked, address)
			}
			if !p.addrAllowed(ap.Addr()) {
				return fmt.Errorf("%w: address %s is not public", errBlocked, ap.Addr())
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                 nil, // never: a proxy would hide the real destination
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns:          1,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return &limitError{fmt.Sprintf("more than %d redirects", maxRedirects)}
			}
			return p.checkURL(req.URL)
		},
	}
}

// blockedPrefixes are ranges a sandboxed fetch must never reach, beyond
// what netip's predicates already cover.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 can map to any IPv4
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2002::/16"),       // 6to4 embeds IPv4
	netip.MustParsePrefix("2001::/32"),       // Teredo embeds IPv4
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("fd00:ec2::/32"),   // AWS metadata (also in fc00::/7)
}

// buildAllowsLoopback is set only in binaries built with the
// toolgate_fetch_loopback tag, for end-to-end tests (fetch_loopback.go).
var buildAllowsLoopback = false

// addrAllowed reports whether a dialled address is public unicast.
func (p *FetchPolicy) addrAllowed(a netip.Addr) bool {
	a = a.Unmap()
	if (p.allowLoopback || buildAllowsLoopback) && a.IsLoopback() {
		return true
	}
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || !a.IsGlobalUnicast() {
		return false
	}
	for _, pr := range blockedPrefixes {
		if pr.Contains(a) {
			return false
		}
	}
	return true
}
