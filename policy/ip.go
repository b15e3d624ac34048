package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// IPRules decides which client addresses may use the gateway, from lists of
// allowed and denied networks. It is immutable and safe for concurrent use.
//
// An address is refused if any denied network contains it (deny beats
// allow). Otherwise it is allowed if the allow list is empty or an allowed
// network contains it.
//
// IPv4 and IPv6 are both supported. IPv4-mapped IPv6 addresses
// (::ffff:1.2.3.4), as a dual-stack listener reports IPv4 clients, are
// matched as the IPv4 addresses they carry, against IPv4 rules only; an
// IPv6 rule such as ::/0 does not cover IPv4 clients. Zones (fe80::1%eth0)
// are ignored.
type IPRules struct {
	allow, deny prefixSet
}

// NewIPRules compiles allow and deny lists. Each entry is a network in CIDR
// notation ("10.0.0.0/8", "2001:db8::/32") or a bare address, which means
// that one address (/32 or /128). Host bits are ignored ("10.1.2.3/8" is
// 10.0.0.0/8), and an entry in IPv4-mapped form ("::ffff:10.0.0.0/104") is
// the IPv4 network it maps. Every bad entry is reported, each error naming
// its list, position and text.
func NewIPRules(allow, deny []string) (*IPRules, error) {
	var r IPRules
	var errs []error
	r.allow, errs = parsePrefixes("allow", allow, errs)
	r.deny, errs = parsePrefixes("deny", deny, errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &r, nil
}

// Allows reports whether ip passes the rules. A nil *IPRules allows every
// address. An invalid (zero) address is allowed only by rules with empty
// allow and deny lists, since nothing can be said about where it belongs.
func (r *IPRules) Allows(ip netip.Addr) bool {
	if r == nil || (r.allow.empty() && r.deny.empty()) {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip = normalizeAddr(ip)
	if r.deny.contains(ip) {
		return false
	}
	return r.allow.empty() || r.allow.contains(ip)
}

// ProxyTrust knows which peers are reverse proxies whose X-Forwarded-For
// header may be believed, and finds the client's address with it. It is
// immutable and safe for concurrent use. A nil *ProxyTrust trusts no proxy.
type ProxyTrust struct {
	trusted prefixSet
}

// NewProxyTrust returns a ProxyTrust that trusts the listed proxies, given as
// networks or bare addresses in the same notation as [NewIPRules]. An empty
// list trusts no proxy: X-Forwarded-For is then never read. Every bad entry
// is reported.
func NewProxyTrust(trusted []string) (*ProxyTrust, error) {
	set, errs := parsePrefixes("trusted proxy", trusted, nil)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &ProxyTrust{trusted: set}, nil
}

// Trusts reports whether the peer at remoteAddr (as in ClientIP) is a
// trusted proxy, whose X-Forwarded-* headers may be believed.
func (p *ProxyTrust) Trusts(remoteAddr string) bool {
	peer, ok := parseHostAddr(remoteAddr)
	return ok && p != nil && p.trusted.contains(peer)
}

// ClientIP returns the client's address for a request whose connection
// came from remoteAddr ("ip:port", "[ipv6]:port" or a bare address, as in
// net/http's Request.RemoteAddr) and that carried the X-Forwarded-For
// header lines xForwardedFor, in the order received.
//
// If the peer is not a trusted proxy, it is the client, and X-Forwarded-For
// is ignored: anyone can write that header. If it is trusted, the header
// lines are read as one comma-separated list, walked from the right (the
// entry the nearest proxy added) towards the left, skipping trusted
// proxies; the first untrusted address is the client. Entries left of it
// were written by the client or proxies we do not trust, and are never
// read. If every entry is trusted, the leftmost one is the client; if there
// are none, the peer is.
//
// Entries may carry a port ("1.2.3.4:5678", "[2001:db8::1]:443") or a zone,
// which are dropped, and blank entries are skipped. An entry that is not an
// address, if the walk reaches it, is an error: a trusted proxy wrote
// something we cannot read, and guessing would let the request pass as the
// proxy. The caller should refuse the request.
//
// The returned address is never IPv4-mapped IPv6 (it is unmapped to IPv4)
// and never has a zone. An error is returned if remoteAddr is not an
// address.
func (p *ProxyTrust) ClientIP(remoteAddr string, xForwardedFor []string) (netip.Addr, error) {
	peer, ok := parseHostAddr(remoteAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("parsing remote address %q: not an IP address with optional port", remoteAddr)
	}
	if p == nil || !p.trusted.contains(peer) {
		return peer, nil
	}
	client := peer
	for i := len(xForwardedFor) - 1; i >= 0; i-- {
		list := xForwardedFor[i]
		for list != "" {
			var entry string
			if c := strings.LastIndexByte(list, ','); c >= 0 {
				list, entry = list[:c], list[c+1:]
			} else {
				list, entry = "", list
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			ip, ok := parseHostAddr(entry)
			if !ok {
				return netip.Addr{}, fmt.Errorf("reading X-Forwarded-For from trusted proxy %s: entry %q is not an IP address", client, entry)
			}
			if !p.trusted.contains(ip) {
				return ip, nil
			}
			client = ip
		}
	}
	return client, nil
}

// parseHostAddr parses an address with an optional port ("1.2.3.4",
// "1.2.3.4:80", "::1", "[::1]:80", "[::1]"), dropping any zone and
// unmapping IPv4-mapped IPv6.
func parseHostAddr(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		switch {
		case err2 == nil:
			ip = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if ip, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !ip.Is6() {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	return normalizeAddr(ip), true
}

// normalizeAddr drops a zone and unmaps IPv4-mapped IPv6 addresses, so that
// an address is compared in the form rules are stored in.
func normalizeAddr(ip netip.Addr) netip.Addr {
	return ip.WithZone("").Unmap()
}

// prefixSet is a list of networks, IPv4 and IPv6 kept apart.
type prefixSet struct {
	v4, v6 []netip.Prefix
}

func (s *prefixSet) empty() bool { return len(s.v4) == 0 && len(s.v6) == 0 }

// contains reports whether a network of s contains ip, which must be
// normalized.
func (s *prefixSet) contains(ip netip.Addr) bool {
	list := s.v6
	if ip.Is4() {
		list = s.v4
	}
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parsePrefixes parses entries into a prefixSet, appending an error naming
// what (the kind of entry), the position and the text of each bad entry to
// errs.
func parsePrefixes(what string, entries []string, errs []error) (prefixSet, []error) {
	var s prefixSet
	for i, e := range entries {
		p, err := parsePrefix(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s list entry %d %q: %w", what, i+1, e, err))
			continue
		}
		if p.Addr().Is4() {
			s.v4 = append(s.v4, p)
		} else {
			s.v6 = append(s.v6, p)
		}
	}
	return s, errs
}

var (
	errNotPrefix = errors.New(`not an IP address or CIDR network (like "10.0.0.0/8" or "2001:db8::/32")`)
	errZone      = errors.New("zones are not allowed in address rules")
)

// parsePrefix parses a CIDR network or a bare address into a masked prefix,
// turning IPv4-mapped IPv6 networks of /96 or longer into IPv4 networks.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			if strings.Contains(s, "%") {
				return netip.Prefix{}, errZone
			}
			return netip.Prefix{}, errNotPrefix
		}
	} else {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, errNotPrefix
		}
		if ip.Zone() != "" {
			return netip.Prefix{}, errZone
		}
		p = netip.PrefixFrom(ip, ip.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
