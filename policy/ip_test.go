package policy_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/policy"
)

// parseTestAddr parses a test address; "" is the zero (invalid) address.
func parseTestAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestIPRulesAllows(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny []string
		want        map[string]bool // address -> Allows
	}{
		{
			name: "no rules",
			want: map[string]bool{"1.2.3.4": true, "2001:db8::1": true, "::ffff:1.2.3.4": true, "": true},
		},
		{
			name:  "empty lists",
			allow: []string{},
			deny:  []string{},
			want:  map[string]bool{"1.2.3.4": true, "::1": true, "": true},
		},
		{
			name:  "IPv4 network",
			allow: []string{"10.0.0.0/8"},
			want: map[string]bool{
				"10.0.0.0": true, "10.1.2.3": true, "10.255.255.255": true,
				"11.0.0.0": false, "9.255.255.255": false,
				"::1": false, "": false,
			},
		},
		{
			name:  "bare IPv4 address is /32",
			allow: []string{"127.0.0.1"},
			want:  map[string]bool{"127.0.0.1": true, "127.0.0.2": false, "127.0.0.0": false},
		},
		{
			name:  "bare IPv6 address is /128",
			allow: []string{"::1"},
			want:  map[string]bool{"::1": true, "::2": false, "127.0.0.1": false},
		},
		{
			name:  "IPv6 network",
			allow: []string{"2001:db8::/32"},
			want: map[string]bool{
				"2001:db8::1": true, "2001:db8:ffff:ffff::1": true,
				"2001:db9::1": false, "10.0.0.1": false,
			},
		},
		{
			name:  "several networks of both families",
			allow: []string{"127.0.0.1/32", "10.0.0.0/8", "::1", "fd00::/8"},
			want: map[string]bool{
				"127.0.0.1": true, "10.9.9.9": true, "::1": true, "fd12::1": true,
				"192.168.1.1": false, "2001:db8::1": false,
			},
		},
		{
			name:  "deny beats allow",
			allow: []string{"10.0.0.0/8", "2001:db8::/32"},
			deny:  []string{"10.0.0.0/24", "2001:db8:bad0::/48"},
			want: map[string]bool{
				"10.0.0.1": false, "10.0.1.1": true,
				"2001:db8:bad0::1": false, "2001:db8:900d::1": true,
			},
		},
		{
			name: "deny only",
			deny: []string{"192.0.2.0/24", "2001:db8::/32"},
			want: map[string]bool{
				"192.0.2.99": false, "192.0.3.1": true,
				"2001:db8::1": false, "::1": true, "": false,
			},
		},
		{
			name:  "denying an address denies it",
			allow: []string{"0.0.0.0/0"},
			deny:  []string{"1.2.3.4"},
			want:  map[string]bool{"1.2.3.4": false, "1.2.3.5": true},
		},
		{
			name:  "mapped addresses are matched as IPv4",
			allow: []string{"10.0.0.0/8"},
			deny:  []string{"10.6.6.6"},
			want: map[string]bool{
				"::ffff:10.1.2.3": true, "::ffff:10.6.6.6": false,
				"::ffff:11.1.2.3": false, "10.1.2.3": true,
			},
		},
		{
			name:  "mapped-form rules are IPv4 rules",
			allow: []string{"::ffff:10.0.0.0/104", "::ffff:192.0.2.1"},
			want: map[string]bool{
				"10.1.2.3": true, "::ffff:10.1.2.3": true, "192.0.2.1": true,
				"11.0.0.1": false, "192.0.2.2": false,
			},
		},
		{
			name: "IPv6 rules do not cover IPv4",
			deny: []string{"::/0"},
			want: map[string]bool{"1.2.3.4": true, "::ffff:1.2.3.4": true, "2001:db8::1": false, "::1": false},
		},
		{
			name:  "IPv4 rules do not cover IPv6",
			allow: []string{"0.0.0.0/0"},
			want:  map[string]bool{"1.2.3.4": true, "::ffff:1.2.3.4": true, "2001:db8::1": false, "::": false},
		},
		{
			name:  "host bits are ignored",
			allow: []string{"10.1.2.3/8", "2001:db8::1/32"},
			want:  map[string]bool{"10.200.0.1": true, "2001:db8:1::1": true, "11.0.0.0": false},
		},
		{
			name:  "zones are ignored",
			allow: []string{"fe80::/10"},
			want:  map[string]bool{"fe80::1%eth0": true, "fe80::1": true, "fec0::1%eth0": false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := policy.NewIPRules(tt.allow, tt.deny)
			if err != nil {
				t.Fatal(err)
			}
			for s, want := range tt.want {
				if got := r.Allows(parseTestAddr(t, s)); got != want {
					t.Errorf("Allows(%q) = %v, want %v", s, got, want)
				}
			}
		})
	}
}

func TestNilIPRulesAllowEverything(t *testing.T) {
	var r *policy.IPRules
	for _, s := range []string{"1.2.3.4", "::1", ""} {
		if !r.Allows(parseTestAddr(t, s)) {
			t.Errorf("nil IPRules refused %q", s)
		}
	}
}

func TestNewIPRulesErrors(t *testing.T) {
	_, err := policy.NewIPRules(
		[]string{"10.0.0.0/8", "nope", "10.0.0.0/33", " 10.0.0.1"},
		[]string{"fe80::1%eth0", "", "1.2.3.4/", "::1", "fe80::%eth0/64", "example.com"},
	)
	if err == nil {
		t.Fatal("NewIPRules accepted bad entries")
	}
	for _, want := range []string{
		`allow list entry 2 "nope"`,
		`allow list entry 3 "10.0.0.0/33"`,
		`allow list entry 4 " 10.0.0.1"`,
		`deny list entry 1 "fe80::1%eth0": zones are not allowed`,
		`deny list entry 2 ""`,
		`deny list entry 3 "1.2.3.4/"`,
		`deny list entry 5 "fe80::%eth0/64": zones are not allowed`,
		`deny list entry 6 "example.com"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %s:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 8 {
		t.Errorf("error lists %d problems, want 8:\n%v", n, err)
	}
}

func TestClientIP(t *testing.T) {
	proxies := []string{"10.0.0.0/8", "2001:db8:ffff::/48"}
	tests := []struct {
		name    string
		trusted []string // nil: a nil *ProxyTrust
		remote  string
		xff     []string
		want    string // "" means an error
	}{
		// Peers that are not trusted proxies.
		{name: "nil trust ignores XFF", remote: "203.0.113.7:5555", xff: []string{"1.2.3.4"}, want: "203.0.113.7"},
		{name: "no trusted proxies ignores XFF", trusted: []string{}, remote: "203.0.113.7:5555", xff: []string{"1.2.3.4"}, want: "203.0.113.7"},
		{name: "untrusted peer spoofing a trusted proxy", trusted: proxies, remote: "203.0.113.7:5555", xff: []string{"10.0.0.1"}, want: "203.0.113.7"},
		{name: "untrusted peer spoofing a client", trusted: proxies, remote: "203.0.113.7:5555", xff: []string{"198.51.100.1", "127.0.0.1"}, want: "203.0.113.7"},
		{name: "untrusted peer with garbage XFF", trusted: proxies, remote: "203.0.113.7:5555", xff: []string{"garbage"}, want: "203.0.113.7"},
		{name: "untrusted IPv6 peer", trusted: proxies, remote: "[2001:db8::7]:443", xff: []string{"1.2.3.4"}, want: "2001:db8::7"},
		{name: "untrusted mapped peer is unmapped", trusted: proxies, remote: "[::ffff:203.0.113.7]:80", want: "203.0.113.7"},
		{name: "zone dropped", remote: "[fe80::1%eth0]:80", want: "fe80::1"},
		{name: "bare IPv4 peer", remote: "192.0.2.1", want: "192.0.2.1"},
		{name: "bare IPv6 peer", remote: "2001:db8::1", want: "2001:db8::1"},
		{name: "bracketed IPv6 peer", remote: "[2001:db8::1]", want: "2001:db8::1"},
		{name: "empty remote", remote: "", want: ""},
		{name: "unix socket remote", remote: "@", want: ""},
		{name: "host name remote", remote: "localhost:80", want: ""},
		{name: "bad port", remote: "192.0.2.1:http", want: ""},
		{name: "bracketed IPv4", remote: "[192.0.2.1]", want: ""},

		// Trusted peers.
		{name: "trusted peer without XFF is the client", trusted: proxies, remote: "10.0.0.2:1", want: "10.0.0.2"},
		{name: "trusted peer with empty XFF", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"", " , "}, want: "10.0.0.2"},
		{name: "one hop", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "client-written entries are not read", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"1.1.1.1, 10.0.0.3, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "client-written garbage is not read", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"garbage, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "trusted hops are skipped", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"1.1.1.1, 198.51.100.1, 10.0.0.5, 10.0.0.6"}, want: "198.51.100.1"},
		{name: "several header lines", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"1.1.1.1", "198.51.100.1, 10.0.0.5"}, want: "198.51.100.1"},
		{name: "header lines are read right to left", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"198.51.100.1", "10.0.0.5", "10.0.0.6"}, want: "198.51.100.1"},
		{name: "last header line decides", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"10.0.0.5", "198.51.100.1"}, want: "198.51.100.1"},
		{name: "blank entries skipped", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"198.51.100.1,, ", "", ",10.0.0.4,"}, want: "198.51.100.1"},
		{name: "all trusted: the leftmost", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"10.0.0.9, 10.0.0.5"}, want: "10.0.0.9"},
		{name: "entries with ports", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"198.51.100.1:4711"}, want: "198.51.100.1"},
		{name: "IPv6 entry with port", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"[2001:db8::1]:443"}, want: "2001:db8::1"},
		{name: "bracketed IPv6 entry", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"[2001:db8::1]"}, want: "2001:db8::1"},
		{name: "IPv6 trusted peer", trusted: proxies, remote: "[2001:db8:ffff::1]:443", xff: []string{"2001:db8::7"}, want: "2001:db8::7"},
		{name: "IPv6 trusted hops", trusted: proxies, remote: "[2001:db8:ffff::1]:443", xff: []string{"198.51.100.1, 2001:db8:ffff::2"}, want: "198.51.100.1"},
		{name: "mapped trusted peer", trusted: proxies, remote: "[::ffff:10.0.0.2]:80", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "mapped client entry is unmapped", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"::ffff:198.51.100.1"}, want: "198.51.100.1"},
		{name: "mapped trusted entry is skipped", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"198.51.100.1, ::ffff:10.0.0.5"}, want: "198.51.100.1"},
		{name: "zoned entry", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"fe80::1%eth0"}, want: "fe80::1"},
		{name: "mapped-form trust rule", trusted: []string{"::ffff:10.0.0.0/104"}, remote: "10.0.0.2:1", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "bare trusted address", trusted: []string{"10.0.0.2"}, remote: "10.0.0.2:1", xff: []string{"198.51.100.1, 10.0.0.3"}, want: "10.0.0.3"},
		{name: "malformed entry reached", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"198.51.100.1, garbage"}, want: ""},
		{name: "unknown entry reached", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"unknown"}, want: ""},
		{name: "malformed entry after trusted hops", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"nope", "10.0.0.5"}, want: ""},
		{name: "host name entry", trusted: proxies, remote: "10.0.0.2:1", xff: []string{"client.example"}, want: ""},
		{name: "trusting everyone believes the leftmost entry", trusted: []string{"0.0.0.0/0", "::/0"}, remote: "203.0.113.7:1", xff: []string{"1.1.1.1, 198.51.100.1"}, want: "1.1.1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p *policy.ProxyTrust
			if tt.trusted != nil {
				var err error
				if p, err = policy.NewProxyTrust(tt.trusted); err != nil {
					t.Fatal(err)
				}
			}
			got, err := p.ClientIP(tt.remote, tt.xff)
			switch {
			case tt.want == "" && err == nil:
				t.Fatalf("ClientIP(%q, %q) = %v, want an error", tt.remote, tt.xff, got)
			case tt.want == "":
				t.Logf("error: %v", err)
			case err != nil:
				t.Fatalf("ClientIP(%q, %q): %v", tt.remote, tt.xff, err)
			case got != parseTestAddr(t, tt.want):
				t.Fatalf("ClientIP(%q, %q) = %v, want %v", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

func TestNewProxyTrustErrors(t *testing.T) {
	_, err := policy.NewProxyTrust([]string{"10.0.0.0/8", "proxy.internal", "10.0.0.0/99"})
	if err == nil {
		t.Fatal("NewProxyTrust accepted bad entries")
	}
	for _, want := range []string{`trusted proxy list entry 2 "proxy.internal"`, `trusted proxy list entry 3 "10.0.0.0/99"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %s:\n%v", want, err)
		}
	}
}

// networkOf returns the network address of a CIDR entry or the address of a
// bare one, as the netip package reads it.
func networkOf(s string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().Addr(), true
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

func FuzzIPRules(f *testing.F) {
	for _, s := range []string{
		"10.0.0.0/8", "10.1.2.3/8", "127.0.0.1", "0.0.0.0/0", "::/0", "::1", "2001:db8::/32",
		"::ffff:10.0.0.0/104", "::ffff:1.2.3.4", "::ffff:0:0/95", "::ffff:1.2.3.4/96", "fe80::1%eth0",
		"fe80::%eth0/64", "", "/", "1.2.3.4/", "1.2.3.4/33", "nope", "1.2.3.4/-1", "01.2.3.4", "1.2.3.4/08",
	} {
		f.Add(s, []byte{10, 1, 2, 3})
		f.Add(s, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3})
	}
	f.Fuzz(func(t *testing.T, s string, raw []byte) {
		allow, err := policy.NewIPRules([]string{s}, nil)
		deny, err2 := policy.NewIPRules(nil, []string{s})
		trust, err3 := policy.NewProxyTrust([]string{s})
		if (err == nil) != (err2 == nil) || (err == nil) != (err3 == nil) {
			t.Fatalf("%q: allow, deny and trust lists disagree on validity: %v, %v, %v", s, err, err2, err3)
		}
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Errorf("error does not name the entry %q: %v", s, err)
			}
			return
		}
		net, ok := networkOf(s)
		if !ok {
			t.Fatalf("%q accepted, but netip reads neither a network nor an address", s)
		}
		if !allow.Allows(net) {
			t.Errorf("allow %q refuses its network address %v", s, net)
		}
		if deny.Allows(net) {
			t.Errorf("deny %q allows its network address %v", s, net)
		}
		const client = "198.51.100.1"
		peer := netip.AddrPortFrom(net, 443).String()
		if got, err := trust.ClientIP(peer, []string{client}); err != nil || got != netip.MustParseAddr(client) {
			t.Errorf("trusting %q, ClientIP(%q, %q) = %v, %v; want %v", s, peer, client, got, err, client)
		}

		// Any address: an allow list of one allows exactly what a deny list
		// of one denies, and mapping an address changes nothing.
		var a netip.Addr
		switch len(raw) {
		case 4:
			a = netip.AddrFrom4([4]byte(raw))
		case 16:
			a = netip.AddrFrom16([16]byte(raw))
		default:
			return
		}
		if allow.Allows(a) == deny.Allows(a) {
			t.Errorf("%q: allow and deny lists agree on %v", s, a)
		}
		if a.Is4() && allow.Allows(a) != allow.Allows(netip.AddrFrom16(a.As16())) {
			t.Errorf("%q: %v and its mapped form are treated differently", s, a)
		}
	})
}

func FuzzClientIP(f *testing.F) {
	f.Add("203.0.113.7:5555", "1.2.3.4", "", "10.0.0.0/8")
	f.Add("10.0.0.2:1", "1.1.1.1, 198.51.100.1", "10.0.0.5", "10.0.0.0/8")
	f.Add("[2001:db8:ffff::1]:443", "garbage, [2001:db8::1]:80", ",,", "2001:db8:ffff::/48")
	f.Add("[::ffff:10.0.0.2]:80", "::ffff:198.51.100.1", "fe80::1%eth0", "::ffff:10.0.0.0/104")
	f.Add("[fe80::1%eth0]:80", "unknown", "", "0.0.0.0/0\n::/0")
	f.Add("@", "", "", "")
	f.Add("[1.2.3.4]", "[::1]", "1.2.3.4:", "1.2.3.4")
	f.Fuzz(func(t *testing.T, remote, xff1, xff2, trusted string) {
		xff := []string{xff1, xff2}

		// No trusted proxies: the peer, whatever the header says.
		peer, err := (*policy.ProxyTrust)(nil).ClientIP(remote, nil)
		none, _ := policy.NewProxyTrust(nil)
		for _, p := range []*policy.ProxyTrust{nil, none} {
			got, err2 := p.ClientIP(remote, xff)
			if got != peer || (err == nil) != (err2 == nil) {
				t.Fatalf("no trusted proxies: ClientIP(%q, %q) = %v, %v; want the peer %v, %v", remote, xff, got, err2, peer, err)
			}
		}
		if ap, perr := netip.ParseAddrPort(remote); perr == nil {
			if want := ap.Addr().WithZone("").Unmap(); err != nil || peer != want {
				t.Fatalf("ClientIP(%q) = %v, %v; want %v", remote, peer, err, want)
			}
		}
		if err != nil {
			if peer.IsValid() {
				t.Fatalf("ClientIP(%q) returned %v with error %v", remote, peer, err)
			}
			return
		}
		checkClientAddr(t, peer)

		// Some trusted proxies: no panics, a canonical result, and an
		// untrusted peer is still the client.
		var list []string
		if trusted != "" {
			list = strings.Split(trusted, "\n")
		}
		p, err := policy.NewProxyTrust(list)
		if err != nil {
			return
		}
		got, err := p.ClientIP(remote, xff)
		if err != nil {
			if got.IsValid() {
				t.Fatalf("ClientIP returned %v with error %v", got, err)
			}
			return
		}
		checkClientAddr(t, got)
		peerTrusted, _ := policy.NewIPRules(list, nil)
		if len(list) > 0 && !peerTrusted.Allows(peer) && got != peer {
			t.Fatalf("untrusted peer %v: ClientIP(%q, %q) = %v, want the peer", peer, remote, xff, got)
		}
	})
}

func checkClientAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
		t.Fatalf("ClientIP returned %#v, want a valid unmapped address without zone", a)
	}
}

func BenchmarkIPRulesAllows(b *testing.B) {
	r, err := policy.NewIPRules(
		[]string{"127.0.0.1/32", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1", "fd00::/8"},
		[]string{"10.66.0.0/16"},
	)
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []string{"192.168.1.20", "203.0.113.7", "::ffff:10.1.2.3", "2001:db8::1"} {
		a := netip.MustParseAddr(s)
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.Allows(a)
			}
		})
	}
}

func BenchmarkClientIP(b *testing.B) {
	p, err := policy.NewProxyTrust([]string{"10.0.0.0/8"})
	if err != nil {
		b.Fatal(err)
	}
	benches := []struct {
		name   string
		remote string
		xff    []string
	}{
		{"untrusted peer", "203.0.113.7:5555", []string{"1.2.3.4"}},
		{"two hops", "10.0.0.2:5555", []string{"1.1.1.1, 198.51.100.1, 10.0.0.5"}},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.ClientIP(bb.remote, bb.xff); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ExampleProxyTrust_ClientIP() {
	// The gateway sits behind a load balancer in 10.0.0.0/8.
	p, err := policy.NewProxyTrust([]string{"10.0.0.0/8"})
	if err != nil {
		panic(err)
	}
	// Through the load balancer; the client wrote the first entry itself.
	fmt.Println(p.ClientIP("10.0.0.2:40000", []string{"127.0.0.1, 198.51.100.1"}))
	// Directly from the internet: the header is not believed.
	fmt.Println(p.ClientIP("203.0.113.7:40000", []string{"10.0.0.9"}))
	// Output:
	// 198.51.100.1 <nil>
	// 203.0.113.7 <nil>
}

func ExampleIPRules() {
	r, err := policy.NewIPRules([]string{"127.0.0.1", "10.0.0.0/8"}, []string{"10.66.0.0/16"})
	if err != nil {
		panic(err)
	}
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "10.66.1.1", "::ffff:10.1.2.3", "192.0.2.1"} {
		fmt.Println(s, r.Allows(netip.MustParseAddr(s)))
	}
	// Output:
	// 127.0.0.1 true
	// 10.1.2.3 true
	// 10.66.1.1 false
	// ::ffff:10.1.2.3 true
	// 192.0.2.1 false
}

func TestProxyTrusts(t *testing.T) {
	p, err := policy.NewProxyTrust([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for remote, want := range map[string]bool{
		"10.1.2.3:443": true, "[::1]:80": true, "[::ffff:10.0.0.1]:1": true,
		"203.0.113.7:80": false, "garbage": false, "": false,
	} {
		if got := p.Trusts(remote); got != want {
			t.Errorf("Trusts(%q) = %v, want %v", remote, got, want)
		}
	}
	var none *policy.ProxyTrust
	if none.Trusts("10.1.2.3:443") {
		t.Error("a nil ProxyTrust trusts a peer")
	}
}
