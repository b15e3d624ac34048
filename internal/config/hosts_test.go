package config

import "testing"

func TestParseHostPattern(t *testing.T) {
	tests := []struct{ in, host, port string }{
		{"mcp.example.com", "mcp.example.com", ""},
		{"MCP.Example.com.:8443", "mcp.example.com", "8443"},
		{"10.0.0.5", "10.0.0.5", ""},
		{"[FD00::1]:443", "fd00::1", "443"},
		{"fd00::1", "fd00::1", ""},
		{"localhost", "localhost", ""},
	}
	for _, tc := range tests {
		host, port, err := ParseHostPattern(tc.in)
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("ParseHostPattern(%q) = %q, %q, %v; want %q, %q", tc.in, host, port, err, tc.host, tc.port)
		}
	}
	for _, bad := range []string{"", "http://x", "x/y", "[1.2.3.4]", "a:b", "a..b", "-x:", "é.example"} {
		if _, _, err := ParseHostPattern(bad); err == nil {
			t.Errorf("ParseHostPattern(%q) accepted", bad)
		}
	}
}

func TestNormalizeOrigin(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://App.Example.com", "https://app.example.com"},
		{"https://app.example.com:443", "https://app.example.com"},
		{"http://app.example.com:80/", "http://app.example.com"},
		{"http://localhost:5173", "http://localhost:5173"},
		{"http://[::1]:3000", "http://[::1]:3000"},
		{"HTTP://127.0.0.1:8080", "http://127.0.0.1:8080"},
	}
	for _, tc := range tests {
		got, err := NormalizeOrigin(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"null", "", "app.example.com", "file:///x", "https://u@h", "https://h?q", "https://h/p"} {
		if got, err := NormalizeOrigin(bad); err == nil {
			t.Errorf("NormalizeOrigin(%q) = %q, accepted", bad, got)
		}
	}
}
