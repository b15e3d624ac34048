package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/toolgate/toolgate/internal/clip"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
)

// DNS rebinding: a web page the user opens at http://evil.example:8080
// has its name re-resolved to 127.0.0.1 (or to any address the user's
// browser can reach), and its scripts then talk to whatever listens there,
// as the same origin. The browser sends the attacker's name in Host (and
// Origin), so a server that only serves the names it knows is out of
// reach; MCP's transport rules say servers must check Origin too.
//
// hostRules decides which Host and Origin headers an endpoint serves. A
// Host is served when it is
//   - listed in allowedHosts (without a port: any port), or allowedHosts
//     holds "*";
//   - a loopback name or address (localhost, 127.0.0.0/8, ::1) on a
//     connection that arrived on a loopback address;
//   - the address the connection arrived on, written as an IP literal (no
//     name was resolved, so nothing was rebound);
//   - the listen address's host, when it is a name;
//   - on a TLS connection, the server name the client asked for (a browser
//     completes the handshake only when the certificate is valid for it,
//     which it is not for an attacker's name).
//
// A request without Origin (not sent by a browser) passes the Origin
// check. An Origin is served when it is listed in allowedOrigins (or that
// list holds "*"), or when its host is one the rules above serve (the "*"
// of allowedHosts aside): the gateway's own origins and loopback pages on
// a loopback connection. "null" and non-http(s) origins are refused.
type hostRules struct {
	anyHost    bool
	hosts      []hostPattern
	listenName string // the listen address's host when it is a name
	anyOrigin  bool
	origins    map[string]bool // normalised (config.NormalizeOrigin)
}

type hostPattern struct{ host, port string }

// compileHostRules compiles the lists of one endpoint; invalid entries were
// refused when the configuration was loaded and are skipped.
func compileHostRules(listen string, hosts, origins []string) *hostRules {
	h := &hostRules{origins: map[string]bool{}}
	if lh, _, err := net.SplitHostPort(listen); err == nil {
		if _, err := netip.ParseAddr(lh); err != nil && lh != "" {
			h.listenName = strings.ToLower(strings.TrimSuffix(lh, "."))
		}
	}
	for _, s := range hosts {
		if s == config.AnyHost {
			h.anyHost = true
			continue
		}
		if host, port, err := config.ParseHostPattern(s); err == nil {
			h.hosts = append(h.hosts, hostPattern{host, port})
		}
	}
	for _, s := range origins {
		if s == config.AnyHost {
			h.anyOrigin = true
			continue
		}
		if o, err := config.NormalizeOrigin(s); err == nil {
			h.origins[o] = true
		}
	}
	return h
}

// connInfo is what the Host rules know about the connection of a request.
type connInfo struct {
	local      netip.Addr // the address it arrived on (invalid when unknown)
	serverName string     // the TLS server name ("" without TLS)
	tls        bool
}

func connOf(r *http.Request) connInfo {
	var c connInfo
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			c.local = ap.Addr().Unmap()
		}
	}
	if r.TLS != nil {
		c.tls = true
		c.serverName = strings.ToLower(strings.TrimSuffix(r.TLS.ServerName, "."))
	}
	return c
}

// hostOK reports whether the rules serve host (lower case, no brackets) on
// port ("" when the header gave none: defPort applies) over connection c;
// wildcard says whether allowedHosts' "*" counts.
func (h *hostRules) hostOK(host, port, defPort string, c connInfo, wildcard bool) bool {
	if wildcard && h.anyHost {
		return true
	}
	if port == "" {
		port = defPort
	}
	for _, p := range h.hosts {
		if p.host == host && (p.port == "" || p.port == port) {
			return true
		}
	}
	if ip, ok := parseIP(host); ok {
		ip = ip.Unmap()
		return c.local.IsValid() && (ip == c.local || ip.IsLoopback() && c.local.IsLoopback())
	}
	switch {
	case host == "localhost":
		return c.local.IsValid() && c.local.IsLoopback()
	case host == h.listenName:
		return true
	case c.tls && host == c.serverName:
		return true
	}
	return false
}

// parseIP parses host as an IP address; a name (a letter first, no colon)
// is not parsed at all, which would cost an error value per request.
func parseIP(host string) (netip.Addr, bool) {
	if host == "" || !(host[0] >= '0' && host[0] <= '9' || strings.Contains(host, ":")) {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(host)
	return ip, err == nil
}

// refuse returns the header that r may not be served for ("Host" or
// "Origin") and its value, or "" when both pass.
func (h *hostRules) refuse(r *http.Request) (header, value string) {
	c := connOf(r)
	defPort := "80"
	if c.tls {
		defPort = "443"
	}
	host, port, err := config.ParseHostPattern(r.Host)
	if !h.anyHost && (err != nil || !h.hostOK(host, port, defPort, c, true)) {
		return "Host", r.Host
	}
	origins := r.Header.Values("Origin")
	switch {
	case len(origins) == 0 || h.anyOrigin:
		return "", ""
	case len(origins) > 1:
		return "Origin", strings.Join(origins, ", ")
	}
	o, err := config.NormalizeOrigin(origins[0])
	if err != nil {
		return "Origin", origins[0]
	}
	if h.origins[o] {
		return "", ""
	}
	scheme, hostport, _ := strings.Cut(o, "://")
	oPort := "80"
	if scheme == "https" {
		oPort = "443"
	}
	ohost, oport, err := config.ParseHostPattern(hostport)
	if err != nil || !h.hostOK(ohost, oport, oPort, c, false) {
		return "Origin", origins[0]
	}
	return "", ""
}

// checkHostOrigin answers a request whose Host or Origin header the
// endpoint does not serve: 403 with a JSON-RPC error naming the header,
// counted and audited (origin.denied). It reports whether r may go on.
func (g *Gateway) checkHostOrigin(w http.ResponseWriter, r *http.Request, h *hostRules, project string) bool {
	header, value := h.refuse(r)
	if header == "" {
		return true
	}
	shown := clip.Text(value, 200)
	key := "allowedHosts"
	if header == "Origin" {
		key = "allowedOrigins"
	}
	client := r.RemoteAddr
	if a := g.accessPolicy(); a != nil {
		if ip, err := a.proxies.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For")); err == nil {
			client = ip.String()
		}
	}
	g.log.Warn("host or origin refused", "project", project, "header", header, "value", shown, "ip", client)
	g.metrics.originDenied.WithLabelValues(project, strings.ToLower(header)).Inc()
	_ = g.emit(&audit.Event{Type: audit.EventOriginDenied, Project: project, ClientIP: client, Reason: header + " " + quote(shown)})
	rpcError(w, http.StatusForbidden, codeForbidden,
		"forbidden: the "+header+" header "+quote(shown)+" is not served here (an operator can allow it with "+key+")", nil)
	return false
}
