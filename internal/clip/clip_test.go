package clip

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{strings.Repeat("n", 200), 40, strings.Repeat("n", 26) + "…[200 bytes]"},
		{strings.Repeat("é", 100), 40, strings.Repeat("é", 13) + "…[200 bytes]"},
	}
	for _, tc := range tests {
		got := Text(tc.s, tc.n)
		if got != tc.want {
			t.Errorf("Text(%.20q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
		if len(got) > tc.n || !utf8.ValidString(got) {
			t.Errorf("Text(%.20q, %d) = %q: %d bytes or invalid UTF-8", tc.s, tc.n, got, len(got))
		}
	}
}

func TestJSON(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{strings.Repeat("n", 200), 40, strings.Repeat("n", 24) + "…[200 bytes]"},
		{strings.Repeat("<", 100), 40, strings.Repeat("<", 4) + "…[100 bytes]"},
		{strings.Repeat("é", 100), 40, strings.Repeat("é", 12) + "…[200 bytes]"},
		{"a\x00b", 10, "a\x00b"},
	}
	for _, tc := range tests {
		got := JSON(tc.s, tc.n)
		if got != tc.want {
			t.Errorf("JSON(%.20q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
		if JSONLen(got) > tc.n || !utf8.ValidString(got) {
			t.Errorf("JSON(%.20q, %d) = %q: JSONLen %d or invalid UTF-8", tc.s, tc.n, got, JSONLen(got))
		}
	}
}

func FuzzJSONLen(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\\x00<>&\u2028\xff", "é😀\n"} {
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if JSONLen(s) < len(b) {
			t.Fatalf("JSONLen(%q) = %d, encoding/json wrote %d bytes", s, JSONLen(s), len(b))
		}
		if n < 0 || n > 1<<20 {
			return
		}
		p := JSONPrefix(s, n)
		if !strings.HasPrefix(s, p) || (len(p) > 0 && JSONLen(p) > n) {
			t.Fatalf("JSONPrefix(%q, %d) = %q (JSONLen %d)", s, n, p, JSONLen(p))
		}
		if utf8.ValidString(s) && !utf8.ValidString(p) {
			t.Fatalf("JSONPrefix(%q, %d) = %q cuts a character", s, n, p)
		}
		if n >= 24 {
			if c := JSON(s, n); JSONLen(c) > n {
				t.Fatalf("JSON(%q, %d) = %q (JSONLen %d)", s, n, c, JSONLen(c))
			}
		}
	})
}
