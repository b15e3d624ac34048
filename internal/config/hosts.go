package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// AnyHost is the entry of allowedHosts and allowedOrigins that accepts
// every value.
const AnyHost = "*"

// ParseHostPattern parses an entry of allowedHosts: a host name or IP
// address, with an optional port ("mcp.example.com", "10.0.0.5:8443",
// "[fd00::1]:8443", "fd00::1"). The host comes back in lower case, without
// brackets or a trailing dot; port is "" when the entry matches any port.
func ParseHostPattern(s string) (host, port string, err error) {
	if s == "" {
		return "", "", errors.New("empty host")
	}
	if strings.ContainsAny(s, "/@?# \t") {
		return "", "", errors.New("want a host name or address with an optional port (no scheme or path)")
	}
	host = s
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return "", "", errors.New("missing ]")
		}
		host, port = s[1:end], strings.TrimPrefix(s[end+1:], ":")
		if s[end+1:] != "" && !strings.HasPrefix(s[end+1:], ":") {
			return "", "", errors.New("unexpected text after ]")
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", "", fmt.Errorf("%q is not an IPv6 address", host)
		}
		if s[end+1:] == ":" {
			return "", "", errors.New("empty port")
		}
	case strings.Count(s, ":") > 1:
		if _, err := netip.ParseAddr(s); err != nil {
			return "", "", errors.New("an IPv6 address with a port is written [address]:port")
		}
	case strings.Contains(s, ":"):
		host, port, _ = strings.Cut(s, ":")
		if port == "" {
			return "", "", errors.New("empty port")
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("invalid port %q", port)
		}
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ipLiteral(host) {
		return host, port, nil
	}
	if !hostNameOK(host) {
		return "", "", fmt.Errorf("%q is not a host name", host)
	}
	return host, port, nil
}

// ipLiteral reports whether host is an IP address. (Names are checked
// first: a failed parse costs an allocated error, on every request.)
func ipLiteral(host string) bool {
	if host == "" || !(host[0] >= '0' && host[0] <= '9' || strings.Contains(host, ":")) {
		return false
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// hostNameOK reports whether s is made of DNS labels: letters, digits,
// '-' and '_', separated by dots.
func hostNameOK(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// NormalizeOrigin returns an entry of allowedOrigins, or the value of an
// Origin header, as scheme://host[:port] in lower case, without the
// scheme's default port ("https://App.example.com:443" is
// "https://app.example.com"). Only http and https origins are accepted;
// "null" (sandboxed frames, files) is not an origin that can be allowed.
func NormalizeOrigin(s string) (string, error) {
	if s == "null" {
		return "", errors.New(`the "null" origin (sandboxed frames, local files) cannot be allowed`)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("want scheme://host[:port]")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("want an http or https origin (scheme://host[:port])")
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", errors.New("want scheme://host[:port], nothing else")
	}
	host, port, err := ParseHostPattern(u.Host)
	if err != nil {
		return "", err
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}
